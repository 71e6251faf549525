//! The kernel side, seen from userspace: bpffs, loading and attaching the XDP
//! program, pinning, and the ban maps behind [`BanTable`].
//!
//! Layout under the bpffs directory (default `/sys/fs/bpf/jailer`):
//! `BANS_V4`, `BANS_V6`, `STATS` (maps) and `link_<iface>` (XDP links). The
//! links keep the program attached while the agent is down; restarting
//! swaps the program inside the existing link, so no packet passes unjudged.

use std::{
    collections::HashMap as StdHashMap,
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{
        ProgramError, Xdp, XdpMode as AyaXdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use ipnet::IpNet;
use jailer_common::{
    BanKeyV4, BanKeyV6, BanValue, NetV4, NetV6, PROGRAM_NAME, SETTINGS_MONITOR, map_names, setting,
    stat,
};
use nix::{
    errno::Errno,
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use tracing::{info, warn};

use crate::{config::XdpMode, error::BpfError, ports::PortSet};

/// The XDP object, built by `build.rs` through aya-build.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/jailer"));

fn pin_err(path: &Path) -> impl FnOnce(io::Error) -> BpfError + '_ {
    move |source| BpfError::Pin {
        path: path.to_owned(),
        source,
    }
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> BpfError {
    move |source| match &source {
        MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EPERM) => {
            BpfError::NotRoot
        }
        _ => BpfError::Map { map, source },
    }
}

/// Makes sure `dir` is a directory on a bpf filesystem, mounting bpffs where
/// needed (at `/sys/fs/bpf` when `dir` is below it, else at `dir` itself).
pub fn ensure_bpffs(dir: &Path) -> Result<(), BpfError> {
    let is_bpffs = |p: &Path| statfs(p).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC);
    // The nearest existing ancestor tells which filesystem `dir` would be on.
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(existing) {
        let sys_bpf = Path::new("/sys/fs/bpf");
        let mount_at = if dir.starts_with(sys_bpf) {
            sys_bpf
        } else {
            dir
        };
        fs::create_dir_all(mount_at).map_err(pin_err(mount_at))?;
        if !is_bpffs(mount_at) {
            mount(
                Some("bpffs"),
                mount_at,
                Some("bpf"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|source| match source {
                Errno::EPERM => BpfError::NotRoot,
                source => BpfError::MountBpffs {
                    path: mount_at.to_owned(),
                    source,
                },
            })?;
            info!(path = %mount_at.display(), "mounted bpffs");
        }
    }
    fs::create_dir_all(dir).map_err(pin_err(dir))
}

fn link_pin(bpffs: &Path, iface: &str) -> PathBuf {
    bpffs.join(format!("link_{iface}"))
}

/// Loads the object with its maps pinned under `bpffs` (reusing pins that
/// exist: bans survive restarts). `max_bans` sizes each exact-address map
/// when it is created (an existing pin keeps its size).
fn load_object(bpffs: &Path, max_bans: Option<u32>) -> Result<Ebpf, BpfError> {
    ensure_bpffs(bpffs)?;
    let pins: Vec<(&str, PathBuf)> = map_names::ALL.iter().map(|n| (*n, bpffs.join(n))).collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    if let Some(max) = max_bans {
        loader.map_max_entries(map_names::BANS_V4, max);
        loader.map_max_entries(map_names::BANS_V6, max);
    }
    loader.load(XDP_OBJECT).map_err(|e| match &e {
        aya::EbpfError::MapError(MapError::SyscallError(s))
            if s.io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            BpfError::NotRoot
        }
        _ => BpfError::Object(Box::new(e)),
    })
}

/// The program attached to `interfaces`, with maps pinned.
pub struct Datapath {
    pub bans: XdpBanTable,
    /// Each interface and the mode it ended up in.
    pub attached: Vec<(String, &'static str)>,
}

/// Loads the XDP program and attaches it to every interface, replacing the
/// program inside an existing pinned link (atomic, no gap), or creating and
/// pinning a new link. Links for interfaces no longer configured are removed.
pub fn attach(
    bpffs: &Path,
    interfaces: &[String],
    mode: XdpMode,
    max_bans: u32,
) -> Result<Datapath, BpfError> {
    let mut ebpf = load_object(bpffs, Some(max_bans))?;
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| BpfError::Link {
            path: bpffs.to_owned(),
            message: format!("the object has no XDP program `{PROGRAM_NAME}`"),
        })?;
    program.load().map_err(|source| match source {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => BpfError::Load {
            log: verifier_log.to_string(),
            source: ProgramError::LoadError {
                io_error,
                verifier_log,
            },
        },
        source => BpfError::Load {
            log: String::new(),
            source,
        },
    })?;

    let mut attached = Vec::new();
    for iface in interfaces {
        if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
            return Err(BpfError::NoInterface {
                iface: iface.clone(),
            });
        }
        let pin = link_pin(bpffs, iface);
        if pin.exists() {
            match replace_in_link(program, &pin) {
                Ok(()) => {
                    info!(%iface, "XDP program replaced in pinned link");
                    attached.push((iface.clone(), "pinned"));
                    continue;
                }
                Err(message) => {
                    warn!(%iface, %message, "pinned link unusable, attaching afresh");
                    fs::remove_file(&pin).map_err(pin_err(&pin))?;
                }
            }
        }
        let how = attach_new(program, iface, mode)?;
        let link_id = how.0;
        let link = program
            .take_link(link_id)
            .map_err(|source| BpfError::Attach {
                iface: iface.clone(),
                mode: how.1,
                source,
            })?;
        let fd_link = FdLink::try_from(link).map_err(|e| BpfError::Link {
            path: pin.clone(),
            message: format!("kernel gave a netlink attachment, which cannot be pinned: {e}"),
        })?;
        fd_link.pin(&pin).map_err(|e| BpfError::Link {
            path: pin.clone(),
            message: e.to_string(),
        })?;
        info!(%iface, mode = how.1, "XDP program attached");
        attached.push((iface.clone(), how.1));
    }
    remove_stale_links(bpffs, interfaces)?;
    let bans = XdpBanTable::from_ebpf(&mut ebpf)?;
    Ok(Datapath { bans, attached })
}

