//! Verdicts for every frame shape a mail server's NIC carries: VLAN and QinQ
//! tags, IPv6 extension headers and fragments, prefix bans, monitor mode;
//! and a property test over random frames. BPF_PROG_TEST_RUN, real kernel.

use std::net::IpAddr;

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use jailer::{
    ban::{Ban, Expiry, PortSet},
    kernel::{BanTable, XdpBanTable},
};
use jailer_common::{map_names, stat};
use jailer_tests::{
    Ext, ban, host, load_xdp, require_root, target, tcp4, tcp6, tcp6_ext, udp4, with_vlans,
    xdp_verdict,
};
use proptest::prelude::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const Q: u16 = 0x8100;
const AD: u16 = 0x88A8;
const A4: [u8; 4] = [203, 0, 113, 7];
const A6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x25,
];

fn load() -> (Ebpf, XdpBanTable) {
    let mut ebpf = load_xdp();
    let table = XdpBanTable::from_ebpf(&mut ebpf).unwrap();
    (ebpf, table)
}

fn pop3() -> Ban {
    ban(&[110], Some(3600))
}

#[test]
#[ignore = "needs root"]
fn vlan_and_qinq_tagged_frames() {
    require_root();
    let (ebpf, mut table) = load();
    table.insert(host("203.0.113.7"), &pop3()).unwrap();
    table.insert(host("2001:db8:1:2::25"), &pop3()).unwrap();
    for tags in [&[Q][..], &[AD, Q], &[Q, Q]] {
        assert_eq!(
            xdp_verdict(&ebpf, &with_vlans(&tcp4(A4, 110, 5, 0), tags)),
            XDP_DROP,
            "{tags:x?} v4"
        );
        assert_eq!(
            xdp_verdict(&ebpf, &with_vlans(&tcp6(A6, 110), tags)),
            XDP_DROP,
            "{tags:x?} v6"
        );
        assert_eq!(
            xdp_verdict(&ebpf, &with_vlans(&tcp4(A4, 25, 5, 0), tags)),
            XDP_PASS,
            "{tags:x?} port 25"
        );
    }
    // A third tag is more than the program looks through: it passes.
    assert_eq!(
        xdp_verdict(&ebpf, &with_vlans(&tcp4(A4, 110, 5, 0), &[AD, Q, Q])),
        XDP_PASS
    );
    // Cut inside the tags or the headers behind them: pass, never an error.
    let full = with_vlans(&tcp4(A4, 110, 5, 0), &[AD, Q]);
    for len in 14..full.len() {
        assert_eq!(xdp_verdict(&ebpf, &full[..len]), XDP_PASS, "cut at {len}");
    }
}

#[test]
#[ignore = "needs root"]
fn ipv6_extension_headers_and_fragments() {
    require_root();
    let (ebpf, mut table) = load();
    table.insert(host("2001:db8:1:2::25"), &pop3()).unwrap();
    let drop_cases: &[&[Ext]] = &[
        &[Ext::HopByHop(0)],
        &[Ext::HopByHop(3)],
        &[Ext::Routing(2)],
        &[Ext::DestOpts(0)],
        &[Ext::DestOpts(255)],
        &[Ext::Fragment(0)],
        &[
            Ext::HopByHop(0),
            Ext::Routing(1),
            Ext::DestOpts(0),
            Ext::Fragment(0),
            Ext::DestOpts(1),
        ],
        &[Ext::DestOpts(0); 6],
    ];
    for exts in drop_cases {
        assert_eq!(
            xdp_verdict(&ebpf, &tcp6_ext(A6, 110, exts)),
            XDP_DROP,
            "{exts:?}"
        );
        assert_eq!(
            xdp_verdict(&ebpf, &tcp6_ext(A6, 25, exts)),
            XDP_PASS,
            "{exts:?} port 25"
        );
    }
    // Later fragments carry no TCP header: they pass (the first one is dropped,
    // so the datagram never reassembles).
    assert_eq!(
        xdp_verdict(&ebpf, &tcp6_ext(A6, 110, &[Ext::Fragment(185)])),
        XDP_PASS
    );
    assert_eq!(
        xdp_verdict(
            &ebpf,
            &tcp6_ext(A6, 110, &[Ext::HopByHop(0), Ext::Fragment(1)])
        ),
        XDP_PASS
    );
    // More extension headers than the program walks: pass.
    assert_eq!(
        xdp_verdict(&ebpf, &tcp6_ext(A6, 110, &[Ext::DestOpts(0); 7])),
        XDP_PASS
    );
    // Truncated anywhere in the chain: pass.
    let full = tcp6_ext(
        A6,
        110,
        &[Ext::HopByHop(1), Ext::Fragment(0), Ext::DestOpts(0)],
    );
    for len in 14..full.len() {
        assert_eq!(xdp_verdict(&ebpf, &full[..len]), XDP_PASS, "cut at {len}");
    }
}

