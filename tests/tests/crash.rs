//! `kill -9` in the middle of a stream, then a restart: every failure line is
//! counted exactly once (none lost, none counted twice) and no address is
//! banned twice; while the agent is down, bans hold and expired ones lapse;
//! killed in the middle of a ban storm, it journals no ban twice. Root: the
//! agent attaches XDP in a namespace this test makes.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use std::net::{IpAddr, SocketAddr};

use jailer::{
    agent::control::{self, Request, Response},
    kernel::{BanTable, XdpBanTable},
};
use jailer_tests::{
    AgentProcess, Pair, TempBpffs, append, append_failure, ban, connect_from, failure_line, host,
    require_root, serve,
};

const BIN: &str = env!("CARGO_BIN_EXE_jailer-under-test");

/// The agent's config in `dir` (one vpopmail jail on an empty log, banning
/// for 1 h after `maxretry` failures in 10 min): its path, the log's, the
/// state directory's.
fn write_config(
    dir: &Path,
    net: &Pair,
    bpffs: &TempBpffs,
    maxretry: u32,
) -> (PathBuf, PathBuf, PathBuf) {
    let log = dir.join("mail.log");
    let state = dir.join("state");
    fs::write(&log, "").unwrap();
    let config = dir.join("jailer.toml");
    fs::write(
        &config,
        format!(
            "interface = \"{}\"\nxdp_mode = \"generic\"\nbpffs = \"{}\"\nstate_dir = \"{}\"\n\
             [jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nmaxretry = {maxretry}\nfindtime = \"10m\"\nbantime = \"1h\"\n",
            net.iface,
            bpffs.pins().display(),
            state.display(),
            log.display()
        ),
    )
    .unwrap();
    (config, log, state)
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
    let (config, log, state) = write_config(dir.path(), &net, &bpffs, 3);
    let a: Vec<String> = (1..=20).map(|i| format!("10.193.1.{i}")).collect();
    let b: Vec<String> = (1..=20).map(|i| format!("10.193.2.{i}")).collect();
    let c: Vec<String> = (1..=20).map(|i| format!("10.193.3.{i}")).collect();

    let agent = AgentProcess::start(BIN, &net.server, &config, &state, &[]);
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

    let agent = AgentProcess::start(BIN, &net.server, &config, &state, &[]);
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

/// `status` of the running agent, if it answers.
fn status(state_dir: &Path) -> Option<jailer::agent::status::Status> {
    match control::ask(state_dir, &Request::Status) {
        Ok(Some(Response::Status { status })) => Some(status),
        _ => None,
    }
}

/// `"op":"ban"` records per address in the journal.
fn journaled_bans(state_dir: &Path) -> HashMap<String, usize> {
    let journal = fs::read_to_string(state_dir.join("bans.jsonl")).unwrap();
    let mut n = HashMap::new();
    for line in journal.lines() {
        if let Some(rest) = line.strip_prefix("{\"op\":\"ban\",\"addr\":\"") {
            let addr = rest.split('"').next().unwrap().to_owned();
            *n.entry(addr).or_default() += 1;
        }
    }
    n
}

/// Finding 9 of issue 11: killed with `kill -9` while banning a storm of
/// 30,000 addresses (maxretry 1), the agent re-reads on restart the lines
/// after its last saved position; failures from addresses whose ban is in
/// force must neither ban again nor journal again. Every attacker ends up
/// banned and journaled exactly once.
#[test]
#[ignore = "needs root"]
fn kill_9_during_a_ban_storm_journals_no_ban_twice() {
    require_root();
    const ATTACKERS: usize = 30_000;
    let net = Pair::new(191);
    let bpffs = TempBpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let (config, log, state) = write_config(dir.path(), &net, &bpffs, 1);
    let attackers: Vec<String> = (0..ATTACKERS)
        .map(|i| {
            format!(
                "172.{}.{}.{}",
                16 + i / 62_500,
                (i / 250) % 250,
                i % 250 + 1
            )
        })
        .collect();

    let agent = AgentProcess::start(BIN, &net.server, &config, &state, &[]);
    let storm: String = attackers.iter().map(|ip| failure_line(ip)).collect();
    append(&log, &storm);
    // Killed in the middle: some bans made, the rest not yet.
    let start = Instant::now();
    let banned_at_kill = loop {
        let banned = status(&state).map_or(0, |s| s.jails[0].total_banned.unwrap_or(0));
        if banned >= ATTACKERS as u64 / 3 {
            break banned;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the storm was not banned: {banned} bans"
        );
        thread::sleep(Duration::from_millis(5));
    };
    agent.kill9();
    eprintln!("killed after about {banned_at_kill} of {ATTACKERS} bans");

    let agent = AgentProcess::start(BIN, &net.server, &config, &state, &[]);
    // Lines are handled in order: once a failure written now is banned,
    // everything before it was read.
    append_failure(&log, "192.0.2.99");
    let table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    let start = Instant::now();
    while table.get(host("192.0.2.99")).unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the restarted agent did not read through the storm"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let in_maps = table.list().unwrap().len();
    assert_eq!(in_maps, ATTACKERS + 1, "every attacker is banned");
    let restarted = status(&state).expect("status");
    drop(agent);

    let journaled = journaled_bans(&state);
    let twice: Vec<(&String, &usize)> = journaled.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} addresses journaled more than once, e.g. {:?}; the restarted agent banned {} (of {})",
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>(),
        restarted.jails[0].total_banned.unwrap_or(0),
        restarted.jails[0].total_failed.unwrap_or(0),
    );
    for ip in &attackers {
        assert_eq!(journaled.get(ip), Some(&1), "{ip} journaled once");
    }
}
