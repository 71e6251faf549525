//! The kernel side, seen from userspace: bpffs and pins, loading and
//! attaching the XDP program, the ban maps behind [`BanTable`], batch map
//! syscalls, packet counters, and an in-memory table for tests.
//!
//! Layout under the bpffs directory (default `/sys/fs/bpf/jailer`): one pin
//! per map (`jailer_common::map_names`) and `link_<iface>` per XDP link.
//! The links keep the program attached while the agent is down; restarting
//! swaps the program inside the existing link, so no packet passes unjudged.

mod attach;
pub mod batch;
mod bpffs;
pub mod clock;
mod mem;
mod stats;
mod table;
mod xdp_table;

use std::{io, path::PathBuf};

pub use self::{
    attach::{AttachMode, Attached, Datapath, attach},
    bpffs::{attached_interfaces, check_bpffs, detach, ensure_bpffs},
    mem::MemBanTable,
    stats::{PacketStats, packet_stats},
    table::BanTable,
    xdp_table::{DropCounts, XdpBanTable, drop_tag},
};

/// The XDP object, built by `build.rs` through aya-build.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/jailer"));

/// Talking to the kernel: bpffs, loading, attaching, maps. Messages leave
/// the cause to the error's source (printed after it).
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// bpffs is missing at the configured directory and could not be mounted.
    #[error("cannot mount bpffs at {}", path.display())]
    MountBpffs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    /// Creating, reading or removing something under bpffs failed.
    #[error("{}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The verifier (or the loader) refused the program.
    #[error("the kernel refused the XDP program; verifier log:\n{log}")]
    Load {
        log: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The object or its maps could not be loaded.
    #[error("loading the XDP object failed")]
    Object(#[source] Box<aya::EbpfError>),
    /// The bpffs directory is not safe to pin into.
    #[error("bpffs {}: {problem}", path.display())]
    UnsafeBpffs { path: PathBuf, problem: String },
    /// The interface does not exist.
    #[error("interface `{iface}` does not exist (see `ip link`)")]
    NoInterface { iface: String },
    /// Attaching to an interface failed.
    #[error("cannot attach XDP to `{iface}` in {mode} mode")]
    Attach {
        iface: String,
        mode: AttachMode,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A pinned link could not be used or replaced.
    #[error("pinned XDP link {}: {message}", path.display())]
    Link { path: PathBuf, message: String },
    /// The maps are not pinned: nothing has set jailer up yet.
    #[error("no jailer maps under {}: start the agent (`jailer run`) or check `bpffs` in the config", path.display())]
    NotPinned { path: PathBuf },
    /// A map operation failed.
    #[error("map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// A batch map syscall failed.
    #[error("map {map}: {op}")]
    Batch {
        map: &'static str,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A ban did not fit: the map is full. No existing ban is evicted.
    #[error(
        "ban map {map} is full ({capacity} entries): {target} was not banned (raise max_bans, then `jailer detach` and restart)"
    )]
    MapFull {
        map: &'static str,
        capacity: u32,
        target: String,
    },
    /// The number of possible CPUs (values per key of a per-CPU map) could
    /// not be read.
    #[error("cannot read the possible CPUs from {}", path.display())]
    Cpus {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The operation needs privileges we do not have.
    #[error(
        "permission denied: jailer needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN to mount bpffs); run it with sudo"
    )]
    NotRoot,
}
