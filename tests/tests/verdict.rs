//! XDP verdicts on crafted frames through BPF_PROG_TEST_RUN: the real
//! program in the real kernel, no interface needed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
};
use jailer::{
    ban::Target,
    kernel::{BanTable as _, XdpBanTable, clock::kernel_now_ns, drop_tag},
};
use jailer_common::{
    BAN_ALL_PORTS, BAN_MAX_PORTS, BAN_PERMANENT, BanKeyV4, BanKeyV6, BanValue, DropSlot, drop_slot,
    map_names, setting, stat, tag_v4_host,
};
use jailer_tests::{
    ban, host, load_xdp, on_cpu, require_root, target, tcp4, tcp6, udp4, xdp_verdict,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const BANNED4: [u8; 4] = [203, 0, 113, 7];
const OTHER4: [u8; 4] = [203, 0, 113, 8];
const BANNED6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25,
];

/// The contract with userspace: a ban's ports are marked in `PORTS` (or
/// `ANY_PORT` set) before the ban is written, or the datapath skips it.
fn mark_ports(ebpf: &mut Ebpf, v: &BanValue) {
    if v.flags & BAN_ALL_PORTS != 0 {
        let mut settings: Array<_, u32> =
            Array::try_from(ebpf.map_mut(map_names::SETTINGS).unwrap()).unwrap();
        settings.set(setting::ANY_PORT, 1, 0).unwrap();
    }
    let mut ports: Array<_, u8> = Array::try_from(ebpf.map_mut(map_names::PORTS).unwrap()).unwrap();
    for &p in v.ports.iter().filter(|&&p| p != 0) {
        ports.set(u32::from(p), 1, 0).unwrap();
    }
}

fn ban4(ebpf: &mut Ebpf, addr: [u8; 4], v: BanValue) {
    mark_ports(ebpf, &v);
    let mut m: HashMap<_, BanKeyV4, BanValue> =
        HashMap::try_from(ebpf.map_mut(map_names::BANS_V4).unwrap()).unwrap();
    m.insert(BanKeyV4 { addr }, v, 0).unwrap();
}

fn ban6(ebpf: &mut Ebpf, addr: [u8; 16], v: BanValue) {
    mark_ports(ebpf, &v);
    let mut m: HashMap<_, BanKeyV6, BanValue> =
        HashMap::try_from(ebpf.map_mut(map_names::BANS_V6).unwrap()).unwrap();
    m.insert(BanKeyV6 { addr }, v, 0).unwrap();
}

/// Every CPU's `DROPS` slot at `tag`'s index (`drops` is the map's id when
/// the table took it, or the object's map).
fn slots(drops: &Map, tag: u64) -> Vec<DropSlot> {
    let m: PerCpuArray<&MapData, DropSlot> = PerCpuArray::try_from(drops).unwrap();
    m.get(&drop_slot(tag), 0).unwrap().to_vec()
}

/// The exact IPv4 ban's drops, summed over CPUs.
fn drops4(ebpf: &Ebpf, addr: [u8; 4]) -> u64 {
    let tag = tag_v4_host(addr);
    slots(ebpf.map(map_names::DROPS).unwrap(), tag)
        .iter()
        .filter(|s| s.tag == tag)
        .map(|s| s.drops)
        .sum()
}

/// A raw map value: `ports` (empty: all ports) for `secs` seconds from now
/// on the datapath's clock (`None`: permanent).
fn value(ports: &[u16], secs: Option<u64>) -> BanValue {
    let mut raw = [0; BAN_MAX_PORTS];
    raw[..ports.len()].copy_from_slice(ports);
    BanValue {
        expires_ns: secs.map_or(BAN_PERMANENT, |s| kernel_now_ns() + s * 1_000_000_000),
        ports: raw,
        flags: if ports.is_empty() { BAN_ALL_PORTS } else { 0 },
        prefix_len: 0,
    }
}

