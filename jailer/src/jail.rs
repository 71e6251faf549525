//! The jail engine: failures in, ban decisions out, written to the kernel
//! maps and the journal; and the expiry queue that lifts bans when due.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use jailer_common::{BAN_ALL_PORTS, BAN_MAX_PORTS, BAN_PERMANENT, BanValue};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::{
    admin::ban_value,
    bpf::BanTable,
    clock::{boot_ns, from_unix_secs, unix_secs, unix_to_boot_ns},
    config::Jail,
    detect::Verdict,
    error::BpfError,
    ports::PortSet,
    state::{Journal, Record, Replay},
    timestamp::parse_timestamp,
    window::FailureWindow,
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
    pub total_banned: u64,
    pub ban_errors: u64,
}

struct JailState {
    jail: Jail,
    window: FailureWindow,
    /// Previous bans per address or prefix (for bantime_increment).
    ban_counts: HashMap<IpNet, u32>,
    /// Addresses (or prefixes) this jail banned that may still be in force.
    banned: HashSet<IpNet>,
    stats: JailStats,
}

impl JailState {
    fn new(jail: Jail) -> Self {
        Self {
            window: FailureWindow::new(jail.maxretry, jail.findtime, jail.max_tracked),
            jail,
            ban_counts: HashMap::new(),
            banned: HashSet::new(),
            stats: JailStats::default(),
        }
    }
}

/// A ban the engine just set.
#[derive(Debug, Clone, PartialEq)]
pub struct BanEvent {
    pub jail: String,
    /// The address, or its prefix with `ban_prefix_v6`.
    pub addr: IpNet,
    /// `None`: permanent.
    pub duration: Option<Duration>,
    /// The failure line's own time.
    pub line_time: SystemTime,
}

/// Jails, the ban table they write to, and the expiry queue.
pub struct Engine<T: BanTable> {
    jails: Vec<JailState>,
    table: T,
    journal: Option<Journal>,
    /// (wall-clock expiry, address) of bans this engine knows.
    expiry: BTreeSet<(SystemTime, IpNet)>,
    unbans: u64,
}