fn attach_new(
    program: &mut Xdp,
    iface: &str,
    mode: XdpMode,
) -> Result<(aya::programs::xdp::XdpLinkId, &'static str), BpfError> {
    let try_mode = |program: &mut Xdp, m: AyaXdpMode, name: &'static str| {
        program
            .attach(iface, m)
            .map(|id| (id, name))
            .map_err(|source| BpfError::Attach {
                iface: iface.to_owned(),
                mode: name,
                source,
            })
    };
    match mode {
        XdpMode::Driver => try_mode(program, AyaXdpMode::Driver, "driver"),
        XdpMode::Generic => try_mode(program, AyaXdpMode::Skb, "generic"),
        XdpMode::Auto => try_mode(program, AyaXdpMode::Driver, "driver").or_else(|e| {
            warn!(%iface, error = %e, "driver-mode XDP unavailable, falling back to generic mode");
            try_mode(program, AyaXdpMode::Skb, "generic")
        }),
    }
}

/// Swaps our freshly loaded program into the pinned link at `pin`.
fn replace_in_link(program: &mut Xdp, pin: &Path) -> Result<(), String> {
    let pinned = PinnedLink::from_pin(pin).map_err(|e| e.to_string())?;
    let xdp_link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
    let id = program
        .attach_to_link(xdp_link)
        .map_err(|e| e.to_string())?;
    // The pin keeps the link alive; dropping our handle must not detach it.
    let link = program.take_link(id).map_err(|e| e.to_string())?;
    drop(FdLink::try_from(link).map_err(|e| e.to_string())?);
    Ok(())
}

fn pinned_links(bpffs: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(bpffs) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("link_")
                .map(|iface| (iface.to_owned(), e.path()))
        })
        .collect()
}

