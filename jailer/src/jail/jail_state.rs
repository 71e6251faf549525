//! Each jail's state in the engine (failure window, ban counts, counters)
//! and what works on it jail by jail: reload, status, the window snapshot.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::SystemTime,
};

use serde::Serialize;

use super::{Engine, window::FailureWindow};
use crate::{ban::Target, config::Jail, kernel::BanTable};

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

pub(super) struct JailState {
    pub(super) jail: Jail,
    pub(super) window: FailureWindow,
    /// Previous bans per target (for bantime_increment).
    pub(super) ban_counts: HashMap<Target, u32>,
    pub(super) stats: JailStats,
}

impl JailState {
    pub(super) fn new(jail: Jail) -> Self {
        Self {
            window: FailureWindow::new(jail.maxretry, jail.findtime, jail.max_tracked),
            jail,
            ban_counts: HashMap::new(),
            stats: JailStats::default(),
        }
    }
}

impl<T: BanTable> Engine<T> {
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

    /// Failure windows, for the snapshot.
    pub fn export_windows(&self) -> BTreeMap<String, WindowEntries> {
        self.jails
            .iter()
            .map(|j| (j.jail.name.clone(), j.window.export()))
            .collect()
    }

    /// Failure windows from the snapshot. A failure time later than `now`
    /// (a damaged snapshot, a clock set back) counts as `now`, as a line
    /// dated in the future does: never a window that outlives findtime.
    pub fn import_windows(
        &mut self,
        mut windows: BTreeMap<String, WindowEntries>,
        now: SystemTime,
    ) {
        let now_ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        for j in &mut self.jails {
            if let Some(mut w) = windows.remove(&j.jail.name) {
                for (_, times) in &mut w {
                    times.iter_mut().for_each(|t| *t = (*t).min(now_ms));
                }
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
}
