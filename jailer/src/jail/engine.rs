//! The jail engine: failures in, ban decisions out, written to the ban
//! table; journal records queued for the caller; the expiry queue that lifts
//! bans when due.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tracing::{debug, info, warn};

use super::{known::KnownBans, policy::bantime_for, window::FailureWindow};
use crate::{
    ban::{Ban, Expiry, Target},
    config::Jail,
    filter::{Found, Host, Matcher, Outcome},
    kernel::{BanTable, BpfError},
    source::SourceId,
    state::{Record, Replay},
    time::{format_duration, from_unix_secs},
};

/// A jail's failure windows: (address, failure times in ms since the epoch).
pub type WindowEntries = Vec<(IpAddr, Vec<u64>)>;

/// Counters per jail (fail2ban-client status words).
#[derive(Debug, Default, Clone, Serialize)]
pub struct JailStats {
    pub lines: u64,
    pub total_failed: u64,
    pub ignored_lines: u64,
    pub ignored_addresses: u64,
    /// Failures from an address whose ban was already in force: counted as
    /// failures, never as new bans.
    pub already_banned: u64,
    /// Failures that named a host name, not an address: counted, never
    /// resolved, never banned.
    pub unresolved: u64,
    pub total_banned: u64,
    pub ban_errors: u64,
}

struct JailState {
    jail: Jail,
    window: FailureWindow,
    /// Previous bans per target (for bantime_increment).
    ban_counts: HashMap<Target, u32>,
    stats: JailStats,
}

impl JailState {
    fn new(jail: Jail) -> Self {
        Self {
            window: FailureWindow::new(jail.maxretry, jail.findtime, jail.max_tracked),
            jail,
            ban_counts: HashMap::new(),
            stats: JailStats::default(),
        }
    }
}

/// A ban the engine just set.
#[derive(Debug, Clone, PartialEq)]
pub struct BanEvent {
    pub jail: String,
    /// The address, or its prefix with `ban_prefix_v6`.
    pub target: Target,
    pub ban: Ban,
}

/// Jails, the ban table they write to, and the expiry queue.
pub struct Engine<T: BanTable> {
    jails: Vec<JailState>,
    table: T,
    /// Bans in force as far as this engine knows.
    known: KnownBans,
    /// (wall-clock expiry, target) of known bans.
    expiry: BTreeSet<(SystemTime, Target)>,
    /// Journal records of bans made since the caller last took them.
    pending: Vec<Record>,
    /// This host's own addresses (for jails with `ignoreself`).
    own: HashSet<IpAddr>,
    /// Each jail's matcher, per source (fail2ban filters keep state across
    /// a stream's lines), indexed by jail.
    matchers: HashMap<SourceId, Vec<Option<Matcher>>>,
    unbans: u64,
}

impl<T: BanTable> Engine<T> {
    pub fn new(jails: Vec<Jail>, table: T) -> Self {
        Self {
            jails: jails.into_iter().map(JailState::new).collect(),
            table,
            known: KnownBans::default(),
            expiry: BTreeSet::new(),
            pending: Vec::new(),
            own: HashSet::new(),
            matchers: HashMap::new(),
            unbans: 0,
        }
    }

    /// Applies a new set of jails (reload): jails that keep their name keep
    /// their failure windows, counters and ban history; new ones start empty;
    /// removed ones are dropped. Bans in the table are not touched.
    pub fn reconfigure(&mut self, jails: Vec<Jail>) {
        let mut old: HashMap<String, JailState> = self
            .jails
            .drain(..)
            .map(|j| (j.jail.name.clone(), j))
            .collect();
        for jail in jails {
            let state = match old.remove(&jail.name) {
                Some(mut state) => {
                    if state.jail.maxretry != jail.maxretry
                        || state.jail.findtime != jail.findtime
                        || state.jail.max_tracked != jail.max_tracked
                    {
                        let mut window =
                            FailureWindow::new(jail.maxretry, jail.findtime, jail.max_tracked);
                        window.import(state.window.export());
                        state.window = window;
                    }
                    state.jail = jail;
                    state
                }
                None => JailState::new(jail),
            };
            self.jails.push(state);
        }
        // Jail indexes changed: matchers start afresh.
        self.matchers.clear();
    }