fn pop3_for_1h() -> BanValue {
    value(&[110], Some(3600))
}

#[test]
#[ignore = "needs root"]
fn ipv4_ban_drops_only_its_ports_and_counts() {
    require_root();
    let mut ebpf = load_xdp();
    ban4(&mut ebpf, BANNED4, pop3_for_1h());
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(BANNED4, 110, 5, 0)),
        XDP_DROP,
        "banned -> 110"
    );
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(BANNED4, 25, 5, 0)),
        XDP_PASS,
        "banned -> 25"
    );
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(OTHER4, 110, 5, 0)),
        XDP_PASS,
        "other -> 110"
    );
    assert_eq!(
        xdp_verdict(&ebpf, &udp4(BANNED4, 110)),
        XDP_PASS,
        "UDP is not judged"
    );
    // IPv4 options: the TCP header sits after ihl*4 bytes.
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(BANNED4, 110, 15, 0)),
        XDP_DROP,
        "ihl=15"
    );
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(BANNED4, 25, 8, 0)),
        XDP_PASS,
        "ihl=8 port 25"
    );
    // A first fragment carries the TCP header and is judged; later ones are not.
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(BANNED4, 110, 5, 0x2000)),
        XDP_DROP,
        "first fragment"
    );
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(BANNED4, 110, 5, 0x0010)),
        XDP_PASS,
        "later fragment"
    );
    assert_eq!(drops4(&ebpf, BANNED4), 3);

    let stats: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map(map_names::STATS).unwrap()).unwrap();
    let sum = |i: u32| stats.get(&i, 0).unwrap().iter().sum::<u64>();
    assert_eq!(sum(stat::SEEN), 8);
    assert_eq!(sum(stat::DROPPED_V4), 3);
}

