//! What survives a restart or a reboot, under `state_dir`:
//! - `bans.jsonl`: an append-only journal of bans and unbans (the agent and
//!   the CLI both append, under `flock`), replayed at start to restore
//!   unexpired bans into empty maps and to count repeat offences;
//! - `snapshot.json`: log positions and failure windows, written together
//!   atomically, so lines re-read after a crash are counted exactly once.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File, OpenOptions},
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{clock::unix_secs, error::StateError};

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

/// One ban from the journal, with its jail and ports interned in the
/// [`Replay`] (a million of these are restored after a reboot: no strings each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanEntry {
    jail: u32,
    ports: u32,
    /// Unix seconds; `None` is permanent.
    pub until: Option<u64>,
    /// Unix seconds when the ban was set.
    pub at: u64,
}

/// The journal replayed.
#[derive(Debug, Default)]
pub struct Replay {
    names: Vec<String>,
    index: HashMap<String, u32>,
    /// Bans not lifted, by target (the latest ban wins); may be expired.
    /// (Fx hashing: the journal is jailer's own file, not attacker input.)
    pub bans: FxHashMap<IpNet, BanEntry>,
    /// Bans per (jail, target) within the history window.
    counts: FxHashMap<(u32, IpNet), u32>,
    /// The ban records behind `counts`, for compaction.
    history: Vec<(IpNet, BanEntry)>,
}

impl Replay {
    fn intern(&mut self, text: &str) -> u32 {
        // Runs of records share their jail and ports: check the newest first.
        if let Some(last) = self
            .names
            .len()
            .checked_sub(1)
            .filter(|&i| self.names[i] == text)
        {
            return last as u32;
        }
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(text.to_owned());
        self.index.insert(text.to_owned(), i);
        i
    }

    /// The jail (or `manual`) that set a ban.
    pub fn jail(&self, e: &BanEntry) -> &str {
        &self.names[e.jail as usize]
    }

    /// A ban's ports as written (`110,995` or `all`).
    pub fn ports(&self, e: &BanEntry) -> &str {
        &self.names[e.ports as usize]
    }

    /// Bans still in force at `now`.
    pub fn active(&self, now: SystemTime) -> impl Iterator<Item = (IpNet, &BanEntry)> {
        let now = unix_secs(now);
        self.bans
            .iter()
            .filter(move |(_, e)| e.until.is_none_or(|u| u > now))
            .map(|(n, e)| (*n, e))
    }

    /// How often `jail` banned `target` within the history window.
    pub fn count(&self, jail: &str, target: IpNet) -> u32 {
        self.index
            .get(jail)
            .and_then(|&j| self.counts.get(&(j, target)))
            .copied()
            .unwrap_or(0)
    }

    /// (jail, target, bans) for every counted pair.
    pub fn counts(&self) -> impl Iterator<Item = (&str, IpNet, u32)> {
        self.counts
            .iter()
            .map(|((j, n), c)| (self.names[*j as usize].as_str(), *n, *c))
    }

    fn record(&self, addr: IpNet, e: &BanEntry) -> Record {
        Record::Ban {
            addr,
            jail: self.jail(e).to_owned(),
            ports: self.ports(e).to_owned(),
            until: e.until,
            at: e.at,
        }
    }
}

/// A journal line, parsed.
enum Parsed<'a> {
    Ban {
        addr: IpNet,
        jail: std::borrow::Cow<'a, str>,
        ports: std::borrow::Cow<'a, str>,
        until: Option<u64>,
        at: u64,
    },
    Unban(IpNet),
    UnbanAll,
    Bad(String),
}

fn parse_line(line: &[u8]) -> Option<Parsed<'_>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let raw: RawRecord<'_> = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return Some(Parsed::Bad(e.to_string())),
    };
    let addr = raw
        .addr
        .as_deref()
        .map(|a| (a, crate::config::parse_net(a)));
    Some(match (raw.op, addr) {
        ("ban", Some((_, Some(addr)))) => Parsed::Ban {
            addr,
            jail: raw.jail.unwrap_or(std::borrow::Cow::Borrowed("manual")),
            ports: raw.ports.unwrap_or(std::borrow::Cow::Borrowed("all")),
            until: raw.until,
            at: raw.at,
        },
        ("unban", Some((_, Some(addr)))) => Parsed::Unban(addr),
        ("unban_all", _) => Parsed::UnbanAll,
        (_, Some((text, None))) => Parsed::Bad(format!("`{text}` is not an address or network")),
        (op, _) => Parsed::Bad(format!("unknown record `{op}`")),
    })
}

