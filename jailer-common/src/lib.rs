//! Types shared by the XDP program (`jailer-ebpf`) and the agent (`jailer`).
//!
//! Every type here crosses the kernel boundary as raw bytes, so each is
//! `#[repr(C)]`, has no bool/enum/Option fields and no implicit padding
//! (checked at compile time below). Addresses are kept in network byte order
//! so the datapath can copy them straight out of the packet.
#![no_std]

/// Key of the exact-address IPv4 ban map: the source address as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BanKeyV4 {
    pub addr: [u8; 4],
}

/// Key of the exact-address IPv6 ban map: the source address as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BanKeyV6 {
    pub addr: [u8; 16],
}

/// How many distinct ports one ban can name; a jail rarely protects more
/// (pop3, pop3s, imap, imaps, smtp, submission, smtps, sieve). Wider needs use
/// [`BAN_ALL_PORTS`].
pub const BAN_MAX_PORTS: usize = 8;

/// `BanValue::flags`: the ban covers every TCP port, `ports` is ignored.
pub const BAN_ALL_PORTS: u32 = 1 << 0;

/// `BanValue::flags`: count would-be drops (in `DROPS`) but let packets pass
/// (try a ban, or run beside fail2ban, before enforcing).
pub const BAN_MONITOR: u32 = 1 << 1;

/// `BanValue::expires_ns` of a ban that never expires.
pub const BAN_PERMANENT: u64 = 0;

/// Value of the ban maps (`BANS_V4`, `BANS_V6` and the prefix tries).
///
/// The datapath only reads it: a ban's drops are counted elsewhere, per CPU
/// (`DROPS`, see [`DropSlot`]), so a flood spread over every queue writes no
/// cache line another CPU reads or writes.
///
/// The kernel enforces the expiry itself: a ban whose `expires_ns` has passed
/// on `CLOCK_BOOTTIME` no longer drops anything, even while the agent is down.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanValue {
    /// `CLOCK_BOOTTIME` nanoseconds after which the ban lapses;
    /// [`BAN_PERMANENT`] (0) never lapses.
    pub expires_ns: u64,
    /// TCP destination ports (host byte order) the ban applies to; 0 = unused slot.
    pub ports: [u16; BAN_MAX_PORTS],
    /// `BAN_*` flags.
    pub flags: u32,
    /// Prefix length of a trie entry (so userspace can tell an exact trie
    /// hit from a covering prefix, and the datapath can name the matched
    /// prefix in its drop count); 0 in the exact-address maps.
    pub prefix_len: u32,
}

/// One slot of `DROPS`, a per-CPU array of [`DROP_SLOTS`] slots: a per-CPU,
/// direct-mapped cache of per-ban drop counts.
///
/// On every drop (and would-be drop in monitor mode) the datapath takes the
/// matched ban's [tag](tag_v4_host) and its own CPU's slot at
/// [`drop_slot`]`(tag)`: when the slot holds that tag it adds one to
/// `drops`, else it takes the slot over (`drops` = 1, then `tag`). Only that
/// CPU writes its slots, with plain stores. Userspace sums, over CPUs, the
/// slots at a ban's index that hold its tag. A count is never given to
/// another ban (a slot names its ban; IPv6 tags are a 56-bit hash, see
/// [`tag_v6_host`]), but it is lost when another ban whose tag falls in the
/// same slot drops on the same CPU: an undercount, never an overcount.
///
/// The datapath writes `drops` before `tag` when it takes a slot over, and
/// the kernel copies a slot to userspace `tag` first: on x86 (stores and
/// loads in order) a copy taken mid-takeover holds the old tag with either
/// count, or the new tag with its new count, never the new tag with the old
/// ban's count.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DropSlot {
    /// The ban's tag; 0: free (no tag is 0).
    pub tag: u64,
    /// Drops this CPU counted for it since it took the slot.
    pub drops: u64,
}

/// Slots per CPU in `DROPS`: 65536 x 16 B = 1 MiB per possible CPU.
pub const DROP_SLOTS: u32 = 1 << DROP_SLOT_BITS;
/// log2 of [`DROP_SLOTS`].
pub const DROP_SLOT_BITS: u32 = 16;

