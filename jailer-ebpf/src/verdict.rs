//! Ban lookup and verdict. Nothing here logs, and nothing on the drop path
//! writes memory another CPU writes: ban values are only read, per-ban drop
//! counts, packet counters and the cached clock live in per-CPU arrays.

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::lpm_trie::Key,
    helpers::{bpf_jiffies64, bpf_ktime_get_boot_ns},
    programs::XdpContext,
};
use jailer_common::{
    BAN_MONITOR, BanKeyV4, BanKeyV6, BanValue, SETTINGS_MONITOR, drop_slot, prefix_mask, setting,
    stat, tag_v4_host, tag_v4_net, tag_v6_host, tag_v6_net, v6_halves,
};

use crate::{
    maps::{
        BANS_V4, BANS_V4_NET, BANS_V6, BANS_V6_NET, CLOCK, DROPS, PORTS, SETTINGS, STATS,
        lpm_lookup,
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

/// Counts a drop for the ban named `tag` in this CPU's `DROPS` slot (see
/// `jailer_common::DropSlot`): one array lookup and one or two stores to a
/// line no other CPU writes.
#[inline(always)]
fn count_drop(tag: u64) {
    let Some(slot) = DROPS.get_ptr_mut(drop_slot(tag)) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array, valid for the whole run;
    // only this CPU's datapath writes it (userspace rewrites it only to
    // clear a removed ban's count).
    unsafe {
        if (*slot).tag == tag {
            (*slot).drops += 1;
        } else {
            // The count before the tag (see DropSlot): a reader never sees
            // the new tag with the evicted ban's count.
            core::ptr::write_volatile(&raw mut (*slot).drops, 1);
            core::ptr::write_volatile(&raw mut (*slot).tag, tag);
        }
    }
}

/// The verdict of a matched ban: pass unless it covers `port` and is in
/// force; else its drop (or would-be drop) is counted under `tag()`.
#[inline(always)]
fn judge(ban: *const BanValue, port: u16, tag: impl FnOnce() -> u64, dropped_stat: u32) -> u32 {
    // SAFETY: map values stay valid for the rest of this run (RCU; the hash
    // is not preallocated, so an element is not recycled under us).
    let value = unsafe { &*ban };
    if !(value.covers_port(port) && value.is_active(boot_ns())) {
        return xdp_action::XDP_PASS;
    }
    count_drop(tag());
    enforce(value, dropped_stat)
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
            let s = ip.src;
            if let Some(ban) = BANS_V4.get_ptr(BanKeyV4 { addr: s }) {
                return Ok(judge(ban, port, || tag_v4_host(s), stat::DROPPED_V4));
            }
            if setting(setting::NETS_V4) == 0 {
                return Ok(xdp_action::XDP_PASS);
            }
            let key = Key::new(64, [s[0], s[1], s[2], s[3], 0, 0, 0, 0]);
            let Some(ban) = lpm_lookup(&BANS_V4_NET, &key) else {
                return Ok(xdp_action::XDP_PASS);
            };
            let tag = || {
                // SAFETY: as in `judge`.
                let len = unsafe { (*ban).prefix_len };
                let net = u32::from_be_bytes(s) & (prefix_mask(len) >> 32) as u32;
                tag_v4_net(net.to_be_bytes(), len)
            };
            Ok(judge(ban, port, tag, stat::DROPPED_V4))
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
            let (hi, lo) = v6_halves(ip.src);
            if let Some(ban) = BANS_V6.get_ptr(BanKeyV6 { addr: ip.src }) {
                return Ok(judge(ban, port, || tag_v6_host(hi, lo), stat::DROPPED_V6));
            }
            if setting(setting::NETS_V6) == 0 {
                return Ok(xdp_action::XDP_PASS);
            }
            let Some(ban) = lpm_lookup(&BANS_V6_NET, &Key::new(128, ip.src)) else {
                return Ok(xdp_action::XDP_PASS);
            };
            let tag = || {
                // SAFETY: as in `judge`.
                let len = unsafe { (*ban).prefix_len };
                let (hi, lo) = (
                    hi & prefix_mask(len.min(64)),
                    lo & prefix_mask(len.saturating_sub(64)),
                );
                tag_v6_net(hi, lo, len)
            };
            Ok(judge(ban, port, tag, stat::DROPPED_V6))
        }
        _ => Ok(xdp_action::XDP_PASS),
    }
}
