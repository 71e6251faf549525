//! `bans.jsonl`: an append-only journal of bans and unbans (the agent and
//! the CLI both append, under `flock`), replayed at start to restore
//! unexpired bans into empty maps and to count repeat offences, and readable
//! by an admin (`grep 203.0.113.7 /var/lib/jailer/bans.jsonl`).
//!
//! A record that does not parse exactly is skipped with a warning naming the
//! file and line: never widened to more ports, never made permanent, never
//! written back by compaction.

use std::{
    collections::HashMap,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use nix::fcntl::{Flock, FlockArg};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer, Serialize};
use tracing::warn;

use super::{StateError, files};
use crate::{
    ban::{Ban, Expiry, PortSet, Target},
    time::{MAX_DURATION, from_unix_secs, unix_secs},
};

pub const JOURNAL: &str = "bans.jsonl";
/// Ban records older than this are dropped at compaction: past it, a repeat
/// offender starts from the base bantime again (fail2ban's dbpurgeage is 1d).
const HISTORY: Duration = Duration::from_secs(7 * 86_400);
/// Clock skew tolerated on a record's own time.
const SKEW: u64 = 86_400;

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    Ban {
        /// An address, or a network for prefix bans.
        addr: Target,
        /// Jail name, or `manual` for `jailer ban`.
        jail: String,
        /// `110,995` or `all`.
        ports: PortSet,
        /// Unix seconds; `null` is permanent. Required: a record that does
        /// not say is refused, not taken as permanent.
        #[serde(deserialize_with = "present")]
        until: Option<u64>,
        /// Unix seconds when the ban was set.
        at: u64,
        /// Counting only (`ban --monitor`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        monitor: bool,
    },
    Unban {
        addr: Target,
        at: u64,
    },
    UnbanAll {
        at: u64,
    },
}

/// `Option` that must be present (`null` or a value), never defaulted.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)
}

impl Record {
    /// A ban record for `ban` on `target` set at `now` by `jail`.
    pub fn ban(target: Target, jail: &str, ban: &Ban, now: SystemTime) -> Self {
        Self::Ban {
            addr: target,
            jail: jail.to_owned(),
            ports: ban.ports.clone(),
            until: match ban.expiry {
                Expiry::Never => None,
                Expiry::At(t) => Some(unix_secs(t).max(1)),
            },
            at: unix_secs(now),
            monitor: ban.monitor,
        }
    }

    /// The values a parsed record must hold to be believed.
    fn check(&self, now: u64) -> Result<(), String> {
        let at = match self {
            Self::Ban { at, .. } | Self::Unban { at, .. } | Self::UnbanAll { at } => *at,
        };
        if at > now + SKEW {
            return Err(format!("`at` {at} is in the future"));
        }
        if let Self::Ban {
            until: Some(until),
            at,
            ..
        } = self
            && (*until <= *at || *until > at + MAX_DURATION.as_secs() + SKEW)
        {
            return Err(format!(
                "`until` {until} is not within 10 years after `at` {at}"
            ));
        }
        Ok(())
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
    pub monitor: bool,
}

/// The journal replayed.
#[derive(Debug, Default)]
pub struct Replay {
    jails: Interner<String>,
    port_sets: Interner<PortSet>,
    /// Bans not lifted, by target (the latest ban wins); may be expired.
    /// (Fx hashing: the journal is jailer's own file, not attacker input.)
    pub bans: FxHashMap<Target, BanEntry>,
    /// Bans per (jail, target) within the history window.
    counts: FxHashMap<(u32, Target), u32>,
    /// The ban records behind `counts`, for compaction.
    history: Vec<(Target, BanEntry)>,
    /// Lines skipped as unreadable.
    pub skipped: usize,
}

/// Values shared by many records, stored once.
#[derive(Debug)]
struct Interner<T> {
    values: Vec<T>,
    index: HashMap<T, u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> Interner<T> {
    fn intern(&mut self, value: &T) -> u32 {
        // Runs of records share their jail and ports: check the newest first.
        if let Some(last) = self.values.len().checked_sub(1)
            && self.values[last] == *value
        {
            return last as u32;
        }
        if let Some(&i) = self.index.get(value) {
            return i;
        }
        let i = self.values.len() as u32;
        self.values.push(value.clone());
        self.index.insert(value.clone(), i);
        i
    }
}

impl Replay {
    /// The jail (or `manual`) that set a ban.
    pub fn jail(&self, e: &BanEntry) -> &str {
        &self.jails.values[e.jail as usize]
    }

