//! Fleet figures (root): `cargo bench -p jailer-tests --bench fleet`.
//!
//! Members are jailer agents (each with its own veth pair, XDP program,
//! bpffs and state_dir) sharing bans through Debian's nats-server in a test
//! namespace, as `tests/tests/fleet.rs` sets them up. "Enforced" means the
//! ban is in the member's kernel map, which its XDP program reads for every
//! packet (the tests check the drops themselves). Measured:
//!
//! - `jailer ban` on mx1 to the ban in mx2's map, 20 times: p50 and max;
//! - the same for `jailer unban`;
//! - a jail ban from log failures on mx1: from writing the failure that
//!   reaches maxretry to the ban in mx2's map;
//! - mx2 restarted while mx1 set and lifted bans: from its start to in sync;
//! - 100k bans: mx1 publishing them, a new member enforcing them all, and
//!   that member restarted with them pinned, in sync again;
//! - nats-server stopped while mx1 bans, started again: from its start to
//!   the ban in mx2's map;
//! - a three-node cluster, the node mx1 uses killed: from the kill to a ban
//!   made right after it in mx2's map.

use std::{
    fs,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use jailer_tests::{
    fleet::{Hub, Member, MemberSetup},
    wait_for,
};

const LIMIT: Duration = Duration::from_secs(120);

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Polls a kernel map every 200 µs; the time until `cond` held.
fn time_until(what: &str, cond: impl FnMut() -> bool) -> Duration {
    poll(what, Duration::from_micros(200), cond)
}

/// Polls the agent (its control socket) every 20 ms, not to load it.
fn time_until_agent(what: &str, cond: impl FnMut() -> bool) -> Duration {
    poll(what, Duration::from_millis(20), cond)
}

fn poll(what: &str, every: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
    start.elapsed()
}

fn row(what: &str, value: String) {
    println!("| {what} | {value} |");
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("fleet bench: needs root (namespaces, bpffs, XDP); skipped");
        return;
    }
    // Only warnings: a 100k sync is 100k debug lines.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let hub = Hub::new(env!("CARGO_BIN_EXE_jailer-under-test"));
    let mut server = hub.server("n1", 4222);
    let urls = [server.url()];
    let jail = MemberSetup {
        jail: Some((3, false)),
        ..MemberSetup::default()
    };
    let mx1 = Member::start(&hub, "mx1", &urls, &jail);
    let mut mx2 = Member::start(&hub, "mx2", &urls, &MemberSetup::default());
    mx1.wait_synced(LIMIT);
    mx2.wait_synced(LIMIT);
    let mx2_table = mx2.table();
    println!("| fleet (2 members, nats-server 2.9 on loopback) | result |\n|---|---|");

    // 1. `jailer ban` / `unban` on mx1 -> mx2's map.
    let targets: Vec<String> = (0..20).map(|i| format!("198.51.100.{}", i + 10)).collect();
    let mut bans = Vec::new();
    for t in &targets {
        let start = Instant::now();
        mx1.ban(t);
        time_until("a ban at mx2", || mx2.enforces(&mx2_table, t));
        bans.push(start.elapsed());
    }
    let mut unbans = Vec::new();
    for t in &targets {
        let start = Instant::now();
        mx1.cli(&["unban", t]);
        time_until("an unban at mx2", || !mx2.enforces(&mx2_table, t));
        unbans.push(start.elapsed());
    }
    bans.sort();
    unbans.sort();
    row(
        "`jailer ban` on mx1 to mx2's map, 20 bans",
        format!("p50 {}, max {}", ms(pct(&bans, 0.5)), ms(pct(&bans, 1.0))),
    );
    row(
        "`jailer unban` on mx1 to lifted at mx2, 20 unbans",
        format!(
            "p50 {}, max {}",
            ms(pct(&unbans, 0.5)),
            ms(pct(&unbans, 1.0))
        ),
    );

    // 2. A jail ban from failures.
    let mut jail_bans = Vec::new();
    for i in 0..5 {
        let ip = format!("192.0.2.{}", 100 + i);
        mx1.failure(&ip);
        mx1.failure(&ip);
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        mx1.failure(&ip);
        time_until("a jail ban at mx2", || mx2.enforces(&mx2_table, &ip));
        jail_bans.push(start.elapsed());
    }
    jail_bans.sort();
    row(
        "3rd failure in mx1's log to the ban in mx2's map, 5 bans",
        format!(
            "p50 {}, max {}",
            ms(pct(&jail_bans, 0.5)),
            ms(pct(&jail_bans, 1.0))
        ),
    );

    // 3. mx2 restarted while mx1 bans and unbans.
    mx2.stop_agent();
    for t in &targets[..10] {
        mx1.ban(t);
    }
    for t in &targets[..5] {
        mx1.cli(&["unban", t]);
    }
    let start = Instant::now();
    mx2.start_agent();
    let table = mx2.table();
    time_until("mx2 in sync after a restart", || {
        targets[..5].iter().all(|t| !mx2.enforces(&table, t))
            && targets[5..10].iter().all(|t| mx2.enforces(&table, t))
    });
    row(
        "mx2 restarted (10 bans, 5 unbans meanwhile): start to in sync",
        ms(start.elapsed()),
    );

    // 4. nats-server down while mx1 bans.
    server.kill();
    wait_for("mx1 to notice", LIMIT, || mx1.fleet().state != "connected");
    mx1.ban("203.0.113.77");
    let start = Instant::now();
    server.start();
    time_until("the ban at mx2 after the restart", || {
        mx2.enforces(&table, "203.0.113.77")
    });
    row(
        "nats-server restarted: a ban made while it was down, to mx2's map",
        ms(start.elapsed()),
    );

    // 5. 100k bans.
    const N: u32 = 100_000;
    let file = mx1.dir.path().join("bans.txt");
    let list: String = (0..N)
        .map(|i| format!("{}\n", Ipv4Addr::from(0x6440_0000 + i)))
        .collect();
    fs::write(&file, list).unwrap();
    let start = Instant::now();
    mx1.cli(&["ban", "--file", file.to_str().unwrap(), "--time", "1d"]);
    time_until_agent("mx1 to publish 100k", || {
        let r = mx1.fleet();
        r.own_bans >= N as usize && r.unpublished == 0
    });
    row(
        "100k bans: `ban --file` on mx1 to all published",
        ms(start.elapsed()),
    );
    let start = Instant::now();
    let mut mx3 = Member::start(&hub, "mx3", &urls, &MemberSetup::default());
    let enforced_all = |m: &Member| {
        m.fleet()
            .members
            .iter()
            .any(|x| x.name == "mx1" && x.enforced >= N as usize)
    };
    time_until_agent("mx3 to enforce 100k", || enforced_all(&mx3));
    row(
        "100k bans: a new member, start to all enforced",
        ms(start.elapsed()),
    );
    mx3.stop_agent();
    let start = Instant::now();
    mx3.start_agent();
    time_until_agent("mx3 in sync again", || {
        let r = mx3.fleet();
        r.synced && enforced_all(&mx3)
    });
    row(
        "100k bans: that member restarted (maps pinned), start to in sync",
        ms(start.elapsed()),
    );

    drop((mx1, mx2, mx3, server));

    // 6. A three-node cluster loses the node mx1 talks to.
    let cluster_hub = Hub::new(env!("CARGO_BIN_EXE_jailer-under-test"));
    let mut nodes = cluster_hub.cluster();
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let setup = MemberSetup {
        fleet_extra: "replicas = 3".into(),
        ..MemberSetup::default()
    };
    let c1 = Member::start(&cluster_hub, "mx1", &urls, &setup);
    let c2 = Member::start(&cluster_hub, "mx2", &urls, &setup);
    c1.wait_synced(LIMIT);
    c2.wait_synced(LIMIT);
    let used = c1.fleet().detail;
    let node = nodes
        .iter_mut()
        .find(|n| used.contains(&format!(":{}", n.port)))
        .expect("mx1's node");
    let c2_table = c2.table();
    let start = Instant::now();
    node.kill();
    c1.ban("203.0.113.99");
    time_until("the ban at mx2 after the node died", || {
        c2.enforces(&c2_table, "203.0.113.99")
    });
    row(
        "3-node cluster, mx1's node killed: kill to a ban made after it in mx2's map",
        ms(start.elapsed()),
    );
}
