//! The jail engine: failures in, ban decisions out, written to the ban
//! table; journal records queued for the caller; the expiry queue that lifts
//! bans when due.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use tracing::{debug, info, warn};

use super::{jail_state::JailState, known::KnownBans, policy::bantime_for, remote::RemoteBans};
use crate::{
    ban::{Ban, Expiry, Target},
    config::Jail,
    filter::{Found, Host, Matcher, Outcome},
    kernel::{BanTable, BpfError},
    source::SourceId,
    state::Record,
    time::{format_duration, from_unix_secs},
};

/// A change to this server's own bans that the engine learned from the
/// journal (`jailer ban`/`unban`), for the fleet to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalChange {
    Ban {
        target: Target,
        ban: Ban,
        jail: String,
    },
    Unban(Target),
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
    pub(super) jails: Vec<JailState>,
    pub(super) table: T,
    /// This server's own bans in force, as far as this engine knows.
    pub(super) known: KnownBans,
    /// Fleet members' bans enforced here.
    pub(super) remote: RemoteBans,
    pub(super) remote_refused: u64,
    /// Never banned by a fleet member's ban (the top-level `ignoreip`).
    pub(super) ignoreip: Vec<Target>,
    /// (wall-clock expiry, target) of known bans.
    pub(super) expiry: BTreeSet<(SystemTime, Target)>,
    /// Journal records of bans made since the caller last took them.
    pub(super) pending: Vec<Record>,
    /// This host's own addresses (for jails with `ignoreself`).
    pub(super) own: HashSet<IpAddr>,
    /// Failures of jails with `shared_failures`, for the fleet: (jail,
    /// address, time).
    shared: Vec<(String, IpAddr, SystemTime)>,
    /// Each jail's matcher, per source (fail2ban filters keep state across
    /// a stream's lines), indexed by jail.
    pub(super) matchers: HashMap<SourceId, Vec<Option<Matcher>>>,
    unbans: u64,
    /// Until the journal is read ([`Engine::restore`]): bans found in the
    /// table that the engine did not know, with the jail that met them. A
    /// ban the journal does not hold (the agent was killed between the map
    /// write and the journal append) is journaled then, once; after, one is
    /// journaled when met.
    pub(super) unconfirmed: Option<Vec<(Target, String)>>,
}

impl<T: BanTable> Engine<T> {
    pub fn new(jails: Vec<Jail>, table: T) -> Self {
        Self {
            jails: jails.into_iter().map(JailState::new).collect(),
            table,
            known: KnownBans::default(),
            remote: RemoteBans::default(),
            remote_refused: 0,
            ignoreip: Vec::new(),
            expiry: BTreeSet::new(),
            pending: Vec::new(),
            own: HashSet::new(),
            matchers: HashMap::new(),
            shared: Vec::new(),
            unbans: 0,
            unconfirmed: Some(Vec::new()),
        }
    }

    /// The top-level `ignoreip`: never banned by a fleet member's ban.
    pub fn set_ignoreip(&mut self, ignoreip: Vec<Target>) {
        self.ignoreip = ignoreip;
    }

    /// This host's addresses, never banned by a jail with `ignoreself`.
    pub fn set_own_addresses(&mut self, own: HashSet<IpAddr>) {
        self.own = own;
    }

    /// Bans in force at `now` — all jails, manual ones and fleet members'
    /// — as the engine knows them (a target counts once).
    pub fn bans_in_force(&self, now: SystemTime) -> usize {
        let remote_only = self
            .remote
            .targets()
            .filter(|t| self.known.get(**t).is_none_or(|b| !b.expiry.is_active(now)))
            .count();
        self.known.count_in_force(now) + remote_only
    }

