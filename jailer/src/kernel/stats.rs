//! The datapath's per-CPU packet counters, summed.

use std::path::Path;

use aya::maps::{Map, MapData, PerCpuArray};
use jailer_common::{map_names, stat};
use serde::{Deserialize, Serialize};

use super::{BpfError, table::map_err};

/// Packet counters over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PacketStats {
    pub seen: u64,
    /// Everything not dropped: `seen - dropped_v4 - dropped_v6`.
    pub passed: u64,
    pub dropped_v4: u64,
    pub dropped_v6: u64,
    /// Matched a ban in monitor mode: counted, not dropped.
    #[serde(default)]
    pub would_drop: u64,
}

/// Sums the per-CPU `STATS` counters.
fn read_stats(bpffs: &Path) -> Result<[u64; stat::COUNT as usize], BpfError> {
    let path = bpffs.join(map_names::STATS);
    if !path.exists() {
        return Err(BpfError::NotPinned {
            path: bpffs.to_owned(),
        });
    }
    let data = MapData::from_pin(&path).map_err(map_err(map_names::STATS))?;
    let map = Map::from_map_data(data).map_err(map_err(map_names::STATS))?;
    let array: PerCpuArray<MapData, u64> = map.try_into().map_err(map_err(map_names::STATS))?;
    let mut out = [0; stat::COUNT as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        let values = array
            .get(&(i as u32), 0)
            .map_err(map_err(map_names::STATS))?;
        *slot = values.iter().sum();
    }
    Ok(out)
}

/// Packet counters from the pinned `STATS` map; `None` when nothing is pinned.
pub fn packet_stats(bpffs: &Path) -> Option<PacketStats> {
    let s = read_stats(bpffs).ok()?;
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
