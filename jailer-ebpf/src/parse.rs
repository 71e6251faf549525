//! Header parsing. Each helper checks its bounds against `data_end` before
//! reading, and reads raw integers: packet bytes are never turned into enums
//! (an unknown EtherType or protocol number would be undefined behaviour).

use core::ptr::addr_of;

use aya_ebpf::programs::XdpContext;
use network_types::{eth::EthHdr, ip::Ipv4Hdr, ip::Ipv6Hdr, tcp::TcpHdr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
pub const IPPROTO_TCP: u8 = 6;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
/// VLAN tags looked through: 802.1ad outer + 802.1Q inner.
const MAX_VLAN: usize = 2;
/// IPv6 extension headers walked before giving up (and passing).
const MAX_EXT: usize = 6;

/// Returns a pointer to a `T` at `offset` from the start of the frame, or
/// `Err` when the frame is too short to hold it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

/// Ethernet and up to two VLAN tags: returns the EtherType (host order) and
/// the offset of the L3 header.
#[inline(always)]
pub fn parse_eth(ctx: &XdpContext) -> Result<(u16, usize), ()> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at; read as raw bytes, not as the enum.
    let raw = unsafe {
        addr_of!((*eth).ether_type)
            .cast::<[u8; 2]>()
            .read_unaligned()
    };
    let mut ether_type = u16::from_be_bytes(raw);
    let mut offset = EthHdr::LEN;
    for _ in 0..MAX_VLAN {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // A tag: 2 bytes TCI, then the next EtherType.
        let next: *const [u8; 2] = ptr_at(ctx, offset + 2)?;
        // SAFETY: bounds checked by ptr_at.
        ether_type = u16::from_be_bytes(unsafe { next.read_unaligned() });
        offset += 4;
    }
    Ok((ether_type, offset))
}

/// An L3 header reduced to what the verdict needs.
pub struct L3<const N: usize> {
    /// Source address, network byte order.
    pub src: [u8; N],
    /// Upper-layer protocol number, or 0 when there is no L4 header to judge
    /// (a non-first fragment).
    pub proto: u8,
    /// Offset of the L4 header.
    pub l4_offset: usize,
}

/// IPv4, options included (`ihl` up to 15 words).
#[inline(always)]
pub fn parse_ipv4(ctx: &XdpContext, offset: usize) -> Result<L3<4>, ()> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, offset)?;
    // SAFETY: the fixed header is in bounds (ptr_at above).
    let (vihl, frag_off, proto, src) = unsafe {
        (
            *ip.cast::<u8>(),
            u16::from_be_bytes((*ip).frag_off),
            *addr_of!((*ip).proto).cast::<u8>(),
            (*ip).src_addr,
        )
    };
    let header_len = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN {
        return Err(());
    }
    // Later fragments carry no TCP header: their ports are unknown.
    let proto = if frag_off & 0x1fff != 0 { 0 } else { proto };
    Ok(L3 {
        src,
        proto,
        l4_offset: offset + header_len,
    })
}

/// IPv6, walking hop-by-hop, routing, destination-options and fragment
/// headers (at most `MAX_EXT`). A non-first fragment has no TCP header: its
/// `proto` is 0. More headers than that, or another kind, leave `proto` at
/// that header's number, which is not TCP, so the packet passes.
#[inline(always)]
pub fn parse_ipv6(ctx: &XdpContext, offset: usize) -> Result<L3<16>, ()> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, offset)?;
    // SAFETY: the fixed header is in bounds (ptr_at above).
    let (mut proto, src) = unsafe { (*addr_of!((*ip).next_hdr).cast::<u8>(), (*ip).src_addr) };
    let mut l4_offset = offset + Ipv6Hdr::LEN;
    for _ in 0..MAX_EXT {
        match proto {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // next header, length in 8-octet units not counting the first 8
                let ext: *const [u8; 2] = ptr_at(ctx, l4_offset)?;
                // SAFETY: bounds checked by ptr_at.
                let [next, len] = unsafe { ext.read_unaligned() };
                proto = next;
                l4_offset += (usize::from(len) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                // next header, reserved, offset (13 bits) + flags, identification
                let frag: *const [u8; 4] = ptr_at(ctx, l4_offset)?;
                // SAFETY: bounds checked by ptr_at.
                let [next, _, hi, lo] = unsafe { frag.read_unaligned() };
                if u16::from_be_bytes([hi, lo]) >> 3 != 0 {
                    proto = 0;
                    break;
                }
                proto = next;
                l4_offset += 8;
            }
            _ => break,
        }
    }
    Ok(L3 {
        src,
        proto,
        l4_offset,
    })
}

/// TCP: returns the destination port in host order.
#[inline(always)]
pub fn parse_tcp_dport(ctx: &XdpContext, offset: usize) -> Result<u16, ()> {
    let tcp: *const TcpHdr = ptr_at(ctx, offset)?;
    // SAFETY: bounds checked by ptr_at.
    Ok(u16::from_be(unsafe { (*tcp).dest }))
}
