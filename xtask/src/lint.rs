use std::{ffi::OsString, process::Command};

use anyhow::Result;

use crate::{ebpf, setup::sh};

#[derive(clap::Parser)]
pub struct Options {}

pub fn run(_: Options) -> Result<()> {
    let env = ebpf::prepare()?;
    lint(&env)
}

/// cargo fmt --check, then clippy -D warnings on every crate (the XDP
/// program for bpfel-unknown-none, with nightly).
pub fn lint(env: &[(&'static str, OsString)]) -> Result<()> {
    eprintln!("lint: cargo fmt --check");
    sh(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    eprintln!("lint: clippy (agent, common, xtask, tests)");
    sh(Command::new("cargo")
        .args(["clippy", "--quiet", "--locked", "--all-targets"])
        .args([
            "-p",
            "jailer",
            "-p",
            "jailer-common",
            "-p",
            "xtask",
            "-p",
            "jailer-tests",
        ])
        .args(["--", "-D", "warnings"])
        .envs(env.iter().map(|(k, v)| (k, v))))?;
    eprintln!("lint: clippy (XDP program and bench reference, bpfel-unknown-none)");
    sh(Command::new("cargo")
        .args([
            "+nightly",
            "clippy",
            "--quiet",
            "--locked",
            "-p",
            "jailer-ebpf",
            "-p",
            "jailer-bench-ebpf",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        // Shares the std build with the object's own build.
        .args(["--target-dir", "target/bpf"])
        .args(["--", "-D", "warnings"])
        .envs(env.iter().map(|(k, v)| (k, v))))
}
