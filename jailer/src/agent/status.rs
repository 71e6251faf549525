//! What `jailer status` reports — fail2ban-client status's per-jail failure
//! and ban counts and banned list, plus interfaces, attach mode, lines read
//! per log, packets dropped and uptime — gathered by the running agent, or,
//! when it is down, from the maps and the journal.

use std::{collections::HashSet, path::Path, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    ban::Target,
    config::Config,
    error::Error,
    kernel::{self, AttachMode, BanTable, PacketStats, XdpBanTable},
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
    /// Bans in force, all jails and manual ones: as the agent knows them
    /// (its own, restored, and set with `jailer ban`), else from the maps.
    pub bans_in_force: usize,
    /// Failure windows evicted to bound memory (agent only).
    pub window_evictions: Option<u64>,
    /// The fleet link, with a `[fleet]` (agent only).
    #[serde(default)]
    pub fleet: Option<super::FleetReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// `driver`, `generic`, `unknown`, or `missing` (the interface is gone;
    /// the agent attaches again when it returns).
    pub mode: AttachMode,
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

/// Targets of the bans in force: one batch listing, no syscall per ban.
pub fn bans_in_force(table: &dyn BanTable) -> Result<HashSet<Target>, Error> {
    let now = SystemTime::now();
    Ok(table
        .list()?
        .into_iter()
        .filter(|l| l.ban.expiry.is_active(now))
        .map(|l| l.target)
        .collect())
}

/// Interfaces with a pinned link; an interface that vanished says so.
pub fn interfaces(bpffs: &Path) -> Vec<InterfaceStatus> {
    kernel::attached_interfaces(bpffs)
        .into_iter()
        .map(|name| InterfaceStatus {
            mode: if nix::net::if_::if_nametoindex(name.as_str()).is_ok() {
                AttachMode::of(&name)
            } else {
                AttachMode::Missing
            },
            name,
        })
        .collect()
}

/// Status from the maps and the journal alone (the agent is not running).
pub fn from_maps(config: &Config) -> Result<Status, Error> {
    let table = XdpBanTable::open_existing(&config.bpffs)?;
    // Listing the maps and reading the journal take about as long as each
    // other with a million bans: do both at once.
    let (in_force, replay) = std::thread::scope(|s| {
        let journal = s.spawn(|| Journal::new(&config.state_dir).replay(SystemTime::now()));
        let in_force = bans_in_force(&table);
        (in_force, journal.join())
    });
    let in_force = in_force?;
    let replay = match replay {
        Ok(r) => r?,
        Err(_) => return Err(Error::Usage("reading the journal failed".into())),
    };
    let jails = config
        .jails
        .iter()
        .map(|j| {
            let mut banned: Vec<Target> = replay
                .bans
                .iter()
                .filter(|(target, e)| replay.jail(e) == j.name && in_force.contains(target))
                .map(|(target, _)| *target)
                .collect();
            banned.sort();
            JailStatus {
                name: j.name.clone(),
                currently_banned: banned.len() as u64,
                banned: banned.iter().map(Target::to_string).collect(),
                ..JailStatus::default()
            }
        })
        .collect();
    Ok(Status {
        source: "maps".into(),
        interfaces: interfaces(&config.bpffs),
        packets: kernel::packet_stats(&config.bpffs),
        jails,
        bans_in_force: in_force.len(),
        ..Status::default()
    })
}

impl<T: BanTable> super::Agent<T> {
    /// The agent's own view: its counters, its logs, the maps.
    pub(super) fn status(&self) -> Status {
        let interfaces = if self.options.attached.is_empty() {
            interfaces(&self.config.bpffs)
        } else {
            self.options
                .attached
                .iter()
                .map(|a| InterfaceStatus {
                    name: a.iface.clone(),
                    mode: match self.ifindexes.get(&a.iface) {
                        Some(None) => AttachMode::Missing,
                        _ => a.mode,
                    },
                })
                .collect()
        };
        let now = SystemTime::now();
        let jails = self
            .engine
            .jail_report(now)
            .into_iter()
            .map(|(name, stats, failing, banned)| JailStatus {
                name,
                currently_failed: Some(failing as u64),
                total_failed: Some(stats.total_failed),
                currently_banned: banned.len() as u64,
                total_banned: Some(stats.total_banned),
                ban_errors: Some(stats.ban_errors),
                banned: banned.iter().map(ToString::to_string).collect(),
            })
            .collect();
        Status {
            source: "agent".into(),
            uptime_secs: Some(self.started.elapsed().as_secs()),
            interfaces,
            packets: kernel::packet_stats(&self.config.bpffs),
            logs: self
                .source_jails
                .keys()
                .map(|source| LogStatus {
                    path: source.to_string(),
                    lines: self.lines_read.get(source).copied().unwrap_or(0),
                })
                .collect(),
            jails,
            bans_in_force: self.engine.bans_in_force(now),
            window_evictions: Some(self.engine.evictions()),
            fleet: self.fleet_report(),
        }
    }
}
