//! The journal read back: [`Replay`] (bans in force, ban history, repeat
//! counts) from the whole file, or the records appended since an offset.

use std::{
    collections::HashMap,
    io,
    time::{Duration, SystemTime},
};

use rustc_hash::FxHashMap;
use tracing::warn;

use super::{
    Journal, Record,
    parser::{Parsed, parse_line, parse_parallel, ports_text},
};
use crate::{
    ban::{Ban, Expiry, PortSet, Target},
    state::{StateError, files},
    time::{from_unix_secs, unix_secs},
};

/// Ban records older than this are dropped at compaction: past it, a repeat
/// offender starts from the base bantime again (fail2ban's dbpurgeage is 1d).
const HISTORY: Duration = Duration::from_secs(7 * 86_400);

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
    pub(super) history: Vec<(Target, BanEntry)>,
    /// Lines skipped as unreadable.
    pub skipped: usize,
    /// Records read.
    pub records: usize,
    /// Bytes read: where records appended later start.
    pub bytes: u64,
    /// The last line has no newline (a crash mid-append): the next append
    /// would run into it.
    pub(super) ends_mid_line: bool,
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
    pub(super) fn port_set(&self, e: &BanEntry) -> PortSet {
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

impl Journal {
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
        out.ends_mid_line = bytes.last().is_some_and(|&b| b != b'\n');
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
}
