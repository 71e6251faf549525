//! The fleet end to end, as root: jailer agents sharing bans through real
//! nats-server processes (Debian's 2.9) in a namespace this test creates,
//! each member with its own interface, bpffs and state_dir, bans checked in
//! the members' kernel maps and by traffic through their XDP program.
//! Latency and resync figures come from `cargo bench --bench fleet`.

use std::{fs, thread, time::Duration};

use jailer_tests::{
    fleet::{ATTACKER, BYSTANDER, Hub, Member, MemberSetup, Pki},
    require_root, wait_for,
};

/// Bounds for waits, not measurements: the figures are in the bench.
const SYNC: Duration = Duration::from_secs(20);
const SOON: Duration = Duration::from_secs(5);

fn hub() -> Hub {
    Hub::new(env!("CARGO_BIN_EXE_jailer-under-test"))
}

fn plain() -> MemberSetup {
    MemberSetup::default()
}

fn with_jail(maxretry: u32, shared: bool) -> MemberSetup {
    MemberSetup {
        jail: Some((maxretry, shared)),
        ..MemberSetup::default()
    }
}

#[test]
#[ignore = "needs root"]
fn bans_unbans_and_expiry_reach_the_other_member() {
    require_root();
    let hub = hub();
    let server = hub.server("n1", 4222);
    let urls = [server.url()];
    let mx1 = Member::start(&hub, "mx1", &urls, &with_jail(3, false));
    let mx2 = Member::start(&hub, "mx2", &urls, &plain());
    mx1.wait_synced(SYNC);
    mx2.wait_synced(SYNC);
    assert!(mx2.reaches_pop3(ATTACKER));

    // `jailer ban` on mx1: dropped by mx2's XDP program.
    mx1.ban(ATTACKER);
    mx2.wait_enforces(ATTACKER, true, SOON);
    assert!(!mx2.reaches_pop3(ATTACKER), "mx2 drops the attacker");
    assert!(mx2.reaches_pop3(BYSTANDER), "and only the attacker");
    let list = String::from_utf8(mx2.cli(&["list"]).stdout).unwrap();
    let row = list
        .lines()
        .find(|l| l.starts_with(ATTACKER))
        .unwrap_or_else(|| panic!("no row for the attacker:\n{list}"));
    assert!(
        row.trim_end().ends_with("mx1"),
        "list names the origin: {row}"
    );
    // The link's view is refreshed every second.
    wait_for("mx2's fleet report to show mx1's ban", SOON, || {
        mx2.fleet()
            .members
            .iter()
            .any(|m| m.name == "mx1" && (m.bans, m.enforced, m.accepted) == (1, 1, true))
    });
    let metrics = jailer::agent::metrics::render(
        &status(&mx2),
        0,
        &jailer::agent::metrics::Histogram::default(),
    );
    assert!(
        metrics.contains("jailer_fleet_enforced_bans{origin=\"mx1\",jail=\"manual\"} 1"),
        "{metrics}"
    );

    // Unban on mx1: lifted on mx2.
    mx1.cli(&["unban", ATTACKER]);
    mx2.wait_enforces(ATTACKER, false, SOON);
    assert!(mx2.reaches_pop3(ATTACKER));

    // A jail ban from log failures on mx1.
    for _ in 0..3 {
        mx1.failure(BYSTANDER);
    }
    mx1.wait_enforces(BYSTANDER, true, SOON);
    mx2.wait_enforces(BYSTANDER, true, SOON);
    assert!(!mx2.reaches_pop3(BYSTANDER));

    // Expiry: mx1 withdraws its lapsed ban, and mx2 forgets it.
    mx1.cli(&["ban", "198.51.100.9", "--time", "2s"]);
    mx2.wait_enforces("198.51.100.9", true, SOON);
    wait_for("mx1 to withdraw its lapsed ban", SOON + SOON, || {
        mx2.fleet()
            .members
            .iter()
            .any(|m| m.name == "mx1" && m.bans == 1 && m.enforced == 1)
    });

    // Never echoed, never re-published: mx1 holds no ban of its own origin
    // as a member's, and mx2 published nothing.
    assert!(
        !mx1.journal().contains("\"origin\":\"mx1\""),
        "{}",
        mx1.journal()
    );
    let mx2_seen = mx1.fleet();
    assert!(
        mx2_seen
            .members
            .iter()
            .all(|m| m.name != "mx2" || m.bans == 0),
        "{mx2_seen:?}"
    );
}

