//! `jailer status`: what fail2ban-client status shows, and more: per jail
//! failure and ban counts and the banned list, plus interfaces, attach mode,
//! lines read per log, packets dropped and uptime. From the running agent
//! (over its control socket) or, when it is down, from the maps and journal.

use std::{fmt::Write as _, path::Path, process::Command, time::SystemTime};

use ipnet::IpNet;

use jailer_common::stat;
use serde::{Deserialize, Serialize};

use crate::{
    admin::active_bans,
    bpf::{self, XdpBanTable},
    config::Config,
    duration::format_duration,
    error::Error,
    state::Journal,
};

/// Everything `status` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `agent` when the running agent answered, `maps` when it did not.
    pub source: String,
    /// Seconds since the agent started (agent only).
    pub uptime_secs: Option<u64>,
    pub interfaces: Vec<InterfaceStatus>,
    /// Per-CPU counters summed; `None` when no maps are pinned.
    pub packets: Option<PacketStats>,
    /// Lines read per log file (agent only).
    pub logs: Vec<LogStatus>,
    pub jails: Vec<JailStatus>,
    /// Bans in force in the kernel maps, all jails and manual ones.
    pub bans_in_maps: usize,
    /// Failure windows evicted to bound memory (agent only).
    pub window_evictions: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// `driver`, `generic`, or `unknown`.
    pub mode: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PacketStats {
    pub seen: u64,
    pub passed: u64,
    pub dropped_v4: u64,
    pub dropped_v6: u64,
    /// Matched a ban in monitor mode: counted, not dropped.
    #[serde(default)]
    pub would_drop: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogStatus {
    pub path: String,
    pub lines: u64,
}

/// fail2ban-client's jail status, word for word.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JailStatus {
    pub name: String,
    /// Addresses with failures in their window (agent only).
    pub currently_failed: Option<u64>,
    /// Failures counted since the agent started (agent only).
    pub total_failed: Option<u64>,
    pub currently_banned: u64,
    /// Bans set since the agent started (agent only).
    pub total_banned: Option<u64>,
    /// Bans that could not be written (a full map), since start (agent only).
    #[serde(default)]
    pub ban_errors: Option<u64>,
    /// Addresses, or networks (CIDR) for prefix bans.
    pub banned: Vec<String>,
}

/// Packet counters from the pinned `STATS` map.
pub fn packet_stats(bpffs: &Path) -> Option<PacketStats> {
    let s = bpf::read_stats(bpffs).ok()?;
    let (seen, v4, v6, would) = (
        s[stat::SEEN as usize],
        s[stat::DROPPED_V4 as usize],
        s[stat::DROPPED_V6 as usize],
        s[stat::WOULD_DROP as usize],
    );
    Some(PacketStats {
        seen,
        // Not counted per packet: everything not dropped passed. Per-CPU
        // sums are read one after the other, so clamp a momentary skew.
        passed: seen.saturating_sub(v4 + v6),
        dropped_v4: v4,
        dropped_v6: v6,
        would_drop: would,
    })
}

/// How XDP is attached to `iface`, as `ip link` reports it.
pub fn attach_mode(iface: &str) -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", iface])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if text.contains(" xdpgeneric") {
        "generic".into()
    } else if text.contains(" xdpdrv") || text.contains(" xdp ") {
        "driver".into()
    } else {
        "unknown".into()
    }
}

