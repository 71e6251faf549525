//! [`XdpBanTable`]: the pinned kernel maps, and the encoding of a [`Ban`]
//! as the datapath reads it ([`BanValue`]).
//!
//! Ban values are written once and only read by the datapath. Per-ban drop
//! counts live apart, in the per-CPU `DROPS` slots (see
//! [`jailer_common::DropSlot`]): a ban's count is the sum, over CPUs, of
//! the slots at [`drop_slot`](jailer_common::drop_slot)`(`[`drop_tag`]`(target))`
//! that hold its tag.

mod drops;
mod maps;

use std::{collections::HashSet, net::IpAddr};

use aya::maps::{
    Array, HashMap, IterableMap as _, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key,
};
use jailer_common::{
    BAN_MONITOR, BanKeyV4, BanKeyV6, BanValue, DropSlot, NetV4, NetV6, SETTINGS_MONITOR, map_names,
    setting,
};

pub use self::drops::{DropCounts, drop_tag};
use super::{
    BpfError, batch,
    clock::Clocks,
    table::{BanTable, map_err},
};
use crate::ban::{Ban, Listed, PortSet, Target};

/// The map value of `ban`.
fn encode(ban: &Ban, prefix_len: u32, clocks: &Clocks) -> BanValue {
    let (ports, mut flags) = ban.ports.to_raw();
    if ban.monitor {
        flags |= BAN_MONITOR;
    }
    BanValue {
        expires_ns: clocks.deadline(ban.expiry),
        ports,
        flags,
        prefix_len,
    }
}

/// The ban a map value holds.
fn decode(v: &BanValue, clocks: &Clocks) -> Ban {
    Ban {
        ports: PortSet::from_raw(&v.ports, v.flags),
        expiry: clocks.expiry(v.expires_ns),
        monitor: v.flags & BAN_MONITOR != 0,
    }
}

type Trie4 = LpmTrie<MapData, NetV4, BanValue>;
type Trie6 = LpmTrie<MapData, NetV6, BanValue>;

/// The pinned kernel ban maps.
pub struct XdpBanTable {
    v4: HashMap<MapData, BanKeyV4, BanValue>,
    v6: HashMap<MapData, BanKeyV6, BanValue>,
    v4_net: Trie4,
    v6_net: Trie6,
    drops: PerCpuArray<MapData, DropSlot>,
    /// Values per index of `DROPS`.
    cpus: usize,
    settings: Array<MapData, u32>,
    ports: Array<MapData, u8>,
    /// Ports this process already marked in `PORTS` (entries are never cleared).
    marked: HashSet<u16>,
    any_port_marked: bool,
    /// Capacity of BANS_V4, BANS_V6, BANS_V4_NET, BANS_V6_NET.
    capacity: [u32; 4],
}

fn net_key4(target: &Target) -> Key<NetV4> {
    let o = match target.addr() {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => [0; 4],
    };
    Key::new(
        u32::from(target.prefix_len()),
        [o[0], o[1], o[2], o[3], 0, 0, 0, 0],
    )
}

fn net_key6(target: &Target) -> Key<NetV6> {
    let o = match target.addr() {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    };
    Key::new(u32::from(target.prefix_len()), o)
}

/// Which map a target lives in.
enum Slot {
    V4(BanKeyV4),
    V6(BanKeyV6),
    Net4(Key<NetV4>),
    Net6(Key<NetV6>),
}

fn slot(target: &Target) -> Slot {
    match (target.addr(), target.is_host()) {
        (IpAddr::V4(a), true) => Slot::V4(BanKeyV4 { addr: a.octets() }),
        (IpAddr::V6(a), true) => Slot::V6(BanKeyV6 { addr: a.octets() }),
        (IpAddr::V4(_), false) => Slot::Net4(net_key4(target)),
        (IpAddr::V6(_), false) => Slot::Net6(net_key6(target)),
    }
}

