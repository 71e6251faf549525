//! What `ban`, `unban`, `list` and `detach` do to the kernel maps; shared by
//! the CLI and the agent so both write bans the same way.

use std::time::Duration;

use ipnet::IpNet;

use jailer_common::{BAN_MONITOR, BAN_PERMANENT, BanValue};
use serde::Serialize;

use crate::{
    bpf::{BanTable, show},
    clock::{boot_ns, boot_remaining},
    duration::format_duration,
    error::BpfError,
    ports::PortSet,
};

/// The map value for a ban on `ports` lasting `duration` (`None`: permanent).
pub fn ban_value(ports: &PortSet, duration: Option<Duration>) -> BanValue {
    let (ports, flags) = ports.to_raw();
    let expires_ns = match duration {
        None => BAN_PERMANENT,
        Some(d) => boot_ns().saturating_add(d.as_nanos().min(u128::from(u64::MAX)) as u64),
    };
    BanValue {
        expires_ns,
        drops: 0,
        ports,
        flags,
        prefix_len: 0,
    }
}

/// Writes a ban, keeping the drop counter of a ban it replaces.
pub fn write_ban(
    table: &mut dyn BanTable,
    addr: IpNet,
    mut value: BanValue,
) -> Result<(), BpfError> {
    if let Some(old) = table.get(addr)? {
        value.drops = old.drops;
    }
    table.insert(addr, value)
}

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
    /// The same as `addr`, for sorting and lookups.
    #[serde(skip)]
    pub net: IpNet,
}

impl BanRow {
    fn new(addr: IpNet, v: &BanValue, global_monitor: bool) -> Self {
        Self {
            addr: show(&addr),
            monitor: global_monitor || v.flags & BAN_MONITOR != 0,
            net: addr,
            ports: PortSet::from_raw(&v.ports, v.flags).to_string(),
            expires_in_secs: (v.expires_ns != BAN_PERMANENT)
                .then(|| boot_remaining(v.expires_ns).as_secs()),
            drops: v.drops,
        }
    }
}

/// Bans in force (expired ones no longer drop and are left out), sorted;
/// in global monitor mode every row is marked as only counting.
pub fn active_bans(table: &dyn BanTable) -> Result<Vec<BanRow>, BpfError> {
    let monitor = table.monitor()?;
    let now = boot_ns();
    let mut rows: Vec<BanRow> = table
        .list()?
        .iter()
        .filter(|(_, v)| v.is_active(now))
        .map(|(a, v)| BanRow::new(*a, v, monitor))
        .collect();
    rows.sort_by_key(|r| r.net);
    Ok(rows)
}

/// The human table for `jailer list`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::MemBanTable;

    #[test]
    fn rebanning_keeps_the_drop_counter_and_list_hides_expired() {
        let mut t = MemBanTable::default();
        let a: IpNet = "203.0.113.7/32".parse().unwrap();
        let mut v = ban_value(&PortSet::Only(vec![110]), Some(Duration::from_secs(60)));
        v.drops = 7;
        t.insert(a, v).unwrap();
        write_ban(&mut t, a, ban_value(&PortSet::All, None)).unwrap();
        let rows = active_bans(&t).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].drops, 7);
        assert_eq!(rows[0].ports, "all");
        assert_eq!(rows[0].expires_in_secs, None);

        let b: IpNet = "2001:db8::/64".parse().unwrap();
        let mut expired = ban_value(&PortSet::Only(vec![110]), Some(Duration::from_secs(1)));
        expired.expires_ns = 1;
        t.insert(b, expired).unwrap();
        assert_eq!(active_bans(&t).unwrap().len(), 1);
        let table = format_table(&active_bans(&t).unwrap());
        assert!(
            table.contains("203.0.113.7")
                && table.contains("permanent")
                && table.contains("1 ban(s)")
        );
    }

    #[test]
    fn ban_value_expiry_on_boot_clock() {
        let v = ban_value(
            &PortSet::Only(vec![110, 995]),
            Some(Duration::from_secs(3600)),
        );
        let left = boot_remaining(v.expires_ns);
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
        assert!(v.covers_port(995) && !v.covers_port(25));
        assert_eq!(ban_value(&PortSet::All, None).expires_ns, BAN_PERMANENT);
    }

    #[test]
    fn global_monitor_mode_marks_every_row() {
        let mut t = MemBanTable::default();
        let a: IpNet = "203.0.113.7/32".parse().unwrap();
        t.insert(a, ban_value(&PortSet::Only(vec![110]), None))
            .unwrap();
        assert!(!active_bans(&t).unwrap()[0].monitor);
        t.set_monitor(true).unwrap();
        assert!(active_bans(&t).unwrap()[0].monitor);
        assert!(format_table(&active_bans(&t).unwrap()).contains("0 (monitor)"));
    }
}
