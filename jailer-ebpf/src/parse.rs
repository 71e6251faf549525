//! Header parsing. Each helper checks its bounds against `data_end` before
//! reading, and reads raw integers: packet bytes are never turned into enums
//! (an unknown EtherType or protocol number would be undefined behaviour).

use core::ptr::addr_of;

use aya_ebpf::programs::XdpContext;
use network_types::{eth::EthHdr, ip::Ipv4Hdr, ip::Ipv6Hdr, tcp::TcpHdr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const IPPROTO_TCP: u8 = 6;

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

/// Ethernet: returns the EtherType (host order) and the offset of the L3 header.
#[inline(always)]
pub fn parse_eth(ctx: &XdpContext) -> Result<(u16, usize), ()> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at; read as raw bytes, not as the enum.
    let ether_type = unsafe {
        addr_of!((*eth).ether_type)
            .cast::<[u8; 2]>()
            .read_unaligned()
    };
    Ok((u16::from_be_bytes(ether_type), EthHdr::LEN))
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

/// IPv6 fixed header. Extension headers are not walked: their packets are
/// judged on what follows only when that is TCP directly.
#[inline(always)]
pub fn parse_ipv6(ctx: &XdpContext, offset: usize) -> Result<L3<16>, ()> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, offset)?;
    // SAFETY: the fixed header is in bounds (ptr_at above).
    let (proto, src) = unsafe { (*addr_of!((*ip).next_hdr).cast::<u8>(), (*ip).src_addr) };
    Ok(L3 {
        src,
        proto,
        l4_offset: offset + Ipv6Hdr::LEN,
    })
}

/// TCP: returns the destination port in host order.
#[inline(always)]
pub fn parse_tcp_dport(ctx: &XdpContext, offset: usize) -> Result<u16, ()> {
    let tcp: *const TcpHdr = ptr_at(ctx, offset)?;
    // SAFETY: bounds checked by ptr_at.
    Ok(u16::from_be(unsafe { (*tcp).dest }))
}
