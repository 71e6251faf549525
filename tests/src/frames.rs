//! Frames for BPF_PROG_TEST_RUN: Ethernet, VLAN tags, IPv4 with options,
//! IPv6 with extension headers, TCP and UDP.

/// Ethernet + IPv4 (`ihl` words, options zero-filled) + TCP to `dport`.
pub fn tcp4(src: [u8; 4], dport: u16, ihl: u8, frag_off: u16) -> Vec<u8> {
    let mut f = eth(0x0800);
    let hl = usize::from(ihl) * 4;
    let mut ip = vec![0u8; hl];
    ip[0] = 0x40 | ihl;
    ip[2..4].copy_from_slice(&((hl + 20) as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&[10, 0, 0, 1]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp(dport));
    f
}

/// Ethernet + IPv4 + UDP to `dport`.
pub fn udp4(src: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = tcp4(src, dport, 5, 0);
    f[14 + 9] = 17;
    f
}

/// Ethernet + IPv6 + TCP to `dport`.
pub fn tcp6(src: [u8; 16], dport: u16) -> Vec<u8> {
    let mut f = eth(0x86DD);
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&20u16.to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[39] = 1;
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp(dport));
    f
}

fn eth(ether_type: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

fn tcp(dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t
}

/// Inserts VLAN tags (each `tpid`, TCI 0x0064) after the MAC addresses.
pub fn with_vlans(frame: &[u8], tpids: &[u16]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for tpid in tpids {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&0x0064u16.to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// An IPv6 extension header for [`tcp6_ext`].
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    /// Hop-by-hop options, `n` extra 8-octet units.
    HopByHop(u8),
    /// Routing header, `n` extra units.
    Routing(u8),
    /// Destination options, `n` extra units.
    DestOpts(u8),
    /// Fragment header with this fragment offset (8-octet units).
    Fragment(u16),
}

/// Ethernet + IPv6 + `exts` + TCP to `dport`.
pub fn tcp6_ext(src: [u8; 16], dport: u16, exts: &[Ext]) -> Vec<u8> {
    let base = tcp6(src, dport);
    let (head, tcp_hdr) = base.split_at(14 + 40);
    let mut f = head.to_vec();
    let number = |e: &Ext| match e {
        Ext::HopByHop(_) => 0u8,
        Ext::Routing(_) => 43,
        Ext::DestOpts(_) => 60,
        Ext::Fragment(_) => 44,
    };
    f[14 + 6] = exts.first().map_or(6, number);
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(6, number);
        match *e {
            Ext::HopByHop(n) | Ext::Routing(n) | Ext::DestOpts(n) => {
                let mut h = vec![0u8; (usize::from(n) + 1) * 8];
                h[0] = next;
                h[1] = n;
                f.extend_from_slice(&h);
            }
            Ext::Fragment(offset) => {
                f.extend_from_slice(&[next, 0]);
                f.extend_from_slice(&((offset << 3) | 1).to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 42]);
            }
        }
    }
    f.extend_from_slice(tcp_hdr);
    let payload = (f.len() - 14 - 40) as u16;
    f[14 + 4..14 + 6].copy_from_slice(&payload.to_be_bytes());
    f
}
