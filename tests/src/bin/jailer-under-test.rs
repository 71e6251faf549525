//! The jailer command line, built inside this crate so tests can run it as a
//! separate process (and `kill -9` it): `CARGO_BIN_EXE_jailer-under-test`.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    match jailer::main(jailer::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jailer: {err:#}");
            ExitCode::from(jailer::exit_code(&err))
        }
    }
}
