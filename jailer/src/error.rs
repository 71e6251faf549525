//! The error of a jailer command, over the typed errors of each area
//! (config, filter, kernel, state, sources), and [`Chain`], which prints an
//! error with its causes on one line. Messages never repeat their source:
//! the chain prints each cause once.

use std::{fmt, path::PathBuf};

use crate::{
    config::ConfigError, filter::FilterError, import::ImportError, kernel::BpfError,
    source::SourceError, state::StateError,
};

/// Any failure of a jailer command; [`Error::exit_code`] maps it for the shell.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Filter(#[from] Box<FilterError>),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Import(#[from] ImportError),
    /// A bad argument on the command line.
    #[error("{0}")]
    Usage(String),
    /// Reading input or writing output of a command.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// 2 for what the user must fix in their input (config, filter,
    /// arguments, a state_dir or bpffs path that is not safe to use), 1 for
    /// failures of the system.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_)
            | Self::Filter(_)
            | Self::Usage(_)
            | Self::State(StateError::Unsafe { .. })
            | Self::Bpf(BpfError::UnsafeBpffs { .. }) => 2,
            // fail2ban's configuration and database are the input here;
            // an unreadable database or a generated config that does not
            // load are failures of the system (or of jailer).
            Self::Import(ImportError::Database { .. } | ImportError::Generated(_)) => 1,
            Self::Import(_) => 2,
            _ => 1,
        }
    }
}

/// An error and its sources, `outer: cause: root cause`, for one-line
/// messages in the CLI and in logs.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_once() {
        let e = Error::from(StateError::Io {
            path: "/var/lib/jailer/bans.jsonl".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
        let text = Chain(&e).to_string();
        assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
        assert!(text.starts_with("/var/lib/jailer/bans.jsonl: "), "{text}");
        assert_eq!(e.exit_code(), 1, "a full disk is the system's");
    }

    #[test]
    fn unsafe_paths_are_the_operators_to_fix() {
        let state = Error::from(StateError::Unsafe {
            path: "/var/lib/jailer".into(),
            problem: "is a symlink".into(),
        });
        let bpffs = Error::from(BpfError::UnsafeBpffs {
            path: "/data".into(),
            problem: "is not empty".into(),
        });
        assert_eq!((state.exit_code(), bpffs.exit_code()), (2, 2));
    }
}
