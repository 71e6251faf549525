use std::process::ExitCode;

use clap::Parser;
use jailer::cli::{Cli, LogFormat};
use tracing_subscriber::{EnvFilter, fmt};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match jailer::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jailer: {err:#}");
            ExitCode::from(jailer::exit_code(&err))
        }
    }
}