#[test]
#[ignore = "needs root"]
fn expiry_permanent_and_all_ports() {
    require_root();
    let mut ebpf = load_xdp();
    let mut expired = pop3_for_1h();
    expired.expires_ns = 1; // long past on the boot clock
    ban4(&mut ebpf, BANNED4, expired);
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(BANNED4, 110, 5, 0)),
        XDP_PASS,
        "expired ban"
    );

    ban4(&mut ebpf, BANNED4, value(&[110], None));
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(BANNED4, 110, 5, 0)),
        XDP_DROP,
        "permanent"
    );

    ban4(&mut ebpf, OTHER4, value(&[], Some(60)));
    for port in [25, 110, 443, 65535] {
        assert_eq!(
            xdp_verdict(&ebpf, &tcp4(OTHER4, port, 5, 0)),
            XDP_DROP,
            "all ports: {port}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn ipv6_ban() {
    require_root();
    let mut ebpf = load_xdp();
    ban6(&mut ebpf, BANNED6, pop3_for_1h());
    let mut other = BANNED6;
    other[15] = 0x26;
    assert_eq!(xdp_verdict(&ebpf, &tcp6(BANNED6, 110)), XDP_DROP);
    assert_eq!(xdp_verdict(&ebpf, &tcp6(BANNED6, 25)), XDP_PASS);
    assert_eq!(xdp_verdict(&ebpf, &tcp6(other, 110)), XDP_PASS);
    let mut expired = pop3_for_1h();
    expired.expires_ns = 1;
    ban6(&mut ebpf, other, expired);
    assert_eq!(
        xdp_verdict(&ebpf, &tcp6(other, 110)),
        XDP_PASS,
        "expired v6 ban"
    );
    assert_eq!(IpAddr::from(BANNED6).to_string(), "2001:db8::25");
}

#[test]
#[ignore = "needs root"]
fn truncated_frames_pass_at_every_length() {
    require_root();
    let mut ebpf = load_xdp();
    ban4(&mut ebpf, BANNED4, pop3_for_1h());
    ban6(&mut ebpf, BANNED6, pop3_for_1h());
    // The kernel refuses test frames shorter than an Ethernet header; every
    // cut from there to one byte short of a whole TCP header must pass (and
    // run without a verifier or runtime error).
    for full in [
        tcp4(BANNED4, 110, 5, 0),
        tcp4(BANNED4, 110, 15, 0),
        tcp6(BANNED6, 110),
    ] {
        for len in 14..full.len() {
            assert_eq!(
                xdp_verdict(&ebpf, &full[..len]),
                XDP_PASS,
                "cut at {len} of {}",
                full.len()
            );
        }
        assert_eq!(xdp_verdict(&ebpf, &full), XDP_DROP, "whole frame");
    }
    // Garbage: IPv4 version/ihl nonsense passes.
    let mut bad = tcp4(BANNED4, 110, 5, 0);
    bad[14] = 0x43; // ihl 3 < 5
    assert_eq!(xdp_verdict(&ebpf, &bad), XDP_PASS);
    bad[14] = 0x65; // version 6 in an IPv4 EtherType
    assert_eq!(xdp_verdict(&ebpf, &bad), XDP_PASS);
}

/// The object's `DROPS` opened again by id (the table takes the map).
fn drops_map(ebpf: &Ebpf) -> Map {
    let Map::PerCpuArray(d) = ebpf.map(map_names::DROPS).unwrap() else {
        panic!("DROPS is a per-CPU array");
    };
    Map::from_map_data(MapData::from_id(d.info().unwrap().id()).unwrap()).unwrap()
}

/// The first two online CPUs, or `None` (the test then says why it skips).
fn two_cpus(test: &str) -> Option<(usize, usize)> {
    let online = aya::util::online_cpus().unwrap();
    if let [c0, c1, ..] = online[..] {
        Some((c0 as usize, c1 as usize))
    } else {
        eprintln!("SKIP {test}: needs two online CPUs");
        None
    }
}

/// `n` test runs of `frame` on `cpu`, each expected to drop.
fn drop_on(ebpf: &Ebpf, cpu: usize, frame: &[u8], n: usize) {
    on_cpu(cpu, || {
        for _ in 0..n {
            assert_eq!(xdp_verdict(ebpf, frame), XDP_DROP);
        }
    });
}

fn v6(text: &str) -> [u8; 16] {
    text.parse::<Ipv6Addr>().unwrap().octets()
}

fn drops(table: &XdpBanTable, t: Target) -> u64 {
    table.entry(t).unwrap().unwrap().drops
}

fn listed_drops(table: &XdpBanTable) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = table
        .list()
        .unwrap()
        .iter()
        .map(|l| (l.target.to_string(), l.drops))
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root"]
fn drops_on_two_cpus_are_counted_per_cpu_and_summed() {
    require_root();
    let Some((c0, c1)) = two_cpus("drops_on_two_cpus_are_counted_per_cpu_and_summed") else {
        return;
    };
    let mut ebpf = load_xdp();
    let drops_map = drops_map(&ebpf);
    let mut table = XdpBanTable::from_ebpf(&mut ebpf).unwrap();
    // An exact ban and a prefix ban in each family, and a packet from each
    // judged a few times on each CPU.
    // (ban, frame sent on CPU 0, frame sent on CPU 1, times on 0, times on 1)
    type Case = (Target, Vec<u8>, Vec<u8>, u64, u64);
    let cases: [Case; 4] = [
        (
            host("203.0.113.7"),
            tcp4(BANNED4, 110, 5, 0),
            tcp4(BANNED4, 110, 5, 0),
            3,
            5,
        ),
        (
            target("198.51.100.0/24"),
            tcp4([198, 51, 100, 9], 110, 5, 0),
            tcp4([198, 51, 100, 200], 110, 5, 0),
            2,
            4,
        ),
        (
            host("2001:db8::25"),
            tcp6(BANNED6, 110),
            tcp6(BANNED6, 110),
            1,
            2,
        ),
        (
            target("2001:db8:1::/64"),
            tcp6(v6("2001:db8:1::9"), 110),
            tcp6(v6("2001:db8:1::ffff:1"), 110),
            2,
            3,
        ),
    ];
    let mut indexes: Vec<u32> = cases.iter().map(|c| drop_slot(drop_tag(c.0))).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), cases.len(), "the test's bans share a slot");
    for (t, ..) in &cases {
        table.insert(*t, &ban(&[110], Some(3600))).unwrap();
    }
    for (_, f0, f1, n0, n1) in &cases {
        drop_on(&ebpf, c0, f0, *n0 as usize);
        drop_on(&ebpf, c1, f1, *n1 as usize);
    }

    // Each CPU counted in its own slot, under the tag the agent computes
    // for the ban (the datapath and `drop_tag` agree, prefixes included).
    for (t, _, _, n0, n1) in &cases {
        let tag = drop_tag(*t);
        let s = slots(&drops_map, tag);
        assert_eq!(s[c0], DropSlot { tag, drops: *n0 }, "{t} on CPU {c0}");
        assert_eq!(s[c1], DropSlot { tag, drops: *n1 }, "{t} on CPU {c1}");
    }

    // The table sums them, in `entry` and in `list`.
    let want: Vec<(String, u64)> = {
        let mut v: Vec<_> = cases
            .iter()
            .map(|(t, _, _, n0, n1)| (t.to_string(), n0 + n1))
            .collect();
        v.sort();
        v
    };
    for (t, _, _, n0, n1) in &cases {
        assert_eq!(drops(&table, *t), n0 + n1, "{t}");
    }
    assert_eq!(listed_drops(&table), want);

    // Banned again (other ports, later expiry): the counts are kept.
    for (t, ..) in &cases {
        table.insert(*t, &ban(&[110, 995], Some(7200))).unwrap();
    }
    assert_eq!(listed_drops(&table), want);
}

