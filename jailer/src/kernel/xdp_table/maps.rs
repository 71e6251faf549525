//! Where an [`XdpBanTable`]'s maps come from: a loaded object, the pins
//! under bpffs (created when missing), or the same maps opened again by id.

use std::{collections::HashSet, path::Path};

use aya::{
    Ebpf,
    maps::{IterableMap as _, Map, MapData, MapError},
};
use jailer_common::map_names;

use super::XdpBanTable;
use crate::kernel::{BpfError, attach::load_object, table::map_err};

/// The number of possible CPUs: how many values a per-CPU map holds per key.
fn possible_cpus() -> Result<usize, BpfError> {
    aya::util::nr_cpus().map_err(|(path, source)| BpfError::Cpus {
        path: path.into(),
        source,
    })
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
            Map::HashMap(d) | Map::LpmTrie(d) => {
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
            drops: take(map_names::DROPS)?
                .try_into()
                .map_err(map_err(map_names::DROPS))?,
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

    /// A second handle on the same maps (the same kernel objects, opened
    /// again by id).
    pub fn reopen(&self) -> Result<Self, BpfError> {
        let maps: [(&str, &MapData); 7] = [
            (map_names::BANS_V4, self.v4.map()),
            (map_names::BANS_V6, self.v6.map()),
            (map_names::BANS_V4_NET, self.v4_net.map()),
            (map_names::BANS_V6_NET, self.v6_net.map()),
            (map_names::DROPS, self.drops.map()),
            (map_names::SETTINGS, self.settings.map()),
            (map_names::PORTS, self.ports.map()),
        ];
        Self::from_source(|name| {
            let data = maps
                .iter()
                .find_map(|(n, d)| (*n == name).then_some(*d))
                .ok_or_else(|| {
                    map_err(name)(MapError::InvalidName {
                        name: name.to_owned(),
                    })
                })?;
            data.info()
                .and_then(|info| MapData::from_id(info.id()))
                .and_then(Map::from_map_data)
                .map_err(map_err(name))
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
}
