use std::process::Command;

use anyhow::{Result, bail};

use crate::{build, setup};

#[derive(clap::Parser)]
pub struct Options {
    /// Arguments for jailer, after `--`: e.g. `-- run --config jailer.example.toml`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Builds, then runs the agent: attaching XDP needs root, so non-root users
/// go through `sudo -E` (as aya-template's runner does).
pub fn run(opts: Options) -> Result<()> {
    build::run(build::Options {})?;
    let binary = build::binary();
    let mut cmd = if setup::is_root() {
        Command::new(&binary)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&binary);
        sudo
    };
    cmd.args(&opts.args);
    eprintln!("run: {cmd:?}");
    let status = cmd.status()?;
    if !status.success() {
        bail!("jailer exited with {status}");
    }
    Ok(())
}
