//! Ban lookup and verdict. Nothing here logs: a packet costs a map lookup
//! (two when prefix bans exist) and a per-CPU counter, never a log line.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::xdp_action, btf_maps::lpm_trie::Key, helpers::bpf_ktime_get_boot_ns,
    programs::XdpContext,
};
use jailer_common::{BAN_MONITOR, BanKeyV4, BanKeyV6, BanValue, SETTINGS_MONITOR, setting, stat};

use crate::{
    maps::{BANS_V4, BANS_V4_NET, BANS_V6, BANS_V6_NET, PORTS, SETTINGS, STATS, lpm_lookup_mut},
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
            let mut ban = BANS_V4.get_ptr_mut(BanKeyV4 { addr: ip.src });
            if ban.is_none() && setting(setting::NETS_V4) != 0 {
                let s = ip.src;
                let key = Key::new(64, [s[0], s[1], s[2], s[3], 0, 0, 0, 0]);
                ban = lpm_lookup_mut(&BANS_V4_NET, &key);
            }
            Ok(judge(ban, port, stat::DROPPED_V4))
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
            let mut ban = BANS_V6.get_ptr_mut(BanKeyV6 { addr: ip.src });
            if ban.is_none() && setting(setting::NETS_V6) != 0 {
                ban = lpm_lookup_mut(&BANS_V6_NET, &Key::new(128, ip.src));
            }
            Ok(judge(ban, port, stat::DROPPED_V6))
        }
        _ => Ok(xdp_action::XDP_PASS),
    }
}

/// Drops when a ban exists, is still in force on the boot clock, and covers
/// `port`; counts the drop on the ban and globally. In monitor mode (the
/// ban's or the global flag) the drop is counted and the packet passes.
#[inline(always)]
fn judge(ban: Option<*mut BanValue>, port: u16, dropped_stat: u32) -> u32 {
    let Some(ban) = ban else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: map values are not preallocated, so the element stays valid for
    // the rest of this program run (RCU) even if userspace deletes it meanwhile.
    let value = unsafe { &*ban };
    if !value.covers_port(port) {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: plain helper call.
    if !value.is_active(unsafe { bpf_ktime_get_boot_ns() }) {
        return xdp_action::XDP_PASS;
    }
    let monitor = value.flags & BAN_MONITOR != 0 || setting(setting::FLAGS) & SETTINGS_MONITOR != 0;
    // SAFETY: `drops` is a naturally aligned u64 inside the map value; other
    // CPUs bump it concurrently, hence the atomic add (BPF `lock xadd`; the
    // bpf target has no `AtomicU64::fetch_add`, so the intrinsic it lowers to).
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*ban).drops, 1) };
    if monitor {
        count(stat::WOULD_DROP);
        return xdp_action::XDP_PASS;
    }
    count(dropped_stat);
    xdp_action::XDP_DROP
}