#[test]
#[ignore = "needs root"]
fn a_removed_then_banned_again_target_starts_at_zero_drops() {
    require_root();
    let mut ebpf = load_xdp();
    let drops_map = drops_map(&ebpf);
    let mut table = XdpBanTable::from_ebpf(&mut ebpf).unwrap();
    let pop3 = ban(&[110], Some(3600));
    let (exact, net) = (host("203.0.113.7"), target("198.51.100.0/24"));
    let (f_exact, f_net) = (tcp4(BANNED4, 110, 5, 0), tcp4([198, 51, 100, 9], 110, 5, 0));
    for t in [exact, net] {
        table.insert(t, &pop3).unwrap();
    }
    drop_on(&ebpf, 0, &f_exact, 3);
    drop_on(&ebpf, 0, &f_net, 2);
    assert_eq!((drops(&table, exact), drops(&table, net)), (3, 2));

    // One at a time (an unban, an expiry removal): the slot is cleared.
    for t in [exact, net] {
        assert!(table.remove(t).unwrap());
        assert!(
            slots(&drops_map, drop_tag(t))
                .iter()
                .all(|s| s.tag != drop_tag(t))
        );
        table.insert(t, &pop3).unwrap();
        assert_eq!(drops(&table, t), 0, "{t} banned again");
    }
    drop_on(&ebpf, 0, &f_exact, 1);
    assert_eq!(drops(&table, exact), 1, "counting again from zero");

    // Many at once (a bulk unban: DROPS read and written in batches): the
    // removed bans' counts go, a ban that stays keeps its count.
    let stays = host("203.0.113.9");
    table.insert(stays, &pop3).unwrap();
    drop_on(&ebpf, 0, &tcp4([203, 0, 113, 9], 110, 5, 0), 4);
    drop_on(&ebpf, 0, &f_exact, 5);
    drop_on(&ebpf, 0, &f_net, 6);
    let mut doomed: Vec<Target> = (1..=1000u32)
        .map(|i| Target::host(Ipv4Addr::from(0x0a00_0000 | i).into()))
        .collect();
    let bans: Vec<_> = doomed.iter().map(|t| (*t, pop3)).collect();
    assert_eq!(table.insert_many(&bans).unwrap(), bans.len());
    drop_on(&ebpf, 0, &tcp4([10, 0, 0, 1], 110, 5, 0), 7);
    doomed.extend([exact, net]);
    assert_eq!(table.remove_many(&doomed).unwrap(), doomed.len());
    assert_eq!(listed_drops(&table), vec![("203.0.113.9".into(), 4)]);
    for t in [exact, net, host("10.0.0.1")] {
        table.insert(t, &pop3).unwrap();
        assert_eq!(drops(&table, t), 0, "{t} banned again after a bulk unban");
    }
}

