use std::process::Command;

use anyhow::Result;

use crate::{ebpf, setup::sh};

#[derive(clap::Parser)]
pub struct Options {
    /// Which bench of jailer-tests (root): `datapath` or `bulk`.
    #[arg(default_value = "datapath")]
    bench: String,
    /// Arguments for the bench, after `--` (`datapath`: `a`..`f` runs parts).
    #[arg(last = true)]
    args: Vec<String>,
}

/// Builds both XDP objects once, then runs one of the root benches with
/// them (`JAILER_EBPF_OBJECT`, `JAILER_BENCH_OBJECT`).
pub fn run(opts: Options) -> Result<()> {
    let env = ebpf::prepare()?;
    eprintln!("bench: cargo bench -p jailer-tests --bench {}", opts.bench);
    sh(Command::new("cargo")
        .args(["bench", "--locked", "-p", "jailer-tests", "--bench"])
        .arg(&opts.bench)
        .arg("--")
        .args(&opts.args)
        .envs(env.iter().map(|(k, v)| (k, v))))
}
