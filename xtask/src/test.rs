use std::process::Command;

use anyhow::Result;

use crate::{
    lint,
    setup::{self, sh},
};

#[derive(clap::Parser)]
pub struct Options {
    /// Skip fmt and clippy.
    #[arg(long)]
    no_lint: bool,
}

/// Lint, then unit and unprivileged integration tests, then the root-only
/// kernel tests on one thread (they share bpffs, namespaces and links).
pub fn run(opts: Options) -> Result<()> {
    let path = setup::ensure()?;
    if !opts.no_lint {
        lint::lint(&path)?;
    }
    eprintln!("test: unit and unprivileged tests");
    sh(Command::new("cargo")
        .args(["test", "--locked"])
        .env("PATH", &path))?;
    if !setup::is_root() {
        eprintln!(
            "test: not root: the kernel tests below will print SKIP; run `sudo -E cargo xtask test` to run them"
        );
    }
    eprintln!("test: kernel tests (XDP verdicts, netns, maps), one thread");
    sh(Command::new("cargo")
        .args([
            "test",
            "--locked",
            "-p",
            "jailer-tests",
            "--",
            "--test-threads=1",
        ])
        .env("PATH", &path))
}
