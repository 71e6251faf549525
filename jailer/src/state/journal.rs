//! `bans.jsonl`: an append-only journal of bans and unbans (the agent and
//! the CLI both append, under `flock`), replayed at start to restore
//! unexpired bans into empty maps and to count repeat offences, and readable
//! by an admin (`grep 203.0.113.7 /var/lib/jailer/bans.jsonl`).
//!
//! A record that does not parse exactly is skipped with a warning naming the
//! file and line: never widened to more ports, never made permanent, never
//! written back by compaction.

use std::{
    borrow::Cow,
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
        /// The fleet member that set it; absent for this server's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    Unban {
        addr: Target,
        at: u64,
        /// The fleet member whose ban is lifted; absent for this server's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
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
            ports: ban.ports,
            until: match ban.expiry {
                Expiry::Never => None,
                Expiry::At(t) => Some(unix_secs(t).max(1)),
            },
            at: unix_secs(now),
            monitor: ban.monitor,
            origin: None,
        }
    }

    /// A fleet member's ban, as this server enforces it.
    pub fn remote_ban(target: Target, jail: &str, ban: &Ban, origin: &str, at: u64) -> Self {
        let mut record = Self::ban(target, jail, ban, from_unix_secs(at));
        if let Self::Ban { origin: o, .. } = &mut record {
            *o = Some(origin.to_owned());
        }
        record
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
    /// Jail names.
    jails: Interner,
    /// Port lists by their text, parsed once each (a million bans share a
    /// handful): `port_sets[i]` is the set of `ports.values[i]`, or why that
    /// text is refused.
    ports: Interner,
    port_sets: Vec<Result<PortSet, String>>,
    /// Bans not lifted, by target (the latest ban wins); may be expired.
    /// (Fx hashing: the journal is jailer's own file, not attacker input.)
    pub bans: FxHashMap<Target, BanEntry>,
    /// Fleet members' bans enforced here, by (member, target).
    remote: FxHashMap<(u32, Target), BanEntry>,
    /// Fleet member names.
    origins: Interner,
    /// Ban records within the history window, in journal order: repeat
    /// counts are made from them for the jails that want them
    /// ([`Replay::counts`]), and compaction keeps them.
    history: Vec<(Target, BanEntry)>,
    /// Lines skipped as unreadable.
    pub skipped: usize,
    /// Records read.
    pub records: usize,
    /// Bytes read: where records appended later start.
    pub bytes: u64,
}

/// Strings shared by many records, stored once.
#[derive(Debug, Default)]
struct Interner {
    values: Vec<String>,
    index: HashMap<String, u32>,
}

impl Interner {
    /// The index of `text`, and whether it is new.
    fn intern(&mut self, text: &str) -> (u32, bool) {
        // Runs of records share their jail and ports: check the newest first.
        if let Some(last) = self.values.len().checked_sub(1)
            && self.values[last] == text
        {
            return (last as u32, false);
        }
        if let Some(&i) = self.index.get(text) {
            return (i, false);
        }
        let i = self.values.len() as u32;
        self.values.push(text.to_owned());
        self.index.insert(text.to_owned(), i);
        (i, true)
    }
}

impl Replay {
    /// The jail (or `manual`) that set a ban.
    pub fn jail(&self, e: &BanEntry) -> &str {
        &self.jails.values[e.jail as usize]
    }

    /// An entry's ports (entries exist only for port lists that parsed).
    fn port_set(&self, e: &BanEntry) -> PortSet {
        // Never an `Err` (checked in `apply`); were it one, no port is
        // narrower than any ban, never wider.
        self.port_sets[e.ports as usize]
            .clone()
            .unwrap_or(PortSet::only(&[]))
    }