fn status(m: &Member) -> jailer::agent::status::Status {
    use jailer::agent::control::{self, Request, Response};
    match control::ask(m.state_dir(), &Request::Status) {
        Ok(Some(Response::Status { status })) => status,
        other => panic!("no status: {other:?}"),
    }
}

/// Lines of a member's journal that mention `addr`.
fn journal_lines(m: &Member, addr: &str) -> usize {
    m.journal()
        .lines()
        .filter(|l| l.contains(&format!("\"{addr}\"")))
        .count()
}

#[test]
#[ignore = "needs root"]
fn a_restarted_member_catches_up_without_banning_again() {
    require_root();
    let hub = hub();
    let server = hub.server("n1", 4222);
    let urls = [server.url()];
    let mx1 = Member::start(&hub, "mx1", &urls, &plain());
    let mut mx2 = Member::start(&hub, "mx2", &urls, &plain());
    mx1.wait_synced(SYNC);
    mx2.wait_synced(SYNC);
    for target in ["203.0.113.1", "203.0.113.2"] {
        mx1.ban(target);
        mx2.wait_enforces(target, true, SOON);
    }
    let kept_before = journal_lines(&mx2, "203.0.113.2");

    mx2.stop_agent();
    mx1.ban("203.0.113.3");
    mx1.cli(&["unban", "203.0.113.1"]);
    mx2.start_agent();
    mx2.wait_enforces("203.0.113.3", true, SOON);
    mx2.wait_enforces("203.0.113.1", false, SOON);
    mx2.wait_synced(SOON);
    assert!(mx2.enforces(&mx2.table(), "203.0.113.2"));
    assert_eq!(
        journal_lines(&mx2, "203.0.113.2"),
        kept_before,
        "a ban mx2 already had is not set again"
    );
}

#[test]
#[ignore = "needs root"]
fn a_member_joining_takes_in_a_hundred_thousand_bans() {
    require_root();
    const N: u32 = 100_000;
    let hub = hub();
    let server = hub.server("n1", 4222);
    let urls = [server.url()];
    let mx1 = Member::start(&hub, "mx1", &urls, &plain());
    mx1.wait_synced(SYNC);
    let list: String = (0..N)
        .map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x6440_0000 + i)))
        .collect();
    let file = mx1.dir.path().join("bans.txt");
    fs::write(&file, list).unwrap();
    mx1.cli(&["ban", "--file", file.to_str().unwrap(), "--time", "1d"]);
    wait_for("mx1 to publish its bans", Duration::from_secs(60), || {
        let r = mx1.fleet();
        r.own_bans == N as usize && r.unpublished == 0
    });

    let mx2 = Member::start(&hub, "mx2", &urls, &plain());
    wait_for("mx2 to enforce them all", Duration::from_secs(60), || {
        mx2.fleet()
            .members
            .iter()
            .any(|m| m.name == "mx1" && m.enforced == N as usize)
    });
    let table = mx2.table();
    for i in [0, N / 2, N - 1] {
        assert!(mx2.enforces(
            &table,
            &std::net::Ipv4Addr::from(0x6440_0000 + i).to_string()
        ));
    }
}

