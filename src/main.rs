fn main() -> std::process::ExitCode {
    civicast::inventory::limit_malloc_arenas();
    civicast::cli::main()
}
