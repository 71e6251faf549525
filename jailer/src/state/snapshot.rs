//! `snapshot.json`: log positions and failure windows, written together
//! atomically, so lines re-read after a crash are counted exactly once.

use std::{
    collections::BTreeMap,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{StateError, files};

pub const SNAPSHOT: &str = "snapshot.json";

/// Where a log file was read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
}

/// Log positions and failure windows, saved together.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// By log path.
    pub positions: BTreeMap<PathBuf, Position>,
    /// By jail: (address, failure times in ms since the epoch).
    pub windows: BTreeMap<String, Vec<(IpAddr, Vec<u64>)>>,
    /// By jail: the cursor of the last journal entry handled
    /// (`backend = "systemd"`).
    #[serde(default)]
    pub cursors: BTreeMap<String, String>,
}

impl Snapshot {
    /// The saved snapshot; a damaged one is reported and ignored (logs then
    /// restart at their end, windows empty): never a reason not to start.
    pub fn load(state_dir: &Path) -> Result<Self, StateError> {
        let path = state_dir.join(SNAPSHOT);
        match files::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => Ok(s),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "unreadable snapshot ignored: logs restart at their end");
                    Ok(Self::default())
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        let path = state_dir.join(SNAPSHOT);
        let bytes = serde_json::to_vec(self).map_err(|e| StateError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        files::write_atomic(&path, &bytes).map_err(|source| StateError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn snapshot_roundtrip_and_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Snapshot::default();
        s.positions.insert(
            "/var/log/mail.log".into(),
            Position {
                dev: 1,
                ino: 2,
                offset: 3,
            },
        );
        s.windows.insert(
            "vpopmail".into(),
            vec![("203.0.113.7".parse().unwrap(), vec![1, 2])],
        );
        s.save(dir.path()).unwrap();
        assert_eq!(Snapshot::load(dir.path()).unwrap(), s);
        fs::write(dir.path().join(SNAPSHOT), b"{not json").unwrap();
        assert_eq!(Snapshot::load(dir.path()).unwrap(), Snapshot::default());
    }
}
