//! End to end, as root: a POP3 server in a server namespace logs vchkpw lines
//! for failed logins; the agent follows that log and bans through the real
//! XDP maps; the offending client's next connect to 110 is dropped by the
//! kernel while another client still logs in.

use std::{
    fs::OpenOptions,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use jailer::{bpf::BanTable, config::Config};
use jailer_tests::{NetNs, TempBpffs, connect_from, require_root, unique};
use tokio::sync::oneshot;

const TIMEOUT: Duration = Duration::from_millis(700);

/// A POP3 server that accepts `PASS secret` and logs every other password
/// as vchkpw does, with the client's address at the end of the line.
fn pop3_server(addr: SocketAddr, log: PathBuf) {
    let listener = TcpListener::bind(addr).expect("bind 110");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            thread::spawn(move || {
                let peer = stream
                    .peer_addr()
                    .map(|a| a.ip())
                    .unwrap_or(IpAddr::from([0, 0, 0, 0]));
                let peer = match peer {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                let mut out = stream.try_clone().unwrap();
                let _ = out.write_all(b"+OK POP3 ready\r\n");
                let mut user = String::new();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let line = line.trim_end().to_owned();
                    if let Some(u) = line.strip_prefix("USER ") {
                        user = u.to_owned();
                        let _ = out.write_all(b"+OK\r\n");
                    } else if let Some(p) = line.strip_prefix("PASS ") {
                        let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
                        let (reply, msg) = if p == "secret" {
                            ("+OK logged in\r\n", format!("login success {user}:{peer}"))
                        } else {
                            (
                                "-ERR authorization failed\r\n",
                                format!("password fail {user}:{peer}"),
                            )
                        };
                        let mut f = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)
                            .unwrap();
                        writeln!(f, "{stamp} mail vpopmail[4242]: vchkpw-pop3: {msg}").unwrap();
                        let _ = out.write_all(reply.as_bytes());
                    } else if line == "QUIT" {
                        let _ = out.write_all(b"+OK bye\r\n");
                        break;
                    }
                }
            });
        }
    });
}

/// Logs in from `src`; `Ok(true)` when the password was accepted.
fn login(client: &NetNs, src: &str, dst: &str, pass: &str) -> std::io::Result<bool> {
    let src: IpAddr = src.parse().unwrap();
    let dst: SocketAddr = dst.parse().unwrap();
    let pass = pass.to_owned();
    client.run(move || {
        let stream = connect_from(src, dst, TIMEOUT)?;
        let mut w = stream.try_clone()?;
        let mut r = BufReader::new(stream);
        let mut reply = String::new();
        w.write_all(b"USER bob@example.com\r\n")?;
        r.read_line(&mut reply)?;
        reply.clear();
        w.write_all(format!("PASS {pass}\r\n").as_bytes())?;
        r.read_line(&mut reply)?;
        w.write_all(b"QUIT\r\n")?;
        Ok(reply.starts_with("+OK"))
    })
}

#[test]
fn failed_pop3_logins_get_the_client_dropped_by_xdp() {
    require_root!("failed_pop3_logins_get_the_client_dropped_by_xdp");
    let server = NetNs::new("s");
    let client = NetNs::new("c");
    let iface = unique("vs");
    let peer = unique("vc");
    server.ip(&[
        "link",
        "add",
        &iface,
        "type",
        "veth",
        "peer",
        "name",
        &peer,
        "netns",
        &client.name,
    ]);
    server.ip(&["addr", "add", "10.198.0.1/24", "dev", &iface]);
    server.ip(&["addr", "add", "fd00:198::1/64", "dev", &iface, "nodad"]);
    server.ip(&["link", "set", &iface, "up"]);
    for a in ["10.198.0.2/24", "10.198.0.3/24"] {
        client.ip(&["addr", "add", a, "dev", &peer]);
    }
    client.ip(&["addr", "add", "fd00:198::2/64", "dev", &peer, "nodad"]);
    client.ip(&["link", "set", &peer, "up"]);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let bpffs = TempBpffs::new();
    let config = agent_config(dir.path(), &log, &bpffs.pins(), &iface);
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = {
        let config = config.clone();
        let log = log.clone();
        server.run(move || {
            pop3_server("[::]:110".parse().unwrap(), log);
            let datapath = jailer::bpf::attach(&config.bpffs, &config.interfaces, config.xdp_mode)
                .expect("attach");
            thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(jailer::run_agent(&config, datapath.bans, async {
                    let _ = stopped.await;
                }))
                .expect("agent");
            })
        })
    };
    thread::sleep(Duration::from_millis(300));

    assert!(
        login(&client, "10.198.0.3", "10.198.0.1:110", "secret").unwrap(),
        "good client logs in"
    );
    for i in 0..3 {
        assert!(
            !login(&client, "10.198.0.2", "10.198.0.1:110", "guess").unwrap(),
            "attempt {i} refused"
        );
    }
    let table = jailer::bpf::XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    let start = Instant::now();
    while table.get("10.198.0.2".parse().unwrap()).unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no ban after 3 failures"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        login(&client, "10.198.0.2", "10.198.0.1:110", "guess").is_err(),
        "banned client is dropped"
    );
    assert!(
        login(&client, "10.198.0.3", "10.198.0.1:110", "secret").unwrap(),
        "other client still logs in"
    );

    // IPv6 attacker, same story.
    for _ in 0..3 {
        let _ = login(&client, "fd00:198::2", "[fd00:198::1]:110", "guess").unwrap();
    }
    let start = Instant::now();
    while table.get("fd00:198::2".parse().unwrap()).unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no IPv6 ban after 3 failures"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        login(&client, "fd00:198::2", "[fd00:198::1]:110", "guess").is_err(),
        "banned v6 client dropped"
    );

    let _ = stop.send(());
    agent.join().unwrap();
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
