//! `cargo xtask`: one module per subcommand, each with `Options` and `run()`.

mod bench;
mod build;
mod ebpf;
mod lint;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Set up, build, run and test jailer", long_about = None)]
enum Command {
    /// Install what the build needs (Debian packages, nightly rust-src,
    /// bpf-linker); idempotent, and run by every other subcommand.
    Setup(setup::Options),
    /// Build the agent (with its XDP program) to target/release/jailer.
    Build(build::Options),
    /// Build, then run the agent as root: `cargo xtask run -- run --config FILE`.
    Run(run::Options),
    /// Lint, unit tests, then the root-only kernel tests (one thread).
    Test(test::Options),
    /// cargo fmt --check and clippy -D warnings, the XDP crate included.
    Lint(lint::Options),
    /// Build the XDP objects, then run a root bench (default: `datapath`,
    /// jailer beside the bare reference program).
    Bench(bench::Options),
}

fn main() -> ExitCode {
    let result = match Command::parse() {
        Command::Setup(opts) => setup::run(opts),
        Command::Build(opts) => build::run(opts).map(drop),
        Command::Run(opts) => run::run(opts),
        Command::Test(opts) => test::run(opts),
        Command::Lint(opts) => lint::run(opts),
        Command::Bench(opts) => bench::run(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
