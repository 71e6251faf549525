//! `jailer list`: the bans in force, from the kernel maps, with who set
//! each (a jail here, `jailer ban`, a fleet member) from the journal.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tracing::warn;

use super::{print, print_json, require_root};
use crate::{
    ban::{Listed, Target},
    config::Config,
    error::{Chain, Error},
    kernel::{BanTable, BpfError, XdpBanTable},
    state::{Journal, Replay},
    time::format_duration,
};

/// One row of `jailer list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BanRow {
    /// An address, or a network (CIDR) for prefix bans.
    pub addr: String,
    /// Port numbers, or "all".
    pub ports: String,
    /// Seconds left; `null` for a permanent ban.
    pub expires_in_secs: Option<u64>,
    /// Packets dropped, or only counted when `monitor`.
    pub drops: u64,
    /// Monitor mode: `drops` are would-be drops, nothing was dropped.
    pub monitor: bool,
    /// The jail(s) behind it (`manual` for `jailer ban`); empty when the
    /// journal does not know it (written with bpftool).
    pub jail: String,
    /// `local`, or the fleet member(s) that set it (`local,mx2` when both).
    pub origin: String,
    /// For sorting.
    #[serde(skip)]
    pub target: Target,
}

impl BanRow {
    fn new(l: &Listed, global_monitor: bool, now: SystemTime) -> Self {
        Self {
            addr: l.target.to_string(),
            ports: l.ban.ports.to_string(),
            expires_in_secs: l.ban.expiry.remaining(now).map(|d| d.as_secs()),
            drops: l.drops,
            monitor: global_monitor || l.ban.monitor,
            jail: String::new(),
            origin: String::new(),
            target: l.target,
        }
    }
}

/// Bans in force (expired ones no longer drop and are left out), sorted;
/// in global monitor mode every row is marked as only counting.
pub fn active_bans(table: &dyn BanTable) -> Result<Vec<BanRow>, BpfError> {
    let monitor = table.monitor()?;
    let now = SystemTime::now();
    let mut rows: Vec<BanRow> = table
        .list()?
        .iter()
        .filter(|l| l.ban.expiry.is_active(now))
        .map(|l| BanRow::new(l, monitor, now))
        .collect();
    rows.sort_by_key(|r| r.target);
    Ok(rows)
}

/// Fills in each row's jail and origin from the journal.
pub fn annotate(rows: &mut [BanRow], replay: &Replay, now: SystemTime) {
    let mut remote: HashMap<Target, Vec<(&str, &str)>> = HashMap::new();
    for (origin, target, entry) in replay.active_remote(now) {
        remote
            .entry(target)
            .or_default()
            .push((origin, replay.jail(entry)));
    }
    for row in rows {
        let mut origins = Vec::new();
        let mut jails = Vec::new();
        let secs = crate::time::unix_secs(now);
        if let Some(entry) = replay
            .bans
            .get(&row.target)
            .filter(|e| e.until.is_none_or(|u| u > secs))
        {
            origins.push("local");
            jails.push(replay.jail(entry));
        }
        if let Some(list) = remote.get_mut(&row.target) {
            list.sort_unstable();
            for (origin, jail) in list.iter() {
                origins.push(origin);
                if !jails.contains(jail) {
                    jails.push(jail);
                }
            }
        }
        row.origin = origins.join(",");
        row.jail = jails.join(",");
    }
}

/// The human table.
pub fn format_table(rows: &[BanRow]) -> String {
    let mut out = format!(
        "{:<40} {:<16} {:<14} {:>10}  {:<12} {}\n",
        "ADDRESS", "PORTS", "EXPIRES IN", "DROPS", "JAIL", "ORIGIN"
    );
    for r in rows {
        let left = r.expires_in_secs.map_or_else(
            || "permanent".to_owned(),
            |s| format_duration(Duration::from_secs(s)),
        );
        let drops = if r.monitor {
            format!("{} (monitor)", r.drops)
        } else {
            r.drops.to_string()
        };
        let unknown = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        out.push_str(&format!(
            "{:<40} {:<16} {:<14} {:>10}  {:<12} {}\n",
            r.addr,
            r.ports,
            left,
            drops,
            unknown(&r.jail),
            unknown(&r.origin)
        ));
    }
    out.push_str(&format!("{} ban(s)\n", rows.len()));
    out
}