    /// This host's addresses, never banned by a jail with `ignoreself`.
    pub fn set_own_addresses(&mut self, own: HashSet<IpAddr>) {
        self.own = own;
    }

    /// Jail names, in order.
    pub fn jail_names(&self) -> Vec<String> {
        self.jails.iter().map(|j| j.jail.name.clone()).collect()
    }

    /// Per jail: (name, counters, addresses with failures in their window,
    /// targets it banned that are in force at `now`).
    pub fn jail_report(&self, now: SystemTime) -> Vec<(String, JailStats, usize, Vec<Target>)> {
        let mut by_jail: HashMap<&str, Vec<Target>> = HashMap::new();
        for (target, jails) in self.known.in_force(now) {
            for jail in jails {
                by_jail.entry(jail).or_default().push(target);
            }
        }
        self.jails
            .iter()
            .map(|j| {
                let mut banned = by_jail.remove(j.jail.name.as_str()).unwrap_or_default();
                banned.sort_unstable();
                (j.jail.name.clone(), j.stats.clone(), j.window.len(), banned)
            })
            .collect()
    }

    /// Bans in force at `now`, all jails and manual ones, as the engine
    /// knows them.
    pub fn bans_in_force(&self, now: SystemTime) -> usize {
        self.known.count_in_force(now)
    }

    /// Takes in bans and unbans that others wrote to the journal (`jailer
    /// ban`/`unban`, while this engine runs): they count for "already
    /// banned", status and expiry like its own.
    pub fn apply_records(&mut self, records: &[Record]) {
        for record in records {
            match record {
                Record::Ban {
                    addr,
                    jail,
                    ports,
                    until,
                    monitor,
                    ..
                } => {
                    let ban = Ban {
                        ports: ports.clone(),
                        expiry: until.map_or(Expiry::Never, |u| Expiry::At(from_unix_secs(u))),
                        monitor: *monitor,
                    };
                    if let Expiry::At(t) = ban.expiry {
                        self.expiry.insert((t, *addr));
                    }
                    self.known.remember(*addr, &ban, jail);
                }
                Record::Unban { addr, .. } => {
                    self.known.forget(*addr);
                }
                Record::UnbanAll { .. } => self.known.clear(),
            }
        }
    }

    /// Bans lifted by expiry since start.
    pub fn unbans(&self) -> u64 {
        self.unbans
    }

    pub fn table(&self) -> &T {
        &self.table
    }

    pub fn table_mut(&mut self) -> &mut T {
        &mut self.table
    }

