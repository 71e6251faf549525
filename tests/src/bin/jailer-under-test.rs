//! The jailer command line, built inside this crate so tests can run it as a
//! separate process (and `kill -9` it): `CARGO_BIN_EXE_jailer-under-test`.

fn main() -> std::process::ExitCode {
    jailer::cli::main()
}
