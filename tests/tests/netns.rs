//! Real traffic over a veth pair between two namespaces this test creates:
//! the XDP program on the server side drops a banned client's packets to the
//! banned port only, in the NIC driver.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use jailer::{
    config::XdpMode,
    kernel::{BanTable, XdpBanTable},
};
use jailer_tests::{
    Pair, TempBpffs, ban, connect_from, exchange, host, require_root, serve, wait_for,
};

const TIMEOUT: Duration = Duration::from_millis(700);

/// server (10.199.0.1, fd00:199::1) <-veth-> client (.2 .3, ::2 ::3), with
/// servers on 110 and 25.
fn topology() -> Pair {
    let net = Pair::new(199);
    net.server.run(|| {
        serve("[::]:110".parse().unwrap());
        serve("[::]:25".parse().unwrap());
    });
    net
}

fn can_connect(net: &Pair, src: &str, dst: &str) -> bool {
    let src: IpAddr = src.parse().unwrap();
    let dst: SocketAddr = dst.parse().unwrap();
    net.client
        .run(move || connect_from(src, dst, TIMEOUT).is_ok())
}

fn attach(net: &Pair, bpffs: &TempBpffs, mode: XdpMode) -> XdpBanTable {
    let pins = bpffs.pins();
    let iface = net.iface.clone();
    net.server.run(move || {
        jailer::kernel::attach(&pins, &[iface], mode, jailer_common::MAX_BANS)
            .expect("attach")
            .bans
    })
}

fn check_family(net: &Pair, table: &mut XdpBanTable, banned: &str, other: &str, server: &str) {
    let s110 = format!("{server}:110");
    let s25 = format!("{server}:25");
    assert!(
        can_connect(net, banned, &s110),
        "before the ban {banned} connects"
    );

    let addr = host(banned);
    table.insert(addr, &ban(&[110], Some(3600))).unwrap();
    assert!(
        !can_connect(net, banned, &s110),
        "banned {banned} -> 110 must time out"
    );
    assert!(
        can_connect(net, banned, &s25),
        "banned {banned} -> 25 still connects"
    );
    assert!(
        can_connect(net, other, &s110),
        "unbanned {other} -> 110 connects"
    );
    assert!(
        table.entry(addr).unwrap().unwrap().drops >= 1,
        "drops counted on the ban"
    );

    assert!(table.remove(addr).unwrap());
    assert!(
        can_connect(net, banned, &s110),
        "after unban {banned} connects again"
    );

    // Kernel-enforced expiry: nobody removes the entry, it just lapses.
    table.insert(addr, &ban(&[110], Some(2))).unwrap();
    assert!(!can_connect(net, banned, &s110), "short ban in force");
    wait_for(
        "the 2 s ban lapses in the kernel",
        Duration::from_secs(8),
        || can_connect(net, banned, &s110),
    );
    assert!(
        table.get(addr).unwrap().is_some(),
        "entry still there: expiry was the kernel's"
    );
    table.remove(addr).unwrap();

    // An established session stops getting service once its client is banned.
    let src: IpAddr = banned.parse().unwrap();
    let dst: SocketAddr = s110.parse().unwrap();
    let mut stream = net
        .client
        .run(move || connect_from(src, dst, TIMEOUT).unwrap());
    exchange(&mut stream).expect("session works before the ban");
    table.insert(addr, &ban(&[110], Some(3600))).unwrap();
    assert!(exchange(&mut stream).is_err(), "no reply once banned");
    table.remove(addr).unwrap();
}

#[test]
#[ignore = "needs root"]
fn banned_hosts_are_dropped_on_protected_ports_only() {
    require_root();
    let net = topology();
    let bpffs = TempBpffs::new();
    let mut table = attach(&net, &bpffs, XdpMode::Auto);
    check_family(&net, &mut table, "10.199.0.2", "10.199.0.3", "10.199.0.1");
    check_family(
        &net,
        &mut table,
        "fd00:199::2",
        "fd00:199::3",
        "[fd00:199::1]",
    );
}