    /// The ban an entry stands for.
    pub fn ban(&self, e: &BanEntry) -> Ban {
        Ban {
            ports: self.port_set(e),
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

    /// Fleet members' bans still in force at `now`: (member, target, entry).
    pub fn active_remote(
        &self,
        now: SystemTime,
    ) -> impl Iterator<Item = (&str, Target, &BanEntry)> {
        let now = unix_secs(now);
        self.remote
            .iter()
            .filter(move |(_, e)| e.until.is_none_or(|u| u > now))
            .map(|((o, t), e)| (self.origins.values[*o as usize].as_str(), *t, e))
    }

    /// How often `jail` banned `target` within the history window.
    pub fn count(&self, jail: &str, target: Target) -> u32 {
        self.counts(jail).get(&target).copied().unwrap_or(0)
    }

    /// How often `jail` banned each target within the history window.
    /// Counted when asked, for the jails that use them (`bantime_increment`):
    /// a million bans by other jails are not counted at every start.
    pub fn counts(&self, jail: &str) -> FxHashMap<Target, u32> {
        let mut counts = FxHashMap::default();
        if let Some(&j) = self.jails.index.get(jail) {
            for (target, _) in self.history.iter().filter(|(_, e)| e.jail == j) {
                *counts.entry(*target).or_default() += 1;
            }
        }
        counts
    }

    /// How many records compaction would keep of this journal at `now`.
    pub fn compacted_len(&self, now: SystemTime) -> usize {
        let nows = unix_secs(now);
        let past = self
            .history
            .iter()
            .filter(|(t, e)| !(self.bans.get(t) == Some(e) && e.until.is_none_or(|u| u > nows)))
            .count();
        2 * past + self.active(now).count() + self.active_remote(now).count()
    }

    fn record(&self, target: Target, e: &BanEntry, origin: Option<&str>) -> Record {
        Record::Ban {
            addr: target,
            jail: self.jail(e).to_owned(),
            ports: self.port_set(e),
            until: e.until,
            at: e.at,
            monitor: e.monitor,
            origin: origin.map(str::to_owned),
        }
    }

    fn apply(&mut self, record: Parsed<'_>, horizon: u64) -> Result<(), String> {
        match record {
            Parsed::Ban {
                addr,
                jail,
                ports,
                until,
                at,
                monitor,
                origin,
            } => {
                let (ports, new) = self.ports.intern(&ports);
                if new {
                    self.port_sets
                        .push(ports_text(&self.ports.values[ports as usize]));
                }
                self.port_sets[ports as usize].clone().map(drop)?;
                let (jail, _) = self.jails.intern(&jail);
                let entry = BanEntry {
                    jail,
                    ports,
                    until,
                    at,
                    monitor,
                };
                if let Some(origin) = origin {
                    // Another member's: not history of this server's own.
                    let (origin, _) = self.origins.intern(&origin);
                    self.remote.insert((origin, addr), entry);
                    return Ok(());
                }
                if at >= horizon {
                    self.history.push((addr, entry));
                }
                self.bans.insert(addr, entry);
            }
            Parsed::Unban {
                addr, origin: None, ..
            } => {
                self.bans.remove(&addr);
            }
            Parsed::Unban {
                addr,
                origin: Some(origin),
                ..
            } => {
                if let Some(&o) = self.origins.index.get(origin.as_ref()) {
                    self.remote.remove(&(o, addr));
                }
            }
            Parsed::UnbanAll { .. } => {
                self.bans.clear();
                self.remote.clear();
            }
        }
        Ok(())
    }
}

/// A port list as the journal writes it; anything else is refused, never
/// widened.
fn ports_text(text: &str) -> Result<PortSet, String> {
    text.parse()
        .map_err(|e: crate::ban::PortError| format!("ports `{text}`: {e}"))
}

/// A journal line as read: borrowed, so replaying a million bans does not
/// allocate a million strings.
#[derive(Debug)]
enum Parsed<'a> {
    Ban {
        addr: Target,
        jail: Cow<'a, str>,
        ports: Cow<'a, str>,
        until: Option<u64>,
        at: u64,
        monitor: bool,
        origin: Option<Cow<'a, str>>,
    },
    Unban {
        addr: Target,
        at: u64,
        origin: Option<Cow<'a, str>>,
    },
    UnbanAll {
        at: u64,
    },
}

impl Parsed<'_> {
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

impl Parsed<'_> {
    /// The record, its port list parsed.
    fn into_record(self) -> Result<Record, String> {
        Ok(match self {
            Self::Ban {
                addr,
                jail,
                ports,
                until,
                at,
                monitor,
                origin,
            } => Record::Ban {
                addr,
                jail: jail.into_owned(),
                ports: ports_text(&ports)?,
                until,
                at,
                monitor,
                origin: origin.map(Cow::into_owned),
            },
            Self::Unban { addr, at, origin } => Record::Unban {
                addr,
                at,
                origin: origin.map(Cow::into_owned),
            },
            Self::UnbanAll { at } => Record::UnbanAll { at },
        })
    }
}