/// The top byte of a tag: which kind of ban it names.
pub mod ban_kind {
    pub const V4_HOST: u64 = 1;
    pub const V6_HOST: u64 = 2;
    pub const V4_NET: u64 = 3;
    pub const V6_NET: u64 = 4;
}

/// 2^64 / golden ratio: Fibonacci hashing of a tag into a slot index.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
/// Odd constants of the IPv6 fold.
const FOLD1: u64 = 0xff51_afd7_ed55_8ccd;
const FOLD2: u64 = 0xc4ce_b9fe_1a85_ec53;

/// Tag of an exact IPv4 ban: `V4_HOST << 56 | addr` (exact: two IPv4 bans
/// never share a tag).
#[inline(always)]
pub const fn tag_v4_host(addr: [u8; 4]) -> u64 {
    ban_kind::V4_HOST << 56 | u32::from_be_bytes(addr) as u64
}

/// Tag of an IPv4 prefix ban: `V4_NET << 56 | prefix_len << 32 | net`, with
/// `net` the address with its host bits clear.
#[inline(always)]
pub const fn tag_v4_net(net: [u8; 4], prefix_len: u32) -> u64 {
    ban_kind::V4_NET << 56 | (prefix_len as u64 & 0xff) << 32 | u32::from_be_bytes(net) as u64
}

/// The 128 bits of an IPv6 address (as two big-endian halves) and `salt`
/// folded into 56 bits under `kind`. Not exact: two IPv6 bans share a tag
/// (and then a count) with odds of about n^2 / 2^57 for n IPv6 bans.
#[inline(always)]
const fn fold_v6(hi: u64, lo: u64, salt: u64, kind: u64) -> u64 {
    let h = (hi.wrapping_mul(FOLD1) ^ lo ^ salt).wrapping_mul(FOLD2);
    kind << 56 | h >> 8
}

/// Tag of an exact IPv6 ban; `hi`, `lo`: the address's halves read big-endian.
#[inline(always)]
pub const fn tag_v6_host(hi: u64, lo: u64) -> u64 {
    fold_v6(hi, lo, 0, ban_kind::V6_HOST)
}

/// Tag of an IPv6 prefix ban (host bits of `hi`, `lo` clear).
#[inline(always)]
pub const fn tag_v6_net(hi: u64, lo: u64, prefix_len: u32) -> u64 {
    fold_v6(hi, lo, prefix_len as u64, ban_kind::V6_NET)
}