fn full_or(map: &'static str, capacity: u32, target: Target) -> impl FnOnce(MapError) -> BpfError {
    move |source| match &source {
        MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
            BpfError::MapFull {
                map,
                capacity,
                target: target.to_string(),
            }
        }
        _ => map_err(map)(source),
    }
}

/// A batch that stopped: a full map is `MapFull` (when nothing was written)
/// or a partial success; anything else is an error.
fn batch_error(
    e: std::io::Error,
    map: &'static str,
    capacity: u32,
    written: usize,
) -> Result<usize, BpfError> {
    match e.raw_os_error() {
        Some(libc::E2BIG | libc::ENOSPC) if written > 0 => Ok(written),
        Some(libc::E2BIG | libc::ENOSPC) => Err(BpfError::MapFull {
            map,
            capacity,
            target: "a bulk ban".into(),
        }),
        Some(libc::EPERM) => Err(BpfError::NotRoot),
        _ => Err(BpfError::Batch {
            map,
            op: "batch update",
            source: e,
        }),
    }
}

fn not_found(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

fn found<V>(r: Result<V, MapError>, map: &'static str) -> Result<Option<V>, BpfError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(map_err(map)(e)),
    }
}

impl XdpBanTable {
    fn set(&mut self, slot: u32, value: u32) -> Result<(), BpfError> {
        self.settings
            .set(slot, value, 0)
            .map_err(map_err(map_names::SETTINGS))
    }

    /// After a trie removal: clear the "trie in use" slot if it is empty, and
    /// set it again if a concurrent writer inserted meanwhile.
    fn refresh_net_flag(&mut self, v4: bool) -> Result<(), BpfError> {
        let empty = |t: &Self| {
            if v4 {
                t.v4_net.keys().next().is_none()
            } else {
                t.v6_net.keys().next().is_none()
            }
        };
        let slot = if v4 {
            setting::NETS_V4
        } else {
            setting::NETS_V6
        };
        if empty(self) {
            self.set(slot, 0)?;
            if !empty(self) {
                self.set(slot, 1)?;
            }
        }
        Ok(())
    }

    /// The raw value on exactly `target`.
    fn get_value(&self, target: Target) -> Result<Option<BanValue>, BpfError> {
        // A trie lookup returns the longest covering prefix; keep it only
        // when it is this very prefix.
        let exact =
            |v: Option<BanValue>| v.filter(|v| v.prefix_len == u32::from(target.prefix_len()));
        match slot(&target) {
            Slot::V4(k) => found(self.v4.get(&k, 0), map_names::BANS_V4),
            Slot::V6(k) => found(self.v6.get(&k, 0), map_names::BANS_V6),
            Slot::Net4(k) => found(self.v4_net.get(&k, 0), map_names::BANS_V4_NET).map(exact),
            Slot::Net6(k) => found(self.v6_net.get(&k, 0), map_names::BANS_V6_NET).map(exact),
        }
    }
}

impl BanTable for XdpBanTable {
    fn insert(&mut self, target: Target, ban: &Ban) -> Result<(), BpfError> {
        // Ports first: a ban the datapath does not look up would not drop.
        self.protect(&ban.ports)?;
        let clocks = Clocks::now();
        let prefix = if target.is_host() {
            0
        } else {
            u32::from(target.prefix_len())
        };
        // Only the value: a ban banned again keeps its drop count, which
        // lives in DROPS.
        let value = encode(ban, prefix, &clocks);
        let [c4, c6, cn4, cn6] = self.capacity;
        match slot(&target) {
            Slot::V4(k) => {
                self.v4
                    .insert(k, value, 0)
                    .map_err(full_or(map_names::BANS_V4, c4, target))
            }
            Slot::V6(k) => {
                self.v6
                    .insert(k, value, 0)
                    .map_err(full_or(map_names::BANS_V6, c6, target))
            }
            Slot::Net4(k) => {
                self.v4_net.insert(&k, value, 0).map_err(full_or(
                    map_names::BANS_V4_NET,
                    cn4,
                    target,
                ))?;
                self.set(setting::NETS_V4, 1)
            }
            Slot::Net6(k) => {
                self.v6_net.insert(&k, value, 0).map_err(full_or(
                    map_names::BANS_V6_NET,
                    cn6,
                    target,
                ))?;
                self.set(setting::NETS_V6, 1)
            }
        }
    }

