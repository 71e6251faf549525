//! Operating the agent, as root in namespaces this test creates: `status`
//! and the Prometheus endpoint report what was done and agree; SIGHUP adding
//! a jail keeps every ban; `jailer check` refuses a broken config.

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use clap::Parser as _;
use jailer::{
    agent::{
        control::{self, Request, Response},
        status::Status,
    },
    cli::Cli,
    config::Config,
    kernel::{BanTable, XdpBanTable},
};
use jailer_tests::{Pair, TempBpffs, host, login, ns_agent, pop3_server, require_root};

const METRICS_PORT: u16 = 19567;

fn write_config(dir: &Path, bpffs: &Path, iface: &str, with_imap: bool) -> std::path::PathBuf {
    let mut text = format!(
        "interface = \"{iface}\"\nxdp_mode = \"generic\"\nbpffs = \"{}\"\nstate_dir = \"{}\"\nmetrics_listen = \"127.0.0.1:{METRICS_PORT}\"\n\
         [jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nport = [\"pop3\"]\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n",
        bpffs.display(),
        dir.join("state").display(),
        dir.join("mail.log").display()
    );
    if with_imap {
        text.push_str(&format!(
            "[jails.imap]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nport = [\"imap\"]\nmaxretry = 2\n",
            dir.join("imap.log").display()
        ));
    }
    let path = dir.join("jailer.toml");
    fs::write(&path, text).unwrap();
    path
}