/// Status from the maps and the journal alone (the agent is not running).
pub fn from_maps(config: &Config) -> Result<Status, Error> {
    let table = XdpBanTable::open_existing(&config.bpffs)?;
    let rows = active_bans(&table)?;
    let in_force: Vec<IpNet> = rows.iter().map(|r| r.net).collect();
    let replay = Journal::new(&config.state_dir)?.replay(SystemTime::now())?;
    let jails = config
        .jails
        .iter()
        .map(|j| {
            let mut banned: Vec<IpNet> = replay
                .bans
                .iter()
                .filter(|(addr, e)| replay.jail(e) == j.name && in_force.contains(addr))
                .map(|(addr, _)| *addr)
                .collect();
            banned.sort();
            JailStatus {
                name: j.name.clone(),
                currently_banned: banned.len() as u64,
                banned: banned.iter().map(bpf::show).collect(),
                ..JailStatus::default()
            }
        })
        .collect();
    Ok(Status {
        source: "maps".into(),
        interfaces: bpf::attached_interfaces(&config.bpffs)
            .into_iter()
            .map(|name| InterfaceStatus {
                mode: attach_mode(&name),
                name,
            })
            .collect(),
        packets: packet_stats(&config.bpffs),
        jails,
        bans_in_maps: rows.len(),
        ..Status::default()
    })
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// The human form, shaped like `fail2ban-client status JAIL`.
pub fn render(status: &Status, only: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Status ({})",
        if status.source == "agent" {
            "from the running agent"
        } else {
            "agent not running: from the kernel maps"
        }
    );
    if let Some(up) = status.uptime_secs {
        let _ = writeln!(
            out,
            "|- Uptime:\t{}",
            format_duration(std::time::Duration::from_secs(up))
        );
    }
    let ifaces: Vec<String> = status
        .interfaces
        .iter()
        .map(|i| format!("{} ({})", i.name, i.mode))
        .collect();
    let _ = writeln!(
        out,
        "|- Interfaces:\t{}",
        if ifaces.is_empty() {
            "none attached".into()
        } else {
            ifaces.join(", ")
        }
    );
    if let Some(p) = status.packets {
        let _ = writeln!(
            out,
            "|- Packets:\tseen {}, passed {}, dropped {} (IPv4 {}, IPv6 {}), would-drop (monitor) {}",
            p.seen,
            p.passed,
            p.dropped_v4 + p.dropped_v6,
            p.dropped_v4,
            p.dropped_v6,
            p.would_drop
        );
    }
    for log in &status.logs {
        let _ = writeln!(out, "|- Log:\t\t{} ({} lines read)", log.path, log.lines);
    }
    let _ = writeln!(out, "|- Bans in maps:\t{}", status.bans_in_maps);
    if let Some(e) = status.window_evictions {
        let _ = writeln!(out, "|- Window evictions:\t{e}");
    }
    let jails: Vec<&JailStatus> = status
        .jails
        .iter()
        .filter(|j| only.is_none_or(|n| n == j.name))
        .collect();
    let _ = writeln!(
        out,
        "`- Jail list:\t{}",
        jails
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for j in jails {
        let _ = write!(
            out,
            "\nStatus for the jail: {}\n|- Filter\n|  |- Currently failed:\t{}\n|  `- Total failed:\t{}\n`- Actions\n   |- Currently banned:\t{}\n   |- Total banned:\t{}\n   |- Ban errors:\t{}\n   `- Banned IP list:\t{}\n",
            j.name,
            opt(j.currently_failed),
            opt(j.total_failed),
            j.currently_banned,
            opt(j.total_banned),
            opt(j.ban_errors),
            j.banned.join(" ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fail2ban_shape_and_filters_jails() {
        let s = Status {
            source: "agent".into(),
            uptime_secs: Some(3661),
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                mode: "driver".into(),
            }],
            packets: Some(PacketStats {
                seen: 10,
                passed: 7,
                dropped_v4: 2,
                dropped_v6: 1,
                would_drop: 0,
            }),
            logs: vec![LogStatus {
                path: "/var/log/mail.log".into(),
                lines: 42,
            }],
            jails: vec![
                JailStatus {
                    name: "vpopmail".into(),
                    currently_failed: Some(1),
                    total_failed: Some(4),
                    currently_banned: 1,
                    total_banned: Some(1),
                    ban_errors: Some(0),
                    banned: vec!["203.0.113.7".into()],
                },
                JailStatus {
                    name: "other".into(),
                    ..JailStatus::default()
                },
            ],
            bans_in_maps: 1,
            window_evictions: Some(0),
        };
        let text = render(&s, Some("vpopmail"));
        assert!(text.contains("Uptime:\t1h 1m 1s"), "{text}");
        assert!(text.contains("eth0 (driver)"));
        assert!(text.contains("dropped 3 (IPv4 2, IPv6 1)"));
        assert!(text.contains("/var/log/mail.log (42 lines read)"));
        assert!(text.contains("Currently failed:\t1") && text.contains("Total failed:\t4"));
        assert!(text.contains("Banned IP list:\t203.0.113.7"));
        assert!(!text.contains("Status for the jail: other"));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }
}