impl From<Record> for Parsed<'_> {
    fn from(r: Record) -> Self {
        match r {
            Record::Ban {
                addr,
                jail,
                ports,
                until,
                at,
                monitor,
                origin,
            } => Self::Ban {
                addr,
                jail: Cow::Owned(jail),
                ports: Cow::Owned(ports.to_string()),
                until,
                at,
                monitor,
                origin: origin.map(Cow::Owned),
            },
            Record::Unban { addr, at, origin } => Self::Unban {
                addr,
                at,
                origin: origin.map(Cow::Owned),
            },
            Record::UnbanAll { at } => Self::UnbanAll { at },
        }
    }
}

/// Reads the exact form [`Journal::append`] writes, without serde (a
/// million records after a reboot); `None` for any other form, which then
/// goes through serde and its full checks.
fn parse_canonical(line: &[u8]) -> Option<Parsed<'_>> {
    let mut c = Cursor(line);
    c.eat(b"{\"op\":\"")?;
    let record = if c.eat(b"ban\",\"addr\":\"").is_some() {
        let addr = c.string()?.parse().ok()?;
        c.eat(b",\"jail\":\"")?;
        let jail = c.string()?;
        c.eat(b",\"ports\":\"")?;
        let ports = c.string()?;
        c.eat(b",\"until\":")?;
        let until = if c.eat(b"null").is_some() {
            None
        } else {
            Some(c.number()?)
        };
        c.eat(b",\"at\":")?;
        let at = c.number()?;
        let monitor = c.eat(b",\"monitor\":true").is_some();
        let origin = c.origin()?;
        Parsed::Ban {
            addr,
            jail: Cow::Borrowed(jail),
            ports: Cow::Borrowed(ports),
            until,
            at,
            monitor,
            origin,
        }
    } else if c.eat(b"unban\",\"addr\":\"").is_some() {
        let addr = c.string()?.parse().ok()?;
        c.eat(b",\"at\":")?;
        let at = c.number()?;
        let origin = c.origin()?;
        Parsed::Unban { addr, at, origin }
    } else {
        c.eat(b"unban_all\",\"at\":")?;
        Parsed::UnbanAll { at: c.number()? }
    };
    c.eat(b"}")?;
    c.0.is_empty().then_some(record)
}

/// Whether `s` needs no JSON escape.
fn plain(s: &str) -> bool {
    !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

/// A ban record's fields, borrowed: one line is written without building
/// a [`Record`] (a million bans by hand, no string each).
struct BanLine<'a> {
    addr: &'a Target,
    jail: &'a str,
    ports: &'a PortSet,
    until: Option<u64>,
    at: u64,
    monitor: bool,
    origin: Option<&'a str>,
}

impl BanLine<'_> {
    /// Appends the canonical line: what serde writes for the record,
    /// without serde. Names that need JSON escapes go through serde.
    fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let Self {
            addr,
            jail,
            ports,
            until,
            at,
            monitor,
            origin,
        } = self;
        if !plain(jail) || !origin.is_none_or(plain) {
            let record = Record::Ban {
                addr: **addr,
                jail: (*jail).to_owned(),
                ports: **ports,
                until: *until,
                at: *at,
                monitor: *monitor,
                origin: origin.map(str::to_owned),
            };
            let _ = serde_json::to_writer(&mut *out, &record);
            out.push(b'\n');
            return;
        }
        // Writes into a Vec cannot fail.
        let _ = write!(
            out,
            "{{\"op\":\"ban\",\"addr\":\"{addr}\",\"jail\":\"{jail}\",\"ports\":\"{ports}\",\"until\":"
        );
        let _ = match until {
            Some(u) => write!(out, "{u}"),
            None => write!(out, "null"),
        };
        let _ = write!(out, ",\"at\":{at}");
        if *monitor {
            let _ = write!(out, ",\"monitor\":true");
        }
        if let Some(origin) = origin {
            let _ = write!(out, ",\"origin\":\"{origin}\"");
        }
        let _ = writeln!(out, "}}");
    }
}

