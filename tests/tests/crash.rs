//! `kill -9` in the middle of a stream, then a restart: every failure line is
//! counted exactly once (none lost, none counted twice) and no address is
//! banned twice; while the agent is down, bans hold and expired ones lapse. Root: the agent attaches XDP in a namespace this test makes.

use std::{
    fs,
    path::Path,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use std::net::{IpAddr, SocketAddr};

use jailer::{
    agent::control::{self, Request, Response},
    kernel::{BanTable, XdpBanTable},
};
use jailer_tests::{Pair, TempBpffs, append_failure, ban, connect_from, host, require_root, serve};

const BIN: &str = env!("CARGO_BIN_EXE_jailer-under-test");

struct AgentProcess(Child);

impl AgentProcess {
    fn start(ns: &str, config: &Path, state_dir: &Path) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, BIN, "run", "--config"])
            .arg(config)
            .spawn()
            .expect("spawn agent");
        let agent = Self(child);
        let start = Instant::now();
        while !matches!(
            control::ask(state_dir, &Request::Status),
            Ok(Some(Response::Status { .. }))
        ) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "agent did not come up"
            );
            thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn kill9(mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn total_failed(state_dir: &Path) -> u64 {
    match control::ask(state_dir, &Request::Status) {
        Ok(Some(Response::Status { status })) => status.jails[0].total_failed.unwrap_or(0),
        _ => 0,
    }
}

#[test]
#[ignore = "needs root"]
fn kill_9_mid_stream_counts_every_line_once() {
    require_root();
    let net = Pair::new(193);
    let bpffs = TempBpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let state = dir.path().join("state");
    fs::write(&log, "").unwrap();
    let config = dir.path().join("jailer.toml");
    fs::write(
        &config,
        format!(
            "interface = \"{}\"\nxdp_mode = \"generic\"\nbpffs = \"{}\"\nstate_dir = \"{}\"\n\
             [jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n",
            net.iface,
            bpffs.pins().display(),
            state.display(),
            log.display()
        ),
    )
    .unwrap();
    let a: Vec<String> = (1..=20).map(|i| format!("10.193.1.{i}")).collect();
    let b: Vec<String> = (1..=20).map(|i| format!("10.193.2.{i}")).collect();
    let c: Vec<String> = (1..=20).map(|i| format!("10.193.3.{i}")).collect();

    let agent = AgentProcess::start(&net.server.name, &config, &state);
    // Counted and saved: two failures per A, one per B.
    for ip in &a {
        append_failure(&log, ip);
        append_failure(&log, ip);
    }
    for ip in &b {
        append_failure(&log, ip);
    }
    let start = Instant::now();
    while total_failed(&state) < 60 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "agent did not count the first lines"
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(1500)); // a snapshot tick has passed
    // Written right before the kill: maybe counted, maybe saved, maybe neither.
    for ip in &b {
        append_failure(&log, ip);
    }
    for ip in &c {
        append_failure(&log, ip);
        append_failure(&log, ip);
    }
    // Bans set before the crash: one permanent, one lapsing in 2 s.
    {
        let mut table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
        table
            .insert(host("10.193.0.2"), &ban(&[110], None))
            .unwrap();
        table
            .insert(host("10.193.0.3"), &ban(&[110], Some(2)))
            .unwrap();
    }
    agent.kill9();

    // Down: the pinned link keeps dropping; the short ban lapses in the kernel.
    net.server.run(|| serve("0.0.0.0:110".parse().unwrap()));
    let dst: SocketAddr = "10.193.0.1:110".parse().unwrap();
    let reach = |src: &'static str| {
        net.client.run(move || {
            connect_from(
                src.parse::<IpAddr>().unwrap(),
                dst,
                Duration::from_millis(700),
            )
            .is_ok()
        })
    };
    assert!(
        !reach("10.193.0.2"),
        "banned host dropped while the agent is down"
    );
    let start = Instant::now();
    while !reach("10.193.0.3") {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "expired ban did not lapse with the agent down"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(!reach("10.193.0.2"), "the permanent ban still holds");

    let agent = AgentProcess::start(&net.server.name, &config, &state);
    for ip in a.iter().chain(&b) {
        append_failure(&log, ip);
    }
    let table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    let start = Instant::now();
    while !a
        .iter()
        .chain(&b)
        .all(|ip| table.get(host(ip)).unwrap().is_some())
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a failure before the crash was lost: A and B must all reach 3"
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(500));
    for ip in &c {
        assert!(
            table.get(host(ip)).unwrap().is_none(),
            "{ip} had 2 failures: re-read lines were counted twice"
        );
    }
    // Each address was banned once: the journal has one ban record for it.
    let journal = fs::read_to_string(state.join("bans.jsonl")).unwrap();
    for ip in a.iter().chain(&b) {
        let n = journal.matches(&format!("\"addr\":\"{ip}\"")).count();
        assert_eq!(n, 1, "{ip} banned {n} times");
    }
    drop(agent);
}