    /// The ban an entry stands for.
    pub fn ban(&self, e: &BanEntry) -> Ban {
        Ban {
            ports: self.port_sets.values[e.ports as usize].clone(),
            expiry: e
                .until
                .map_or(Expiry::Never, |u| Expiry::At(from_unix_secs(u))),
            monitor: e.monitor,
        }
    }

    /// Bans still in force at `now`.
    pub fn active(&self, now: SystemTime) -> impl Iterator<Item = (Target, &BanEntry)> {
        let now = unix_secs(now);
        self.bans
            .iter()
            .filter(move |(_, e)| e.until.is_none_or(|u| u > now))
            .map(|(n, e)| (*n, e))
    }

    /// How often `jail` banned `target` within the history window.
    pub fn count(&self, jail: &str, target: Target) -> u32 {
        self.jails
            .index
            .get(jail)
            .and_then(|&j| self.counts.get(&(j, target)))
            .copied()
            .unwrap_or(0)
    }

    /// (jail, target, bans) for every counted pair.
    pub fn counts(&self) -> impl Iterator<Item = (&str, Target, u32)> {
        self.counts
            .iter()
            .map(|((j, n), c)| (self.jails.values[*j as usize].as_str(), *n, *c))
    }

    fn record(&self, target: Target, e: &BanEntry) -> Record {
        Record::Ban {
            addr: target,
            jail: self.jail(e).to_owned(),
            ports: self.port_sets.values[e.ports as usize].clone(),
            until: e.until,
            at: e.at,
            monitor: e.monitor,
        }
    }