#[test]
#[ignore = "needs root"]
fn prefix_bans_v4_and_v6() {
    require_root();
    let (ebpf, mut table) = load();
    table.insert(target("203.0.113.0/24"), &pop3()).unwrap();
    table.insert(target("2001:db8:1::/48"), &pop3()).unwrap();
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(A4, 110, 5, 0)),
        XDP_DROP,
        "in the /24"
    );
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4([203, 0, 114, 7], 110, 5, 0)),
        XDP_PASS,
        "outside the /24"
    );
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(A4, 25, 5, 0)),
        XDP_PASS,
        "other port"
    );
    assert_eq!(xdp_verdict(&ebpf, &tcp6(A6, 110)), XDP_DROP, "in the /48");
    let mut outside = A6;
    outside[5] = 9; // 2001:db8:9::
    assert_eq!(
        xdp_verdict(&ebpf, &tcp6(outside, 110)),
        XDP_PASS,
        "outside the /48"
    );
    // The longest prefix wins: a /25 inside the /24 covering all ports.
    table
        .insert(target("203.0.113.0/25"), &ban(&[], Some(60)))
        .unwrap();
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(A4, 25, 5, 0)),
        XDP_DROP,
        "the /25 covers port 25"
    );
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4([203, 0, 113, 200], 25, 5, 0)),
        XDP_PASS,
        ".200 is only in the /24"
    );
    // Each prefix counted its own drops (the source masked to its length).
    for (net, want) in [
        ("203.0.113.0/24", 1),
        ("203.0.113.0/25", 1),
        ("2001:db8:1::/48", 1),
    ] {
        let drops = table.entry(target(net)).unwrap().unwrap().drops;
        assert_eq!(drops, want, "drops of {net}");
    }
    // Exact lookups see prefixes exactly; list shows them.
    assert!(table.get(target("203.0.113.0/24")).unwrap().is_some());
    assert!(
        table.get(target("203.0.113.0/23")).unwrap().is_none(),
        "a covering prefix is not this one"
    );
    let listed: Vec<String> = table
        .list()
        .unwrap()
        .iter()
        .map(|l| l.target.to_string())
        .collect();
    for want in ["203.0.113.0/24", "203.0.113.0/25", "2001:db8:1::/48"] {
        assert!(
            listed.contains(&want.to_owned()),
            "{want} not listed: {listed:?}"
        );
    }
    // Removing every prefix empties the tries (and they stop being consulted).
    for n in ["203.0.113.0/24", "203.0.113.0/25", "2001:db8:1::/48"] {
        assert!(table.remove(target(n)).unwrap());
    }
    assert_eq!(xdp_verdict(&ebpf, &tcp4(A4, 110, 5, 0)), XDP_PASS);
    assert_eq!(xdp_verdict(&ebpf, &tcp6(A6, 110)), XDP_PASS);
    table.insert(target("203.0.0.0/16"), &pop3()).unwrap();
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(A4, 110, 5, 0)),
        XDP_DROP,
        "trie consulted again"
    );
}

#[test]
#[ignore = "needs root"]
fn monitor_mode_counts_without_dropping() {
    require_root();
    let (ebpf, mut table) = load();
    let mut watch = pop3();
    watch.monitor = true;
    table.insert(host("203.0.113.7"), &watch).unwrap();
    table.insert(host("203.0.113.8"), &pop3()).unwrap();
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4(A4, 110, 5, 0)),
        XDP_PASS,
        "per-ban monitor"
    );
    assert_eq!(xdp_verdict(&ebpf, &tcp4(A4, 110, 5, 0)), XDP_PASS);
    assert_eq!(
        table.entry(host("203.0.113.7")).unwrap().unwrap().drops,
        2,
        "would-be drops counted"
    );
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4([203, 0, 113, 8], 110, 5, 0)),
        XDP_DROP,
        "others still drop"
    );

    table.set_monitor(true).unwrap();
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4([203, 0, 113, 8], 110, 5, 0)),
        XDP_PASS,
        "global monitor"
    );
    assert_eq!(table.entry(host("203.0.113.8")).unwrap().unwrap().drops, 2);
    table.set_monitor(false).unwrap();
    assert_eq!(
        xdp_verdict(&ebpf, &tcp4([203, 0, 113, 8], 110, 5, 0)),
        XDP_DROP
    );

    let stats: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map(map_names::STATS).unwrap()).unwrap();
    let sum = |i: u32| stats.get(&i, 0).unwrap().iter().sum::<u64>();
    assert_eq!(sum(stat::WOULD_DROP), 3);
    assert_eq!(sum(stat::DROPPED_V4), 2);
}

