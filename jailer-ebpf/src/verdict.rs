//! Ban lookup and verdict. Nothing here logs, and nothing on the drop path
//! writes memory another CPU writes: per-ban drop counts live in per-CPU map
//! values, packet counters and the cached clock in per-CPU arrays.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    btf_maps::lpm_trie::Key,
    helpers::{bpf_jiffies64, bpf_ktime_get_boot_ns},
    programs::XdpContext,
};
use jailer_common::{
    BAN_MONITOR, BanKeyV4, BanKeyV6, BanValue, NetDropKeyV4, NetDropKeyV6, SETTINGS_MONITOR,
    setting, stat,
};

use crate::{
    maps::{
        BANS_V4, BANS_V4_NET, BANS_V6, BANS_V6_NET, CLOCK, NET_DROPS_V4, NET_DROPS_V6, NetDrops,
        PORTS, SETTINGS, STATS, lpm_lookup,
    },
    parse::{
        ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, parse_eth, parse_ipv4, parse_ipv6, parse_tcp_dport,
    },
};

/// Bumps one per-CPU counter.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn setting(slot: u32) -> u32 {
    SETTINGS.get(slot).copied().unwrap_or(0)
}

/// Whether any ban could cover `port`: one array read that spares the ban
/// lookups for everything else (SMTP, HTTPS... on a POP3 jail).
#[inline(always)]
fn protected(port: u16) -> bool {
    PORTS.get(u32::from(port)).is_some_and(|&p| p != 0) || setting(setting::ANY_PORT) != 0
}

/// `CLOCK_BOOTTIME` now, at most one jiffy late: the real clock is read only
/// when this CPU's `jiffies` moved on since its last reading (see
/// `jailer_common::ClockCache`).
#[inline(always)]
fn boot_ns() -> u64 {
    // SAFETY: plain helper call; the verifier turns it into one load.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(cache) = CLOCK.get_ptr_mut(0) else {
        // SAFETY: plain helper call.
        return unsafe { bpf_ktime_get_boot_ns() };
    };
    // SAFETY: this CPU's slot of a per-CPU array, valid for the whole run.
    unsafe {
        if (*cache).jiffies == jiffies {
            return (*cache).boot_ns;
        }
        // Never backwards, and the reading before the jiffy that names it:
        // a program interrupted between the two stores leaves a pair that
        // is at worst refreshed again, never a stale time under a new jiffy.
        let now = bpf_ktime_get_boot_ns().max((*cache).boot_ns);
        core::ptr::write_volatile(&raw mut (*cache).boot_ns, now);
        core::ptr::write_volatile(&raw mut (*cache).jiffies, jiffies);
        now
    }
}

/// Whether `ban` drops (or, in monitor mode, would drop) a packet to `port`.
#[inline(always)]
fn applies(ban: &BanValue, port: u16) -> bool {
    ban.covers_port(port) && ban.is_active(boot_ns())
}

/// The action for a packet a ban applies to: drop, or in monitor mode (the
/// ban's or the global flag) count a would-be drop and pass.
#[inline(always)]
fn enforce(ban: &BanValue, dropped_stat: u32) -> u32 {
    if ban.flags & BAN_MONITOR != 0 || setting(setting::FLAGS) & SETTINGS_MONITOR != 0 {
        count(stat::WOULD_DROP);
        return xdp_action::XDP_PASS;
    }
    count(dropped_stat);
    xdp_action::XDP_DROP
}

/// An exact ban: this CPU's copy of the value, whose `drops` only this CPU
/// writes.
#[inline(always)]
fn judge_exact(ban: *mut BanValue, port: u16, dropped_stat: u32) -> u32 {
    // SAFETY: the per-CPU element stays valid for the rest of this run (RCU;
    // not preallocated, so not recycled even if userspace deletes it).
    let value = unsafe { &*ban };
    if !applies(value, port) {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: this CPU's copy; nothing else writes it while we run (userspace
    // rewrites copies only when it re-bans, keeping each CPU's count).
    unsafe { (*ban).drops += 1 };
    enforce(value, dropped_stat)
}

/// Counts a drop of a prefix ban in its per-CPU counter (created on the
/// first drop; userspace removes it with the ban).
#[inline(always)]
fn count_net_drop<K>(map: &NetDrops<K>, key: &K) {
    if let Some(n) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a live element.
        unsafe { *n += 1 };
        return;
    }
    // Another CPU may create it between the lookup and here: then add to
    // the one it made.
    if map.insert(key, 1, u64::from(BPF_NOEXIST)).is_err()
        && let Some(n) = map.get_ptr_mut(key)
    {
        // SAFETY: as above.
        unsafe { *n += 1 };
    }
}

