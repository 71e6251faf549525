//! Bulk figures (root): `cargo bench -p jailer-tests --bench bulk`.
//!
//! `jailer status --json` with 1M bans in the maps and the journal: with no
//! agent running (read from the maps and the journal) and from a running
//! agent (over its control socket).

use std::{
    fs,
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use jailer::{
    ban::{Ban, Target},
    config::Config,
    kernel::{BanTable, XdpBanTable},
};
use jailer_tests::{Agent, TempBpffs, ban};

const BIN: &str = env!("CARGO_BIN_EXE_jailer-under-test");
const BANS: u32 = 1_000_000;

/// Seconds one `jailer ARGS` takes (best of 3), and its stdout size.
fn time_cli(args: &[&str]) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..3 {
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

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bulk bench: needs root (bpffs, maps)");
        return;
    }
    let bpffs = TempBpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("mail.log");
    fs::write(&log, "").unwrap();
    let config_path = dir.path().join("jailer.toml");
    fs::write(
        &config_path,
        format!(
            "bpffs = \"{}\"\nstate_dir = \"{}\"\n[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\n",
            bpffs.pins().display(),
            state.display(),
            log.display()
        ),
    )
    .unwrap();
    jailer::state::prepare_state_dir(&state).unwrap();

    // 1M bans in the maps and in the journal, as a jail would leave them.
    let (mut table, _) = XdpBanTable::open(&bpffs.pins()).unwrap();
    let bans: Vec<(Target, Ban)> = (0..BANS)
        .map(|i| {
            (
                Target::host(Ipv4Addr::from(0x0a00_0000 | i).into()),
                ban(&[110], Some(3600)),
            )
        })
        .collect();
    let start = Instant::now();
    assert_eq!(table.insert_many(&bans).unwrap(), bans.len());
    let load = start.elapsed();
    let now = std::time::SystemTime::now();
    let records: Vec<_> = bans
        .iter()
        .map(|(t, b)| jailer::state::Record::ban(*t, "vpopmail", b, now))
        .collect();
    jailer::state::Journal::new(&state)
        .append(&records, true)
        .unwrap();
    println!(
        "{BANS} bans in the maps ({:.2} s) and in the journal",
        load.as_secs_f64()
    );

    let start = Instant::now();
    let listed = table.list().unwrap().len();
    println!(
        "  listing {listed} bans (batch lookup): {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let replay = jailer::state::Journal::new(&state).replay(now).unwrap();
    println!(
        "  replaying the journal ({} bans): {:.2} s",
        replay.bans.len(),
        start.elapsed().as_secs_f64()
    );
    drop(replay);
    let config = config_path.to_str().unwrap();
    let (secs, bytes) = time_cli(&["status", "--json", "--config", config]);
    println!(
        "jailer status --json, no agent (maps + journal): {secs:.2} s, {} MB of JSON",
        bytes / 1_000_000
    );

    let mut cfg = Config::load(&config_path).unwrap();
    cfg.state_dir = state.clone();
    let started = Instant::now();
    let agent = Agent::start(cfg, table);
    println!(
        "agent ready with {BANS} bans in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let (secs, bytes) = time_cli(&["status", "--json", "--config", config]);
    println!(
        "jailer status --json, from the agent: {secs:.2} s, {} MB of JSON",
        bytes / 1_000_000
    );
    let (secs, _) = time_cli(&["status", "--config", config]);
    println!("jailer status (text), from the agent: {secs:.2} s");
    drop(agent);
    std::thread::sleep(Duration::from_millis(10));
}