impl<T: BanTable> Engine<T> {
    pub fn new(jails: Vec<Jail>, table: T, journal: Option<Journal>) -> Self {
        Self {
            jails: jails.into_iter().map(JailState::new).collect(),
            table,
            journal,
            expiry: BTreeSet::new(),
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
    }

    /// Jail names, in order.
    pub fn jail_names(&self) -> Vec<String> {
        self.jails.iter().map(|j| j.jail.name.clone()).collect()
    }

    /// Per jail: (name, counters, addresses with failures in their window,
    /// addresses it banned that are still in force).
    pub fn jail_report(&self) -> Vec<(String, JailStats, usize, Vec<IpNet>)> {
        let now = boot_ns();
        self.jails
            .iter()
            .map(|j| {
                let mut banned: Vec<IpNet> = j
                    .banned
                    .iter()
                    .copied()
                    .filter(|ip| {
                        self.table
                            .get(*ip)
                            .ok()
                            .flatten()
                            .is_some_and(|v| v.is_active(now))
                    })
                    .collect();
                banned.sort();
                (j.jail.name.clone(), j.stats.clone(), j.window.len(), banned)
            })
            .collect()
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

    /// Restores bans from the journal into the table (after a reboot the maps
    /// are empty) and the repeat-offence counts; expired bans are skipped.
    pub fn restore(&mut self, replay: &Replay, now: SystemTime) -> Result<usize, BpfError> {
        for (jail, addr, n) in replay.counts() {
            if let Some(j) = self.jails.iter_mut().find(|j| j.jail.name == jail) {
                j.ban_counts.insert(addr, n);
            }
        }
        // After a reboot the maps are empty: write everything in batches.
        // Otherwise only what is missing (an entry present may carry newer
        // drop counters).
        let empty = self.table.is_empty()?;
        let now_ns = boot_ns();
        let now_unix = unix_secs(now);
        // Ban values by ports string: a million bans share a handful.
        let mut templates: HashMap<&str, BanValue> = HashMap::new();
        let mut expiry = Vec::new();
        let mut missing = Vec::new();
        for (addr, entry) in replay.active(now) {
            let (jail, ports, until) = (replay.jail(entry), replay.ports(entry), entry.until);
            if let Some(j) = self.jails.iter_mut().find(|j| j.jail.name == jail) {
                j.banned.insert(addr);
            }
            let mut value = *templates.entry(ports).or_insert_with(|| {
                let set =
                    PortSet::parse(&ports.split(',').collect::<Vec<_>>()).unwrap_or(PortSet::All);
                ban_value(&set, None)
            });
            if let Some(until) = until {
                value.expires_ns = unix_to_boot_ns(until, now_unix, now_ns);
                expiry.push((from_unix_secs(until), addr));
            }
            if empty || !self.table.get(addr)?.is_some_and(|v| v.is_active(now_ns)) {
                missing.push((addr, value));
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
    pub fn export_windows(&self) -> Vec<(String, WindowEntries)> {
        self.jails
            .iter()
            .map(|j| (j.jail.name.clone(), j.window.export()))
            .collect()
    }

    pub fn import_windows(
        &mut self,
        mut windows: std::collections::BTreeMap<String, Vec<(IpAddr, Vec<u64>)>>,
    ) {
        for j in &mut self.jails {
            if let Some(w) = windows.remove(&j.jail.name) {
                j.window.import(w);
            }
        }
    }

    /// Stats per jail.
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

    /// Runs one log line through the jails at indexes `jails`.
    pub fn handle_line(&mut self, jails: &[usize], line: &str, now: SystemTime) -> Vec<BanEvent> {
        let mut events = Vec::new();
        for &i in jails {
            let js = &mut self.jails[i];
            js.stats.lines += 1;
            let ip = match js.jail.filter.check(line) {
                Verdict::Failure(ip) => ip,
                Verdict::Ignored => {
                    js.stats.ignored_lines += 1;
                    continue;
                }
                Verdict::Miss => continue,
            };
            if js.jail.ignores(ip) {
                js.stats.ignored_addresses += 1;
                debug!(%ip, jail = js.jail.name, "failure from ignoreip address");
                continue;
            }
            js.stats.total_failed += 1;
            let at = parse_timestamp(line, now).unwrap_or(now);
            debug!(%ip, jail = js.jail.name, "failure");
            // IPv6 attackers own whole prefixes: count and ban per prefix.
            let target = match ip {
                IpAddr::V6(_) if js.jail.ban_prefix_v6 < 128 => {
                    IpNet::new(ip, js.jail.ban_prefix_v6)
                        .map(|n| n.trunc())
                        .unwrap_or_else(|_| IpNet::from(ip))
                }
                _ => IpNet::from(ip),
            };
            if js.window.record(target.network(), at, now) {
                match self.ban(i, target, now) {
                    Ok(Some(duration)) => events.push(BanEvent {
                        jail: self.jails[i].jail.name.clone(),
                        addr: target,
                        duration,
                        line_time: at,
                    }),
                    Ok(None) => {}
                    Err(e) => {
                        self.jails[i].stats.ban_errors += 1;
                        warn!(%target, jail = self.jails[i].jail.name, error = %e, "ban failed");
                    }
                }
            }
        }
        events
    }

    /// Bans `ip` for jail `i`. Returns the duration set, or `None` when an
    /// existing ban already covers the jail's ports for at least as long.
    fn ban(
        &mut self,
        i: usize,
        ip: IpNet,
        now: SystemTime,
    ) -> Result<Option<Option<Duration>>, BpfError> {
        let js = &mut self.jails[i];
        let previous = js.ban_counts.get(&ip).copied().unwrap_or(0);
        let duration = bantime_for(&js.jail, previous);
        let mut value = ban_value(&js.jail.ports, duration);
        if let Some(old) = self.table.get(ip)?
            && old.is_active(boot_ns())
        {
            if covers(&old, &value) {
                debug!(%ip, jail = js.jail.name, "already banned");
                return Ok(None);
            }
            value = merge(&old, &value);
        }
        self.table.insert(ip, value)?;
        js.stats.total_banned += 1;
        js.banned.insert(ip);
        *js.ban_counts.entry(ip).or_default() += 1;
        let until = duration.map(|d| now + d);
        if let Some(until) = until {
            self.expiry.insert((until, ip));
        }
        let ports = PortSet::from_raw(&value.ports, value.flags).to_string();
        info!(ip = %crate::bpf::show(&ip), jail = js.jail.name, bantime = %duration.map_or("permanent".into(), crate::duration::format_duration), %ports, "banned");
        if let Some(journal) = &self.journal {
            let record = Record::Ban {
                addr: ip,
                jail: js.jail.name.clone(),
                ports,
                until: until.map(unix_secs),
                at: unix_secs(now),
            };
            if let Err(e) = journal.append(&record) {
                warn!(%ip, error = %e, "ban is enforced but could not be journaled; it will not survive a reboot");
            }
        }
        Ok(Some(duration))
    }

    /// When the next known ban is due to lapse.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// Removes bans that have lapsed (the kernel already ignores them; this
    /// frees the map slot and logs the unban). Returns the addresses lifted.
    pub fn expire(&mut self, now: SystemTime) -> Vec<IpNet> {
        let mut lifted = Vec::new();
        while let Some(&(t, ip)) = self.expiry.first() {
            if t > now {
                break;
            }
            self.expiry.pop_first();
            match self.table.get(ip) {
                Ok(Some(v))
                    if v.expires_ns != BAN_PERMANENT && !v.is_active(boot_ns() + 500_000_000) =>
                {
                    match self.table.remove(ip) {
                        Ok(_) => {
                            info!(ip = %crate::bpf::show(&ip), "unbanned (bantime over)");
                            self.unbans += 1;
                            for j in &mut self.jails {
                                j.banned.remove(&ip);
                            }
                            lifted.push(ip);
                        }
                        Err(e) => warn!(%ip, error = %e, "removing an expired ban failed"),
                    }
                }
                // Extended, made permanent, or lifted by hand meanwhile.
                Ok(_) => {}
                Err(e) => warn!(%ip, error = %e, "reading a ban failed"),
            }
        }
        lifted
    }
}

/// fail2ban's bantime.increment: `bantime * factor * 2^previous`, capped.
pub fn bantime_for(jail: &Jail, previous: u32) -> Option<Duration> {
    let base = jail.bantime?;
    if !jail.bantime_increment || previous == 0 {
        return Some(base);
    }
    let mult = jail.bantime_factor * f64::from(1u32 << previous.min(20));
    let secs = (base.as_secs_f64() * mult).min(u64::MAX as f64 / 2.0);
    let grown = Duration::from_secs_f64(secs);
    Some(match jail.bantime_max {
        Some(max) => grown.min(max),
        None => grown,
    })
}

fn covers(old: &BanValue, new: &BanValue) -> bool {
    let ports_ok = old.flags & BAN_ALL_PORTS != 0
        || (new.flags & BAN_ALL_PORTS == 0
            && new.ports.iter().all(|&p| p == 0 || old.covers_port(p)));
    let time_ok = old.expires_ns == BAN_PERMANENT
        || (new.expires_ns != BAN_PERMANENT && old.expires_ns >= new.expires_ns);
    ports_ok && time_ok
}

/// Union of two bans on one address: ports of both, the later expiry.
fn merge(old: &BanValue, new: &BanValue) -> BanValue {
    let mut out = *new;
    out.drops = old.drops;
    out.expires_ns = if old.expires_ns == BAN_PERMANENT || new.expires_ns == BAN_PERMANENT {
        BAN_PERMANENT
    } else {
        old.expires_ns.max(new.expires_ns)
    };
    let a = PortSet::from_raw(&old.ports, old.flags);
    let b = PortSet::from_raw(&new.ports, new.flags);
    let merged = match (a, b) {
        (PortSet::Only(mut x), PortSet::Only(y)) => {
            x.extend(y);
            x.sort_unstable();
            x.dedup();
            if x.len() > BAN_MAX_PORTS {
                PortSet::All
            } else {
                PortSet::Only(x)
            }
        }
        _ => PortSet::All,
    };
    (out.ports, out.flags) = merged.to_raw();
    out
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::*;
    use crate::{bpf::MemBanTable, clock::boot_remaining, detect::Filter};

    fn jail(maxretry: u32, ports: &[&str]) -> Jail {
        Jail {
            name: "vpopmail".into(),
            filter: Arc::new(Filter::load("vpopmail", Path::new(".")).unwrap()),
            logpaths: vec!["/var/log/mail.log".into()],
            ports: PortSet::parse(ports).unwrap(),
            maxretry,
            findtime: Duration::from_secs(600),
            bantime: Some(Duration::from_secs(3600)),
            ignoreip: vec!["192.0.2.0/24".parse().unwrap()],
            ban_prefix_v6: 128,
            max_tracked: 1000,
            bantime_increment: true,
            bantime_factor: 1.0,
            bantime_max: Some(Duration::from_secs(4 * 3600)),
        }
    }

    fn net(text: &str) -> IpNet {
        crate::config::parse_net(text).unwrap()
    }

    fn line(ip: &str) -> String {
        format!("vpopmail[1]: vchkpw-pop3: password fail bob@example.com:{ip}")
    }

    #[test]
    fn bans_after_maxretry_and_skips_ignoreip() {
        let mut e = Engine::new(vec![jail(3, &["pop3"])], MemBanTable::default(), None);
        let now = SystemTime::now();
        for _ in 0..2 {
            assert!(e.handle_line(&[0], &line("203.0.113.7"), now).is_empty());
        }
        let ev = e.handle_line(&[0], &line("203.0.113.7"), now);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].addr, net("203.0.113.7"));
        let v = e.table().bans()[&ev[0].addr];
        assert!(v.covers_port(110) && !v.covers_port(25));
        for _ in 0..10 {
            assert!(e.handle_line(&[0], &line("192.0.2.5"), now).is_empty());
        }
        let (_, stats, _) = &e.stats()[0];
        assert_eq!(stats.total_banned, 1);
        assert_eq!(stats.ignored_addresses, 10);
        assert_eq!(stats.total_failed, 3);
    }

    #[test]
    fn repeat_offender_ban_grows_to_the_cap() {
        let j = jail(1, &["pop3"]);
        assert_eq!(bantime_for(&j, 0), Some(Duration::from_secs(3600)));
        assert_eq!(bantime_for(&j, 1), Some(Duration::from_secs(7200)));
        assert_eq!(bantime_for(&j, 3), Some(Duration::from_secs(4 * 3600)));
        let mut e = Engine::new(vec![j], MemBanTable::default(), None);
        let ip = net("203.0.113.7");
        e.handle_line(&[0], &line("203.0.113.7"), SystemTime::now());
        // Lapse the ban, offend again: twice as long.
        e.table().edit(ip, |v| v.expires_ns = 1);
        let ev = e.handle_line(&[0], &line("203.0.113.7"), SystemTime::now());
        assert_eq!(ev[0].duration, Some(Duration::from_secs(7200)));
        let left = boot_remaining(e.table().bans()[&ip].expires_ns);
        assert!(left > Duration::from_secs(7100));
    }

    #[test]
    fn bans_from_two_jails_merge_ports() {
        let mut imap = jail(1, &["imap"]);
        imap.name = "imap".into();
        let mut e = Engine::new(vec![jail(1, &["pop3"]), imap], MemBanTable::default(), None);
        e.handle_line(&[0, 1], &line("203.0.113.7"), SystemTime::now());
        let v = e.table().bans()[&net("203.0.113.7")];
        assert!(v.covers_port(110) && v.covers_port(143));
    }

    #[test]
    fn expiry_lifts_due_bans_only() {
        let mut e = Engine::new(vec![jail(1, &["pop3"])], MemBanTable::default(), None);
        let now = SystemTime::now();
        e.handle_line(&[0], &line("203.0.113.7"), now);
        assert!(e.expire(now).is_empty());
        let ip = net("203.0.113.7");
        e.table().edit(ip, |v| v.expires_ns = 1);
        assert_eq!(e.expire(now + Duration::from_secs(3601)), [ip]);
        assert!(e.table().bans().is_empty());
        assert_eq!(e.next_expiry(), None);
    }

    #[test]
    fn restore_puts_unexpired_bans_back() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path()).unwrap();
        let now = SystemTime::now();
        let rec = |ip: &str, until: Option<u64>| Record::Ban {
            addr: net(ip),
            jail: "vpopmail".into(),
            ports: "110".into(),
            until,
            at: unix_secs(now) - 10,
        };
        journal
            .append(&rec("203.0.113.7", Some(unix_secs(now) + 600)))
            .unwrap();
        journal
            .append(&rec("203.0.113.8", Some(unix_secs(now) - 1)))
            .unwrap();
        journal.append(&rec("2001:db8::1", None)).unwrap();
        let replay = journal.replay(now).unwrap();
        let mut e = Engine::new(vec![jail(3, &["pop3"])], MemBanTable::default(), None);
        assert_eq!(e.restore(&replay, now).unwrap(), 2);
        let bans = &e.table().bans();
        assert!(bans.contains_key(&net("203.0.113.7")));
        assert!(!bans.contains_key(&net("203.0.113.8")));
        assert_eq!(bans[&net("2001:db8::1")].expires_ns, BAN_PERMANENT);
        let left = boot_remaining(bans[&net("203.0.113.7")].expires_ns);
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600));
    }

    #[test]
    fn ipv6_attackers_are_counted_and_banned_per_prefix() {
        let mut j = jail(3, &["pop3"]);
        j.ban_prefix_v6 = 64;
        let mut e = Engine::new(vec![j], MemBanTable::default(), None);
        let now = SystemTime::now();
        // Three hosts of one /64, one failure each: that /64 is banned.
        assert!(
            e.handle_line(&[0], &line("2001:db8:1:2::a"), now)
                .is_empty()
        );
        assert!(
            e.handle_line(&[0], &line("2001:db8:1:2::b"), now)
                .is_empty()
        );
        assert!(e.handle_line(&[0], &line("2001:db8:9::1"), now).is_empty());
        let ev = e.handle_line(&[0], &line("2001_db8_1_2__c"), now);
        assert_eq!(ev[0].addr, net("2001:db8:1:2::/64"));
        assert!(e.table().bans().contains_key(&net("2001:db8:1:2::/64")));
        // IPv4 is still per address.
        for _ in 0..3 {
            e.handle_line(&[0], &line("203.0.113.7"), now);
        }
        assert!(e.table().bans().contains_key(&net("203.0.113.7")));
    }

    #[test]
    fn a_botnet_cannot_grow_memory_and_evictions_are_reported() {
        let mut j = jail(3, &["pop3"]);
        j.max_tracked = 5_000;
        let mut e = Engine::new(vec![j], MemBanTable::default(), None);
        let now = SystemTime::now();
        for i in 0..60_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | i);
            e.handle_line(&[0], &line(&ip.to_string()), now);
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
}
