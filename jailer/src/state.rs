//! What survives a restart or a reboot, under `state_dir`:
//! - `bans.jsonl`: an append-only journal of bans and unbans (the agent and
//!   the CLI both append, under `flock`), replayed at start to restore
//!   unexpired bans into empty maps and to count repeat offences;
//! - `snapshot.json`: log positions and failure windows, written together
//!   atomically, so lines re-read after a crash are counted exactly once.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Write},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{
    clock::{from_unix_secs, unix_secs},
    error::StateError,
};

const JOURNAL: &str = "bans.jsonl";
const SNAPSHOT: &str = "snapshot.json";
/// Ban records older than this are dropped at compaction: past it, a repeat
/// offender starts from the base bantime again (fail2ban's dbpurgeage is 1d).
const HISTORY: Duration = Duration::from_secs(7 * 86_400);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    Ban {
        /// An address, or a network for prefix bans.
        #[serde(with = "net_text")]
        addr: IpNet,
        /// Jail name, or `manual` for `jailer ban`.
        jail: String,
        /// As in `PortSet`'s display: `110,995` or `all`.
        ports: String,
        /// Unix seconds; `None` is permanent.
        until: Option<u64>,
        /// Unix seconds when the ban was set.
        at: u64,
    },
    Unban {
        #[serde(with = "net_text")]
        addr: IpNet,
        at: u64,
    },
    UnbanAll {
        at: u64,
    },
}

/// Addresses as plain text (`203.0.113.7`), networks in CIDR form.
mod net_text {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(net: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::bpf::show(net))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let text = String::deserialize(d)?;
        crate::config::parse_net(&text)
            .ok_or_else(|| de::Error::custom(format!("`{text}` is not an address or network")))
    }
}

/// The journal replayed.
#[derive(Debug, Default)]
pub struct Replay {
    /// Bans not lifted, by address (the latest ban wins); may be expired.
    pub bans: HashMap<IpNet, Record>,
    /// Bans per (jail, address) within the history window.
    pub counts: HashMap<(String, IpNet), u32>,
    /// The ban records behind `counts`, for compaction.
    history: Vec<Record>,
}

impl Replay {
    /// Bans still in force at `now`.
    pub fn active(&self, now: SystemTime) -> impl Iterator<Item = &Record> {
        let now = unix_secs(now);
        self.bans.values().filter(
            move |r| matches!(r, Record::Ban { until, .. } if until.is_none_or(|u| u > now)),
        )
    }
}

/// The ban journal in `state_dir`.
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(state_dir: &Path) -> Result<Self, StateError> {
        fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
        Ok(Self {
            path: state_dir.join(JOURNAL),
        })
    }

    fn lock(&self) -> Result<Flock<File>, StateError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| StateError::Io {
            path: self.path.clone(),
            source: e.into(),
        })
    }

    /// Appends one record.
    pub fn append(&self, record: &Record) -> Result<(), StateError> {
        let mut line = serde_json::to_string(record).expect("records always serialize");
        line.push('\n');
        let mut file = self.lock()?;
        file.write_all(line.as_bytes()).map_err(io_err(&self.path))
    }

    /// Replays the journal. Unreadable lines (a torn last write after a
    /// crash, or an edit by hand) are reported with their line number and skipped.
    pub fn replay(&self, now: SystemTime) -> Result<Replay, StateError> {
        let mut out = Replay::default();
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        let horizon = unix_secs(now).saturating_sub(HISTORY.as_secs());
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io_err(&self.path))?;
            if line.trim().is_empty() {
                continue;
            }
            let record: Record = match serde_json::from_str(&line) {
                Ok(r) => r,
                Err(e) => {
                    warn!(file = %self.path.display(), line = i + 1, error = %e, "unreadable ban journal line skipped");
                    continue;
                }
            };
            match &record {
                Record::Ban { addr, jail, at, .. } => {
                    if *at >= horizon {
                        *out.counts.entry((jail.clone(), *addr)).or_default() += 1;
                        out.history.push(record.clone());
                    }
                    out.bans.insert(*addr, record);
                }
                Record::Unban { addr, .. } => {
                    out.bans.remove(addr);
                }
                Record::UnbanAll { .. } => out.bans.clear(),
            }
        }
        Ok(out)
    }

    /// Rewrites the journal with only what still matters: bans in force and
    /// ban history within the window. Atomic (temp file + rename).
    pub fn compact(&self, now: SystemTime) -> Result<(), StateError> {
        let _lock = self.lock()?;
        let replay = self.replay(now)?;
        let active: Vec<Record> = replay.active(now).cloned().collect();
        let mut keep: Vec<Record> = Vec::new();
        // Past bans as ban+unban pairs (they count, they do not drop), then
        // the bans in force last so they win.
        for record in &replay.history {
            if let Record::Ban { addr, at, .. } = record
                && !active.contains(record)
            {
                keep.push(record.clone());
                keep.push(Record::Unban {
                    addr: *addr,
                    at: *at,
                });
            }
        }
        keep.extend(active);
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut text = String::new();
        for r in &keep {
            text.push_str(&serde_json::to_string(r).expect("records always serialize"));
            text.push('\n');
        }
        write_atomic(&tmp, &self.path, text.as_bytes())
    }
}