    fn entry(&self, target: Target) -> Result<Option<Listed>, BpfError> {
        let clocks = Clocks::now();
        let Some(v) = self.get_value(target)? else {
            return Ok(None);
        };
        Ok(Some(Listed {
            target,
            ban: decode(&v, &clocks),
            drops: self.drops_of(target)?,
        }))
    }

    fn bulk_writer(&self) -> Result<Option<Box<dyn BanTable>>, BpfError> {
        Ok(Some(Box::new(self.reopen()?)))
    }

    fn get(&self, target: Target) -> Result<Option<Ban>, BpfError> {
        // No drop count wanted: spare the DROPS lookup.
        let clocks = Clocks::now();
        Ok(self.get_value(target)?.map(|v| decode(&v, &clocks)))
    }

    fn remove(&mut self, target: Target) -> Result<bool, BpfError> {
        let removed = match slot(&target) {
            Slot::V4(k) => found(self.v4.remove(&k), map_names::BANS_V4)?,
            Slot::V6(k) => found(self.v6.remove(&k), map_names::BANS_V6)?,
            Slot::Net4(k) => {
                let r = found(self.v4_net.remove(&k), map_names::BANS_V4_NET)?;
                self.refresh_net_flag(true)?;
                r
            }
            Slot::Net6(k) => {
                let r = found(self.v6_net.remove(&k), map_names::BANS_V6_NET)?;
                self.refresh_net_flag(false)?;
                r
            }
        };
        if removed.is_some() {
            self.forget_drops(&[drop_tag(target)]);
        }
        Ok(removed.is_some())
    }

    fn list(&self) -> Result<Vec<Listed>, BpfError> {
        let clocks = Clocks::now();
        // Every count at once: one read of DROPS, then a slot per ban.
        let drops = self.drop_counts()?;
        let listed = |target: Target, v: &BanValue| Listed {
            target,
            ban: decode(v, &clocks),
            drops: drops.of(drop_tag(target)),
        };
        let batch_err = |map| {
            move |source| BpfError::Batch {
                map,
                op: "batch lookup",
                source,
            }
        };
        let mut out = Vec::new();
        // Exact bans can be a million: read them in batches, not one
        // syscall pair per element.
        let (keys, values) = batch::lookup_all::<BanKeyV4, BanValue>(self.v4.map(), 1)
            .map_err(batch_err(map_names::BANS_V4))?;
        out.reserve(keys.len());
        for (k, v) in keys.iter().zip(&values) {
            out.push(listed(Target::host(IpAddr::from(k.addr)), v));
        }
        let (keys, values) = batch::lookup_all::<BanKeyV6, BanValue>(self.v6.map(), 1)
            .map_err(batch_err(map_names::BANS_V6))?;
        for (k, v) in keys.iter().zip(&values) {
            out.push(listed(Target::host(IpAddr::from(k.addr)), v));
        }
        // Tries have no batch operations; they hold at most MAX_NET_BANS.
        for item in self.v4_net.iter() {
            let (k, v) = item.map_err(map_err(map_names::BANS_V4_NET))?;
            let d = k.data();
            let addr = IpAddr::from([d[0], d[1], d[2], d[3]]);
            if let Ok(net) = ipnet::IpNet::new(addr, k.prefix_len() as u8) {
                out.push(listed(Target::network(net), &v));
            }
        }
        for item in self.v6_net.iter() {
            let (k, v) = item.map_err(map_err(map_names::BANS_V6_NET))?;
            if let Ok(net) = ipnet::IpNet::new(IpAddr::from(k.data()), k.prefix_len() as u8) {
                out.push(listed(Target::network(net), &v));
            }
        }
        Ok(out)
    }