fn status(state_dir: &Path) -> Status {
    match control::ask(state_dir, &Request::Status).unwrap() {
        Some(Response::Status { status }) => status,
        other => panic!("no status from the agent: {other:?}"),
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    jailer_tests::wait_for(what, Duration::from_secs(5), cond);
}

#[test]
#[ignore = "needs root"]
fn status_metrics_and_sighup_reload() {
    require_root();
    let net = Pair::new(197);
    let dir = tempfile::tempdir().unwrap();
    let bpffs = TempBpffs::new();
    let config_path = write_config(dir.path(), &bpffs.pins(), &net.iface, false);
    let config = Config::load(&config_path).unwrap();
    let state_dir = config.state_dir.clone();
    fs::write(dir.path().join("mail.log"), "").unwrap();

    let log = dir.path().join("mail.log");
    net.server
        .run(move || pop3_server("[::]:110".parse().unwrap(), log));
    let agent = ns_agent(&net.server, &config, Some(config_path.clone()));

    // One good login, three bad ones from .2, one blocked attempt.
    assert!(login(&net.client, "10.197.0.3", "10.197.0.1:110", "secret").unwrap());
    for _ in 0..3 {
        assert!(!login(&net.client, "10.197.0.2", "10.197.0.1:110", "guess").unwrap());
    }
    let table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    wait_for("ban of .2", || {
        table.get(host("10.197.0.2")).unwrap().is_some()
    });
    assert!(login(&net.client, "10.197.0.2", "10.197.0.1:110", "guess").is_err());
    // A ban by hand: maps and journal; the agent is told and takes it in.
    let by_hand = [
        "jailer",
        "ban",
        "10.197.0.9",
        "--port",
        "all",
        "--time",
        "permanent",
        "--config",
    ];
    let cli = Cli::try_parse_from(
        by_hand
            .iter()
            .copied()
            .chain([config_path.to_str().unwrap()]),
    )
    .unwrap();
    jailer::cli::run(cli).expect("jailer ban");

    let s = status(&state_dir);
    assert_eq!(s.source, "agent");
    assert_eq!(s.interfaces.len(), 1);
    assert_eq!(
        (
            s.interfaces[0].name.as_str(),
            s.interfaces[0].mode.to_string().as_str()
        ),
        (net.iface.as_str(), "generic")
    );
    let j = &s.jails[0];
    assert_eq!(j.name, "vpopmail");
    assert_eq!(j.total_failed, Some(3));
    assert_eq!(j.total_banned, Some(1));
    assert_eq!(j.currently_banned, 1);
    assert_eq!(j.banned, ["10.197.0.2"]);
    assert_eq!(
        j.currently_failed,
        Some(0),
        "the banned address's window is cleared"
    );
    assert_eq!(s.logs.len(), 1);
    assert_eq!(
        s.logs[0].lines, 4,
        "one success and three failures were logged"
    );
    assert_eq!(s.bans_in_force, 2, "the jail's ban and the manual one");
    let packets = s.packets.expect("STATS pinned");
    assert!(
        packets.dropped_v4 >= 1,
        "the blocked attempt was dropped: {packets:?}"
    );
    let text = jailer::cli::render_status(&s, None);
    assert!(
        text.contains("Total failed:\t3") && text.contains("Banned IP list:\t10.197.0.2"),
        "{text}"
    );

    // Metrics agree with status (no traffic in between).
    let body = net.server.run(|| {
        let mut c = TcpStream::connect(("127.0.0.1", METRICS_PORT)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        body
    });
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    let s2 = status(&state_dir);
    assert_eq!(
        metric(&body, "jailer_failures_total{jail=\"vpopmail\"}"),
        s2.jails[0].total_failed.unwrap()
    );
    assert_eq!(
        metric(&body, "jailer_bans_total{jail=\"vpopmail\"}"),
        s2.jails[0].total_banned.unwrap()
    );
    assert_eq!(
        metric(&body, "jailer_banned{jail=\"vpopmail\"}"),
        s2.jails[0].currently_banned
    );
    assert_eq!(
        metric(&body, "jailer_bans_in_force"),
        s2.bans_in_force as u64
    );
    let log_metric = format!(
        "jailer_lines_read_total{{log=\"{}\"}}",
        dir.path().join("mail.log").display()
    );
    assert_eq!(metric(&body, &log_metric), s2.logs[0].lines);
    let p2 = s2.packets.unwrap();
    assert_eq!(
        metric(&body, "jailer_packets_dropped_total{family=\"ipv4\"}"),
        p2.dropped_v4
    );
    assert_eq!(metric(&body, "jailer_ban_latency_seconds_count"), 1);
    // From reading the line to the map write (finding 10 of issue 11): a
    // ban lands in the 0.1 s bucket, not in whatever the line's own
    // timestamp (whole seconds, possibly skewed) would say.
    let latency: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("jailer_ban_latency_seconds_sum "))
        .and_then(|v| v.parse().ok())
        .expect("latency sum");
    eprintln!(
        "ban latency, line read to map write: {:.3} ms",
        latency * 1e3
    );
    assert_eq!(
        metric(&body, "jailer_ban_latency_seconds_bucket{le=\"0.1\"}"),
        1,
        "{latency} s"
    );

    // SIGHUP with a second jail: every ban stays, the first jail keeps its counters.
    write_config(dir.path(), &bpffs.pins(), &net.iface, true);
    nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for("two jails after SIGHUP", || {
        status(&state_dir).jails.len() == 2
    });
    let s3 = status(&state_dir);
    assert_eq!(s3.bans_in_force, 2, "no ban dropped by the reload");
    assert_eq!(
        s3.jails
            .iter()
            .find(|j| j.name == "vpopmail")
            .unwrap()
            .total_banned,
        Some(1)
    );
    assert!(
        login(&net.client, "10.197.0.2", "10.197.0.1:110", "guess").is_err(),
        "still dropped"
    );
    assert!(table.get(host("10.197.0.9")).unwrap().is_some());
    // The new jail works: two failures in its log ban on its port.
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
    let line = format!(
        "{stamp} mail vpopmail[1]: vchkpw-imap: password fail bob@example.com:10.197.0.5\n"
    );
    fs::write(dir.path().join("imap.log"), format!("{line}{line}")).unwrap();
    wait_for("imap jail ban", || {
        table.get(host("10.197.0.5")).unwrap().is_some()
    });
    let v = table.get(host("10.197.0.5")).unwrap().unwrap();
    assert!(v.ports.contains(143) && !v.ports.contains(110));

    // `jailer reload` through the socket answers with the jails.
    match control::ask(&state_dir, &Request::Reload).unwrap() {
        Some(Response::Reloaded { jails }) => assert_eq!(jails.len(), 2),
        other => panic!("reload: {other:?}"),
    }

    agent.stop().unwrap();
    assert!(
        !control::socket_path(&state_dir).exists(),
        "socket removed at exit"
    );
    // With the agent gone, status still answers from the maps.
    let s4 = jailer::agent::status::from_maps(&Config::load(&config_path).unwrap()).unwrap();
    assert_eq!(s4.source, "maps");
    assert_eq!(s4.bans_in_force, 3);
    assert_eq!(
        s4.jails
            .iter()
            .find(|j| j.name == "vpopmail")
            .unwrap()
            .banned
            .len(),
        1
    );
}

#[test]
fn check_refuses_a_broken_config_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jailer.toml");
    fs::write(&path, "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"/var/log/mail.log\"\nbantime = \"forever\"\n").unwrap();
    let cli = Cli::try_parse_from(["jailer", "check", "--config", path.to_str().unwrap()]).unwrap();
    let err = jailer::cli::run(cli).unwrap_err();
    let msg = jailer::error::Chain(&err).to_string();
    assert_eq!(err.exit_code(), 2);
    assert!(msg.starts_with(&format!("{}:4:", path.display())), "{msg}");
    assert!(msg.contains("bantime: invalid duration `forever`"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");

    // What `run` needs and nothing else: an interface that exists, a log
    // directory that exists, bpffs and state_dir apart.
    let d = dir.path().display();
    fs::write(
        &path,
        format!("interface = \"lo\"\nbpffs = \"{d}/bpf\"\nstate_dir = \"{d}/state\"\n[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{d}/mail.log\"\n"),
    )
    .unwrap();
    let cli = Cli::try_parse_from(["jailer", "check", "--config", path.to_str().unwrap()]).unwrap();
    jailer::cli::run(cli).expect("a good config passes");
}
