//! XDP verdicts on crafted frames through BPF_PROG_TEST_RUN: the real
//! program in the real kernel, no interface needed.

use std::net::IpAddr;

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
};
use jailer::kernel::{BanTable as _, XdpBanTable, clock::kernel_now_ns};
use jailer_common::{
    BAN_ALL_PORTS, BAN_MAX_PORTS, BAN_PERMANENT, BanKeyV4, BanKeyV6, BanValue, NetDropKeyV4,
    map_names, setting, stat,
};
use jailer_tests::{
    ban, host, load_xdp, on_cpu, require_root, target, tcp4, tcp6, udp4, xdp_verdict,
};

/// `v` for every CPU: the per-CPU ban maps take one value per possible CPU.
fn every_cpu(v: BanValue) -> PerCpuValues<BanValue> {
    let cpus = aya::util::nr_cpus().expect("possible CPUs");
    PerCpuValues::try_from(vec![v; cpus]).unwrap()
}

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
    let mut m: PerCpuHashMap<_, BanKeyV4, BanValue> =
        PerCpuHashMap::try_from(ebpf.map_mut(map_names::BANS_V4).unwrap()).unwrap();
    m.insert(BanKeyV4 { addr }, every_cpu(v), 0).unwrap();
}

fn ban6(ebpf: &mut Ebpf, addr: [u8; 16], v: BanValue) {
    mark_ports(ebpf, &v);
    let mut m: PerCpuHashMap<_, BanKeyV6, BanValue> =
        PerCpuHashMap::try_from(ebpf.map_mut(map_names::BANS_V6).unwrap()).unwrap();
    m.insert(BanKeyV6 { addr }, every_cpu(v), 0).unwrap();
}

/// The ban's drops, summed over CPUs.
fn drops4(ebpf: &mut Ebpf, addr: [u8; 4]) -> u64 {
    let m: PerCpuHashMap<_, BanKeyV4, BanValue> =
        PerCpuHashMap::try_from(ebpf.map_mut(map_names::BANS_V4).unwrap()).unwrap();
    m.get(&BanKeyV4 { addr }, 0)
        .unwrap()
        .iter()
        .map(|v| v.drops)
        .sum()
}

/// A raw map value: `ports` (empty: all ports) for `secs` seconds from now
/// on the datapath's clock (`None`: permanent).
fn value(ports: &[u16], secs: Option<u64>) -> BanValue {
    let mut raw = [0; BAN_MAX_PORTS];
    raw[..ports.len()].copy_from_slice(ports);
    BanValue {
        expires_ns: secs.map_or(BAN_PERMANENT, |s| kernel_now_ns() + s * 1_000_000_000),
        drops: 0,
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
    assert_eq!(drops4(&mut ebpf, BANNED4), 3);

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

/// Per-CPU counts of `map`'s `key` (a map the table took: opened again by id).
fn per_cpu<K: aya::Pod, V: aya::Pod>(id: u32, key: &K) -> Option<Vec<V>> {
    let data = MapData::from_id(id).unwrap();
    let map = aya::maps::Map::from_map_data(data).unwrap();
    let m: PerCpuHashMap<_, K, V> = PerCpuHashMap::try_from(map).unwrap();
    m.get(key, 0).ok().map(|v| v.to_vec())
}

#[test]
#[ignore = "needs root"]
fn drops_on_two_cpus_are_counted_per_cpu_and_summed() {
    require_root();
    let online = aya::util::online_cpus().unwrap();
    let [c0, c1, ..] = online[..] else {
        eprintln!("SKIP drops_on_two_cpus_are_counted_per_cpu_and_summed: needs two online CPUs");
        return;
    };
    let (c0, c1) = (c0 as usize, c1 as usize);
    let mut ebpf = load_xdp();
    let id = |ebpf: &Ebpf, name| match ebpf.map(name).unwrap() {
        aya::maps::Map::PerCpuHashMap(d) => d.info().unwrap().id(),
        other => panic!("{name}: {other:?}"),
    };
    let (bans_id, net_drops_id) = (
        id(&ebpf, map_names::BANS_V4),
        id(&ebpf, map_names::NET_DROPS_V4),
    );
    let mut table = XdpBanTable::from_ebpf(&mut ebpf).unwrap();
    let (exact, net) = (host("203.0.113.7"), target("198.51.100.0/24"));
    table.insert(exact, &ban(&[110], Some(3600))).unwrap();
    table.insert(net, &ban(&[110], Some(3600))).unwrap();

    let judge = |cpu: usize, src: [u8; 4], n: usize| {
        on_cpu(cpu, || {
            for _ in 0..n {
                assert_eq!(xdp_verdict(&ebpf, &tcp4(src, 110, 5, 0)), XDP_DROP);
            }
        });
    };
    judge(c0, BANNED4, 3);
    judge(c1, BANNED4, 5);
    judge(c0, [198, 51, 100, 9], 2);
    judge(c1, [198, 51, 100, 200], 4);

    // Each CPU counted its own drops, in its own copy of the value.
    let exact_key = BanKeyV4 { addr: BANNED4 };
    let copies: Vec<BanValue> = per_cpu(bans_id, &exact_key).unwrap();
    assert_eq!((copies[c0].drops, copies[c1].drops), (3, 5));
    assert!(
        copies.iter().all(|c| c.expires_ns == copies[0].expires_ns
            && c.ports == copies[0].ports
            && c.flags == copies[0].flags),
        "every CPU's copy holds the same ban: {copies:?}"
    );
    let net_key = NetDropKeyV4 {
        prefix_len: 24,
        addr: [198, 51, 100, 0],
    };
    let net_counts: Vec<u64> = per_cpu(net_drops_id, &net_key).unwrap();
    assert_eq!((net_counts[c0], net_counts[c1]), (2, 4));

    // The table sums them, in `entry` and in `list`.
    let drops = |table: &XdpBanTable, t| table.entry(t).unwrap().unwrap().drops;
    assert_eq!((drops(&table, exact), drops(&table, net)), (8, 6));
    let listed: Vec<(String, u64)> = table
        .list()
        .unwrap()
        .iter()
        .map(|l| (l.target.to_string(), l.drops))
        .collect();
    assert!(listed.contains(&("203.0.113.7".into(), 8)), "{listed:?}");
    assert!(
        listed.contains(&("198.51.100.0/24".into(), 6)),
        "{listed:?}"
    );

    // Banned again (other ports, later expiry): each CPU keeps its count.
    table.insert(exact, &ban(&[110, 995], Some(7200))).unwrap();
    table.insert(net, &ban(&[110, 995], Some(7200))).unwrap();
    assert_eq!((drops(&table, exact), drops(&table, net)), (8, 6));
    let copies: Vec<BanValue> = per_cpu(bans_id, &exact_key).unwrap();
    assert_eq!((copies[c0].drops, copies[c1].drops), (3, 5));
    assert_eq!(copies[c1].ports[..2], [110, 995]);

    // Unbanned: the prefix's counts go with it; a new ban starts at zero.
    assert!(table.remove(net).unwrap());
    assert_eq!(per_cpu::<_, u64>(net_drops_id, &net_key), None);
    table.insert(net, &ban(&[110], Some(60))).unwrap();
    assert_eq!(drops(&table, net), 0);
    assert!(table.remove(exact).unwrap());
    table.insert(exact, &ban(&[110], Some(60))).unwrap();
    assert_eq!(drops(&table, exact), 0);
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