    fn set_monitor(&mut self, on: bool) -> Result<(), BpfError> {
        self.set(setting::FLAGS, if on { SETTINGS_MONITOR } else { 0 })
    }

    fn monitor(&self) -> Result<bool, BpfError> {
        let flags = self
            .settings
            .get(&setting::FLAGS, 0)
            .map_err(map_err(map_names::SETTINGS))?;
        Ok(flags & SETTINGS_MONITOR != 0)
    }

    fn is_empty(&self) -> Result<bool, BpfError> {
        Ok(self.v4.keys().next().is_none()
            && self.v6.keys().next().is_none()
            && self.v4_net.keys().next().is_none()
            && self.v6_net.keys().next().is_none())
    }

    fn insert_many(&mut self, bans: &[(Target, Ban)]) -> Result<usize, BpfError> {
        let clocks = Clocks::now();
        let mut v4 = (Vec::new(), Vec::new());
        let mut v6 = (Vec::new(), Vec::new());
        let mut nets = Vec::new();
        let mut last_ports = None;
        for (target, ban) in bans {
            // A million bans share a handful of port sets.
            if last_ports != Some(&ban.ports) {
                self.protect(&ban.ports)?;
                last_ports = Some(&ban.ports);
            }
            match slot(target) {
                Slot::V4(k) => {
                    v4.0.push(k);
                    v4.1.push(encode(ban, 0, &clocks));
                }
                Slot::V6(k) => {
                    v6.0.push(k);
                    v6.1.push(encode(ban, 0, &clocks));
                }
                Slot::Net4(_) | Slot::Net6(_) => nets.push((*target, ban)),
            }
        }
        let [c4, c6, _, _] = self.capacity;
        let (n, err) = batch::update(self.v4.map(), &v4.0, &v4.1, 1);
        let mut written = n;
        if let Some(e) = err {
            return batch_error(e, map_names::BANS_V4, c4, written);
        }
        let (n, err) = batch::update(self.v6.map(), &v6.0, &v6.1, 1);
        written += n;
        if let Some(e) = err {
            return batch_error(e, map_names::BANS_V6, c6, written);
        }
        for (target, ban) in nets {
            match self.insert(target, ban) {
                Ok(()) => written += 1,
                Err(BpfError::MapFull { .. }) if written > 0 => return Ok(written),
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    fn remove_many(&mut self, targets: &[Target]) -> Result<usize, BpfError> {
        let (mut k4, mut k6, mut nets) = (Vec::new(), Vec::new(), Vec::new());
        for target in targets {
            match slot(target) {
                Slot::V4(k) => k4.push(k),
                Slot::V6(k) => k6.push(k),
                Slot::Net4(_) | Slot::Net6(_) => nets.push(*target),
            }
        }
        let delete_err = |map| {
            move |source| BpfError::Batch {
                map,
                op: "batch delete",
                source,
            }
        };
        let mut removed =
            batch::delete(self.v4.map(), &k4).map_err(delete_err(map_names::BANS_V4))?;
        removed += batch::delete(self.v6.map(), &k6).map_err(delete_err(map_names::BANS_V6))?;
        // Their counts go with them (a tag with no count costs nothing).
        let hosts: Vec<u64> = targets
            .iter()
            .filter(|t| t.is_host())
            .map(|&t| drop_tag(t))
            .collect();
        self.forget_drops(&hosts);
        for target in nets {
            removed += usize::from(self.remove(target)?);
        }
        Ok(removed)
    }

    fn protect(&mut self, ports: &PortSet) -> Result<(), BpfError> {
        match ports {
            PortSet::All => {
                if !self.any_port_marked {
                    self.set(setting::ANY_PORT, 1)?;
                    self.any_port_marked = true;
                }
            }
            PortSet::Only(list) => {
                for &port in list.iter() {
                    if self.marked.insert(port) {
                        self.ports
                            .set(u32::from(port), 1, 0)
                            .map_err(map_err(map_names::PORTS))?;
                    }
                }
            }
        }
        Ok(())
    }
}
