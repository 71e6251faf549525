//! An in-memory [`BanTable`] for tests that cannot touch the kernel.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{BpfError, table::BanTable};
use crate::ban::{Ban, Listed, PortSet, Target};

/// Bans in a shared map: clones see the same bans, so a test can watch what
/// an agent it runs writes.
#[derive(Default, Debug, Clone)]
pub struct MemBanTable {
    bans: Arc<Mutex<HashMap<Target, (Ban, u64)>>>,
    monitor: Arc<AtomicBool>,
}

impl MemBanTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<Target, (Ban, u64)>> {
        // A test that panicked while holding the lock already failed.
        self.bans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of every ban, by target.
    pub fn bans(&self) -> HashMap<Target, Ban> {
        self.lock().iter().map(|(t, (b, _))| (*t, *b)).collect()
    }

    /// The ban on one address, if any.
    pub fn ban_on(&self, addr: IpAddr) -> Option<Ban> {
        self.lock().get(&Target::host(addr)).map(|(b, _)| *b)
    }

    /// Edits one ban in place (tests: make it lapse).
    pub fn edit(&self, target: Target, f: impl FnOnce(&mut Ban)) {
        if let Some((ban, _)) = self.lock().get_mut(&target) {
            f(ban);
        }
    }

    /// Counts `n` dropped packets on a ban, as the datapath would.
    pub fn count_drops(&self, target: Target, n: u64) {
        if let Some((_, drops)) = self.lock().get_mut(&target) {
            *drops += n;
        }
    }
}

impl BanTable for MemBanTable {
    fn bulk_writer(&self) -> Result<Option<Box<dyn BanTable>>, BpfError> {
        Ok(Some(Box::new(self.clone())))
    }

    fn insert(&mut self, target: Target, ban: &Ban) -> Result<(), BpfError> {
        let mut bans = self.lock();
        let drops = bans.get(&target).map_or(0, |(_, d)| *d);
        bans.insert(target, (*ban, drops));
        Ok(())
    }

    fn entry(&self, target: Target) -> Result<Option<Listed>, BpfError> {
        Ok(self.lock().get(&target).map(|(ban, drops)| Listed {
            target,
            ban: *ban,
            drops: *drops,
        }))
    }

    fn remove(&mut self, target: Target) -> Result<bool, BpfError> {
        Ok(self.lock().remove(&target).is_some())
    }

    fn list(&self) -> Result<Vec<Listed>, BpfError> {
        Ok(self
            .lock()
            .iter()
            .map(|(target, (ban, drops))| Listed {
                target: *target,
                ban: *ban,
                drops: *drops,
            })
            .collect())
    }

    fn set_monitor(&mut self, on: bool) -> Result<(), BpfError> {
        self.monitor.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn monitor(&self) -> Result<bool, BpfError> {
        Ok(self.monitor.load(Ordering::Relaxed))
    }

    fn protect(&mut self, _ports: &PortSet) -> Result<(), BpfError> {
        Ok(())
    }
}