#[test]
#[ignore = "needs root"]
fn restart_keeps_link_and_bans_and_detach_removes_them() {
    require_root();
    let net = topology();
    let bpffs = TempBpffs::new();
    let mut table = attach(&net, &bpffs, XdpMode::Generic);
    let banned = host("10.199.0.2");
    table.insert(banned, &ban(&[110], Some(3600))).unwrap();
    drop(table);
    // "Agent down": the pinned link keeps the program attached.
    assert!(
        !can_connect(&net, "10.199.0.2", "10.199.0.1:110"),
        "still dropped with no agent"
    );
    // "Agent restart": the program is swapped inside the pinned link, the map reused.
    let table = attach(&net, &bpffs, XdpMode::Generic);
    assert!(
        table.get(banned).unwrap().is_some(),
        "ban survived the restart"
    );
    assert!(
        !can_connect(&net, "10.199.0.2", "10.199.0.1:110"),
        "dropped after restart"
    );
    assert_eq!(
        jailer::kernel::attached_interfaces(&bpffs.pins()),
        std::slice::from_ref(&net.iface)
    );
    drop(table);
    let detached = jailer::kernel::detach(&bpffs.pins()).unwrap();
    assert_eq!(detached, std::slice::from_ref(&net.iface));
    let left: Vec<_> = std::fs::read_dir(bpffs.pins())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(!bpffs.pins().exists(), "pins removed, left: {left:?}");
    // An unpinned link is released by the kernel in deferred work: the
    // program leaves the interface a moment after `detach` returns.
    wait_for("detached: traffic flows", Duration::from_secs(5), || {
        can_connect(&net, "10.199.0.2", "10.199.0.1:110")
    });
}

#[test]
#[ignore = "needs root"]
fn expiry_is_enforced_with_the_agent_down() {
    require_root();
    let net = topology();
    let bpffs = TempBpffs::new();
    let mut table = attach(&net, &bpffs, XdpMode::Generic);
    let (short, long) = (host("10.199.0.2"), host("10.199.0.3"));
    table.insert(short, &ban(&[110], Some(2))).unwrap();
    table.insert(long, &ban(&[110], Some(3600))).unwrap();
    // The agent goes away: nothing in userspace holds the maps or the link.
    drop(table);
    assert!(
        !can_connect(&net, "10.199.0.2", "10.199.0.1:110"),
        "short ban in force with no agent"
    );
    wait_for(
        "the 2 s ban lapses with no agent",
        Duration::from_secs(8),
        || can_connect(&net, "10.199.0.2", "10.199.0.1:110"),
    );
    assert!(
        !can_connect(&net, "10.199.0.3", "10.199.0.1:110"),
        "the long ban still drops"
    );
    // Nobody removed the lapsed entry: the kernel judged it lapsed.
    let table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    assert!(table.get(short).unwrap().is_some());
    drop(table);
    jailer::kernel::detach(&bpffs.pins()).unwrap();
}

#[test]
#[ignore = "needs root"]
fn one_program_and_one_set_of_maps_on_two_interfaces() {
    require_root();
    let net = topology();
    // A second link between the same namespaces, on another subnet.
    let iface2 = jailer_tests::unique("vs");
    let peer2 = jailer_tests::unique("vc");
    net.server.ip(&[
        "link",
        "add",
        &iface2,
        "type",
        "veth",
        "peer",
        "name",
        &peer2,
        "netns",
        &net.client.name,
    ]);
    net.server
        .ip(&["addr", "add", "10.195.0.1/24", "dev", &iface2]);
    net.server.ip(&["link", "set", &iface2, "up"]);
    net.client
        .ip(&["addr", "add", "10.195.0.2/24", "dev", &peer2]);
    net.client.ip(&["link", "set", &peer2, "up"]);

    let bpffs = TempBpffs::new();
    let pins = bpffs.pins();
    let ifaces = vec![net.iface.clone(), iface2.clone()];
    let mut table = net.server.run(move || {
        jailer::kernel::attach(&pins, &ifaces, XdpMode::Generic, jailer_common::MAX_BANS)
            .expect("attach to both")
            .bans
    });
    assert!(can_connect(&net, "10.195.0.2", "10.195.0.1:110"));
    for addr in ["10.199.0.2", "10.195.0.2"] {
        table.insert(host(addr), &ban(&[110], None)).unwrap();
    }
    assert!(
        !can_connect(&net, "10.199.0.2", "10.199.0.1:110"),
        "dropped on the first link"
    );
    assert!(
        !can_connect(&net, "10.195.0.2", "10.195.0.1:110"),
        "dropped on the second link"
    );
    let mut attached = jailer::kernel::attached_interfaces(&bpffs.pins());
    attached.sort();
    let mut want = vec![net.iface.clone(), iface2.clone()];
    want.sort();
    assert_eq!(attached, want);
    // Dropping an interface from the config detaches it only.
    let pins = bpffs.pins();
    let only_first = vec![net.iface.clone()];
    net.server.run(move || {
        jailer::kernel::attach(
            &pins,
            &only_first,
            XdpMode::Generic,
            jailer_common::MAX_BANS,
        )
        .unwrap()
    });
    assert_eq!(
        jailer::kernel::attached_interfaces(&bpffs.pins()),
        std::slice::from_ref(&net.iface)
    );
    assert!(
        can_connect(&net, "10.195.0.2", "10.195.0.1:110"),
        "second link no longer filtered"
    );
    assert!(
        !can_connect(&net, "10.199.0.2", "10.199.0.1:110"),
        "first link still filtered"
    );
}
