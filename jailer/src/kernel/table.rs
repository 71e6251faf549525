//! The ban maps behind one trait: the agent and the CLI write through
//! [`BanTable`]; [`super::XdpBanTable`] is the pinned kernel maps, and tests
//! without privileges use [`super::MemBanTable`]. Bans cross this boundary
//! as [`Ban`]s: the kernel encoding stays behind it.

use aya::maps::MapError;

use super::BpfError;
use crate::ban::{Ban, Listed, PortSet, Target};

pub(super) fn map_err(map: &'static str) -> impl FnOnce(MapError) -> BpfError {
    move |source| match &source {
        MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EPERM) => {
            BpfError::NotRoot
        }
        _ => BpfError::Map { map, source },
    }
}

/// Where bans live, by address or network.
pub trait BanTable: Send {
    /// Adds or replaces the ban on `target`, keeping its drop counter.
    fn insert(&mut self, target: Target, ban: &Ban) -> Result<(), BpfError>;
    /// The ban on exactly `target` with its drop counter, if any (expired
    /// or not).
    fn entry(&self, target: Target) -> Result<Option<Listed>, BpfError>;
    /// The ban on exactly `target`, if any (expired or not).
    fn get(&self, target: Target) -> Result<Option<Ban>, BpfError> {
        Ok(self.entry(target)?.map(|l| l.ban))
    }
    /// Removes the ban on exactly `target`; `false` when there was none.
    fn remove(&mut self, target: Target) -> Result<bool, BpfError>;
    /// Every ban (expired ones too) with its drop counter.
    fn list(&self) -> Result<Vec<Listed>, BpfError>;
    /// Monitor mode for every ban (count would-be drops, drop nothing).
    fn set_monitor(&mut self, on: bool) -> Result<(), BpfError>;
    /// Whether monitor mode is on for every ban.
    fn monitor(&self) -> Result<bool, BpfError>;
    /// Tells the datapath that bans may cover `ports` (done by `insert` too;
    /// the agent marks its jails' ports at start).
    fn protect(&mut self, ports: &PortSet) -> Result<(), BpfError>;
    /// Whether no ban at all is in the table (fresh maps after a reboot).
    fn is_empty(&self) -> Result<bool, BpfError> {
        Ok(self.list()?.is_empty())
    }
    /// Many bans at once (restore, `ban --file`): new entries, drop counters
    /// start at zero. Returns how many were written; stops at the first
    /// error (a full map), keeping what was written. Bans are written in
    /// their order within each kind (IPv4 hosts, IPv6 hosts, networks), IPv4
    /// hosts first: give them in that order to know which were written.
    fn insert_many(&mut self, bans: &[(Target, Ban)]) -> Result<usize, BpfError> {
        for (i, (target, ban)) in bans.iter().enumerate() {
            if let Err(e) = self.insert(*target, ban) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(bans.len())
    }
    /// Another handle on the same bans, for a bulk write on another thread
    /// (the restore after a reboot, while the agent follows its logs);
    /// `None` when this table has no such thing.
    fn bulk_writer(&self) -> Result<Option<Box<dyn BanTable>>, BpfError> {
        Ok(None)
    }
    /// Removes many bans at once; returns how many existed.
    fn remove_many(&mut self, targets: &[Target]) -> Result<usize, BpfError> {
        let mut removed = 0;
        for target in targets {
            removed += usize::from(self.remove(*target)?);
        }
        Ok(removed)
    }
}
