//! An interface removed and added again while the agent runs: the old XDP
//! link died with the device; the agent notices and attaches again, so the
//! banned host is dropped again without a restart; while it is gone,
//! `status` says so. Root.

use std::{
    net::{IpAddr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use jailer::{
    agent::control::{self, Request, Response},
    config::Config,
    kernel::{BanTable as _, XdpBanTable},
};
use jailer_tests::{Pair, TempBpffs, ban, connect_from, host, ns_agent, require_root, serve};

fn can_connect(net: &Pair, src: &str) -> bool {
    let src: IpAddr = src.parse().unwrap();
    let dst: SocketAddr = "10.192.0.1:110".parse().unwrap();
    net.client
        .run(move || connect_from(src, dst, Duration::from_millis(700)).is_ok())
}

#[test]
#[ignore = "needs root"]
fn interface_removed_and_readded_is_protected_again() {
    require_root();
    let net = Pair::new(192);
    net.server.run(|| serve("0.0.0.0:110".parse().unwrap()));
    let bpffs = TempBpffs::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mail.log"), "").unwrap();
    let path = dir.path().join("jailer.toml");
    std::fs::write(
        &path,
        format!(
            "interface = \"{}\"\nxdp_mode = \"generic\"\nbpffs = \"{}\"\nstate_dir = \"{}\"\n\
             [jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\n",
            net.iface,
            bpffs.pins().display(),
            dir.path().join("state").display(),
            dir.path().join("mail.log").display()
        ),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    let state = config.state_dir.clone();
    let agent = ns_agent(&net.server, &config, Some(path));
    let mut table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    table
        .insert(host("10.192.0.2"), &ban(&[110], None))
        .unwrap();
    assert!(!can_connect(&net, "10.192.0.2"), "banned before the relink");

    // Gone: `status` says so (finding 11 of issue 11), within a tick.
    net.unlink();
    let mode = || match control::ask(&state, &Request::Status) {
        Ok(Some(Response::Status { status })) => status.interfaces[0].mode.to_string(),
        other => panic!("no status: {other:?}"),
    };
    let start = Instant::now();
    while mode() != "missing" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "status shows {} for a vanished interface",
            mode()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Back: the listener on 0.0.0.0 survives; the new device has no XDP
    // program until the agent attaches it again.
    net.link();
    let start = Instant::now();
    while can_connect(&net, "10.192.0.2") {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "XDP not re-attached to the new interface"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        can_connect(&net, "10.192.0.3"),
        "other clients still served"
    );
    assert_eq!(
        jailer::kernel::attached_interfaces(&bpffs.pins()),
        std::slice::from_ref(&net.iface)
    );
    assert_eq!(mode(), "generic", "attached again");
    agent.stop().unwrap();
}