    /// Takes in bans and unbans that others wrote to the journal (`jailer
    /// ban`/`unban`, while this engine runs): they count for "already
    /// banned", status and expiry like its own.
    pub fn apply_records(&mut self, records: &[Record]) -> Vec<LocalChange> {
        let mut changes = Vec::new();
        for record in records {
            match record {
                // Members' bans are written by this engine itself.
                Record::Ban {
                    origin: Some(_), ..
                }
                | Record::Unban {
                    origin: Some(_), ..
                } => {}
                Record::Ban {
                    addr,
                    jail,
                    ports,
                    until,
                    monitor,
                    ..
                } => {
                    let ban = Ban {
                        ports: *ports,
                        expiry: until.map_or(Expiry::Never, |u| Expiry::At(from_unix_secs(u))),
                        monitor: *monitor,
                    };
                    if let Expiry::At(t) = ban.expiry {
                        self.expiry.insert((t, *addr));
                    }
                    self.known.remember(*addr, &ban, jail);
                    changes.push(LocalChange::Ban {
                        target: *addr,
                        ban,
                        jail: jail.clone(),
                    });
                }
                Record::Unban { addr, .. } => {
                    self.known.forget(*addr);
                    changes.push(LocalChange::Unban(*addr));
                }
                Record::UnbanAll { .. } => {
                    let now = SystemTime::now();
                    changes.extend(self.known.in_force(now).map(|(t, _)| LocalChange::Unban(t)));
                    self.known.clear();
                }
            }
        }
        changes
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

    /// Whether a ban covering `probe` is in force on `target`: first what
    /// this engine knows (no syscall for the unknown), then the table itself
    /// (lifted by hand meanwhile, or by an admin with bpftool).
    fn in_force(&mut self, target: Target, probe: &Ban, now: SystemTime) -> Result<bool, BpfError> {
        if !self.known.covers(target, probe, now) && !self.remote.covers(target, probe, now) {
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
        // A date in the future is a clock or parse problem: count it now.
        let at = found.time.filter(|t| *t <= now).unwrap_or(now);
        if js.jail.shared_failures {
            self.shared.push((js.jail.name.clone(), ip, at));
        }
        self.count(i, ip, target, at, now, events);
    }

    /// Failures other fleet members saw, for jails with `shared_failures`:
    /// counted as if seen here (the fleet shares one auth backend).
    pub fn remote_failures(
        &mut self,
        failures: &[(String, IpAddr, SystemTime)],
        now: SystemTime,
    ) -> Vec<BanEvent> {
        let mut events = Vec::new();
        for (jail, ip, at) in failures {
            let Some(i) = self
                .jails
                .iter()
                .position(|j| j.jail.name == *jail && j.jail.shared_failures)
            else {
                continue;
            };
            let js = &mut self.jails[i];
            let ip = crate::ban::canonical_ip(*ip);
            if js.jail.ignores(ip) || (js.jail.ignoreself && self.own.contains(&ip)) {
                js.stats.ignored_addresses += 1;
                continue;
            }
            let target = Target::widened(ip, js.jail.ban_prefix_v6);
            let at = (*at).min(now);
            self.count(i, ip, target, at, now, &mut events);
        }
        events
    }

    /// Failures of `shared_failures` jails seen here since the last call.
    pub fn take_shared_failures(&mut self) -> Vec<(String, IpAddr, SystemTime)> {
        std::mem::take(&mut self.shared)
    }

    /// Counts one failure of `ip` (as `target`) for jail `i`, and bans on
    /// maxretry within findtime.
    fn count(
        &mut self,
        i: usize,
        ip: IpAddr,
        target: Target,
        at: SystemTime,
        now: SystemTime,
        events: &mut Vec<BanEvent>,
    ) {
        let js = &mut self.jails[i];
        js.stats.total_failed += 1;
        let probe = Ban::new(js.jail.ports, Expiry::Never);
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
    /// its ports (set by hand, by another jail, or before a restart), which
    /// is then neither counted, extended nor journaled again.
    fn ban(
        &mut self,
        i: usize,
        target: Target,
        now: SystemTime,
    ) -> Result<Option<BanEvent>, BpfError> {
        let js = &self.jails[i];
        let previous = js.ban_counts.get(&target).copied().unwrap_or(0);
        let mut ban = Ban::new(
            js.jail.ports,
            Expiry::after(now, bantime_for(&js.jail, previous)),
        );
        let name = js.jail.name.clone();
        if let Some(old) = self.table.get(target)?
            && old.expiry.is_active(now)
        {
            // In force on every port this jail closes: a failure while
            // banned, however long the ban has left. Not extended, not
            // journaled again (the engine may not know the ban yet: right
            // after a restart, before the journal is read).
            if old.covers_ports_of(&ban) {
                debug!(%target, jail = name, "already banned");
                if self.known.get(target).is_none() {
                    // Not from the journal, not set by this engine: until
                    // the journal is read, it may be there; after, it is not.
                    match &mut self.unconfirmed {
                        Some(unconfirmed) => unconfirmed.push((target, name.clone())),
                        None => {
                            info!(%target, jail = name, "a ban in the maps was missing from the journal: journaled");
                            self.pending.push(Record::ban(target, &name, &old, now));
                        }
                    }
                }
                self.jails[i].stats.already_banned += 1;
                self.known.remember(target, &old, &name);
                return Ok(None);
            }
            ban = old.merge(&ban);
        }
        self.table.insert(target, &ban)?;
        let js = &mut self.jails[i];
        js.stats.total_banned += 1;
        if js.jail.bantime_increment {
            *js.ban_counts.entry(target).or_default() += 1;
        }
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
            self.prune_remote(target, now);
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
    use super::*;
    use crate::{
        ban::PortSet,
        jail::{
            Restoration,
            test_support::{jail, line, log, target},
        },
        kernel::MemBanTable,
        state::Journal,
        time::unix_secs,
    };

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
    fn snapshot_windows_dated_in_the_future_count_as_now() {
        // A damaged snapshot: a failure at u64::MAX ms. It must neither
        // overflow nor keep the window from ever reaching maxretry.
        let mut e = Engine::new(vec![jail(3, &["pop3"])], MemBanTable::default());
        let now = SystemTime::now();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        e.import_windows(
            [("vpopmail".to_owned(), vec![(ip, vec![u64::MAX])])].into(),
            now,
        );
        assert!(
            e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now)
                .is_empty()
        );
        let ev = e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now);
        assert_eq!(
            ev.len(),
            1,
            "the saved failure and two new ones make maxretry"
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
    fn a_ban_in_the_table_not_yet_known_is_neither_extended_nor_journaled() {
        // A restart: the maps kept the ban, the journal is not read yet,
        // and the lines after the last saved position are read again.
        let mut table = MemBanTable::default();
        let ip = target("203.0.113.7");
        let now = SystemTime::now();
        let set = Ban::new(
            PortSet::parse(&["pop3"]).unwrap(),
            Expiry::after(now, Some(Duration::from_secs(600))),
        );
        table.insert(ip, &set).unwrap();
        let mut e = Engine::new(vec![jail(1, &["pop3"])], table);
        assert!(
            e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now)
                .is_empty()
        );
        assert_eq!(e.table().bans()[&ip], set, "not extended");
        assert!(e.take_records().is_empty(), "not journaled again");
        let (_, stats, _) = &e.stats()[0];
        assert_eq!((stats.total_banned, stats.already_banned), (0, 1));

        // The journal, once read, has it: nothing to add.
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        journal
            .append(&[Record::ban(ip, "vpopmail", &set, now)], false)
            .unwrap();
        let mut again = Engine::new(vec![jail(1, &["pop3"])], e.table().clone());
        again.handle_line(&log(), &[0], &line("203.0.113.7"), None, now);
        let replay = journal.replay(now).unwrap();
        again
            .restore(Restoration::prepare(
                &replay,
                now,
                false,
                &again.counted_jails(),
            ))
            .unwrap();
        assert!(again.take_records().is_empty(), "journaled once already");

        // The journal lacks it (killed between the map write and the
        // append): journaled once the journal is read, as it is in the maps.
        e.restore(Restoration::default()).unwrap();
        let records = e.take_records();
        assert_eq!(records.len(), 1);
        let Record::Ban { addr, ports, .. } = &records[0] else {
            panic!("{records:?}")
        };
        assert_eq!((*addr, *ports), (ip, set.ports));
        e.handle_line(&log(), &[0], &line("203.0.113.7"), None, now);
        assert!(e.take_records().is_empty(), "and only once");

        // A fleet member's ban, journaled with its origin: not this
        // server's, so never journaled (nor published) as its own.
        let journal = Journal::new(dir.path().join("remote").as_path());
        std::fs::create_dir_all(dir.path().join("remote")).unwrap();
        journal
            .append(
                &[Record::remote_ban(
                    ip,
                    "dovecot",
                    &set,
                    "mx2",
                    unix_secs(now),
                )],
                false,
            )
            .unwrap();
        let mut member = Engine::new(vec![jail(1, &["pop3"])], e.table().clone());
        member.handle_line(&log(), &[0], &line("203.0.113.7"), None, now);
        let replay = journal.replay(now).unwrap();
        member
            .restore(Restoration::prepare(
                &replay,
                now,
                false,
                &member.counted_jails(),
            ))
            .unwrap();
        assert!(
            member.take_records().is_empty(),
            "a member's ban stays the member's"
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
        let by_hand = Ban::new(PortSet::only(&[110]), Expiry::Never);
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
            origin: None,
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
