use std::{ffi::OsString, path::PathBuf, process::Command};

use anyhow::Result;

use crate::setup;

#[derive(clap::Parser)]
pub struct Options {}

/// Builds target/release/jailer (the XDP object is embedded by jailer's
/// build.rs) and returns the PATH that has bpf-linker on it.
pub fn run(_: Options) -> Result<OsString> {
    let path = setup::ensure()?;
    eprintln!("build: cargo build --release --locked -p jailer");
    setup::sh(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "-p", "jailer"])
            .env("PATH", &path),
    )?;
    eprintln!("build: {}", binary().display());
    Ok(path)
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/jailer")
}
