fn main() -> std::process::ExitCode {
    civicast::cli::main()
}