/// The bits of a big-endian word kept by a prefix of `bits` (0..=64).
#[inline(always)]
fn prefix_mask(bits: u32) -> u64 {
    match bits {
        0 => 0,
        1..64 => !(u64::MAX >> bits),
        _ => u64::MAX,
    }
}

/// `Ok(action)` for a parsed packet, `Err` for one we could not parse (the
/// caller passes those).
#[inline(always)]
pub fn try_jailer(ctx: &XdpContext) -> Result<u32, ()> {
    let (ether_type, l3) = parse_eth(ctx)?;
    match ether_type {
        ETH_P_IP => {
            let ip = parse_ipv4(ctx, l3)?;
            if ip.proto != IPPROTO_TCP {
                return Ok(xdp_action::XDP_PASS);
            }
            let port = parse_tcp_dport(ctx, ip.l4_offset)?;
            if !protected(port) {
                return Ok(xdp_action::XDP_PASS);
            }
            if let Some(ban) = BANS_V4.get_ptr_mut(BanKeyV4 { addr: ip.src }) {
                return Ok(judge_exact(ban, port, stat::DROPPED_V4));
            }
            if setting(setting::NETS_V4) == 0 {
                return Ok(xdp_action::XDP_PASS);
            }
            let s = ip.src;
            let key = Key::new(64, [s[0], s[1], s[2], s[3], 0, 0, 0, 0]);
            let Some(ban) = lpm_lookup(&BANS_V4_NET, &key) else {
                return Ok(xdp_action::XDP_PASS);
            };
            // SAFETY: trie values stay valid for the rest of this run (RCU).
            let value = unsafe { &*ban };
            if !applies(value, port) {
                return Ok(xdp_action::XDP_PASS);
            }
            let addr = u32::from_be_bytes(s) & (prefix_mask(value.prefix_len) >> 32) as u32;
            let drop_key = NetDropKeyV4 {
                prefix_len: value.prefix_len,
                addr: addr.to_be_bytes(),
            };
            count_net_drop(&NET_DROPS_V4, &drop_key);
            Ok(enforce(value, stat::DROPPED_V4))
        }
        ETH_P_IPV6 => {
            let ip = parse_ipv6(ctx, l3)?;
            if ip.proto != IPPROTO_TCP {
                return Ok(xdp_action::XDP_PASS);
            }
            let port = parse_tcp_dport(ctx, ip.l4_offset)?;
            if !protected(port) {
                return Ok(xdp_action::XDP_PASS);
            }
            if let Some(ban) = BANS_V6.get_ptr_mut(BanKeyV6 { addr: ip.src }) {
                return Ok(judge_exact(ban, port, stat::DROPPED_V6));
            }
            if setting(setting::NETS_V6) == 0 {
                return Ok(xdp_action::XDP_PASS);
            }
            let Some(ban) = lpm_lookup(&BANS_V6_NET, &Key::new(128, ip.src)) else {
                return Ok(xdp_action::XDP_PASS);
            };
            // SAFETY: trie values stay valid for the rest of this run (RCU).
            let value = unsafe { &*ban };
            if !applies(value, port) {
                return Ok(xdp_action::XDP_PASS);
            }
            let s = ip.src;
            let hi = u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
            let lo = u64::from_be_bytes([s[8], s[9], s[10], s[11], s[12], s[13], s[14], s[15]]);
            let len = value.prefix_len;
            let (hi, lo) = (
                hi & prefix_mask(len.min(64)),
                lo & prefix_mask(len.saturating_sub(64)),
            );
            let mut addr = [0u8; 16];
            addr[..8].copy_from_slice(&hi.to_be_bytes());
            addr[8..].copy_from_slice(&lo.to_be_bytes());
            let drop_key = NetDropKeyV6 {
                prefix_len: len,
                addr,
            };
            count_net_drop(&NET_DROPS_V6, &drop_key);
            Ok(enforce(value, stat::DROPPED_V6))
        }
        _ => Ok(xdp_action::XDP_PASS),
    }
}
