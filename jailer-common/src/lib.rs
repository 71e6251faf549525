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

/// `BanValue::flags`: count would-be drops in `drops` but let packets pass
/// (try a ban, or run beside fail2ban, before enforcing).
pub const BAN_MONITOR: u32 = 1 << 1;

/// `BanValue::expires_ns` of a ban that never expires.
pub const BAN_PERMANENT: u64 = 0;

/// Value of the ban maps.
///
/// The exact-address maps (`BANS_V4`, `BANS_V6`) are per-CPU hashes: every
/// CPU has its own copy of the value, userspace writes the same `expires_ns`,
/// `ports` and `flags` into each, and each CPU counts its own `drops` with a
/// plain add (no cache line is shared between CPUs on the drop path; the
/// agent sums the copies). The prefix tries have one copy; their drops are
/// counted in `NET_DROPS_V4`/`NET_DROPS_V6` and `drops` there stays 0.
///
/// The kernel enforces the expiry itself: a ban whose `expires_ns` has passed
/// on `CLOCK_BOOTTIME` no longer drops anything, even while the agent is down.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanValue {
    /// `CLOCK_BOOTTIME` nanoseconds after which the ban lapses;
    /// [`BAN_PERMANENT`] (0) never lapses.
    pub expires_ns: u64,
    /// Packets this CPU dropped for this ban (per-CPU maps; summed over
    /// CPUs by userspace).
    pub drops: u64,
    /// TCP destination ports (host byte order) the ban applies to; 0 = unused slot.
    pub ports: [u16; BAN_MAX_PORTS],
    /// `BAN_*` flags.
    pub flags: u32,
    /// Prefix length of a trie entry (so userspace can tell an exact trie
    /// hit from a covering prefix); 0 in the exact-address maps.
    pub prefix_len: u32,
}

/// Key of `NET_DROPS_V4`: a prefix ban's trie key (address masked to
/// `prefix_len` bits, network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetDropKeyV4 {
    pub prefix_len: u32,
    pub addr: [u8; 4],
}

/// Key of `NET_DROPS_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetDropKeyV6 {
    pub prefix_len: u32,
    pub addr: [u8; 16],
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
const _: () = assert!(size_of::<BanValue>() == 40);
const _: () = assert!(size_of::<NetDropKeyV4>() == 8);
const _: () = assert!(size_of::<NetDropKeyV6>() == 20);
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
    pub const NET_DROPS_V4: &str = "NET_DROPS_V4";
    pub const NET_DROPS_V6: &str = "NET_DROPS_V6";
    pub const PORTS: &str = "PORTS";
    pub const STATS: &str = "STATS";
    pub const CLOCK: &str = "CLOCK";
    /// Every map the program declares, in one place for loaders and tests.
    pub const ALL: [&str; 10] = [
        BANS_V4,
        BANS_V6,
        BANS_V4_NET,
        BANS_V6_NET,
        NET_DROPS_V4,
        NET_DROPS_V6,
        SETTINGS,
        PORTS,
        STATS,
        CLOCK,
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
    unsafe impl aya::Pod for super::NetDropKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetDropKeyV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClockCache {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(ports: &[u16], flags: u32, expires_ns: u64) -> BanValue {
        let mut v = BanValue {
            expires_ns,
            drops: 0,
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
    fn expiry_is_exclusive_and_zero_is_permanent() {
        assert!(ban(&[110], 0, 100).is_active(99));
        assert!(!ban(&[110], 0, 100).is_active(100));
        assert!(ban(&[110], 0, BAN_PERMANENT).is_active(u64::MAX));
    }
}
