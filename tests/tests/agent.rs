//! End to end, as root: a POP3 server in a server namespace logs vchkpw lines
//! for failed logins; the agent follows that log and bans through the real
//! XDP maps; the offending client's next connect to 110 is dropped by the
//! kernel while another client still logs in.

use std::{
    fs::OpenOptions,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use jailer::{config::Config, kernel::BanTable};
use jailer_tests::{Pair, TempBpffs, host, login, ns_agent, pop3_server, require_root};

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