#[test]
#[ignore = "needs root"]
fn without_the_server_local_bans_go_on_and_are_shared_when_it_returns() {
    require_root();
    let hub = hub();
    let mut server = hub.server("n1", 4222);
    let urls = [server.url()];
    let mx1 = Member::start(&hub, "mx1", &urls, &with_jail(2, false));
    let mx2 = Member::start(&hub, "mx2", &urls, &plain());
    mx1.wait_synced(SYNC);
    mx2.wait_synced(SYNC);

    server.kill();
    wait_for("mx1 to notice", SYNC, || mx1.fleet().state != "connected");
    mx1.failure(ATTACKER);
    mx1.failure(ATTACKER);
    mx1.wait_enforces(ATTACKER, true, SOON);
    assert!(!mx1.reaches_pop3(ATTACKER), "mx1 drops on its own");
    mx1.ban("198.51.100.7");
    assert!(mx1.enforces(&mx1.table(), "198.51.100.7"));
    assert!(!mx2.enforces(&mx2.table(), ATTACKER));

    server.start();
    mx2.wait_enforces(ATTACKER, true, Duration::from_secs(15));
    mx2.wait_enforces("198.51.100.7", true, Duration::from_secs(15));
    assert!(mx1.is_running() && mx2.is_running());
    mx1.wait_synced(SOON);
}

#[test]
#[ignore = "needs root"]
fn accept_from_and_ignoreip_come_before_a_members_ban() {
    require_root();
    let hub = hub();
    let server = hub.server("n1", 4222);
    let urls = [server.url()];
    let mx1 = Member::start(&hub, "mx1", &urls, &plain());
    let mx2 = Member::start(
        &hub,
        "mx2",
        &urls,
        &MemberSetup {
            fleet_extra: "accept_from = [\"mx3\"]".into(),
            ..MemberSetup::default()
        },
    );
    let mx3 = Member::start(
        &hub,
        "mx3",
        &urls,
        &MemberSetup {
            top_extra: format!("ignoreip = [\"{ATTACKER}/32\"]"),
            ..MemberSetup::default()
        },
    );
    for m in [&mx1, &mx2, &mx3] {
        m.wait_synced(SYNC);
    }
    mx1.ban(ATTACKER);
    mx1.ban(BYSTANDER);
    mx3.wait_enforces(BYSTANDER, true, SOON);
    wait_for("mx2 to see mx1's bans", SOON, || {
        mx2.fleet()
            .members
            .iter()
            .any(|m| m.name == "mx1" && m.bans == 2)
    });
    assert!(!mx3.enforces(&mx3.table(), ATTACKER), "in mx3's ignoreip");
    assert!(mx3.reaches_pop3(ATTACKER));
    assert!(mx3.fleet().refused >= 1);
    let table = mx2.table();
    assert!(
        !mx2.enforces(&table, ATTACKER) && !mx2.enforces(&table, BYSTANDER),
        "mx1 is not in mx2's accept_from"
    );
    let report = mx2.fleet();
    let mx1_seen = report.members.iter().find(|m| m.name == "mx1").unwrap();
    assert_eq!((mx1_seen.accepted, mx1_seen.enforced), (false, 0));
}

#[test]
#[ignore = "needs root"]
fn wrong_credentials_are_named_and_the_jails_keep_banning() {
    require_root();
    let hub = hub();
    let server = hub.server("n1", 4222);
    let urls = [server.url()];
    let mx1 = Member::start(
        &hub,
        "mx1",
        &urls,
        &MemberSetup {
            password: Some("wrong".into()),
            ..with_jail(2, false)
        },
    );
    wait_for("mx1 to report the refusal", SYNC, || {
        let r = mx1.fleet();
        r.state == "error" && r.detail.contains("127.0.0.1:4222")
    });
    let detail = mx1.fleet().detail;
    assert!(detail.to_lowercase().contains("author"), "{detail}");
    mx1.failure(ATTACKER);
    mx1.failure(ATTACKER);
    mx1.wait_enforces(ATTACKER, true, SOON);
    assert!(!mx1.reaches_pop3(ATTACKER));
}

