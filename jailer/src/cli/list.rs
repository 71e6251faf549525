//! `jailer list`: the bans in force, from the kernel maps.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use super::{print, require_root};
use crate::{
    ban::{Listed, Target},
    config::Config,
    error::Error,
    kernel::{BanTable, BpfError, XdpBanTable},
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

/// The human table.
pub fn format_table(rows: &[BanRow]) -> String {
    let mut out = format!(
        "{:<40} {:<16} {:<14} {:>10}\n",
        "ADDRESS", "PORTS", "EXPIRES IN", "DROPS"
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
        out.push_str(&format!(
            "{:<40} {:<16} {:<14} {:>10}\n",
            r.addr, r.ports, left, drops
        ));
    }
    out.push_str(&format!("{} ban(s)\n", rows.len()));
    out
}

pub(super) fn run(config_path: &Path, json: bool) -> Result<(), Error> {
    require_root("list")?;
    let config = Config::load_or_default(config_path)?;
    let table = XdpBanTable::open_existing(&config.bpffs)?;
    let rows = active_bans(&table)?;
    if json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| Error::Io {
            path: "stdout".into(),
            source: e.into(),
        })?;
        print(&(text + "\n"))
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