    /// Journal records of the bans made since the last call.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.pending)
    }

    /// Takes in the journal: repeat-offence counts, the bans in force (for
    /// expiry and status), and writes to the table those it lacks (after a
    /// reboot the maps are empty). Expired bans are skipped. Returns how many
    /// were written.
    pub fn restore(&mut self, replay: &Replay, now: SystemTime) -> Result<usize, BpfError> {
        for (jail, target, n) in replay.counts() {
            if let Some(j) = self.jails.iter_mut().find(|j| j.jail.name == jail) {
                j.ban_counts.insert(target, n);
            }
        }
        // After a reboot the maps are empty: write everything in batches.
        // Otherwise only what is missing (an entry present may carry newer
        // drop counters or a manual change).
        let present: HashSet<Target> = if self.table.is_empty()? {
            HashSet::new()
        } else {
            self.table
                .list()?
                .into_iter()
                .filter(|l| l.ban.expiry.is_active(now))
                .map(|l| l.target)
                .collect()
        };
        let mut expiry = Vec::new();
        let mut missing = Vec::new();
        for (target, entry) in replay.active(now) {
            let ban = replay.ban(entry);
            if let Expiry::At(t) = ban.expiry {
                expiry.push((t, target));
            }
            self.known.remember(target, &ban, replay.jail(entry));
            if !present.contains(&target) {
                missing.push((target, ban));
            }
        }
        // Bulk-built (sorted once) rather than a million single inserts.
        expiry.extend(std::mem::take(&mut self.expiry));
        self.expiry = expiry.into_iter().collect();
        let restored = self.table.insert_many(&missing)?;
        if restored < missing.len() {
            warn!(
                restored,
                wanted = missing.len(),
                "ban map full: not every ban could be restored"
            );
        }
        Ok(restored)
    }

    /// Failure windows, for the snapshot.
    pub fn export_windows(&self) -> BTreeMap<String, WindowEntries> {
        self.jails
            .iter()
            .map(|j| (j.jail.name.clone(), j.window.export()))
            .collect()
    }

    pub fn import_windows(&mut self, mut windows: BTreeMap<String, WindowEntries>) {
        for j in &mut self.jails {
            if let Some(w) = windows.remove(&j.jail.name) {
                j.window.import(w);
            }
        }
    }

    /// Stats per jail: (name, counters, addresses tracked).
    pub fn stats(&self) -> Vec<(String, JailStats, usize)> {
        self.jails
            .iter()
            .map(|j| (j.jail.name.clone(), j.stats.clone(), j.window.len()))
            .collect()
    }

    /// Windows evicted to bound memory, all jails.
    pub fn evictions(&self) -> u64 {
        self.jails.iter().map(|j| j.window.evictions()).sum()
    }

    /// Whether a ban covering `probe` is in force on `target`: first what
    /// this engine knows (no syscall for the unknown), then the table itself
    /// (lifted by hand meanwhile, or by an admin with bpftool).
    fn in_force(&mut self, target: Target, probe: &Ban, now: SystemTime) -> Result<bool, BpfError> {
        if !self.known.covers(target, probe, now) {
            return Ok(false);
        }
        match self.table.get(target)? {
            Some(b) if b.expiry.is_active(now) && b.covers_ports_of(probe) => Ok(true),
            _ => {
                self.known.forget(target);
                Ok(false)
            }
        }
    }

    /// Runs one line of `source` through the jails at indexes `jails`.
    /// `time` is the line's time when the source knows it (journal).
    pub fn handle_line(
        &mut self,
        source: &SourceId,
        jails: &[usize],
        line: &str,
        time: Option<SystemTime>,
        now: SystemTime,
    ) -> Vec<BanEvent> {
        if !self.matchers.contains_key(source) {
            self.matchers.insert(source.clone(), Vec::new());
        }
        let mut events = Vec::new();
        for &i in jails {
            let Some(js) = self.jails.get_mut(i) else {
                continue;
            };
            js.stats.lines += 1;
            let Some(matchers) = self.matchers.get_mut(source) else {
                continue;
            };
            if matchers.len() <= i {
                matchers.resize_with(i + 1, || None);
            }
            let matcher = matchers[i].get_or_insert_with(|| js.jail.filter.matcher());
            match matcher.process(line, time, now) {
                Outcome::Miss => {}
                Outcome::Ignored => js.stats.ignored_lines += 1,
                Outcome::Failures(found) => {
                    for f in found {
                        self.failure(i, f, now, &mut events);
                    }
                }
            }
        }
        events
    }

    /// Counts one failure for jail `i`, and bans when it makes maxretry.
    fn failure(&mut self, i: usize, found: Found, now: SystemTime, events: &mut Vec<BanEvent>) {
        let js = &mut self.jails[i];
        let (ip, target) = match found.host {
            Host::Ip(ip) => (ip, Target::widened(ip, js.jail.ban_prefix_v6)),
            Host::Subnet { addr, prefix } => match ipnet::IpNet::new(addr, prefix) {
                Ok(net) => (addr, Target::network(net)),
                Err(_) => return,
            },
            Host::Name(name) => {
                // No DNS, ever: the name is counted and said, never banned.
                js.stats.unresolved += 1;
                debug!(host = %name, jail = js.jail.name, "failure from a host name (not resolved, not banned)");
                return;
            }
        };
        if js.jail.ignores(ip) || (js.jail.ignoreself && self.own.contains(&ip)) {
            js.stats.ignored_addresses += 1;
            debug!(%ip, jail = js.jail.name, "failure from an ignored address");
            return;
        }
        js.stats.total_failed += 1;
        // A date in the future is a clock or parse problem: count it now.
        let at = found.time.filter(|t| *t <= now).unwrap_or(now);
        let probe = Ban::new(js.jail.ports.clone(), Expiry::Never);
        match self.in_force(target, &probe, now) {
            Ok(true) => {
                self.jails[i].stats.already_banned += 1;
                debug!(%target, jail = self.jails[i].jail.name, "already banned");
                return;
            }
            Ok(false) => {}
            Err(e) => warn!(%target, error = %crate::error::Chain(&e), "reading a ban failed"),
        }
        let js = &mut self.jails[i];
        debug!(%ip, jail = js.jail.name, "failure");
        if js.window.record(target.addr(), at, now) {
            match self.ban(i, target, now) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {}
                Err(e) => {
                    self.jails[i].stats.ban_errors += 1;
                    warn!(%target, jail = self.jails[i].jail.name, error = %crate::error::Chain(&e), "ban failed");
                }
            }
        }
    }

    /// Bans `target` for jail `i`; `None` when a ban in force already covers
    /// it (set by hand, or by another jail), which is then not counted again.
    fn ban(
        &mut self,
        i: usize,
        target: Target,
        now: SystemTime,
    ) -> Result<Option<BanEvent>, BpfError> {
        let js = &self.jails[i];
        let previous = js.ban_counts.get(&target).copied().unwrap_or(0);
        let mut ban = Ban::new(
            js.jail.ports.clone(),
            Expiry::after(now, bantime_for(&js.jail, previous)),
        );
        let name = js.jail.name.clone();
        if let Some(old) = self.table.get(target)?
            && old.expiry.is_active(now)
        {
            if old.covers(&ban) {
                debug!(%target, jail = name, "already banned");
                self.jails[i].stats.already_banned += 1;
                self.known.remember(target, &old, &name);
                return Ok(None);
            }
            ban = old.merge(&ban);
        }
        self.table.insert(target, &ban)?;
        let js = &mut self.jails[i];
        js.stats.total_banned += 1;
        *js.ban_counts.entry(target).or_default() += 1;
        if let Expiry::At(t) = ban.expiry {
            self.expiry.insert((t, target));
        }
        let bantime = ban
            .expiry
            .remaining(now)
            .map_or("permanent".to_owned(), format_duration);
        info!(%target, jail = name, %bantime, ports = %ban.ports, "banned");
        self.pending.push(Record::ban(target, &name, &ban, now));
        self.known.remember(target, &ban, &name);
        Ok(Some(BanEvent {
            jail: name,
            target,
            ban,
        }))
    }

    /// When the next known ban is due to lapse.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// Removes bans that have lapsed (the kernel already ignores them; this
    /// frees the map slot and logs the unban). Returns the targets lifted.
    pub fn expire(&mut self, now: SystemTime) -> Vec<Target> {
        let mut lifted = Vec::new();
        while let Some(&(t, target)) = self.expiry.first() {
            if t > now {
                break;
            }
            self.expiry.pop_first();
            // The table may say otherwise: extended, made permanent, or
            // lifted by hand meanwhile. Lapsed by half a second is lapsed.
            let grace = now + Duration::from_millis(500);
            match self.table.get(target) {
                Ok(Some(b)) if !b.expiry.is_active(grace) => match self.table.remove(target) {
                    Ok(_) => {
                        info!(%target, "unbanned (bantime over)");
                        self.unbans += 1;
                        self.known.forget(target);
                        lifted.push(target);
                    }
                    Err(e) => {
                        warn!(%target, error = %crate::error::Chain(&e), "removing an expired ban failed")
                    }
                },
                Ok(_) => {}
                Err(e) => warn!(%target, error = %crate::error::Chain(&e), "reading a ban failed"),
            }
        }
        lifted
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::*;
    use crate::{
        ban::PortSet,
        filter::{Filter, FilterContext},
        kernel::MemBanTable,
        state::Journal,
        time::{from_unix_secs, unix_secs},
    };

    fn log() -> SourceId {
        SourceId::File("/var/log/mail.log".into())
    }

    fn jail(maxretry: u32, ports: &[&str]) -> Jail {
        let ports = PortSet::parse(ports).unwrap();
        let ctx = FilterContext {
            base: Path::new("."),
            fail2ban_dir: Path::new("/etc/fail2ban"),
            ports: Some(&ports),
            journal: false,
        };
        Jail {
            name: "vpopmail".into(),
            filter: Arc::new(Filter::load("vpopmail", &ctx).unwrap()),
            logpaths: vec!["/var/log/mail.log".into()],
            unmatched_globs: Vec::new(),
            backend: crate::config::Backend::Auto,
            journalmatch: String::new(),
            journalpath: None,
            ports,
            maxretry,
            findtime: Duration::from_secs(600),
            bantime: Some(Duration::from_secs(3600)),
            ignoreip: vec!["192.0.2.0/24".parse().unwrap()],
            ignoreself: true,
            ban_prefix_v6: 128,
            max_tracked: 1000,
            bantime_increment: true,
            bantime_factor: 1.0,
            bantime_max: Some(Duration::from_secs(4 * 3600)),
        }
    }

    fn target(text: &str) -> Target {
        text.parse().unwrap()
    }

    fn line(ip: &str) -> String {
        format!("vpopmail[1]: vchkpw-pop3: password fail bob@example.com:{ip}")
    }

    fn lapse(e: &Engine<MemBanTable>, t: Target) {
        e.table()
            .edit(t, |b| b.expiry = Expiry::At(SystemTime::UNIX_EPOCH));
    }

    fn left(e: &Engine<MemBanTable>, t: Target) -> Duration {
        e.table().bans()[&t]
            .expiry
            .remaining(SystemTime::now())
            .unwrap()
    }

    #[test]
    fn bans_after_maxretry_and_skips_ignoreip() {
        let mut e = Engine::new(vec![jail(3, &["pop3"])], MemBanTable::default());
        let now = SystemTime::now();
        for _ in 0..2 {
            assert!(
                e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now)
                    .is_empty()
            );
        }
        let ev = e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].target, target("203.0.113.7"));
        let b = &e.table().bans()[&ev[0].target];
        assert!(b.ports.contains(110) && !b.ports.contains(25));
        assert_eq!(e.take_records().len(), 1, "one journal record per ban");
        for _ in 0..10 {
            assert!(
                e.handle_line(&log(), &[0], &line("192.0.2.5"), None, now)
                    .is_empty()
            );
        }
        let (_, stats, _) = &e.stats()[0];
        assert_eq!(stats.total_banned, 1);
        assert_eq!(stats.ignored_addresses, 10);
        assert_eq!(stats.total_failed, 3);
    }

    #[test]
    fn own_addresses_are_never_banned_with_ignoreself() {
        let mut j = jail(1, &["pop3"]);
        let mut e = Engine::new(vec![j.clone()], MemBanTable::default());
        e.set_own_addresses(["198.51.100.1".parse().unwrap()].into());
        assert!(
            e.handle_line(&log(), &[0], &line("198.51.100.1"), None, SystemTime::now())
                .is_empty()
        );
        assert!(e.table().bans().is_empty());
        j.ignoreself = false;
        e.reconfigure(vec![j]);
        assert_eq!(
            e.handle_line(&log(), &[0], &line("198.51.100.1"), None, SystemTime::now())
                .len(),
            1
        );
    }

    #[test]
    fn failures_while_banned_neither_reban_nor_extend_nor_escalate() {
        let mut e = Engine::new(vec![jail(1, &["pop3"])], MemBanTable::default());
        let ip = target("203.0.113.7");
        let now = SystemTime::now();
        assert_eq!(
            e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now)
                .len(),
            1
        );
        let expiry = e.table().bans()[&ip].expiry;
        e.take_records();
        for _ in 0..50 {
            assert!(
                e.handle_line(
                    &log(),
                    &[0],
                    &line("203.0.113.7"),
                    None,
                    now + Duration::from_secs(5)
                )
                .is_empty()
            );
        }
        assert_eq!(e.table().bans()[&ip].expiry, expiry, "not extended");
        assert!(e.take_records().is_empty(), "nothing journaled");
        let (_, stats, _) = &e.stats()[0];
        assert_eq!(
            (stats.total_banned, stats.already_banned, stats.total_failed),
            (1, 50, 51)
        );
        // Lifted by hand: the next failure counts and bans again, escalated once.
        let mut t = e.table().clone();
        t.remove(ip).unwrap();
        let ev = e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now);
        assert_eq!(ev.len(), 1);
        assert!(
            left(&e, ip) > Duration::from_secs(7100),
            "second offence: twice as long"
        );
    }

    #[test]
    fn repeat_offender_ban_grows_to_the_cap() {
        let j = jail(1, &["pop3"]);
        assert_eq!(bantime_for(&j, 0), Some(Duration::from_secs(3600)));
        assert_eq!(bantime_for(&j, 1), Some(Duration::from_secs(7200)));
        assert_eq!(bantime_for(&j, 3), Some(Duration::from_secs(4 * 3600)));
        let mut e = Engine::new(vec![j], MemBanTable::default());
        let ip = target("203.0.113.7");
        e.handle_line(&log(), &[0], &line("203.0.113.7"), None, SystemTime::now());
        // Lapse the ban, offend again: twice as long.
        lapse(&e, ip);
        let ev = e.handle_line(&log(), &[0], &line("203.0.113.7"), None, SystemTime::now());
        assert_eq!(ev.len(), 1);
        assert!(left(&e, ip) > Duration::from_secs(7100));
    }

    #[test]
    fn bans_from_two_jails_merge_ports() {
        let mut imap = jail(1, &["imap"]);
        imap.name = "imap".into();
        let mut e = Engine::new(vec![jail(1, &["pop3"]), imap], MemBanTable::default());
        let now = SystemTime::now();
        e.handle_line(&log(), &[0, 1], &line("203.0.113.7"), None, now);
        let imap_line = line("203.0.113.7").replace("vchkpw-pop3", "vchkpw-imap");
        e.handle_line(&log(), &[0, 1], &imap_line, None, now);
        let b = &e.table().bans()[&target("203.0.113.7")];
        assert!(b.ports.contains(110) && b.ports.contains(143));
        let report = e.jail_report(SystemTime::now());
        assert!(report.iter().all(|(_, _, _, banned)| banned.len() == 1));
    }

    #[test]
    fn a_pop3_jail_counts_pop3_failures_not_smtp_guesses() {
        // The seed's vchkpw-pop3 filter: SMTP-AUTH guesses would get POP3
        // banned, go on failing on SMTP, and escalate the ban forever.
        let mut e = Engine::new(vec![jail(1, &["pop3"])], MemBanTable::default());
        let now = SystemTime::now();
        for service in ["smtp", "submission", "imap", "webmail"] {
            let l = line("203.0.113.7").replace("vchkpw-pop3", &format!("vchkpw-{service}"));
            assert!(
                e.handle_line(&log(), &[0], &l, None, now).is_empty(),
                "{service}"
            );
        }
        assert_eq!(e.stats()[0].1.total_failed, 0);
        let port = line("203.0.113.7").replace("vchkpw-pop3", "vchkpw-110");
        assert_eq!(e.handle_line(&log(), &[0], &port, None, now).len(), 1);
    }

    #[test]
    fn expiry_lifts_due_bans_only() {
        let mut e = Engine::new(vec![jail(1, &["pop3"])], MemBanTable::default());
        let now = SystemTime::now();
        e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now);
        assert!(e.expire(now).is_empty());
        let ip = target("203.0.113.7");
        lapse(&e, ip);
        assert_eq!(e.expire(now + Duration::from_secs(3601)), [ip]);
        assert!(e.table().bans().is_empty());
        assert_eq!(e.next_expiry(), None);
    }

    #[test]
    fn restore_puts_unexpired_bans_back() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let now = SystemTime::now();
        let rec = |ip: &str, until: Option<u64>| Record::Ban {
            addr: target(ip),
            jail: "vpopmail".into(),
            ports: PortSet::Only(vec![110]),
            until,
            at: unix_secs(now) - 10,
            monitor: false,
        };
        journal
            .append(
                &[
                    rec("203.0.113.7", Some(unix_secs(now) + 600)),
                    rec("203.0.113.8", Some(unix_secs(now) - 1)),
                    rec("2001:db8::1", None),
                ],
                false,
            )
            .unwrap();
        let replay = journal.replay(now).unwrap();
        let mut e = Engine::new(vec![jail(3, &["pop3"])], MemBanTable::default());
        assert_eq!(e.restore(&replay, now).unwrap(), 2);
        let bans = e.table().bans();
        assert!(bans.contains_key(&target("203.0.113.7")));
        assert!(!bans.contains_key(&target("203.0.113.8")));
        assert_eq!(bans[&target("2001:db8::1")].expiry, Expiry::Never);
        assert_eq!(
            bans[&target("203.0.113.7")].expiry,
            Expiry::At(from_unix_secs(unix_secs(now) + 600))
        );
    }

    #[test]
    fn ipv6_attackers_are_counted_and_banned_per_prefix() {
        let mut j = jail(3, &["pop3"]);
        j.ban_prefix_v6 = 64;
        let mut e = Engine::new(vec![j], MemBanTable::default());
        let now = SystemTime::now();
        // Three hosts of one /64, one failure each: that /64 is banned.
        assert!(
            e.handle_line(&log(), &[0], &line("2001:db8:1:2::a"), None, now)
                .is_empty()
        );
        assert!(
            e.handle_line(&log(), &[0], &line("2001:db8:1:2::b"), None, now)
                .is_empty()
        );
        assert!(
            e.handle_line(&log(), &[0], &line("2001:db8:9::1"), None, now)
                .is_empty()
        );
        let ev = e.handle_line(&log(), &[0], &line("2001_db8_1_2__c"), None, now);
        assert_eq!(ev[0].target, target("2001:db8:1:2::/64"));
        assert!(e.table().bans().contains_key(&target("2001:db8:1:2::/64")));
        // IPv4 is still per address.
        for _ in 0..3 {
            e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now);
        }
        assert!(e.table().bans().contains_key(&target("203.0.113.7")));
    }

    #[test]
    fn a_botnet_cannot_grow_memory_and_evictions_are_reported() {
        let mut j = jail(3, &["pop3"]);
        j.max_tracked = 5_000;
        let mut e = Engine::new(vec![j], MemBanTable::default());
        let now = SystemTime::now();
        for i in 0..60_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | i);
            e.handle_line(&log(), &[0], &line(&ip.to_string()), None, now);
        }
        let (_, stats, tracked) = &e.stats()[0];
        assert!(*tracked <= 5_000, "tracked {tracked}");
        assert!(e.evictions() >= 55_000, "evictions {}", e.evictions());
        assert_eq!(stats.total_failed, 60_000);
        assert!(
            e.table().bans().is_empty(),
            "one failure each: nobody banned"
        );
    }

    #[test]
    fn bans_and_unbans_by_hand_are_taken_in_from_the_journal() {
        let mut e = Engine::new(vec![jail(1, &["pop3"])], MemBanTable::default());
        let now = SystemTime::now();
        let t = target("203.0.113.7");
        let by_hand = Ban::new(PortSet::Only(vec![110]), Expiry::Never);
        // `jailer ban` wrote the map and the journal; the engine reads it.
        e.table_mut().insert(t, &by_hand).unwrap();
        e.apply_records(&[Record::ban(t, "manual", &by_hand, now)]);
        assert_eq!(e.bans_in_force(now), 1);
        assert!(
            e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now)
                .is_empty(),
            "already banned"
        );
        e.table_mut().remove(t).unwrap();
        e.apply_records(&[Record::Unban {
            addr: t,
            at: unix_secs(now),
        }]);
        assert_eq!(e.bans_in_force(now), 0);
        assert_eq!(
            e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now)
                .len(),
            1,
            "banned again"
        );
    }
}