fn write_atomic(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut f = File::create(tmp).map_err(io_err(tmp))?;
    f.write_all(bytes).map_err(io_err(tmp))?;
    f.sync_data().map_err(io_err(tmp))?;
    fs::rename(tmp, path).map_err(io_err(path))
}

/// Where a log file was read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
}

/// Log positions and failure windows, saved together.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// By log path.
    pub positions: BTreeMap<PathBuf, Position>,
    /// By jail: (address, failure times in ms since the epoch).
    pub windows: BTreeMap<String, Vec<(IpAddr, Vec<u64>)>>,
}

impl Snapshot {
    pub fn load(state_dir: &Path) -> Result<Self, StateError> {
        let path = state_dir.join(SNAPSHOT);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => Ok(s),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "unreadable snapshot ignored: logs restart at their end");
                    Ok(Self::default())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
        let bytes = serde_json::to_vec(self).expect("snapshots always serialize");
        write_atomic(
            &state_dir.join("snapshot.json.tmp"),
            &state_dir.join(SNAPSHOT),
            &bytes,
        )
    }
}

/// Wall-clock expiry of a journal ban.
pub fn until_time(until: Option<u64>) -> Option<SystemTime> {
    until.map(from_unix_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(addr: &str, jail: &str, until: Option<u64>, at: u64) -> Record {
        Record::Ban {
            addr: crate::config::parse_net(addr).unwrap(),
            jail: jail.into(),
            ports: "110".into(),
            until,
            at,
        }
    }

    #[test]
    fn replay_restores_active_bans_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path()).unwrap();
        let now = from_unix_secs(1_000_000);
        j.append(&ban("203.0.113.7", "vpopmail", Some(999_000), 990_000))
            .unwrap();
        j.append(&ban("203.0.113.7", "vpopmail", Some(1_003_600), 1_000_000))
            .unwrap();
        j.append(&ban("203.0.113.8", "vpopmail", None, 1_000_000))
            .unwrap();
        j.append(&ban("203.0.113.9", "vpopmail", Some(1_003_600), 1_000_000))
            .unwrap();
        j.append(&Record::Unban {
            addr: crate::config::parse_net("203.0.113.9").unwrap(),
            at: 1_000_001,
        })
        .unwrap();
        // A torn last line after a crash.
        OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap()
            .write_all(b"{\"op\":\"ban\",\"ad")
            .unwrap();

        let r = j.replay(now).unwrap();
        let mut active: Vec<String> = r
            .active(now)
            .map(|r| match r {
                Record::Ban { addr, .. } => crate::bpf::show(addr),
                _ => unreachable!(),
            })
            .collect();
        active.sort();
        assert_eq!(active, ["203.0.113.7", "203.0.113.8"]);
        assert_eq!(
            r.counts[&(
                "vpopmail".into(),
                crate::config::parse_net("203.0.113.7").unwrap()
            )],
            2
        );

        j.compact(now).unwrap();
        let r2 = j.replay(now).unwrap();
        assert_eq!(r2.active(now).count(), 2);
        assert_eq!(
            r2.counts[&(
                "vpopmail".into(),
                crate::config::parse_net("203.0.113.7").unwrap()
            )],
            2,
            "history survives compaction"
        );
        assert_eq!(
            r2.counts[&(
                "vpopmail".into(),
                crate::config::parse_net("203.0.113.9").unwrap()
            )],
            1
        );
    }

    #[test]
    fn unban_all_clears() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path()).unwrap();
        j.append(&ban("203.0.113.7", "manual", None, 1)).unwrap();
        j.append(&Record::UnbanAll { at: 2 }).unwrap();
        assert_eq!(
            j.replay(from_unix_secs(3))
                .unwrap()
                .active(from_unix_secs(3))
                .count(),
            0
        );
    }

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

    #[test]
    fn records_write_addresses_plainly_and_networks_as_cidr() {
        let host = ban("203.0.113.7", "manual", None, 1);
        let text = serde_json::to_string(&host).unwrap();
        assert!(text.contains("\"addr\":\"203.0.113.7\""), "{text}");
        let net = ban("2001:db8:1::/48", "manual", Some(5), 1);
        let text = serde_json::to_string(&net).unwrap();
        assert!(text.contains("\"addr\":\"2001:db8:1::/48\""), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), net);
        assert!(
            serde_json::from_str::<Record>("{\"op\":\"unban\",\"addr\":\"nope\",\"at\":1}")
                .is_err()
        );
    }
}