/// The two big-endian halves of an IPv6 address.
#[inline(always)]
pub const fn v6_halves(a: [u8; 16]) -> (u64, u64) {
    (
        u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

/// The `DROPS` slot of a tag.
#[inline(always)]
pub const fn drop_slot(tag: u64) -> u32 {
    (tag.wrapping_mul(GOLDEN) >> (64 - DROP_SLOT_BITS)) as u32
}

/// The bits of a big-endian word kept by a prefix of `bits` (0..=64 and
/// more: all).
#[inline(always)]
pub const fn prefix_mask(bits: u32) -> u64 {
    match bits {
        0 => 0,
        1..64 => !(u64::MAX >> bits),
        _ => u64::MAX,
    }
}

/// Each CPU's cached reading of the boot clock (`CLOCK`, per-CPU).
///
/// `bpf_ktime_get_boot_ns` costs about 40 ns here, as much as the rest of
/// the drop path; `bpf_jiffies64` is a plain load. A CPU reads the boot
/// clock again only when `jiffies` moved on since its last reading, so the
/// expiry check sees `CLOCK_BOOTTIME` at most one tick (1/HZ) late and
/// reads the real clock at most HZ times a second per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClockCache {
    /// `jiffies_64` when `boot_ns` was read.
    pub jiffies: u64,
    /// `CLOCK_BOOTTIME` nanoseconds read during that jiffy (never decreases).
    pub boot_ns: u64,
}

const _: () = assert!(size_of::<BanKeyV4>() == 4);
const _: () = assert!(size_of::<BanKeyV6>() == 16);
const _: () = assert!(size_of::<BanValue>() == 32);
const _: () = assert!(size_of::<DropSlot>() == 16);
const _: () = assert!(size_of::<ClockCache>() == 16);

impl BanValue {
    /// Whether a packet to TCP port `port` (host byte order) is covered.
    #[inline(always)]
    pub fn covers_port(&self, port: u16) -> bool {
        if self.flags & BAN_ALL_PORTS != 0 {
            return true;
        }
        let mut i = 0;
        while i < BAN_MAX_PORTS {
            if self.ports[i] != 0 && self.ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }

    /// Whether the ban is still in force at `now_ns` (`CLOCK_BOOTTIME`).
    #[inline(always)]
    pub fn is_active(&self, now_ns: u64) -> bool {
        self.expires_ns == BAN_PERMANENT || now_ns < self.expires_ns
    }
}

/// Data part of the IPv4 prefix-trie key: the address (network order) in the
/// first 4 bytes, then 4 zero bytes. The padding puts the value at an 8-byte
/// aligned offset in the trie node, as `BanValue`'s u64 fields need.
pub type NetV4 = [u8; 8];
/// Data part of the IPv6 prefix-trie key: the address, network order.
pub type NetV6 = [u8; 16];

/// Slots of the `SETTINGS` array (u32 each, written by userspace; separate
/// slots so writers never read-modify-write each other's fields).
pub mod setting {
    /// `SETTINGS_*` flags.
    pub const FLAGS: u32 = 0;
    /// Non-zero while `BANS_V4_NET` may hold entries: only then is the trie
    /// consulted, so an empty trie costs nothing.
    pub const NETS_V4: u32 = 1;
    /// The same for `BANS_V6_NET`.
    pub const NETS_V6: u32 = 2;
    /// Non-zero once any ban covers all ports: then `PORTS` is not consulted.
    pub const ANY_PORT: u32 = 3;
    /// Number of slots.
    pub const COUNT: u32 = 4;
}

/// `setting::FLAGS`: monitor mode for every ban (`xdp_action = "monitor"`).
pub const SETTINGS_MONITOR: u32 = 1 << 0;

/// Indexes of the per-CPU `STATS` array.
pub mod stat {
    /// Every packet the program ran on.
    pub const SEEN: u32 = 0;
    /// Unused (passed = seen - dropped - would-drop; not counted per packet).
    pub const RESERVED: u32 = 1;
    /// IPv4 packets dropped by a ban.
    pub const DROPPED_V4: u32 = 2;
    /// IPv6 packets dropped by a ban.
    pub const DROPPED_V6: u32 = 3;
    /// Packets a ban matched but let pass (monitor mode).
    pub const WOULD_DROP: u32 = 4;
    /// Number of slots in `STATS`.
    pub const COUNT: u32 = 5;
}

/// Default capacity of each ban map (one per address family).
pub const MAX_BANS: u32 = 1 << 20;

/// Names of the maps in the eBPF object; also their pin names in bpffs.
pub mod map_names {
    pub const BANS_V4: &str = "BANS_V4";
    pub const BANS_V6: &str = "BANS_V6";
    pub const BANS_V4_NET: &str = "BANS_V4_NET";
    pub const BANS_V6_NET: &str = "BANS_V6_NET";
    pub const SETTINGS: &str = "SETTINGS";
    pub const PORTS: &str = "PORTS";
    pub const STATS: &str = "STATS";
    pub const CLOCK: &str = "CLOCK";
    pub const DROPS: &str = "DROPS";
    /// Every map the program declares, in one place for loaders and tests.
    pub const ALL: [&str; 9] = [
        BANS_V4,
        BANS_V6,
        BANS_V4_NET,
        BANS_V6_NET,
        SETTINGS,
        PORTS,
        STATS,
        CLOCK,
        DROPS,
    ];
}

/// Entries of `PORTS`: one per TCP port; non-zero when some ban covers it.
/// Checked before any ban lookup, so traffic to ports no ban names (SMTP on a
/// POP3 jail) costs one array read. Entries are only ever set, never cleared
/// (a stale entry costs a lookup, a missing one would let a ban through).
pub const PORT_ENTRIES: u32 = 1 << 16;

/// Default capacity of each prefix-ban trie.
pub const MAX_NET_BANS: u32 = 1 << 16;

/// Name of the XDP entry point in the eBPF object.
pub const PROGRAM_NAME: &str = "jailer_xdp";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), no padding (asserted above).
    unsafe impl aya::Pod for super::BanKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BanKeyV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BanValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClockCache {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(ports: &[u16], flags: u32, expires_ns: u64) -> BanValue {
        let mut v = BanValue {
            expires_ns,
            ports: [0; BAN_MAX_PORTS],
            flags,
            prefix_len: 0,
        };
        v.ports[..ports.len()].copy_from_slice(ports);
        v
    }

    #[test]
    fn covers_listed_ports_only() {
        let v = ban(&[110, 995], 0, BAN_PERMANENT);
        assert!(v.covers_port(110));
        assert!(v.covers_port(995));
        assert!(!v.covers_port(25));
        // An unused slot (0) must not make port 0 covered.
        assert!(!v.covers_port(0));
    }

    #[test]
    fn all_ports_flag_covers_everything() {
        let v = ban(&[], BAN_ALL_PORTS, BAN_PERMANENT);
        assert!(v.covers_port(25) && v.covers_port(65535));
    }

    #[test]
    fn tags_name_their_ban_and_are_never_zero() {
        let a = [203, 0, 113, 7];
        assert_eq!(tag_v4_host(a), 1 << 56 | 0xcb00_7107);
        assert_eq!(
            tag_v4_net([203, 0, 113, 0], 24),
            3 << 56 | 24 << 32 | 0xcb00_7100
        );
        assert_ne!(tag_v4_host([0; 4]), 0);
        assert_ne!(tag_v6_host(0, 0), 0);
        assert_ne!(tag_v6_net(0, 0, 0), 0);
        // Kinds never mix: a host and the /32 or /128 on it differ.
        assert_ne!(tag_v4_host(a), tag_v4_net(a, 32));
        let (hi, lo) = v6_halves([
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25,
        ]);
        assert_eq!((hi, lo), (0x2001_0db8_0000_0000, 0x25));
        assert_ne!(tag_v6_host(hi, lo), tag_v6_net(hi, lo, 128));
        assert_ne!(tag_v6_net(hi, 0, 64), tag_v6_net(hi, 0, 48));
        assert_eq!(tag_v6_host(hi, lo) >> 56, ban_kind::V6_HOST);
    }

    #[test]
    fn slots_spread_neighbouring_bans() {
        // 65536 neighbouring addresses (a blocklist's /16) fill most slots
        // (random slots would fill 63%).
        let mut used = [false; DROP_SLOTS as usize];
        for i in 0..DROP_SLOTS {
            let slot = drop_slot(tag_v4_host((0x0a00_0000 | i).to_be_bytes()));
            assert!(slot < DROP_SLOTS);
            used[slot as usize] = true;
        }
        let distinct = used.iter().filter(|&&u| u).count();
        assert!(distinct > DROP_SLOTS as usize * 8 / 10, "{distinct}");
        let mut used = [false; DROP_SLOTS as usize];
        for i in 0..u64::from(DROP_SLOTS) {
            used[drop_slot(tag_v6_host(0x2001_0db8_0000_0000, i)) as usize] = true;
        }
        let distinct = used.iter().filter(|&&u| u).count();
        assert!(distinct > DROP_SLOTS as usize / 2, "{distinct}");
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(24) >> 32, 0xffff_ff00);
        assert_eq!(prefix_mask(64), u64::MAX);
        assert_eq!(prefix_mask(100), u64::MAX);
    }

    #[test]
    fn expiry_is_exclusive_and_zero_is_permanent() {
        assert!(ban(&[110], 0, 100).is_active(99));
        assert!(!ban(&[110], 0, 100).is_active(100));
        assert!(ban(&[110], 0, BAN_PERMANENT).is_active(u64::MAX));
    }
}