fn remove_stale_links(bpffs: &Path, keep: &[String]) -> Result<(), BpfError> {
    for (iface, path) in pinned_links(bpffs) {
        if !keep.contains(&iface) {
            fs::remove_file(&path).map_err(pin_err(&path))?;
            info!(%iface, "XDP program detached (interface no longer configured)");
        }
    }
    Ok(())
}

/// Detaches the program from every interface and removes links, maps and the
/// directory. Returns the interfaces it was detached from.
pub fn detach(bpffs: &Path) -> Result<Vec<String>, BpfError> {
    if !bpffs.exists() {
        return Ok(Vec::new());
    }
    let mut detached = Vec::new();
    for (iface, path) in pinned_links(bpffs) {
        // Removing the last reference to a link detaches its program.
        fs::remove_file(&path).map_err(pin_err(&path))?;
        detached.push(iface);
    }
    for name in map_names::ALL {
        let path = bpffs.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(pin_err(&path)(e)),
            _ => {}
        }
    }
    if bpffs != Path::new("/sys/fs/bpf") {
        let _ = fs::remove_dir(bpffs);
    }
    Ok(detached)
}

/// Interfaces with a pinned jailer link.
pub fn attached_interfaces(bpffs: &Path) -> Vec<String> {
    let mut v: Vec<String> = pinned_links(bpffs).into_iter().map(|(i, _)| i).collect();
    v.sort();
    v
}

/// Sums the per-CPU `STATS` counters.
pub fn read_stats(bpffs: &Path) -> Result<[u64; stat::COUNT as usize], BpfError> {
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

/// Whether `net` is a single address (kept in the exact-address maps).
pub fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// `203.0.113.7` for a host, `203.0.113.0/24` for a network.
pub fn show(net: &IpNet) -> String {
    if is_host(net) {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// Where bans live, by address or network. The agent and the CLI write
/// through this; tests without privileges use [`MemBanTable`].
pub trait BanTable: Send {
    /// Adds or replaces the ban on `target`.
    fn insert(&mut self, target: IpNet, ban: BanValue) -> Result<(), BpfError>;
    /// The ban on exactly `target`, if any (expired or not).
    fn get(&self, target: IpNet) -> Result<Option<BanValue>, BpfError>;
    /// Removes the ban on exactly `target`; `false` when there was none.
    fn remove(&mut self, target: IpNet) -> Result<bool, BpfError>;
    /// Every ban.
    fn list(&self) -> Result<Vec<(IpNet, BanValue)>, BpfError>;
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
    /// Many bans at once (restoring a journal); returns how many were written.
    /// Stops at the first error (a full map), keeping what was written.
    fn insert_many(&mut self, bans: &[(IpNet, BanValue)]) -> Result<usize, BpfError> {
        for (i, (target, ban)) in bans.iter().enumerate() {
            if let Err(e) = self.insert(*target, *ban) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(bans.len())
    }
}

/// `union bpf_attr` for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Batch updates in 64k-element calls. (Spreading them over both cores was
/// measured: no faster, the kernel's per-element allocation dominates.)
fn update_chunked<K, V>(map: &MapData, keys: &[K], values: &[V]) -> (usize, Option<io::Error>) {
    const CHUNK: usize = 1 << 16;
    let mut written = 0;
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        let (n, err) = update_batch(map, k, v);
        written += n;
        if err.is_some() {
            return (written, err);
        }
    }
    (written, None)
}

/// BPF_MAP_UPDATE_BATCH: one syscall for many elements (aya 0.14 has no
/// batch API). Returns how many were written, and the error that stopped it.
fn update_batch<K, V>(map: &MapData, keys: &[K], values: &[V]) -> (usize, Option<io::Error>) {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    debug_assert_eq!(keys.len(), values.len());
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` points at `count` keys and values of the map's sizes,
    // alive for the call; the kernel writes back only `count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &raw mut attr,
            size_of::<BatchAttr>(),
        )
    };
    if rc == 0 {
        (keys.len(), None)
    } else {
        (attr.count as usize, Some(io::Error::last_os_error()))
    }
}

/// The ports a ban value covers, as a set.
fn ban_ports(ban: &BanValue) -> PortSet {
    PortSet::from_raw(&ban.ports, ban.flags)
}

type Trie4 = LpmTrie<MapData, NetV4, BanValue>;
type Trie6 = LpmTrie<MapData, NetV6, BanValue>;

/// The pinned kernel ban maps.
pub struct XdpBanTable {
    v4: HashMap<MapData, BanKeyV4, BanValue>,
    v6: HashMap<MapData, BanKeyV6, BanValue>,
    v4_net: Trie4,
    v6_net: Trie6,
    settings: Array<MapData, u32>,
    ports: Array<MapData, u8>,
    /// Ports this process already marked in `PORTS` (entries are never cleared).
    marked: std::collections::HashSet<u16>,
    any_port_marked: bool,
    capacity: [u32; 4],
}

fn net_key4(net: &IpNet) -> Key<NetV4> {
    let IpAddr::V4(a) = net.network() else {
        unreachable!("v4 net")
    };
    let o = a.octets();
    Key::new(
        u32::from(net.prefix_len()),
        [o[0], o[1], o[2], o[3], 0, 0, 0, 0],
    )
}

fn net_key6(net: &IpNet) -> Key<NetV6> {
    let IpAddr::V6(a) = net.network() else {
        unreachable!("v6 net")
    };
    Key::new(u32::from(net.prefix_len()), a.octets())
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
            settings: take(map_names::SETTINGS)?
                .try_into()
                .map_err(map_err(map_names::SETTINGS))?,
            ports: take(map_names::PORTS)?
                .try_into()
                .map_err(map_err(map_names::PORTS))?,
            marked: std::collections::HashSet::new(),
            any_port_marked: false,
            capacity,
        })
    }

    /// Opens the pinned maps; when nothing is pinned yet, creates and pins
    /// them (without attaching) so bans set before the agent starts are kept.
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
}

