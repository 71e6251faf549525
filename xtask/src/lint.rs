use std::{ffi::OsString, process::Command};

use anyhow::Result;

use crate::setup::{self, sh};

#[derive(clap::Parser)]
pub struct Options {}

pub fn run(_: Options) -> Result<()> {
    let path = setup::ensure()?;
    lint(&path)
}

pub fn lint(path: &OsString) -> Result<()> {
    eprintln!("lint: cargo fmt --check");
    sh(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    eprintln!("lint: clippy (agent, common, xtask, tests)");
    sh(Command::new("cargo")
        .args([
            "clippy",
            "--locked",
            "--all-targets",
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
        .env("PATH", path))?;
    eprintln!("lint: clippy (XDP program, bpfel-unknown-none)");
    sh(Command::new("cargo")
        .args([
            "+nightly",
            "clippy",
            "--locked",
            "-p",
            "jailer-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .args(["--", "-D", "warnings"])
        .env("PATH", path))
}
