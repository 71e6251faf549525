fn main() -> std::process::ExitCode {
    jailer::cli::main()
}
