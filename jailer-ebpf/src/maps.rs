//! Every map the program uses, declared in one place. Names match
//! `jailer_common::map_names`; the agent pins them under its bpffs directory.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    helpers::bpf_map_lookup_elem,
    macros::btf_map,
};
use jailer_common::{
    BanKeyV4, BanKeyV6, BanValue, ClockCache, DROP_SLOTS, DropSlot, MAX_BANS, MAX_NET_BANS, NetV4,
    NetV6, PORT_ENTRIES, setting, stat,
};

const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

/// Exact IPv4 source bans, read only by the datapath (drops are counted in
/// `DROPS`). Not preallocated: a million idle slots would pin ~100 MiB of
/// kernel memory on a server that holds a few hundred bans.
#[btf_map]
pub static BANS_V4: HashMap<BanKeyV4, BanValue, { MAX_BANS as usize }, NO_PREALLOC> =
    HashMap::new();

/// Exact IPv6 source bans.
#[btf_map]
pub static BANS_V6: HashMap<BanKeyV6, BanValue, { MAX_BANS as usize }, NO_PREALLOC> =
    HashMap::new();

/// IPv4 prefix bans (`jailer ban 203.0.113.0/24`), longest prefix wins.
#[btf_map]
pub static BANS_V4_NET: LpmTrie<NetV4, BanValue, { MAX_NET_BANS as usize }> = LpmTrie::new();

/// IPv6 prefix bans (a /64 per attacker with `ban_prefix_v6 = 64`).
#[btf_map]
pub static BANS_V6_NET: LpmTrie<NetV6, BanValue, { MAX_NET_BANS as usize }> = LpmTrie::new();

/// Per-ban drop counts: each CPU's direct-mapped cache of them (see
/// `jailer_common::DropSlot`), 1 MiB per CPU, touched only on a drop.
#[btf_map]
pub static DROPS: PerCpuArray<DropSlot, { DROP_SLOTS as usize }> = PerCpuArray::new();

/// Runtime settings (`jailer_common::setting` slots): monitor mode, and
/// whether the prefix tries hold anything.
#[btf_map]
pub static SETTINGS: Array<u32, { setting::COUNT as usize }> = Array::new();

/// Protected TCP ports: non-zero at a port some ban covers.
#[btf_map]
pub static PORTS: Array<u8, { PORT_ENTRIES as usize }> = Array::new();

/// Per-CPU packet counters, indexed by `jailer_common::stat`.
#[btf_map]
pub static STATS: PerCpuArray<u64, { stat::COUNT as usize }> = PerCpuArray::new();

/// Each CPU's cached boot-clock reading (see `jailer_common::ClockCache`).
#[btf_map]
pub static CLOCK: PerCpuArray<ClockCache, 1> = PerCpuArray::new();

/// Longest-prefix lookup returning a pointer to the matched value (the
/// btf_maps API has no `get_ptr` for tries). `map` is the trie static.
#[inline(always)]
pub fn lpm_lookup<T, K>(map: &T, key: &Key<K>) -> Option<*const BanValue> {
    // SAFETY: `map` is a BTF map static (its address is what the loader
    // relocates to the map fd); the key is a valid `Key<K>` for that trie.
    let p = unsafe {
        bpf_map_lookup_elem(
            core::ptr::from_ref(map).cast_mut().cast::<c_void>(),
            core::ptr::from_ref(key).cast(),
        )
    };
    (!p.is_null()).then(|| p.cast_const().cast::<BanValue>())
}