    fn apply(&mut self, record: Record, horizon: u64) {
        match record {
            Record::Ban {
                addr,
                jail,
                ports,
                until,
                at,
                monitor,
            } => {
                let jail = self.jails.intern(&jail);
                let ports = self.port_sets.intern(&ports);
                let entry = BanEntry {
                    jail,
                    ports,
                    until,
                    at,
                    monitor,
                };
                if at >= horizon {
                    *self.counts.entry((jail, addr)).or_default() += 1;
                    self.history.push((addr, entry));
                }
                self.bans.insert(addr, entry);
            }
            Record::Unban { addr, .. } => {
                self.bans.remove(&addr);
            }
            Record::UnbanAll { .. } => self.bans.clear(),
        }
    }
}

/// A journal line: a record, or why it was refused.
fn parse_line(line: &[u8], now: u64) -> Option<Result<Record, String>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(
        serde_json::from_slice::<Record>(line)
            .map_err(|e| e.to_string())
            .and_then(|r| r.check(now).map(|()| r)),
    )
}

/// Parses every line, in chunks split at line ends, one thread per core;
/// returns (0-based line number, record) in file order.
fn parse_parallel(bytes: &[u8], now: u64) -> Vec<Vec<(usize, Result<Record, String>)>> {
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
                        .filter_map(|(i, line)| parse_line(line, now).map(|p| (first + i, p)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            // A parser thread cannot panic on input (serde returns errors);
            // if it did, the journal is unreadable as a whole.
            .map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// The ban journal in `state_dir`.
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal of `state_dir` (checked and created by
    /// [`super::prepare_state_dir`]).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(JOURNAL),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_err(&self) -> impl FnOnce(io::Error) -> StateError + '_ {
        move |source| StateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> Result<Flock<fs::File>, StateError> {
        let file = files::open_append(&self.path).map_err(self.io_err())?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| StateError::Io {
            path: self.path.clone(),
            source: e.into(),
        })
    }

    /// Appends records in one write; with `sync`, on disk before returning.
    pub fn append(&self, records: &[Record], sync: bool) -> Result<(), StateError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut text = Vec::with_capacity(records.len() * 96);
        for r in records {
            // Records hold only strings, numbers and bools: they always serialize.
            serde_json::to_writer(&mut text, r).map_err(|e| self.io_err()(e.into()))?;
            text.push(b'\n');
        }
        let mut file = self.lock()?;
        file.write_all(&text).map_err(self.io_err())?;
        if sync {
            file.sync_data().map_err(self.io_err())?;
        }
        Ok(())
    }

    /// Flushes appended records to disk.
    pub fn sync(&self) -> Result<(), StateError> {
        self.lock()?.sync_data().map_err(self.io_err())
    }

    /// Replays the journal. Unreadable or implausible lines (a torn last
    /// write after a crash, an edit by hand, damage) are reported with their
    /// line number and skipped.
    pub fn replay(&self, now: SystemTime) -> Result<Replay, StateError> {
        let mut out = Replay::default();
        let bytes = match files::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(self.io_err()(e)),
        };
        let nows = unix_secs(now);
        let horizon = nows.saturating_sub(HISTORY.as_secs());
        // Parsing is the cost (a million lines after a long uptime): parse
        // chunks on all cores, then apply the records in file order.
        let parsed = parse_parallel(&bytes, nows);
        let records: usize = parsed.iter().map(Vec::len).sum();
        out.bans.reserve(records);
        out.counts.reserve(records);
        out.history.reserve(records);
        for (i, record) in parsed.into_iter().flatten() {
            match record {
                Ok(record) => out.apply(record, horizon),
                Err(why) => {
                    out.skipped += 1;
                    warn!(file = %self.path.display(), line = i + 1, error = %why, "unreadable ban journal record skipped");
                }
            }
        }
        Ok(out)
    }

    /// Rewrites the journal with only what still matters and parsed: bans in
    /// force and ban history within the window. Atomic (temp file + rename).
    /// Returns the replay it made, so the caller need not read it twice.
    pub fn compact(&self, now: SystemTime) -> Result<Replay, StateError> {
        let _lock = self.lock()?;
        let replay = self.replay(now)?;
        let nows = unix_secs(now);
        let in_force = |target: &Target, e: &BanEntry| {
            replay.bans.get(target) == Some(e) && e.until.is_none_or(|u| u > nows)
        };
        let mut text = Vec::new();
        let mut push = |r: &Record| {
            if serde_json::to_writer(&mut text, r).is_ok() {
                text.push(b'\n');
            }
        };
        // Past bans as ban+unban pairs (they count, they do not drop), then
        // the bans in force last so they win.
        for (target, e) in &replay.history {
            if !in_force(target, e) {
                push(&replay.record(*target, e));
                push(&Record::Unban {
                    addr: *target,
                    at: e.at,
                });
            }
        }
        for (target, e) in replay.active(now) {
            push(&replay.record(target, e));
        }
        files::write_atomic(&self.path, &text).map_err(self.io_err())?;
        Ok(replay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> Target {
        text.parse().unwrap()
    }

    fn ban(addr: &str, jail: &str, until: Option<u64>, at: u64) -> Record {
        Record::Ban {
            addr: target(addr),
            jail: jail.into(),
            ports: PortSet::Only(vec![110]),
            until,
            at,
            monitor: false,
        }
    }

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        (dir, j)
    }

    #[test]
    fn replay_restores_active_bans_and_counts() {
        let (dir, j) = journal();
        let now = from_unix_secs(1_000_000);
        j.append(
            &[
                ban("203.0.113.7", "vpopmail", Some(999_000), 990_000),
                ban("203.0.113.7", "vpopmail", Some(1_003_600), 1_000_000),
                ban("203.0.113.8", "vpopmail", None, 1_000_000),
                ban("203.0.113.9", "vpopmail", Some(1_003_600), 1_000_000),
                Record::Unban {
                    addr: target("203.0.113.9"),
                    at: 1_000_001,
                },
            ],
            true,
        )
        .unwrap();
        // A torn last line after a crash.
        files::open_append(&dir.path().join(JOURNAL))
            .unwrap()
            .write_all(b"{\"op\":\"ban\",\"ad")
            .unwrap();

        let r = j.replay(now).unwrap();
        let mut active: Vec<String> = r.active(now).map(|(t, _)| t.to_string()).collect();
        active.sort();
        assert_eq!(active, ["203.0.113.7", "203.0.113.8"]);
        assert_eq!(r.count("vpopmail", target("203.0.113.7")), 2);
        assert_eq!(r.skipped, 1);

        j.compact(now).unwrap();
        let r2 = j.replay(now).unwrap();
        assert_eq!(r2.active(now).count(), 2);
        assert_eq!(r2.skipped, 0, "compaction writes only what parsed");
        assert_eq!(
            r2.count("vpopmail", target("203.0.113.7")),
            2,
            "history survives compaction"
        );
        assert_eq!(r2.count("vpopmail", target("203.0.113.9")), 1);
    }

    #[test]
    fn unban_all_clears() {
        let (_dir, j) = journal();
        j.append(
            &[
                ban("203.0.113.7", "manual", None, 1),
                Record::UnbanAll { at: 2 },
            ],
            false,
        )
        .unwrap();
        let now = from_unix_secs(3);
        assert_eq!(j.replay(now).unwrap().active(now).count(), 0);
    }

    #[test]
    fn damaged_records_are_skipped_never_widened() {
        let (dir, j) = journal();
        let now = 1_000_000u64;
        let lines = [
            // damaged, unknown or missing ports
            r#"{"op":"ban","addr":"203.0.113.1","jail":"j","ports":"1l0","until":1000600,"at":1000000}"#,
            r#"{"op":"ban","addr":"203.0.113.2","jail":"j","ports":"110;995","until":1000600,"at":1000000}"#,
            r#"{"op":"ban","addr":"203.0.113.3","jail":"j","until":1000600,"at":1000000}"#,
            // missing until: not permanent by default
            r#"{"op":"ban","addr":"203.0.113.4","jail":"j","ports":"110","at":1000000}"#,
            r#"{"op":"ban","addr":"0.0.0.0/0","at":1}"#,
            // absurd times
            r#"{"op":"ban","addr":"203.0.113.5","jail":"j","ports":"110","until":18446744073709551615,"at":1000000}"#,
            r#"{"op":"ban","addr":"203.0.113.6","jail":"j","ports":"110","until":5,"at":1000000}"#,
            r#"{"op":"ban","addr":"203.0.113.7","jail":"j","ports":"110","until":null,"at":99999999999}"#,
            // unknown field, unknown op, bad address
            r#"{"op":"ban","addr":"203.0.113.8","jail":"j","ports":"110","until":null,"at":1000000,"x":1}"#,
            r#"{"op":"ban_all","at":1000000}"#,
            r#"{"op":"unban","addr":"nope","at":1000000}"#,
            // the one good record
            r#"{"op":"ban","addr":"203.0.113.9","jail":"j","ports":"110,995","until":1000600,"at":1000000}"#,
        ];
        fs::write(dir.path().join(JOURNAL), lines.join("\n") + "\n").unwrap();
        let r = j.replay(from_unix_secs(now)).unwrap();
        assert_eq!(r.skipped, lines.len() - 1);
        let active: Vec<(Target, Ban)> = r
            .active(from_unix_secs(now))
            .map(|(t, e)| (t, r.ban(e)))
            .collect();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].0, target("203.0.113.9"));
        assert_eq!(active[0].1.ports, PortSet::Only(vec![110, 995]));
        assert_eq!(active[0].1.expiry, Expiry::At(from_unix_secs(1_000_600)));
    }

    #[test]
    fn records_write_addresses_plainly_and_networks_as_cidr() {
        let host = ban("203.0.113.7", "manual", None, 1);
        let text = serde_json::to_string(&host).unwrap();
        assert_eq!(
            text,
            r#"{"op":"ban","addr":"203.0.113.7","jail":"manual","ports":"110","until":null,"at":1}"#
        );
        let net = ban("2001:db8:1::/48", "manual", Some(5), 1);
        let text = serde_json::to_string(&net).unwrap();
        assert!(text.contains("\"addr\":\"2001:db8:1::/48\""), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), net);
    }
}
