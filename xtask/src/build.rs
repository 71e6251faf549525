use std::{ffi::OsString, path::PathBuf, process::Command};

use anyhow::Result;

use crate::{ebpf, setup};

#[derive(clap::Parser)]
pub struct Options {}

/// Builds target/release/jailer (with its XDP program embedded) and returns
/// the environment later cargo calls of this run use.
pub fn run(_: Options) -> Result<Vec<(&'static str, OsString)>> {
    let env = ebpf::prepare()?;
    eprintln!("build: cargo build --release --locked -p jailer");
    setup::sh(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "-p", "jailer"])
            .envs(env.iter().map(|(k, v)| (k, v))),
    )?;
    eprintln!("build: {}", binary().display());
    Ok(env)
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/jailer")
}
