//! Bulk figures at a million bans (root): `cargo bench -p jailer-tests --bench bulk`.
//!
//! - `jailer ban --file` with 1M addresses, end to end (maps and journal);
//! - `jailer status --json` with no agent (maps + journal) and from a
//!   running agent;
//! - a restart with the 1M bans pinned: time until the logs are followed;
//! - a reboot (maps gone, journal kept): time until the 1M bans are back in
//!   force in the maps;
//! - the agent's memory (RSS) with 1M bans known.
//!
//! The agent runs as its own process (`jailer-under-test run`) inside a
//! namespace with a veth pair, as `jailer run` does.

use std::{
    fs,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use jailer::{
    agent::control::{self, Request, Response},
    kernel::{BanTable, XdpBanTable},
};
use jailer_tests::{Pair, TempBpffs};

const BIN: &str = env!("CARGO_BIN_EXE_jailer-under-test");
const BANS: u32 = 1_000_000;

/// Seconds one `jailer ARGS` takes (best of `runs`), and its stdout size.
fn time_cli(args: &[&str], runs: usize) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new(BIN).args(args).output().expect("run jailer");
        best = best.min(start.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "jailer {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bytes = out.stdout.len();
    }
    (best, bytes)
}

/// `jailer run` in the server namespace, its log in a file; killed on drop.
struct AgentProcess(Child, PathBuf);

impl AgentProcess {
    fn start(ns: &str, config: &Path) -> (Self, Instant) {
        let log = config.with_file_name("agent.log");
        let started = Instant::now();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, BIN, "run", "--config"])
            .arg(config)
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn agent");
        (Self(child, log), started)
    }

    /// The agent's log so far (for a failure message).
    fn log(&self) -> String {
        fs::read_to_string(&self.1).unwrap_or_default()
    }

    fn rss_mib(&self) -> f64 {
        // `ip netns exec` execs the agent: same pid.
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Seconds until `cond` holds (bounded: panics after `limit`, naming `what`
/// and showing the agent's log).
fn until(what: &str, agent: &AgentProcess, limit: Duration, mut cond: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; the agent's log:\n{}",
            agent.log()
        );
        thread::sleep(Duration::from_millis(5));
    }
    start.elapsed().as_secs_f64()
}

fn agent_answers(state: &Path) -> bool {
    matches!(
        control::ask(state, &Request::Status),
        Ok(Some(Response::Status { .. }))
    )
}

fn write_config(dir: &Path, iface: &str, bpffs: &Path, state: &Path) -> PathBuf {
    let log = dir.join("mail.log");
    fs::write(&log, "").unwrap();
    let path = dir.join("jailer.toml");
    fs::write(
        &path,
        format!(
            "interface = \"{iface}\"\nxdp_mode = \"generic\"\nbpffs = \"{}\"\nstate_dir = \"{}\"\n\
             [jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\n",
            bpffs.display(),
            state.display(),
            log.display()
        ),
    )
    .unwrap();
    path
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bulk bench: needs root (bpffs, maps, namespaces)");
        return;
    }
    let net = Pair::new(180);
    let bpffs = TempBpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config_path = write_config(dir.path(), &net.iface, &bpffs.pins(), &state);
    let config = config_path.to_str().unwrap();

    // 1. ban --file: 1M addresses into the maps and the journal.
    let list = dir.path().join("blocklist.txt");
    let mut f = fs::File::create(&list).unwrap();
    writeln!(f, "# a blocklist").unwrap();
    for i in 0..BANS {
        writeln!(f, "{}", Ipv4Addr::from(0x0a00_0000 | i)).unwrap();
    }
    drop(f);
    let (secs, _) = time_cli(
        &[
            "ban",
            "--file",
            list.to_str().unwrap(),
            "--time",
            "1d",
            "--config",
            config,
        ],
        1,
    );
    let table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    let in_maps = table.list().unwrap().len();
    let journal = fs::metadata(state.join("bans.jsonl")).unwrap().len();
    println!(
        "jailer ban --file, {BANS} addresses: {secs:.2} s end to end ({in_maps} in the maps, journal {} MB)",
        journal / 1_000_000
    );
    assert_eq!(in_maps, BANS as usize);

    // 2. status with no agent.
    let (secs, bytes) = time_cli(&["status", "--json", "--config", config], 3);
    println!(
        "jailer status --json, no agent (maps + journal): {secs:.2} s ({} MB of JSON)",
        bytes / 1_000_000
    );

    // 3. A restart with the bans pinned: the agent answers (logs followed,
    // control socket bound) without replaying the journal first.
    let (agent, _) = AgentProcess::start(&net.server.name, &config_path);
    let secs = until(
        "the restarted agent answers",
        &agent,
        Duration::from_secs(30),
        || agent_answers(&state),
    );
    println!("restart with {BANS} bans pinned: following logs after {secs:.2} s");
    // Once the journal is read in, status counts the bans.
    let secs = until(
        "the restarted agent knows every ban",
        &agent,
        Duration::from_secs(30),
        || {
            matches!(control::ask(&state, &Request::Status),
            Ok(Some(Response::Status { status })) if status.bans_in_force == BANS as usize)
        },
    );
    println!("  journal read in the background: all {BANS} bans known {secs:.2} s later");
    let (secs, bytes) = time_cli(&["status", "--json", "--config", config], 3);
    println!(
        "jailer status --json, from the agent: {secs:.2} s ({} MB of JSON)",
        bytes / 1_000_000
    );
    println!(
        "agent memory with {BANS} bans known: {:.0} MiB RSS",
        agent.rss_mib()
    );
    drop(agent);

    // 4. A reboot: maps and links gone, the journal kept.
    jailer::kernel::detach(&bpffs.pins()).unwrap();
    let (agent, started) = AgentProcess::start(&net.server.name, &config_path);
    // Poll a spread of the addresses (listing a million takes a third of a
    // second and would slow what it measures), then check them all.
    let sample: Vec<_> = (0..BANS)
        .step_by(997)
        .chain([BANS - 1])
        .map(|i| jailer::ban::Target::host(Ipv4Addr::from(0x0a00_0000 | i).into()))
        .collect();
    until(
        "every ban back after a reboot",
        &agent,
        Duration::from_secs(30),
        || {
            XdpBanTable::open_existing(&bpffs.pins())
                .is_ok_and(|t| sample.iter().all(|s| t.get(*s).is_ok_and(|b| b.is_some())))
        },
    );
    let secs = started.elapsed().as_secs_f64();
    let back = XdpBanTable::open_existing(&bpffs.pins())
        .unwrap()
        .list()
        .unwrap()
        .len();
    println!("after a reboot: {back} bans back in force {secs:.2} s after `jailer run` started");
    assert_eq!(back, BANS as usize);
    drop(agent);
}