/// Appends `record` as one canonical journal line: what serde writes for
/// it, without serde (a million bans by hand). Jail names that need JSON
/// escapes go through serde.
fn write_record(record: &Record, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writes into a Vec cannot fail.
    let _ = match record {
        Record::Ban {
            addr,
            jail,
            ports,
            until,
            at,
            monitor,
            origin,
        } => {
            BanLine {
                addr,
                jail,
                ports,
                until: *until,
                at: *at,
                monitor: *monitor,
                origin: origin.as_deref(),
            }
            .write(out);
            Ok(())
        }
        Record::Unban {
            addr,
            at,
            origin: None,
        } => writeln!(out, "{{\"op\":\"unban\",\"addr\":\"{addr}\",\"at\":{at}}}"),
        Record::Unban {
            addr,
            at,
            origin: Some(origin),
        } if plain(origin) => writeln!(
            out,
            "{{\"op\":\"unban\",\"addr\":\"{addr}\",\"at\":{at},\"origin\":\"{origin}\"}}"
        ),
        Record::Unban { .. } => serde_json::to_writer(&mut *out, record)
            .map_err(io::Error::other)
            .and_then(|()| writeln!(out)),
        Record::UnbanAll { at } => writeln!(out, "{{\"op\":\"unban_all\",\"at\":{at}}}"),
    };
}

/// The journal lines of one ban set by hand on many targets
/// (`jailer ban --file`), made while the maps are written; the first `n`
/// of them are appended once it is known how many fitted.
#[derive(Debug, Default)]
pub struct BanLines {
    text: Vec<u8>,
    /// Where each line ends in `text`.
    ends: Vec<usize>,
}

impl BanLines {
    /// The lines [`Record::ban`] would make for each of `targets`.
    pub fn new(targets: &[Target], jail: &str, ban: &Ban, now: SystemTime) -> Self {
        let until = match ban.expiry {
            Expiry::Never => None,
            Expiry::At(t) => Some(unix_secs(t).max(1)),
        };
        let mut lines = Self {
            text: Vec::with_capacity(targets.len() * 100),
            ends: Vec::with_capacity(targets.len()),
        };
        for addr in targets {
            BanLine {
                addr,
                jail,
                ports: &ban.ports,
                until,
                at: unix_secs(now),
                monitor: ban.monitor,
                origin: None,
            }
            .write(&mut lines.text);
            lines.ends.push(lines.text.len());
        }
        lines
    }

    /// Lines `from..to` (0-based, `to` excluded; clamped to the lines).
    pub fn range(&self, from: usize, to: usize) -> &[u8] {
        let end_of = |n: usize| match n.min(self.ends.len()) {
            0 => 0,
            n => self.ends[n - 1],
        };
        &self.text[end_of(from)..end_of(to.max(from))]
    }
}