#[test]
#[ignore = "needs root"]
fn bans_sharing_a_drop_slot_never_show_each_others_drops() {
    require_root();
    let mut ebpf = load_xdp();
    let mut table = XdpBanTable::from_ebpf(&mut ebpf).unwrap();
    let a = host("203.0.113.7");
    // Another IPv4 host whose tag falls in the same DROPS slot.
    let index = drop_slot(drop_tag(a));
    let b = (1..u32::MAX)
        .map(|i| Target::host(Ipv4Addr::from(0x0a00_0000 | i).into()))
        .find(|t| drop_slot(drop_tag(*t)) == index)
        .unwrap();
    let IpAddr::V4(b4) = b.addr() else {
        unreachable!()
    };
    let (fa, fb) = (tcp4(BANNED4, 110, 5, 0), tcp4(b4.octets(), 110, 5, 0));
    let pop3 = ban(&[110], Some(3600));
    table.insert(a, &pop3).unwrap();
    table.insert(b, &pop3).unwrap();
    let counts = |table: &XdpBanTable| (drops(table, a), drops(table, b));

    drop_on(&ebpf, 0, &fa, 3);
    assert_eq!(counts(&table), (3, 0));
    // B takes the slot over on this CPU: A's count there is lost (an
    // undercount), and B starts from its own first drop.
    drop_on(&ebpf, 0, &fb, 2);
    assert_eq!(counts(&table), (0, 2));
    drop_on(&ebpf, 0, &fa, 1);
    assert_eq!(counts(&table), (1, 0));
    let Some((_, c1)) = two_cpus("bans_sharing_a_drop_slot_never_show_each_others_drops") else {
        return;
    };
    // On another CPU the same index is another slot: both are counted.
    drop_on(&ebpf, c1, &fb, 4);
    assert_eq!(counts(&table), (1, 4));
    let listed = listed_drops(&table);
    assert!(listed.contains(&(a.to_string(), 1)), "{listed:?}");
    assert!(listed.contains(&(b.to_string(), 4)), "{listed:?}");
    // Removing B clears B's slot only.
    assert!(table.remove(b).unwrap());
    assert_eq!(drops(&table, a), 1);
}

#[test]
#[ignore = "needs root"]
fn a_ban_lapses_within_a_tick_of_its_expiry() {
    require_root();
    let mut ebpf = load_xdp();
    let mut v = pop3_for_1h();
    v.expires_ns = kernel_now_ns() + 300_000_000;
    ban4(&mut ebpf, BANNED4, v);
    // Judged now, this CPU caches its boot-clock reading...
    assert_eq!(xdp_verdict(&ebpf, &tcp4(BANNED4, 110, 5, 0)), XDP_DROP);
    // ...which must not keep the ban alive past its expiry: 20 ms after it
    // (two ticks at HZ=100), the packet passes.
    while kernel_now_ns() < v.expires_ns + 20_000_000 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(xdp_verdict(&ebpf, &tcp4(BANNED4, 110, 5, 0)), XDP_PASS);
}
