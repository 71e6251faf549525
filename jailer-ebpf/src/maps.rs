//! Every map the program uses, declared in one place. Names match
//! `jailer_common::map_names`; the agent pins them under its bpffs directory.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{HashMap, PerCpuArray},
    macros::btf_map,
};
use jailer_common::{BanKeyV4, BanKeyV6, BanValue, MAX_BANS, stat};

/// Exact IPv4 source bans. Not preallocated: a million idle slots would pin
/// ~100 MiB of kernel memory on a server that holds a few hundred bans.
#[btf_map]
pub static BANS_V4: HashMap<
    BanKeyV4,
    BanValue,
    { MAX_BANS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Exact IPv6 source bans.
#[btf_map]
pub static BANS_V6: HashMap<
    BanKeyV6,
    BanValue,
    { MAX_BANS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Per-CPU packet counters, indexed by `jailer_common::stat`.
#[btf_map]
pub static STATS: PerCpuArray<u64, { stat::COUNT as usize }> = PerCpuArray::new();
