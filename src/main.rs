fn main() -> std::process::ExitCode {
    civicast::memory::limit_malloc_arenas();
    civicast::cli::main()
}