/// Parses every line, in chunks split at line ends, one thread per core;
/// returns (0-based line number, record) in file order.
fn parse_parallel(bytes: &[u8]) -> Vec<Vec<(usize, Parsed<'_>)>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let mut chunks = Vec::new();
    let mut start = 0;
    for k in 1..=threads {
        let mut end = if k == threads {
            bytes.len()
        } else {
            (bytes.len() * k / threads).max(start)
        };
        if end < bytes.len() {
            end = memchr::memchr(b'\n', &bytes[end..]).map_or(bytes.len(), |i| end + i + 1);
        }
        if end > start {
            chunks.push(&bytes[start..end]);
        }
        start = end;
    }
    let mut first_line = Vec::with_capacity(chunks.len());
    let mut lines = 0;
    for c in &chunks {
        first_line.push(lines);
        lines += memchr::memchr_iter(b'\n', c).count();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .zip(first_line)
            .map(|(chunk, first)| {
                scope.spawn(move || {
                    chunk
                        .split(|&b| b == b'\n')
                        .enumerate()
                        .filter_map(|(i, line)| parse_line(line).map(|p| (first + i, p)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("journal parser panicked"))
            .collect()
    })
}

/// A journal line as read: borrowed, so replaying a million bans does not
/// allocate a million strings.
#[derive(Deserialize)]
struct RawRecord<'a> {
    op: &'a str,
    #[serde(borrow)]
    addr: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    jail: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    ports: Option<std::borrow::Cow<'a, str>>,
    until: Option<u64>,
    at: u64,
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
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        let horizon = unix_secs(now).saturating_sub(HISTORY.as_secs());
        // Parsing is the cost (a million lines after a long uptime): parse
        // chunks on all cores, then apply the records in file order.
        let parsed = parse_parallel(&bytes);
        let records: usize = parsed.iter().map(Vec::len).sum();
        out.bans.reserve(records);
        out.counts.reserve(records);
        out.history.reserve(records);
        for (i, record) in parsed.into_iter().flatten() {
            let bad = |why: &dyn std::fmt::Display| {
                warn!(file = %self.path.display(), line = i + 1, error = %why, "unreadable ban journal line skipped");
            };
            match record {
                Parsed::Ban {
                    addr,
                    jail,
                    ports,
                    until,
                    at,
                } => {
                    let jail = out.intern(&jail);
                    let ports = out.intern(&ports);
                    let entry = BanEntry {
                        jail,
                        ports,
                        until,
                        at,
                    };
                    if at >= horizon {
                        *out.counts.entry((jail, addr)).or_default() += 1;
                        out.history.push((addr, entry));
                    }
                    out.bans.insert(addr, entry);
                }
                Parsed::Unban(addr) => {
                    out.bans.remove(&addr);
                }
                Parsed::UnbanAll => out.bans.clear(),
                Parsed::Bad(why) => bad(&why),
            }
        }
        Ok(out)
    }

    /// Rewrites the journal with only what still matters: bans in force and
    /// ban history within the window. Atomic (temp file + rename). Returns
    /// the replay it made, so the caller need not read the journal twice.
    pub fn compact(&self, now: SystemTime) -> Result<Replay, StateError> {
        let _lock = self.lock()?;
        let replay = self.replay(now)?;
        let nows = unix_secs(now);
        let in_force = |addr: &IpNet, e: &BanEntry| {
            replay.bans.get(addr) == Some(e) && e.until.is_none_or(|u| u > nows)
        };
        let mut text = String::new();
        let mut push = |r: &Record| {
            text.push_str(&serde_json::to_string(r).expect("records always serialize"));
            text.push('\n');
        };
        // Past bans as ban+unban pairs (they count, they do not drop), then
        // the bans in force last so they win.
        for (addr, e) in &replay.history {
            if !in_force(addr, e) {
                push(&replay.record(*addr, e));
                push(&Record::Unban {
                    addr: *addr,
                    at: e.at,
                });
            }
        }
        for (addr, e) in replay.active(now) {
            push(&replay.record(addr, e));
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        write_atomic(&tmp, &self.path, text.as_bytes())?;
        Ok(replay)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_secs;

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
            .map(|(addr, _)| crate::bpf::show(&addr))
            .collect();
        active.sort();
        assert_eq!(active, ["203.0.113.7", "203.0.113.8"]);
        assert_eq!(
            r.count("vpopmail", crate::config::parse_net("203.0.113.7").unwrap()),
            2
        );

        j.compact(now).unwrap();
        let r2 = j.replay(now).unwrap();
        assert_eq!(r2.active(now).count(), 2);
        assert_eq!(
            r2.count("vpopmail", crate::config::parse_net("203.0.113.7").unwrap()),
            2,
            "history survives compaction"
        );
        assert_eq!(
            r2.count("vpopmail", crate::config::parse_net("203.0.113.9").unwrap()),
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
