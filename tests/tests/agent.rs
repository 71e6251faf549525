//! End to end, as root: a POP3 server in a server namespace logs vchkpw lines
//! for failed logins; the agent follows that log and bans through the real
//! XDP maps; the offending client's next connect to 110 is dropped by the
//! kernel while another client still logs in. Lines blaming the server's
//! own addresses ban nobody.

use std::{
    fs::OpenOptions,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use jailer::{
    config::Config,
    filter::{Verdict, Vpopmail},
    kernel::BanTable,
};
use jailer_tests::{
    Pair, TempBpffs, append, append_failure, failure_line, host, login, ns_agent, pop3_server,
    require_root,
};

#[test]
#[ignore = "needs root"]
fn failed_pop3_logins_get_the_client_dropped_by_xdp() {
    require_root();
    let net = Pair::new(198);
    let (server, client, iface) = (&net.server, &net.client, net.iface.clone());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let bpffs = TempBpffs::new();
    let config = agent_config(dir.path(), &log, &bpffs.pins(), &iface);
    let log_for_server = log.clone();
    server.run(move || pop3_server("[::]:110".parse().unwrap(), log_for_server));
    let agent = ns_agent(server, &config, None);
    thread::sleep(Duration::from_millis(300));

    assert!(
        login(client, "10.198.0.3", "10.198.0.1:110", "secret").unwrap(),
        "good client logs in"
    );
    for i in 0..3 {
        assert!(
            !login(client, "10.198.0.2", "10.198.0.1:110", "guess").unwrap(),
            "attempt {i} refused"
        );
    }
    let table = jailer::kernel::XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    let start = Instant::now();
    while table.get(host("10.198.0.2")).unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no ban after 3 failures"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        login(client, "10.198.0.2", "10.198.0.1:110", "guess").is_err(),
        "banned client is dropped"
    );
    assert!(
        login(client, "10.198.0.3", "10.198.0.1:110", "secret").unwrap(),
        "other client still logs in"
    );

    // IPv6 attacker, same story.
    for _ in 0..3 {
        let _ = login(client, "fd00:198::2", "[fd00:198::1]:110", "guess").unwrap();
    }
    let start = Instant::now();
    while table.get(host("fd00:198::2")).unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no IPv6 ban after 3 failures"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        login(client, "fd00:198::2", "[fd00:198::1]:110", "guess").is_err(),
        "banned v6 client dropped"
    );

    agent.stop().unwrap();
}

fn agent_config(dir: &Path, log: &Path, bpffs: &Path, iface: &str) -> Config {
    let text = format!(
        "interface = \"{iface}\"\nxdp_mode = \"generic\"\nbpffs = \"{}\"\nstate_dir = \"{}\"\n\
         [jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nport = [\"pop3\"]\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n",
        bpffs.display(),
        dir.join("state").display(),
        log.display()
    );
    Config::parse(&dir.join("jailer.toml"), &text).unwrap()
}

/// Finding 5 of issue 11: a log line that blames the server's own address
/// (a forged or misparsed line, or the server probing itself) bans nobody:
/// jails have `ignoreself = true` by default, and the agent knows the
/// addresses of the namespace it runs in.
#[test]
#[ignore = "needs root"]
fn failures_blamed_on_the_servers_own_addresses_ban_nobody() {
    require_root();
    let net = Pair::new(186);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, "").unwrap();
    let bpffs = TempBpffs::new();
    let mut config = agent_config(dir.path(), &log, &bpffs.pins(), &net.iface);
    config.jails[0].maxretry = 1;
    assert!(config.jails[0].ignoreself, "the default");
    let agent = ns_agent(&net.server, &config, None);
    for own in ["10.186.0.1", "fd00:186::1", "127.0.0.1", "::1"] {
        // A failure the filter takes, from an address that is ours.
        let line = failure_line(own);
        assert_eq!(
            Vpopmail::default().check(line.trim_end()),
            Verdict::Failure(own.parse().unwrap())
        );
        append(&log, &line);
    }
    // Read in order: once the attacker is banned, the lines before were read.
    append_failure(&log, "10.186.0.2");
    let table = jailer::kernel::XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    let start = Instant::now();
    while table.get(host("10.186.0.2")).unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(5), "no ban");
        thread::sleep(Duration::from_millis(20));
    }
    let banned: Vec<String> = table
        .list()
        .unwrap()
        .iter()
        .map(|l| l.target.to_string())
        .collect();
    assert_eq!(banned, ["10.186.0.2"], "only the attacker");
    agent.stop().unwrap();
}