/// A position in a canonical journal line.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn eat(&mut self, prefix: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(prefix)?;
        Some(())
    }

    /// A string's content up to its closing quote; escapes and control
    /// bytes are left to serde.
    fn string(&mut self) -> Option<&'a str> {
        let end = self.0.iter().position(|&b| b == b'"')?;
        let (text, rest) = self.0.split_at(end);
        if text.iter().any(|&b| b == b'\\' || b < 0x20) {
            return None;
        }
        self.0 = &rest[1..];
        std::str::from_utf8(text).ok()
    }

    /// An optional `,"origin":"..."`: `Some(None)` when absent, `None`
    /// when malformed.
    fn origin(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.eat(b",\"origin\":\"").is_none() {
            return Some(None);
        }
        Some(Some(Cow::Borrowed(self.string()?)))
    }

    fn number(&mut self) -> Option<u64> {
        let end = self
            .0
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(self.0.len());
        let (digits, rest) = self.0.split_at(end);
        // JSON numbers have no leading zeros; serde judges those.
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        self.0 = rest;
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

/// A journal line: a record, or why it was refused.
fn parse_line(line: &[u8], now: u64) -> Option<Result<Parsed<'_>, String>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let parsed = match parse_canonical(line) {
        Some(p) => Ok(p),
        None => serde_json::from_slice::<Record>(line)
            .map(Parsed::from)
            .map_err(|e| e.to_string()),
    };
    Some(parsed.and_then(|p| p.check(now).map(|()| p)))
}

