//! What survives a restart or a reboot, under `state_dir`: the ban journal
//! ([`Journal`]) and the snapshot of log positions and failure windows
//! ([`Snapshot`]). The directory is root's alone: it is checked before use,
//! and files in it are never opened through symlinks.

mod files;
mod journal;
mod snapshot;

use std::{
    fs::{self, DirBuilder, File},
    io::{self, Read, Seek, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

pub use self::{
    journal::{BanEntry, BanLines, JOURNAL, Journal, Record, Replay},
    snapshot::{Position, SNAPSHOT, Snapshot},
};

/// The on-disk state (ban journal, snapshot, state directory).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing a state file failed.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another agent holds the state directory.
    #[error("another jailer agent (pid {pid}) is running with state_dir {}: stop it first", state_dir.display())]
    AgentRunning { state_dir: PathBuf, pid: String },
    /// The state directory could be changed by someone else.
    #[error("{}: {problem}: refusing to use it (it holds the ban journal root replays)", path.display())]
    Unsafe { path: PathBuf, problem: String },
}

/// Creates `state_dir` (0700) if needed and checks it is safe to trust:
/// a real directory (not a symlink), owned by us, writable by no one else.
/// (sshd's StrictModes, for the file that decides what gets banned.)
pub fn prepare_state_dir(state_dir: &Path) -> Result<(), StateError> {
    let io_err = |source| StateError::Io {
        path: state_dir.to_owned(),
        source,
    };
    match fs::symlink_metadata(state_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = state_dir.parent() {
                fs::create_dir_all(parent).map_err(io_err)?;
            }
            DirBuilder::new()
                .mode(0o700)
                .create(state_dir)
                .map_err(io_err)?;
        }
        Err(e) => return Err(io_err(e)),
        Ok(_) => {}
    }
    check_state_dir(state_dir)
}

/// The checks of [`prepare_state_dir`] on an existing directory.
pub fn check_state_dir(state_dir: &Path) -> Result<(), StateError> {
    let unsafe_dir = |problem: String| StateError::Unsafe {
        path: state_dir.to_owned(),
        problem,
    };
    let meta = fs::symlink_metadata(state_dir).map_err(|source| StateError::Io {
        path: state_dir.to_owned(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("is a symlink".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "is owned by uid {}, not by uid {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "is writable by group or others (mode {:o}; chmod 700 it)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The lock file that makes an agent the only one on its state directory.
pub const LOCK: &str = "jailer.lock";

/// Held for an agent's life: a second agent on the same state directory
/// would fight over the links, the journal and the control socket.
#[derive(Debug)]
pub struct AgentLock {
    _file: Flock<File>,
}

impl AgentLock {
    /// Takes the lock, or says which pid holds it. Touches nothing else.
    pub fn acquire(state_dir: &Path) -> Result<Self, StateError> {
        let path = state_dir.join(LOCK);
        let io_err = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let file = files::open_append(&path).map_err(io_err)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.rewind().and_then(|()| file.read_to_string(&mut pid));
                let pid = pid.trim();
                return Err(StateError::AgentRunning {
                    state_dir: state_dir.to_owned(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_owned()
                    },
                });
            }
            Err((_, e)) => return Err(io_err(e.into())),
        };
        // The pid is for the message a second agent prints; a full disk
        // must not stop this one from starting.
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    #[test]
    fn state_dir_is_created_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/state");
        prepare_state_dir(&state).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_state_dir(&state).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        let link = dir.path().join("link");
        symlink(&state, &link).unwrap();
        let e = prepare_state_dir(&link).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(
            prepare_state_dir(&file)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
    }

    #[test]
    fn one_agent_per_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = AgentLock::acquire(dir.path()).unwrap();
        let e = AgentLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("pid {}", std::process::id())),
            "the holder is named: {e}"
        );
        drop(first);
        AgentLock::acquire(dir.path()).unwrap();
    }
}
