//! Bench-only XDP object (never attached by jailer).
//!
//! `reference_xdp` is the bare program jailer's datapath is measured against
//! (`tests/benches/datapath.rs`): Ethernet, IPv4, one hash lookup of the
//! source, one per-CPU counter on a drop, drop if found, else pass. The
//! `probe_*` programs each add one operation to a bounds check, so the bench
//! can print what each building block of a datapath costs on this machine
//! (clocks, lookups, counters); the datapath's design rests on those figures.
#![no_std]
#![no_main]
// For the atomic add probe (the bpf target has no atomic RMW in core::sync).
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core_intrinsics: the bpf target has no atomic RMW in core::sync"
)]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, xdp_action},
    btf_maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    helpers::{bpf_jiffies64, bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use jailer_common::{DROP_SLOTS, DropSlot, drop_slot, tag_v4_host};

const MAX: usize = 1 << 20;
const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;
const ETH_P_IP: u16 = 0x0800;
/// Ethernet header length; the IPv4 source sits 12 bytes into IPv4.
const ETH_LEN: usize = 14;

/// A map value shaped like jailer's `BanValue` before (40 bytes, `drops`
/// second, bumped by the atomic-add probe).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Value {
    pub expires_ns: u64,
    pub drops: u64,
    pub ports: [u16; 8],
    pub flags: u32,
    pub prefix_len: u32,
}

/// The reference's banned sources (IPv4, network order), sized and
/// allocated like jailer's exact-ban maps.
#[btf_map]
static REF_BANS: HashMap<[u8; 4], u32, MAX, NO_PREALLOC> = HashMap::new();

/// The reference's one per-CPU counter: packets dropped.
#[btf_map]
static REF_DROPS: PerCpuArray<u64, 1> = PerCpuArray::new();

#[btf_map]
static PROBE_HASH4: HashMap<[u8; 4], Value, MAX, NO_PREALLOC> = HashMap::new();

#[btf_map]
static PROBE_PCPU4: PerCpuHashMap<[u8; 4], Value, MAX, NO_PREALLOC> = PerCpuHashMap::new();

#[btf_map]
static PROBE_HASH16: HashMap<[u8; 16], Value, MAX, NO_PREALLOC> = HashMap::new();

#[btf_map]
static PROBE_ARRAY: Array<u32, 65536> = Array::new();

#[btf_map]
static PROBE_PCPU_ARRAY: PerCpuArray<u64, 4> = PerCpuArray::new();

/// Shaped like jailer's `DROPS`.
#[btf_map]
static PROBE_DROPS: PerCpuArray<DropSlot, { DROP_SLOTS as usize }> = PerCpuArray::new();

/// The `N` bytes at `offset`, when the frame holds them.
#[inline(always)]
fn bytes<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + offset + N > end {
        return None;
    }
    // SAFETY: bounds checked against data_end above.
    Some(unsafe { ((start + offset) as *const [u8; N]).read_unaligned() })
}

#[inline(always)]
fn ether_type(ctx: &XdpContext) -> u16 {
    bytes::<2>(ctx, 12).map_or(0, u16::from_be_bytes)
}

/// The bare reference: parse Ethernet and IPv4, look the source up, count
/// and drop when found, pass otherwise.
#[xdp]
pub fn reference_xdp(ctx: XdpContext) -> u32 {
    if ether_type(&ctx) != ETH_P_IP {
        return xdp_action::XDP_PASS;
    }
    let Some(src) = bytes::<4>(&ctx, ETH_LEN + 12) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: read-only use of the value pointer's existence.
    if unsafe { REF_BANS.get(src) }.is_none() {
        return xdp_action::XDP_PASS;
    }
    if let Some(n) = REF_DROPS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; nothing else writes it while we run.
        unsafe { *n += 1 };
    }
    xdp_action::XDP_DROP
}

/// The IPv4 source of a frame, or `None` (the probes' common prologue).
#[inline(always)]
fn src4(ctx: &XdpContext) -> Option<[u8; 4]> {
    bytes::<4>(ctx, ETH_LEN + 12)
}

/// Bounds check only: what every probe below adds to.
#[xdp]
pub fn probe_base(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    if src[0] == 0 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[xdp]
pub fn probe_boot_ns(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if now < u64::from(src[0]) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[xdp]
pub fn probe_coarse_ns(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now < u64::from(src[0]) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[xdp]
pub fn probe_jiffies(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: plain helper call (the verifier inlines it as a load).
    let now = unsafe { bpf_jiffies64() };
    if now < u64::from(src[0]) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[xdp]
pub fn probe_hash4(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match PROBE_HASH4.get_ptr(src) {
        // SAFETY: the value outlives this run (RCU, not preallocated).
        Some(v) if unsafe { (*v).flags } != 7 => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

#[xdp]
pub fn probe_pcpu_hash4(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match PROBE_PCPU4.get_ptr(src) {
        // SAFETY: as above.
        Some(v) if unsafe { (*v).flags } != 7 => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

#[xdp]
pub fn probe_hash16(ctx: XdpContext) -> u32 {
    let Some(src) = bytes::<16>(&ctx, ETH_LEN + 8) else {
        return xdp_action::XDP_PASS;
    };
    match PROBE_HASH16.get_ptr(src) {
        // SAFETY: as above.
        Some(v) if unsafe { (*v).flags } != 7 => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

#[xdp]
pub fn probe_array(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match PROBE_ARRAY.get(u32::from(src[3])) {
        Some(&v) if v != 0 => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

#[xdp]
pub fn probe_pcpu_counter(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    if let Some(n) = PROBE_PCPU_ARRAY.get_ptr_mut(u32::from(src[3] & 3)) {
        // SAFETY: this CPU's slot.
        unsafe { *n += 1 };
    }
    xdp_action::XDP_PASS
}

/// Hash lookup, then an atomic add on the shared value (jailer before).
#[xdp]
pub fn probe_hash4_atomic(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match PROBE_HASH4.get_ptr_mut(src) {
        Some(v) => {
            // SAFETY: aligned u64 inside a live map value.
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*v).drops, 1) };
            xdp_action::XDP_DROP
        }
        None => xdp_action::XDP_PASS,
    }
}

/// Hash lookup, then jailer's drop count: this CPU's `DROPS` slot of the
/// source's tag, tag compared, plain add (jailer now).
#[xdp]
pub fn probe_hash4_slot(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    if PROBE_HASH4.get_ptr(src).is_none() {
        return xdp_action::XDP_PASS;
    }
    let tag = tag_v4_host(src);
    if let Some(slot) = PROBE_DROPS.get_ptr_mut(drop_slot(tag)) {
        // SAFETY: this CPU's slot; nothing else writes it while we run.
        unsafe {
            if (*slot).tag == tag {
                (*slot).drops += 1;
            } else {
                core::ptr::write_volatile(&raw mut (*slot).drops, 1);
                core::ptr::write_volatile(&raw mut (*slot).tag, tag);
            }
        }
    }
    xdp_action::XDP_DROP
}

/// Per-CPU hash lookup, then a plain add on this CPU's copy.
#[xdp]
pub fn probe_pcpu_hash4_add(ctx: XdpContext) -> u32 {
    let Some(src) = src4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match PROBE_PCPU4.get_ptr_mut(src) {
        Some(v) => {
            // SAFETY: this CPU's copy of a live map value.
            unsafe { (*v).drops += 1 };
            xdp_action::XDP_DROP
        }
        None => xdp_action::XDP_PASS,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