/// One random frame and what the datapath must say about it.
#[derive(Debug, Clone)]
struct Case {
    v6: bool,
    src: u8,
    port: u16,
    vlans: Vec<u16>,
    exts: Vec<Ext>,
    ihl: u8,
    cut: Option<usize>,
    udp: bool,
}

fn ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        (0u8..4).prop_map(Ext::HopByHop),
        (0u8..4).prop_map(Ext::Routing),
        (0u8..4).prop_map(Ext::DestOpts),
        prop_oneof![Just(0u16), 1u16..8000].prop_map(Ext::Fragment),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        0u8..8,
        prop_oneof![Just(25u16), Just(110), Just(143), Just(995), any::<u16>()],
        proptest::collection::vec(prop_oneof![Just(Q), Just(AD)], 0..4),
        proptest::collection::vec(ext(), 0..8),
        5u8..16,
        proptest::option::of(14usize..200),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(v6, src, port, vlans, exts, ihl, cut, udp)| Case {
            v6,
            src,
            port,
            vlans,
            exts,
            ihl,
            cut,
            udp,
        })
}

impl Case {
    fn addr(&self) -> IpAddr {
        if self.v6 {
            let mut a = A6;
            a[15] = self.src;
            IpAddr::from(a)
        } else {
            IpAddr::from([203, 0, 113, self.src])
        }
    }

    fn frame(&self) -> Vec<u8> {
        let base = match self.addr() {
            IpAddr::V4(a) if self.udp => udp4(a.octets(), self.port),
            IpAddr::V4(a) => tcp4(a.octets(), self.port, self.ihl, 0),
            IpAddr::V6(a) => tcp6_ext(a.octets(), self.port, &self.exts),
        };
        let mut f = with_vlans(&base, &self.vlans);
        if let Some(cut) = self.cut {
            f.truncate(cut.max(14));
        }
        f
    }

    /// The model: drop only a whole TCP segment (or first fragment) from a
    /// banned source to a covered port, within the parser's limits.
    fn expect_drop(&self, full_len: usize) -> bool {
        let banned = self.src % 2 == 1; // odd sources are banned
        let covered = self.port == 110 || self.port == 995;
        let whole = self.cut.is_none_or(|c| c.max(14) >= full_len);
        let parsable = self.vlans.len() <= 2
            && (self.v6 || !self.udp) // UDP frames are only built for IPv4
            && (!self.v6
                || (self.exts.len() <= 6
                    && self
                        .exts
                        .iter()
                        .all(|e| !matches!(e, Ext::Fragment(o) if *o != 0))));
        banned && covered && whole && parsable
    }
}

#[test]
#[ignore = "needs root"]
fn random_frames_drop_only_banned_sources_on_covered_ports() {
    require_root();
    let (ebpf, mut table) = load();
    let ports = PortSet::only(&[110, 995]);
    for src in (1u8..8).step_by(2) {
        let mut a6 = A6;
        a6[15] = src;
        table
            .insert(
                host(&IpAddr::from([203, 0, 113, src]).to_string()),
                &Ban::new(ports, Expiry::Never),
            )
            .unwrap();
        table
            .insert(
                host(&IpAddr::from(a6).to_string()),
                &Ban::new(ports, Expiry::Never),
            )
            .unwrap();
    }
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let drops = std::cell::Cell::new(0u32);
    runner
        .run(&case(), |c| {
            let full = {
                let mut whole = c.clone();
                whole.cut = None;
                whole.frame().len()
            };
            let verdict = xdp_verdict(&ebpf, &c.frame());
            let want = if c.expect_drop(full) {
                XDP_DROP
            } else {
                XDP_PASS
            };
            drops.set(drops.get() + u32::from(verdict == XDP_DROP));
            prop_assert_eq!(verdict, want, "{:?}", c);
            Ok(())
        })
        .unwrap();
    // The generator must reach both verdicts often enough to mean something.
    assert!(
        drops.get() > 50 && drops.get() < 1950,
        "{} drops of 2000",
        drops.get()
    );
}