#[test]
#[ignore = "needs root"]
fn failures_spread_over_three_members_ban_everywhere() {
    require_root();
    let hub = hub();
    let server = hub.server("n1", 4222);
    let urls = [server.url()];
    let members: Vec<Member> = ["mx1", "mx2", "mx3"]
        .iter()
        .map(|name| Member::start(&hub, name, &urls, &with_jail(5, true)))
        .collect();
    for m in &members {
        m.wait_synced(SYNC);
    }
    // Two failures on each of two members: four, under maxretry.
    for m in &members[..2] {
        m.failure(ATTACKER);
        m.failure(ATTACKER);
    }
    wait_for("the failures to be counted", SOON, || {
        status(&members[2]).jails[0].total_failed == Some(4)
    });
    for m in &members {
        assert!(
            !m.enforces(&m.table(), ATTACKER),
            "{}: four failures",
            m.name
        );
    }
    members[2].failure(ATTACKER);
    members[2].failure(ATTACKER);
    for m in &members {
        m.wait_enforces(ATTACKER, true, SOON);
        assert!(!m.reaches_pop3(ATTACKER), "{} drops", m.name);
    }
}

#[test]
#[ignore = "needs root"]
fn bans_flow_through_a_cluster_with_a_node_killed() {
    require_root();
    let hub = hub();
    let mut nodes = hub.cluster();
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let setup = MemberSetup {
        fleet_extra: "replicas = 3".into(),
        ..MemberSetup::default()
    };
    let mx1 = Member::start(&hub, "mx1", &urls, &setup);
    let mx2 = Member::start(&hub, "mx2", &urls, &setup);
    mx1.wait_synced(Duration::from_secs(60));
    mx2.wait_synced(Duration::from_secs(60));
    mx1.ban("203.0.113.1");
    mx2.wait_enforces("203.0.113.1", true, SOON);

    // Kill the node mx1 talks to.
    let used = mx1.fleet().detail;
    let node = nodes
        .iter_mut()
        .find(|n| used.contains(&format!(":{}", n.port)))
        .unwrap_or_else(|| panic!("mx1 is connected to `{used}`"));
    node.kill();
    thread::sleep(Duration::from_millis(100));
    mx1.ban("203.0.113.2");
    mx2.wait_enforces("203.0.113.2", true, Duration::from_secs(30));
    mx2.ban("203.0.113.3");
    mx1.wait_enforces("203.0.113.3", true, Duration::from_secs(30));
}

#[test]
#[ignore = "needs root"]
fn members_share_bans_over_tls_with_client_certificates() {
    require_root();
    let hub = hub();
    let pki = Pki::new(hub.dir.path());
    let server = hub.tls_server("n1", 4222, &pki);
    let urls = [server.url()];
    let tls = MemberSetup {
        fleet_extra: pki.member_tls(),
        ..MemberSetup::default()
    };
    let mx1 = Member::start(&hub, "mx1", &urls, &tls);
    let mx2 = Member::start(&hub, "mx2", &urls, &tls);
    mx1.wait_synced(SYNC);
    mx2.wait_synced(SYNC);
    mx1.ban(ATTACKER);
    mx2.wait_enforces(ATTACKER, true, SOON);
    assert!(!mx2.reaches_pop3(ATTACKER));

    // A member that does not trust the server's CA: an error naming the
    // server, and its own bans still drop.
    let untrusting = MemberSetup {
        fleet_extra: "tls = {}".into(),
        ..MemberSetup::default()
    };
    let mx3 = Member::start(&hub, "mx3", &urls, &untrusting);
    wait_for("mx3 to report the TLS failure", SYNC, || {
        let r = mx3.fleet();
        r.state == "error" && r.detail.contains("127.0.0.1:4222")
    });
    mx3.ban(BYSTANDER);
    assert!(mx3.enforces(&mx3.table(), BYSTANDER));
}
