//! [`XdpBanTable`]: the pinned kernel maps, and the encoding of a [`Ban`]
//! as the datapath reads it ([`BanValue`]).
//!
//! The exact-address maps are per-CPU: a ban is written as one value per
//! possible CPU (same expiry, ports and flags; each CPU's own `drops`), and
//! read back as CPU 0's value with the drops summed. Prefix bans keep one
//! value in their trie and their drops, per CPU, in `NET_DROPS_V4`/`_V6`.

use std::{collections::HashSet, net::IpAddr, path::Path, time::Instant};

use aya::maps::{
    Array, IterableMap as _, LpmTrie, Map, MapData, MapError, PerCpuHashMap, PerCpuValues,
    lpm_trie::Key,
};
use aya::{Ebpf, Pod};
use jailer_common::{
    BAN_MONITOR, BanKeyV4, BanKeyV6, BanValue, NetDropKeyV4, NetDropKeyV6, NetV4, NetV6,
    SETTINGS_MONITOR, map_names, setting,
};

use super::{
    BpfError,
    attach::load_object,
    batch,
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
        drops: 0,
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

/// The number of possible CPUs: how many values a per-CPU map holds per key.
pub(super) fn possible_cpus() -> Result<usize, BpfError> {
    aya::util::nr_cpus().map_err(|(path, source)| BpfError::Cpus {
        path: path.into(),
        source,
    })
}

/// `value` with `drops` (no struct update syntax: rustc 1.95 ICEs on it
/// for this type, whose array length is a constant of another crate).
fn with_drops(mut value: BanValue, drops: u64) -> BanValue {
    value.drops = drops;
    value
}

/// One value per CPU: `value` everywhere, each CPU keeping its `drops`.
fn per_cpu(value: BanValue, drops: Option<&[BanValue]>, cpus: usize) -> Vec<BanValue> {
    (0..cpus)
        .map(|cpu| with_drops(value, drops.and_then(|d| d.get(cpu)).map_or(0, |d| d.drops)))
        .collect()
}

/// A per-CPU ban as one: CPU 0's value (userspace writes the same one to
/// every CPU) with the drops of all CPUs.
fn fold(values: &[BanValue]) -> BanValue {
    with_drops(values[0], values.iter().map(|v| v.drops).sum())
}

/// Drop counts of prefix bans, per CPU.
struct NetDrops<K: Pod> {
    map: PerCpuHashMap<MapData, K, u64>,
    name: &'static str,
}

impl<K: Pod> NetDrops<K> {
    fn sum(&self, key: &K) -> Result<u64, BpfError> {
        Ok(found(self.map.get(key, 0), self.name)?.map_or(0, |v| v.iter().sum()))
    }

    /// Forgets the count (the ban is gone, or a new one starts at zero).
    fn clear(&mut self, key: &K) -> Result<(), BpfError> {
        found(self.map.remove(key), self.name).map(drop)
    }
}

/// The pinned kernel ban maps.
pub struct XdpBanTable {
    v4: PerCpuHashMap<MapData, BanKeyV4, BanValue>,
    v6: PerCpuHashMap<MapData, BanKeyV6, BanValue>,
    v4_net: Trie4,
    v6_net: Trie6,
    net_drops4: NetDrops<NetDropKeyV4>,
    net_drops6: NetDrops<NetDropKeyV6>,
    /// Values per key in the per-CPU maps.
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

/// The `NET_DROPS_V4` key the datapath counts a prefix's drops under: the
/// trie key's prefix length and address (host bits already clear).
fn drop_key4(key: &Key<NetV4>) -> NetDropKeyV4 {
    let d = key.data();
    NetDropKeyV4 {
        prefix_len: key.prefix_len(),
        addr: [d[0], d[1], d[2], d[3]],
    }
}

fn drop_key6(key: &Key<NetV6>) -> NetDropKeyV6 {
    NetDropKeyV6 {
        prefix_len: key.prefix_len(),
        addr: key.data(),
    }
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

/// Runs `op` again while the kernel's per-CPU allocator catches up with a
/// burst of inserts (see [`batch::allocator_caught_up`]).
fn retry_alloc(mut op: impl FnMut() -> Result<(), MapError>) -> Result<(), MapError> {
    let start = Instant::now();
    loop {
        match op() {
            Err(MapError::SyscallError(ref e))
                if batch::allocator_caught_up(&e.io_error, start) => {}
            result => return result,
        }
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
    /// Takes the ban maps out of a loaded object (tests and tools that load
    /// the program themselves, unpinned).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        Self::from_source(|name| {
            ebpf.take_map(name).ok_or_else(|| BpfError::Map {
                map: name,
                source: MapError::InvalidName {
                    name: name.to_owned(),
                },
            })
        })
    }

    fn from_source(
        mut take: impl FnMut(&'static str) -> Result<Map, BpfError>,
    ) -> Result<Self, BpfError> {
        let cap = |m: &Map, name| match m {
            Map::HashMap(d) | Map::PerCpuHashMap(d) | Map::LpmTrie(d) => {
                d.info().map(|i| i.max_entries()).map_err(map_err(name))
            }
            _ => Ok(0),
        };
        let (v4, v6) = (take(map_names::BANS_V4)?, take(map_names::BANS_V6)?);
        let (n4, n6) = (take(map_names::BANS_V4_NET)?, take(map_names::BANS_V6_NET)?);
        let capacity = [
            cap(&v4, map_names::BANS_V4)?,
            cap(&v6, map_names::BANS_V6)?,
            cap(&n4, map_names::BANS_V4_NET)?,
            cap(&n6, map_names::BANS_V6_NET)?,
        ];
        Ok(Self {
            v4: v4.try_into().map_err(map_err(map_names::BANS_V4))?,
            v6: v6.try_into().map_err(map_err(map_names::BANS_V6))?,
            v4_net: n4.try_into().map_err(map_err(map_names::BANS_V4_NET))?,
            v6_net: n6.try_into().map_err(map_err(map_names::BANS_V6_NET))?,
            net_drops4: NetDrops {
                map: take(map_names::NET_DROPS_V4)?
                    .try_into()
                    .map_err(map_err(map_names::NET_DROPS_V4))?,
                name: map_names::NET_DROPS_V4,
            },
            net_drops6: NetDrops {
                map: take(map_names::NET_DROPS_V6)?
                    .try_into()
                    .map_err(map_err(map_names::NET_DROPS_V6))?,
                name: map_names::NET_DROPS_V6,
            },
            cpus: possible_cpus()?,
            settings: take(map_names::SETTINGS)?
                .try_into()
                .map_err(map_err(map_names::SETTINGS))?,
            ports: take(map_names::PORTS)?
                .try_into()
                .map_err(map_err(map_names::PORTS))?,
            marked: HashSet::new(),
            any_port_marked: false,
            capacity,
        })
    }

    /// Opens the pinned maps; when nothing is pinned yet, creates and pins
    /// them (without attaching) so bans set before the agent starts are
    /// kept. The flag says whether they were just created.
    pub fn open(bpffs: &Path) -> Result<(Self, bool), BpfError> {
        if map_names::ALL.iter().all(|n| bpffs.join(n).exists()) {
            let table = Self::from_source(|name| {
                MapData::from_pin(bpffs.join(name))
                    .and_then(Map::from_map_data)
                    .map_err(map_err(name))
            })?;
            return Ok((table, false));
        }
        let mut ebpf = load_object(bpffs, None)?;
        Ok((Self::from_ebpf(&mut ebpf)?, true))
    }

    /// Opens the pinned maps, failing when there are none.
    pub fn open_existing(bpffs: &Path) -> Result<Self, BpfError> {
        if !bpffs.join(map_names::BANS_V4).exists() {
            return Err(BpfError::NotPinned {
                path: bpffs.to_owned(),
            });
        }
        Self::open(bpffs).map(|(t, _)| t)
    }

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

    /// Every CPU's value of an exact ban.
    fn exact_values(&self, target: Target) -> Result<Option<PerCpuValues<BanValue>>, BpfError> {
        match slot(&target) {
            Slot::V4(k) => found(self.v4.get(&k, 0), map_names::BANS_V4),
            Slot::V6(k) => found(self.v6.get(&k, 0), map_names::BANS_V6),
            Slot::Net4(_) | Slot::Net6(_) => Ok(None),
        }
    }

    /// The value on exactly `target`, with its drops summed over CPUs.
    fn get_value(&self, target: Target) -> Result<Option<BanValue>, BpfError> {
        // A trie lookup returns the longest covering prefix; keep it only
        // when it is this very prefix.
        let exact =
            |v: Option<BanValue>| v.filter(|v| v.prefix_len == u32::from(target.prefix_len()));
        match slot(&target) {
            Slot::V4(_) | Slot::V6(_) => Ok(self.exact_values(target)?.map(|v| fold(&v))),
            Slot::Net4(k) => {
                let Some(v) = found(self.v4_net.get(&k, 0), map_names::BANS_V4_NET).map(exact)?
                else {
                    return Ok(None);
                };
                let drops = self.net_drops4.sum(&drop_key4(&k))?;
                Ok(Some(with_drops(v, drops)))
            }
            Slot::Net6(k) => {
                let Some(v) = found(self.v6_net.get(&k, 0), map_names::BANS_V6_NET).map(exact)?
                else {
                    return Ok(None);
                };
                let drops = self.net_drops6.sum(&drop_key6(&k))?;
                Ok(Some(with_drops(v, drops)))
            }
        }
    }
}

/// `copies` (one per possible CPU) as aya takes them.
fn per_cpu_values(copies: &[BanValue]) -> Result<PerCpuValues<BanValue>, MapError> {
    PerCpuValues::try_from(copies.to_vec()).map_err(|io_error| {
        MapError::from(aya::sys::SyscallError {
            call: "nr_cpus",
            io_error,
        })
    })
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
        let value = encode(ban, prefix, &clocks);
        let [c4, c6, cn4, cn6] = self.capacity;
        match slot(&target) {
            Slot::V4(k) => {
                let old = self.exact_values(target)?;
                let copies = per_cpu(value, old.as_deref().map(|v| &v[..]), self.cpus);
                retry_alloc(|| self.v4.insert(k, per_cpu_values(&copies)?, 0)).map_err(full_or(
                    map_names::BANS_V4,
                    c4,
                    target,
                ))
            }
            Slot::V6(k) => {
                let old = self.exact_values(target)?;
                let copies = per_cpu(value, old.as_deref().map(|v| &v[..]), self.cpus);
                retry_alloc(|| self.v6.insert(k, per_cpu_values(&copies)?, 0)).map_err(full_or(
                    map_names::BANS_V6,
                    c6,
                    target,
                ))
            }
            Slot::Net4(k) => {
                // A new prefix ban counts from zero (a count left by one that
                // was removed while a drop was in flight goes).
                if self.get_value(target)?.is_none() {
                    self.net_drops4.clear(&drop_key4(&k))?;
                }
                self.v4_net.insert(&k, value, 0).map_err(full_or(
                    map_names::BANS_V4_NET,
                    cn4,
                    target,
                ))?;
                self.set(setting::NETS_V4, 1)
            }
            Slot::Net6(k) => {
                if self.get_value(target)?.is_none() {
                    self.net_drops6.clear(&drop_key6(&k))?;
                }
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
        Ok(self.get_value(target)?.map(|v| Listed {
            target,
            ban: decode(&v, &clocks),
            drops: v.drops,
        }))
    }

    fn remove(&mut self, target: Target) -> Result<bool, BpfError> {
        let removed = match slot(&target) {
            Slot::V4(k) => found(self.v4.remove(&k), map_names::BANS_V4)?,
            Slot::V6(k) => found(self.v6.remove(&k), map_names::BANS_V6)?,
            Slot::Net4(k) => {
                let r = found(self.v4_net.remove(&k), map_names::BANS_V4_NET)?;
                self.net_drops4.clear(&drop_key4(&k))?;
                self.refresh_net_flag(true)?;
                r
            }
            Slot::Net6(k) => {
                let r = found(self.v6_net.remove(&k), map_names::BANS_V6_NET)?;
                self.net_drops6.clear(&drop_key6(&k))?;
                self.refresh_net_flag(false)?;
                r
            }
        };
        Ok(removed.is_some())
    }

    fn list(&self) -> Result<Vec<Listed>, BpfError> {
        let clocks = Clocks::now();
        let listed = |target: Target, v: &BanValue| Listed {
            target,
            ban: decode(v, &clocks),
            drops: v.drops,
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
        let cpus = self.cpus;
        let (keys, values) = batch::lookup_all::<BanKeyV4, BanValue>(self.v4.map(), cpus)
            .map_err(batch_err(map_names::BANS_V4))?;
        for (k, v) in keys.iter().zip(values.chunks(cpus)) {
            out.push(listed(Target::host(IpAddr::from(k.addr)), &fold(v)));
        }
        let (keys, values) = batch::lookup_all::<BanKeyV6, BanValue>(self.v6.map(), cpus)
            .map_err(batch_err(map_names::BANS_V6))?;
        for (k, v) in keys.iter().zip(values.chunks(cpus)) {
            out.push(listed(Target::host(IpAddr::from(k.addr)), &fold(v)));
        }
        // Tries have no batch operations; they hold at most MAX_NET_BANS.
        for item in self.v4_net.iter() {
            let (k, v) = item.map_err(map_err(map_names::BANS_V4_NET))?;
            let d = k.data();
            let addr = IpAddr::from([d[0], d[1], d[2], d[3]]);
            let drops = self.net_drops4.sum(&drop_key4(&k))?;
            if let Ok(net) = ipnet::IpNet::new(addr, k.prefix_len() as u8) {
                out.push(listed(Target::network(net), &with_drops(v, drops)));
            }
        }
        for item in self.v6_net.iter() {
            let (k, v) = item.map_err(map_err(map_names::BANS_V6_NET))?;
            let drops = self.net_drops6.sum(&drop_key6(&k))?;
            if let Ok(net) = ipnet::IpNet::new(IpAddr::from(k.data()), k.prefix_len() as u8) {
                out.push(listed(Target::network(net), &with_drops(v, drops)));
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
            // Every CPU's copy, drops at zero.
            let copies = |cpus| std::iter::repeat_n(encode(ban, 0, &clocks), cpus);
            match slot(target) {
                Slot::V4(k) => {
                    v4.0.push(k);
                    v4.1.extend(copies(self.cpus));
                }
                Slot::V6(k) => {
                    v6.0.push(k);
                    v6.1.extend(copies(self.cpus));
                }
                Slot::Net4(_) | Slot::Net6(_) => nets.push((*target, ban)),
            }
        }
        let [c4, c6, _, _] = self.capacity;
        let (n, err) = batch::update(self.v4.map(), &v4.0, &v4.1, self.cpus);
        let mut written = n;
        if let Some(e) = err {
            return batch_error(e, map_names::BANS_V4, c4, written);
        }
        let (n, err) = batch::update(self.v6.map(), &v6.0, &v6.1, self.cpus);
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