fn full_or(map: &'static str, capacity: u32, target: IpNet) -> impl FnOnce(MapError) -> BpfError {
    move |source| match &source {
        MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
            BpfError::MapFull {
                map,
                capacity,
                addr: show(&target),
            }
        }
        _ => map_err(map)(source),
    }
}

/// A batch that stopped: a full map is `MapFull` (when nothing was written)
/// or a partial success; anything else is an error.
fn batch_error(
    e: io::Error,
    map: &'static str,
    capacity: u32,
    written: usize,
) -> Result<usize, BpfError> {
    match e.raw_os_error() {
        Some(libc::E2BIG) | Some(libc::ENOSPC) if written > 0 => Ok(written),
        Some(libc::E2BIG) | Some(libc::ENOSPC) => Err(BpfError::MapFull {
            map,
            capacity,
            addr: "a restored ban".into(),
        }),
        Some(libc::EPERM) => Err(BpfError::NotRoot),
        _ => Err(BpfError::Pin {
            path: PathBuf::from(map),
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

impl BanTable for XdpBanTable {
    fn insert(&mut self, target: IpNet, mut ban: BanValue) -> Result<(), BpfError> {
        // Ports first: a ban the datapath does not look up would not drop.
        self.protect(&ban_ports(&ban))?;
        let [c4, c6, cn4, cn6] = self.capacity;
        match (target.addr(), is_host(&target)) {
            (IpAddr::V4(a), true) => {
                ban.prefix_len = 0;
                self.v4
                    .insert(BanKeyV4 { addr: a.octets() }, ban, 0)
                    .map_err(full_or(map_names::BANS_V4, c4, target))
            }
            (IpAddr::V6(a), true) => {
                ban.prefix_len = 0;
                self.v6
                    .insert(BanKeyV6 { addr: a.octets() }, ban, 0)
                    .map_err(full_or(map_names::BANS_V6, c6, target))
            }
            (IpAddr::V4(_), false) => {
                ban.prefix_len = u32::from(target.prefix_len());
                self.v4_net
                    .insert(&net_key4(&target), ban, 0)
                    .map_err(full_or(map_names::BANS_V4_NET, cn4, target))?;
                self.set(setting::NETS_V4, 1)
            }
            (IpAddr::V6(_), false) => {
                ban.prefix_len = u32::from(target.prefix_len());
                self.v6_net
                    .insert(&net_key6(&target), ban, 0)
                    .map_err(full_or(map_names::BANS_V6_NET, cn6, target))?;
                self.set(setting::NETS_V6, 1)
            }
        }
    }

    fn get(&self, target: IpNet) -> Result<Option<BanValue>, BpfError> {
        let exact =
            |v: Option<BanValue>| v.filter(|v| v.prefix_len == u32::from(target.prefix_len()));
        match (target.addr(), is_host(&target)) {
            (IpAddr::V4(a), true) => found(
                self.v4.get(&BanKeyV4 { addr: a.octets() }, 0),
                map_names::BANS_V4,
            ),
            (IpAddr::V6(a), true) => found(
                self.v6.get(&BanKeyV6 { addr: a.octets() }, 0),
                map_names::BANS_V6,
            ),
            // A trie lookup returns the longest covering prefix; keep it only
            // when it is this very prefix.
            (IpAddr::V4(_), false) => found(
                self.v4_net.get(&net_key4(&target), 0),
                map_names::BANS_V4_NET,
            )
            .map(exact),
            (IpAddr::V6(_), false) => found(
                self.v6_net.get(&net_key6(&target), 0),
                map_names::BANS_V6_NET,
            )
            .map(exact),
        }
    }

    fn remove(&mut self, target: IpNet) -> Result<bool, BpfError> {
        let removed = match (target.addr(), is_host(&target)) {
            (IpAddr::V4(a), true) => found(
                self.v4.remove(&BanKeyV4 { addr: a.octets() }),
                map_names::BANS_V4,
            )?,
            (IpAddr::V6(a), true) => found(
                self.v6.remove(&BanKeyV6 { addr: a.octets() }),
                map_names::BANS_V6,
            )?,
            (IpAddr::V4(_), false) => {
                let r = found(
                    self.v4_net.remove(&net_key4(&target)),
                    map_names::BANS_V4_NET,
                )?;
                self.refresh_net_flag(true)?;
                r
            }
            (IpAddr::V6(_), false) => {
                let r = found(
                    self.v6_net.remove(&net_key6(&target)),
                    map_names::BANS_V6_NET,
                )?;
                self.refresh_net_flag(false)?;
                r
            }
        };
        Ok(removed.is_some())
    }

    fn list(&self) -> Result<Vec<(IpNet, BanValue)>, BpfError> {
        let mut out = Vec::new();
        for item in self.v4.iter() {
            let (k, v) = item.map_err(map_err(map_names::BANS_V4))?;
            out.push((IpNet::from(IpAddr::from(k.addr)), v));
        }
        for item in self.v6.iter() {
            let (k, v) = item.map_err(map_err(map_names::BANS_V6))?;
            out.push((IpNet::from(IpAddr::from(k.addr)), v));
        }
        for item in self.v4_net.iter() {
            let (k, v) = item.map_err(map_err(map_names::BANS_V4_NET))?;
            let d = k.data();
            let addr = IpAddr::from([d[0], d[1], d[2], d[3]]);
            if let Ok(net) = IpNet::new(addr, k.prefix_len() as u8) {
                out.push((net, v));
            }
        }
        for item in self.v6_net.iter() {
            let (k, v) = item.map_err(map_err(map_names::BANS_V6_NET))?;
            if let Ok(net) = IpNet::new(IpAddr::from(k.data()), k.prefix_len() as u8) {
                out.push((net, v));
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

    fn insert_many(&mut self, bans: &[(IpNet, BanValue)]) -> Result<usize, BpfError> {
        use aya::maps::IterableMap as _;
        let mut v4 = (Vec::new(), Vec::new());
        let mut v6 = (Vec::new(), Vec::new());
        let mut nets = Vec::new();
        let mut last_ports = None;
        for (target, ban) in bans {
            if last_ports != Some((ban.ports, ban.flags)) {
                self.protect(&ban_ports(ban))?;
                last_ports = Some((ban.ports, ban.flags));
            }
            let mut ban = *ban;
            ban.prefix_len = 0;
            match (target.addr(), is_host(target)) {
                (IpAddr::V4(a), true) => {
                    v4.0.push(BanKeyV4 { addr: a.octets() });
                    v4.1.push(ban);
                }
                (IpAddr::V6(a), true) => {
                    v6.0.push(BanKeyV6 { addr: a.octets() });
                    v6.1.push(ban);
                }
                _ => nets.push((*target, ban)),
            }
        }
        let [c4, c6, _, _] = self.capacity;
        let mut written = 0;
        for (map, keys4, keys6, values, name, cap) in [
            (
                self.v4.map(),
                Some(&v4.0[..]),
                None,
                &v4.1[..],
                map_names::BANS_V4,
                c4,
            ),
            (
                self.v6.map(),
                None,
                Some(&v6.0[..]),
                &v6.1[..],
                map_names::BANS_V6,
                c6,
            ),
        ] {
            let (n, err) = match (keys4, keys6) {
                (Some(k), _) => update_chunked(map, k, values),
                (_, Some(k)) => update_chunked(map, k, values),
                _ => (0, None),
            };
            written += n;
            if let Some(e) = err {
                return batch_error(e, name, cap, written);
            }
        }
        for (target, ban) in nets {
            self.insert(target, ban)?;
            written += 1;
        }
        Ok(written)
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
                for &port in list {
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

/// An in-memory [`BanTable`] for tests that cannot touch the kernel. Clones
/// share the same bans, so a test can watch what an agent it runs writes.
#[derive(Default, Debug, Clone)]
pub struct MemBanTable {
    bans: std::sync::Arc<std::sync::Mutex<StdHashMap<IpNet, BanValue>>>,
    monitor: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl MemBanTable {
    /// A copy of every ban, by address or network.
    pub fn bans(&self) -> StdHashMap<IpNet, BanValue> {
        self.bans.lock().expect("lock poisoned").clone()
    }

    /// The ban on one address, if any.
    pub fn ban_on(&self, addr: IpAddr) -> Option<BanValue> {
        self.bans().get(&IpNet::from(addr)).copied()
    }

    /// Edits one ban in place (tests: make it lapse, count drops).
    pub fn edit(&self, target: IpNet, f: impl FnOnce(&mut BanValue)) {
        if let Some(v) = self.bans.lock().expect("lock poisoned").get_mut(&target) {
            f(v);
        }
    }
}

impl BanTable for MemBanTable {
    fn insert(&mut self, target: IpNet, ban: BanValue) -> Result<(), BpfError> {
        self.bans.lock().expect("lock poisoned").insert(target, ban);
        Ok(())
    }
    fn get(&self, target: IpNet) -> Result<Option<BanValue>, BpfError> {
        Ok(self
            .bans
            .lock()
            .expect("lock poisoned")
            .get(&target)
            .copied())
    }
    fn remove(&mut self, target: IpNet) -> Result<bool, BpfError> {
        Ok(self
            .bans
            .lock()
            .expect("lock poisoned")
            .remove(&target)
            .is_some())
    }
    fn list(&self) -> Result<Vec<(IpNet, BanValue)>, BpfError> {
        Ok(self
            .bans
            .lock()
            .expect("lock poisoned")
            .iter()
            .map(|(a, v)| (*a, *v))
            .collect())
    }
    fn set_monitor(&mut self, on: bool) -> Result<(), BpfError> {
        self.monitor.store(on, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn monitor(&self) -> Result<bool, BpfError> {
        Ok(self.monitor.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn protect(&mut self, _ports: &PortSet) -> Result<(), BpfError> {
        Ok(())
    }
}
