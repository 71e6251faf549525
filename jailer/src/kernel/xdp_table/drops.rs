//! Per-ban drop counts: the tags the datapath counts drops under, and
//! reading and clearing the per-CPU `DROPS` slots that hold them.

use std::net::IpAddr;

use aya::maps::{IterableMap as _, MapError, PerCpuValues};
use jailer_common::{
    DROP_SLOTS, DropSlot, drop_slot, map_names, tag_v4_host, tag_v4_net, tag_v6_host, tag_v6_net,
    v6_halves,
};

use tracing::warn;

use super::XdpBanTable;
use crate::{
    ban::Target,
    error::Chain,
    kernel::{BpfError, batch, table::map_err},
};

/// The tag the datapath counts `target`'s drops under (the same function
/// of the same key: `jailer_common::tag_*`).
pub fn drop_tag(target: Target) -> u64 {
    let len = u32::from(target.prefix_len());
    match (target.addr(), target.is_host()) {
        (IpAddr::V4(a), true) => tag_v4_host(a.octets()),
        (IpAddr::V4(a), false) => tag_v4_net(a.octets(), len),
        (IpAddr::V6(a), true) => {
            let (hi, lo) = v6_halves(a.octets());
            tag_v6_host(hi, lo)
        }
        (IpAddr::V6(a), false) => {
            let (hi, lo) = v6_halves(a.octets());
            tag_v6_net(hi, lo, len)
        }
    }
}

/// Every CPU's `DROPS` slots, read at once: `cpus` slots per index, index
/// after index.
pub struct DropCounts {
    slots: Vec<DropSlot>,
    cpus: usize,
}

impl DropCounts {
    /// The drops counted under `tag`, summed over CPUs.
    pub fn of(&self, tag: u64) -> u64 {
        let i = drop_slot(tag) as usize * self.cpus;
        self.slots
            .get(i..i + self.cpus)
            .map_or(0, |cpus| sum_tag(cpus, tag))
    }
}

/// The counts of `tag` in one index's per-CPU slots.
fn sum_tag(slots: &[DropSlot], tag: u64) -> u64 {
    slots.iter().filter(|s| s.tag == tag).map(|s| s.drops).sum()
}

/// Above this many tags to clear at once, `DROPS` is read and written in
/// batches instead of a lookup (and an update) per tag.
const CLEAR_ONE_BY_ONE: usize = 256;

impl XdpBanTable {
    /// Every CPU's values at one `DROPS` index.
    fn drop_slots(&self, index: u32) -> Result<PerCpuValues<DropSlot>, BpfError> {
        self.drops.get(&index, 0).map_err(map_err(map_names::DROPS))
    }

    /// The drops counted for `target` (one lookup of its `DROPS` index).
    pub fn drops_of(&self, target: Target) -> Result<u64, BpfError> {
        let tag = drop_tag(target);
        Ok(sum_tag(&self.drop_slots(drop_slot(tag))?, tag))
    }

    /// Every `DROPS` slot of every CPU, in batches (about 2 ms for 2 CPUs'
    /// 65536 slots here, against about 60 ms for one lookup per index).
    pub fn drop_counts(&self) -> Result<DropCounts, BpfError> {
        let (keys, values) = batch::lookup_all::<u32, DropSlot>(self.drops.map(), self.cpus)
            .map_err(|source| BpfError::Batch {
                map: map_names::DROPS,
                op: "batch lookup",
                source,
            })?;
        let mut slots = vec![DropSlot::default(); DROP_SLOTS as usize * self.cpus];
        for (k, v) in keys.iter().zip(values.chunks_exact(self.cpus)) {
            let i = *k as usize * self.cpus;
            if let Some(dst) = slots.get_mut(i..i + self.cpus) {
                dst.copy_from_slice(v);
            }
        }
        Ok(DropCounts {
            slots,
            cpus: self.cpus,
        })
    }

    /// [`XdpBanTable::clear_drops`], best effort: the bans are already gone
    /// from the maps, and a count left behind must not make their removal
    /// (and its journal record) look failed. A ban set again on the target
    /// may then start above zero.
    pub(super) fn forget_drops(&mut self, tags: &[u64]) {
        if let Err(e) = self.clear_drops(tags) {
            warn!(error = %Chain(&e), bans = tags.len(), "the drop counts of removed bans could not be cleared");
        }
    }

    /// Forgets the drops counted under `tags` (their bans are gone: a new
    /// ban on the same target starts at zero). Slots another ban took over
    /// are left alone. Each CPU's value at an index is written back whole:
    /// drops counted between the read and the write at that index are lost
    /// (an undercount, see README's Known limits).
    pub(super) fn clear_drops(&mut self, tags: &[u64]) -> Result<(), BpfError> {
        if tags.len() <= CLEAR_ONE_BY_ONE {
            for &tag in tags {
                let index = drop_slot(tag);
                let mut slots = self.drop_slots(index)?.to_vec();
                if clear_tag(&mut slots, tag) {
                    let values = PerCpuValues::try_from(slots).map_err(|io_error| {
                        map_err(map_names::DROPS)(MapError::from(aya::sys::SyscallError {
                            call: "nr_cpus",
                            io_error,
                        }))
                    })?;
                    self.drops
                        .set(index, values, 0)
                        .map_err(map_err(map_names::DROPS))?;
                }
            }
            return Ok(());
        }
        // Many (a bulk unban): read every slot once, write back the indexes
        // that changed.
        let mut all = self.drop_counts()?;
        let cpus = self.cpus;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        let mut indexes: Vec<u32> = tags.iter().map(|&t| drop_slot(t)).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let mut tags = tags.to_vec();
        tags.sort_unstable_by_key(|&t| drop_slot(t));
        for index in indexes {
            let i = index as usize * cpus;
            let slots = &mut all.slots[i..i + cpus];
            let lo = tags.partition_point(|&t| drop_slot(t) < index);
            let hi = tags.partition_point(|&t| drop_slot(t) <= index);
            let mut changed = false;
            for &tag in &tags[lo..hi] {
                changed |= clear_tag(slots, tag);
            }
            if changed {
                keys.push(index);
                values.extend_from_slice(slots);
            }
        }
        let (_, err) = batch::update(self.drops.map(), &keys, &values, cpus);
        match err {
            None => Ok(()),
            Some(source) => Err(BpfError::Batch {
                map: map_names::DROPS,
                op: "batch update",
                source,
            }),
        }
    }
}

/// Zeroes the slots holding `tag`; whether any did.
fn clear_tag(slots: &mut [DropSlot], tag: u64) -> bool {
    let mut changed = false;
    for s in slots.iter_mut().filter(|s| s.tag == tag) {
        *s = DropSlot::default();
        changed = true;
    }
    changed
}