/// Parses every line, in chunks split at line ends, one thread per core;
/// returns (0-based line number, record) in file order.
fn parse_parallel(bytes: &[u8], now: u64) -> Vec<Vec<(usize, Result<Parsed<'_>, String>)>> {
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

/// The journal open for appending, and its lock, held together.
struct Locked {
    file: fs::File,
    _lock: Flock<fs::File>,
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

    fn lock(&self) -> Result<Locked, StateError> {
        self.lock_with(FlockArg::LockExclusive)
    }

    /// The journal, opened for appending under its lock. The lock is a file
    /// of its own: compaction replaces the journal's inode, and a lock on
    /// the old one would not keep a writer off the new one.
    fn lock_with(&self, how: FlockArg) -> Result<Locked, StateError> {
        let lock_path = self.path.with_extension("jsonl.lock");
        let lock = files::open_append(&lock_path).map_err(|source| StateError::Io {
            path: lock_path.clone(),
            source,
        })?;
        let lock = Flock::lock(lock, how).map_err(|(_, e)| StateError::Io {
            path: lock_path,
            source: e.into(),
        })?;
        let file = files::open_append(&self.path).map_err(self.io_err())?;
        Ok(Locked { file, _lock: lock })
    }

    /// Appends records in one write; with `sync`, on disk before returning.
    pub fn append(&self, records: &[Record], sync: bool) -> Result<(), StateError> {
        self.write(records, sync, FlockArg::LockExclusive)
    }

    /// [`Journal::append`], or `Ok(false)` at once when someone holds the
    /// journal (a compaction): the agent's loop never waits on it.
    pub fn try_append(&self, records: &[Record]) -> Result<bool, StateError> {
        match self.write(records, false, FlockArg::LockExclusiveNonblock) {
            Ok(()) => Ok(true),
            Err(StateError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EWOULDBLOCK) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Appends lines made by [`BanLines`] in one write; with `sync`, on
    /// disk before returning.
    pub fn append_lines(&self, lines: &[u8], sync: bool) -> Result<(), StateError> {
        self.write_text(lines, sync, FlockArg::LockExclusive)
    }

    fn write(&self, records: &[Record], sync: bool, how: FlockArg) -> Result<(), StateError> {
        let mut text = Vec::with_capacity(records.len() * 96);
        for r in records {
            write_record(r, &mut text);
        }
        self.write_text(&text, sync, how)
    }

    fn write_text(&self, text: &[u8], sync: bool, how: FlockArg) -> Result<(), StateError> {
        if text.is_empty() {
            return Ok(());
        }
        let mut locked = self.lock_with(how)?;
        locked.file.write_all(text).map_err(self.io_err())?;
        if sync {
            locked.file.sync_data().map_err(self.io_err())?;
        }
        Ok(())
    }

    /// Flushes appended records to disk.
    pub fn sync(&self) -> Result<(), StateError> {
        self.lock()?.file.sync_data().map_err(self.io_err())
    }

    /// The journal's length now: where [`Journal::read_from`] starts.
    pub fn size(&self) -> Result<u64, StateError> {
        match fs::symlink_metadata(&self.path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(self.io_err()(e)),
        }
    }

    /// Records appended since `offset` (complete lines only), and the offset
    /// after them: how a running agent learns of `jailer ban`/`unban`.
    pub fn read_from(
        &self,
        offset: u64,
        now: SystemTime,
    ) -> Result<(Vec<Record>, u64), StateError> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let mut file = match files::open_read(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(self.io_err()(e)),
        };
        let len = file.metadata().map_err(self.io_err())?.len();
        // Shorter than where we were: rewritten meanwhile; read it all.
        let offset = if len < offset { 0 } else { offset };
        file.seek(SeekFrom::Start(offset)).map_err(self.io_err())?;
        let mut bytes = Vec::new();
        file.take(len - offset)
            .read_to_end(&mut bytes)
            .map_err(self.io_err())?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let nows = unix_secs(now);
        let mut records = Vec::new();
        for line in bytes[..complete].split(|&b| b == b'\n') {
            match parse_line(line, nows).map(|p| p.and_then(Parsed::into_record)) {
                Some(Ok(r)) => records.push(r),
                Some(Err(why)) => {
                    warn!(file = %self.path.display(), error = %why, "unreadable ban journal record skipped")
                }
                None => {}
            }
        }
        Ok((records, offset + complete as u64))
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
        out.history.reserve(records);
        out.bytes = bytes.len() as u64;
        for (i, record) in parsed.into_iter().flatten() {
            match record.and_then(|r| out.apply(r, horizon)) {
                Ok(()) => out.records += 1,
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
    /// Returns the replay it made, so the caller need not read it twice, and
    /// the size of the journal it wrote (records appended later start there).
    pub fn compact(&self, now: SystemTime) -> Result<(Replay, u64), StateError> {
        let _lock = self.lock()?;
        let replay = self.replay(now)?;
        let size = self.rewrite(&replay, now)?;
        Ok((replay, size))
    }

    /// [`Journal::compact`] when it pays: when compaction would keep at most
    /// half the records, or some lines were unreadable. Otherwise (a journal
    /// of bans in force, as after a reboot) it is only read: rewriting a
    /// million bans in force would delay restoring them by a third of a
    /// second, for nothing.
    pub fn compact_if_worth_it(&self, now: SystemTime) -> Result<(Replay, u64), StateError> {
        let _lock = self.lock()?;
        let replay = self.replay(now)?;
        if replay.skipped == 0 && replay.compacted_len(now) * 2 > replay.records {
            let size = replay.bytes;
            return Ok((replay, size));
        }
        let size = self.rewrite(&replay, now)?;
        Ok((replay, size))
    }

    /// Writes what `replay` keeps in place of the journal; its new size.
    fn rewrite(&self, replay: &Replay, now: SystemTime) -> Result<u64, StateError> {
        let nows = unix_secs(now);
        let in_force = |target: &Target, e: &BanEntry| {
            replay.bans.get(target) == Some(e) && e.until.is_none_or(|u| u > nows)
        };
        let mut text = Vec::new();
        let mut push = |r: &Record| write_record(r, &mut text);
        // Past bans as ban+unban pairs (they count, they do not drop), then
        // the bans in force last so they win.
        for (target, e) in &replay.history {
            if !in_force(target, e) {
                push(&replay.record(*target, e, None));
                push(&Record::Unban {
                    addr: *target,
                    at: e.at,
                    origin: None,
                });
            }
        }
        for (target, e) in replay.active(now) {
            push(&replay.record(target, e, None));
        }
        for (origin, target, e) in replay.active_remote(now) {
            push(&replay.record(target, e, Some(origin)));
        }
        files::write_atomic(&self.path, &text).map_err(self.io_err())?;
        Ok(text.len() as u64)
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
            ports: PortSet::only(&[110]),
            until,
            at,
            monitor: false,
            origin: None,
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
                    origin: None,
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
    fn ban_lines_are_the_records_lines_and_cut_at_a_line() {
        let now = from_unix_secs(1_000_000);
        let ban = Ban::new(
            PortSet::only(&[110, 995]),
            Expiry::At(from_unix_secs(1_003_600)),
        );
        let targets = [
            target("203.0.113.7"),
            target("2001:db8::/64"),
            target("198.51.100.0/24"),
        ];
        let lines = BanLines::new(&targets, "manual", &ban, now);
        let mut want = Vec::new();
        for t in &targets {
            write_record(&Record::ban(*t, "manual", &ban, now), &mut want);
        }
        assert_eq!(lines.range(0, 3), &want[..]);
        assert_eq!(lines.range(0, 9), &want[..]);
        assert_eq!(lines.range(0, 0), b"");
        assert_eq!(lines.range(2, 1), b"");
        let count = |text: &[u8]| text.iter().filter(|&&b| b == b'\n').count();
        let first = lines.range(0, 1);
        assert!(first.ends_with(b"}\n") && count(first) == 1);
        assert_eq!(lines.range(1, 3), &want[first.len()..]);
        // A journal appended with them replays to the same bans.
        let (_dir, j) = journal();
        j.append_lines(lines.range(0, 1), true).unwrap();
        j.append_lines(lines.range(2, 3), true).unwrap();
        let r = j.replay(now).unwrap();
        let mut active: Vec<String> = r.active(now).map(|(t, _)| t.to_string()).collect();
        active.sort();
        assert_eq!(active, ["198.51.100.0/24", "203.0.113.7"]);
        assert_eq!(r.skipped, 0);
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
        assert_eq!(active[0].1.ports, PortSet::only(&[110, 995]));
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

    #[test]
    fn the_fast_reader_agrees_with_serde_and_leaves_the_rest_to_it() {
        let records = [
            ban("203.0.113.7", "vpopmail", Some(1_000_600), 1_000_000),
            ban("2001:db8:1::/48", "manual", None, 1_000_000),
            Record::Ban {
                addr: target("198.51.100.9"),
                jail: "manual".into(),
                ports: PortSet::All,
                until: None,
                at: 7,
                monitor: true,
                origin: None,
            },
            Record::remote_ban(
                target("192.0.2.0/24"),
                "postfix",
                &Ban::new(PortSet::only(&[25, 110]), Expiry::Never),
                "mx2",
                8,
            ),
            Record::Unban {
                addr: target("203.0.113.7"),
                at: 9,
                origin: None,
            },
            Record::Unban {
                addr: target("192.0.2.0/24"),
                at: 9,
                origin: Some("mx2".into()),
            },
            Record::UnbanAll { at: 10 },
        ];
        // A jail name JSON must escape: still serde's form, read by serde.
        let odd = ban("203.0.113.7", "a\"b\\c", None, 1);
        let mut line = Vec::new();
        write_record(&odd, &mut line);
        assert_eq!(serde_json::from_slice::<Record>(&line).unwrap(), odd);
        for r in &records {
            let line = serde_json::to_string(r).unwrap();
            let mut ours = Vec::new();
            write_record(r, &mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                format!("{line}\n"),
                "the writer is serde's form"
            );
            let fast = parse_canonical(line.as_bytes()).unwrap_or_else(|| panic!("{line}"));
            let slow = Parsed::from(serde_json::from_str::<Record>(&line).unwrap());
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{line}");
        }
        // Other spellings of valid records go to serde, which reads them.
        for other in [
            r#"{"at":1,"op":"unban_all"}"#,
            r#"{ "op":"unban_all","at":1}"#,
            r#"{"op":"ban","addr":"203.0.113.7","jail":"j\u0041","ports":"110","until":null,"at":1}"#,
        ] {
            assert!(parse_canonical(other.as_bytes()).is_none(), "{other}");
            assert!(
                matches!(parse_line(other.as_bytes(), 100), Some(Ok(_))),
                "{other}"
            );
        }
        // Canonical shape, bad values: refused by both.
        for bad in [
            r#"{"op":"ban","addr":"203.0.113.7","jail":"j","ports":"110","until":01,"at":1}"#,
            r#"{"op":"ban","addr":"nope","jail":"j","ports":"110","until":null,"at":1}"#,
            r#"{"op":"unban_all","at":1}x"#,
        ] {
            assert!(
                matches!(parse_line(bad.as_bytes(), 100), Some(Err(_))),
                "{bad}"
            );
        }
    }
}