pub(super) fn run(config_path: &Path, json: bool) -> Result<(), Error> {
    require_root("list")?;
    let config = Config::load_or_default(config_path)?;
    let table = XdpBanTable::open_existing(&config.bpffs)?;
    let now = SystemTime::now();
    // A million bans: list the maps and read the journal at once.
    let (rows, replay) = std::thread::scope(|s| {
        let journal = s.spawn(|| Journal::new(&config.state_dir).replay(now));
        (active_bans(&table), journal.join())
    });
    let mut rows = rows?;
    match replay {
        Ok(Ok(replay)) => annotate(&mut rows, &replay, now),
        Ok(Err(e)) => {
            warn!(error = %Chain(&e), "the journal could not be read: jails and origins are not shown")
        }
        Err(_) => warn!("reading the journal failed: jails and origins are not shown"),
    }
    if json {
        print_json(&rows)
    } else {
        print(&format_table(&rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ban::{Ban, Expiry, PortSet},
        kernel::MemBanTable,
    };

    fn target(text: &str) -> Target {
        text.parse().unwrap()
    }

    #[test]
    fn rebanning_keeps_the_drop_counter_and_list_hides_expired() {
        let mut t = MemBanTable::default();
        let a = target("203.0.113.7");
        let hour = Expiry::after(SystemTime::now(), Some(Duration::from_secs(60)));
        t.insert(a, &Ban::new(PortSet::only(&[110]), hour)).unwrap();
        t.count_drops(a, 7);
        t.insert(a, &Ban::new(PortSet::All, Expiry::Never)).unwrap();
        let rows = active_bans(&t).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].drops, 7);
        assert_eq!(rows[0].ports, "all");
        assert_eq!(rows[0].expires_in_secs, None);

        let b = target("2001:db8::/64");
        let lapsed = Expiry::At(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        t.insert(b, &Ban::new(PortSet::only(&[110]), lapsed))
            .unwrap();
        assert_eq!(active_bans(&t).unwrap().len(), 1);
        let table = format_table(&active_bans(&t).unwrap());
        assert!(
            table.contains("203.0.113.7")
                && table.contains("permanent")
                && table.contains("1 ban(s)")
        );
    }

    #[test]
    fn rows_name_their_jail_and_origin() {
        use crate::state::Record;
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let now = SystemTime::now();
        let ban = Ban::new(PortSet::only(&[110]), Expiry::Never);
        journal
            .append(
                &[
                    Record::ban(target("203.0.113.7"), "dovecot", &ban, now),
                    Record::remote_ban(target("203.0.113.7"), "postfix", &ban, "mx3", 1),
                    Record::remote_ban(target("203.0.113.7"), "dovecot", &ban, "mx2", 1),
                    Record::remote_ban(target("198.51.100.1"), "manual", &ban, "mx2", 1),
                ],
                true,
            )
            .unwrap();
        let mut t = MemBanTable::default();
        for addr in ["203.0.113.7", "198.51.100.1", "192.0.2.1"] {
            t.insert(target(addr), &ban).unwrap();
        }
        let mut rows = active_bans(&t).unwrap();
        annotate(&mut rows, &journal.replay(now).unwrap(), now);
        let got: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.addr.as_str(), r.jail.as_str(), r.origin.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("192.0.2.1", "", ""),
                ("198.51.100.1", "manual", "mx2"),
                ("203.0.113.7", "dovecot,postfix", "local,mx2,mx3"),
            ]
        );
        let text = format_table(&rows);
        assert!(
            text.lines()
                .any(|l| l.starts_with("192.0.2.1 ") && l.ends_with("-            -")),
            "{text}"
        );
    }

    #[test]
    fn global_monitor_mode_marks_every_row() {
        let mut t = MemBanTable::default();
        t.insert(
            target("203.0.113.7"),
            &Ban::new(PortSet::only(&[110]), Expiry::Never),
        )
        .unwrap();
        assert!(!active_bans(&t).unwrap()[0].monitor);
        t.set_monitor(true).unwrap();
        assert!(active_bans(&t).unwrap()[0].monitor);
        assert!(format_table(&active_bans(&t).unwrap()).contains("0 (monitor)"));
    }
}
