//! `jailer completions` and `jailer man`: documentation from the CLI itself.

use clap::CommandFactory as _;

use super::Cli;
use crate::error::Error;

pub(super) fn completions(shell: clap_complete::Shell) -> Result<(), Error> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "jailer", &mut out);
    super::print(&String::from_utf8_lossy(&out))
}

pub(super) fn man() -> Result<(), Error> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .section("8")
        .render(&mut out)
        .map_err(|source| Error::Io {
            path: "man page".into(),
            source,
        })?;
    super::print(&String::from_utf8_lossy(&out))
}
