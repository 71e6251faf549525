//! A fleet in a box: real nats-server processes (Debian's package: JetStream
//! store in a temp dir, a password user) on the loopback of a "hub" network
//! namespace the test creates, and members — each a jailer agent with its
//! own interface (a veth pair in its own namespaces, XDP attached there),
//! bpffs directory and state_dir. The agents' threads live in the hub, so
//! they reach the servers on 127.0.0.1 and nothing else. Everything is
//! stopped, killed and removed on drop, and every wait is bounded.

use std::{
    fmt::Write as _,
    fs,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use jailer::{
    AgentOptions,
    agent::{
        FleetReport,
        control::{self, Request, Response},
    },
    ban::Target,
    config::Config,
    kernel::{self, BanTable, XdpBanTable},
};

use crate::{Agent, NetNs, Pair, TempBpffs, serve, wait_for};

pub const USER: &str = "jailer";
pub const PASSWORD: &str = "s3cret";
/// The `n` of every member's [`Pair`]: the same client addresses
/// (`10.77.0.2`, `10.77.0.3`) exist behind every member, so one ban drops
/// the same attacker everywhere.
pub const NET: u8 = 77;
/// The client addresses behind each member.
pub const ATTACKER: &str = "10.77.0.2";
pub const BYSTANDER: &str = "10.77.0.3";

fn nats_server_binary() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"));
    assert!(
        path.exists(),
        "{} not found: `cargo xtask setup` installs nats-server (Debian package), or set NATS_SERVER",
        path.display()
    );
    path
}

/// The namespace where the servers run and the agents' threads live.
pub struct Hub {
    pub ns: Arc<NetNs>,
    pub dir: tempfile::TempDir,
    /// The jailer binary members' command lines run
    /// (`env!("CARGO_BIN_EXE_jailer-under-test")`).
    jailer: PathBuf,
}

impl Hub {
    pub fn new(jailer: &str) -> Self {
        // The agents' logs, shown for a failing test (RUST_LOG=debug for more).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
        Self {
            ns: Arc::new(NetNs::new("hub")),
            dir: tempfile::tempdir().expect("tempdir"),
            jailer: jailer.into(),
        }
    }

    /// A standalone server on 127.0.0.1:`port` with the test user.
    pub fn server(&self, name: &str, port: u16) -> NatsServer {
        let mut s = NatsServer::configure(self, name, port, String::new());
        s.start();
        s
    }

    /// A standalone server that speaks TLS only and verifies client
    /// certificates signed by `pki`'s CA.
    pub fn tls_server(&self, name: &str, port: u16, pki: &Pki) -> NatsServer {
        let extra = format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        );
        let mut s = NatsServer::configure(self, name, port, extra);
        s.start();
        s
    }

    /// A three-node JetStream cluster (client ports 4222-4224).
    pub fn cluster(&self) -> Vec<NatsServer> {
        let routes: Vec<String> = (0..3)
            .map(|i| format!("\"nats-route://127.0.0.1:{}\"", 6222 + i))
            .collect();
        let mut nodes: Vec<NatsServer> = (0..3)
            .map(|i| {
                let extra = format!(
                    "cluster {{\n  name: jailer\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    6222 + i,
                    routes.join(", ")
                );
                NatsServer::configure(self, &format!("n{}", i + 1), 4222 + i, extra)
            })
            .collect();
        // Started together: JetStream needs a quorum to come up.
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_listening();
        }
        nodes
    }
}

/// One nats-server in the hub. Keeps its port and store across
/// `kill`/`start`.
pub struct NatsServer {
    pub name: String,
    pub port: u16,
    ns: Arc<NetNs>,
    dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    fn configure(hub: &Hub, name: &str, port: u16, extra: String) -> Self {
        let dir = hub.dir.path().join(name);
        fs::create_dir_all(&dir).expect("server dir");
        let mut conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
             jetstream {{ store_dir: \"{}\" }}\n\
             authorization {{ users = [ {{ user: \"{USER}\", password: \"{PASSWORD}\" }} ] }}\n",
            dir.join("js").display(),
        );
        conf.push_str(&extra);
        let path = dir.join("nats.conf");
        fs::write(&path, conf).expect("write nats.conf");
        Self {
            name: name.to_owned(),
            port,
            ns: hub.ns.clone(),
            dir,
            conf: path,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again) and waits until it accepts connections.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_listening();
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("server log");
        // `ip netns exec` enters the hub and execs the server: the child's
        // pid is the server's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(nats_server_binary())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    fn wait_listening(&mut self) {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self
                .ns
                .run(move || TcpStream::connect(("127.0.0.1", port)).is_ok())
            {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{} exited at start ({status}):\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening after 10 s:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (SIGKILL: a crash, not a clean stop) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a member's config says beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct MemberSetup {
    /// `[fleet]` lines added (`accept_from = [...]`, `share = false`).
    pub fleet_extra: String,
    /// Top-level lines (`ignoreip = [...]`).
    pub top_extra: String,
    /// A vpopmail jail on `mail.log` with this maxretry, and whether it
    /// counts the fleet's failures.
    pub jail: Option<(u32, bool)>,
    /// Overrides the password (wrong credentials).
    pub password: Option<String>,
}

/// One jailer server of the fleet.
pub struct Member {
    pub name: String,
    pub pair: Pair,
    pub bpffs: TempBpffs,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Config,
    ns: Arc<NetNs>,
    jailer: PathBuf,
    agent: Option<Agent>,
}

impl Member {
    /// Writes the member's config (servers `urls`) and starts its agent.
    pub fn start(hub: &Hub, name: &str, urls: &[String], setup: &MemberSetup) -> Self {
        let mut m = Self::configure(hub, name, urls, setup);
        m.start_agent();
        m
    }

    /// Writes the member's config without starting it.
    pub fn configure(hub: &Hub, name: &str, urls: &[String], setup: &MemberSetup) -> Self {
        let pair = Pair::new(NET);
        pair.server.run(|| serve("0.0.0.0:110".parse().unwrap()));
        let bpffs = TempBpffs::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = format!(
            "interface = \"{iface}\"\nxdp_mode = \"generic\"\nbpffs = \"{bpffs}\"\nstate_dir = \"{state}\"\n{top}\n",
            iface = pair.iface,
            bpffs = bpffs.pins().display(),
            state = dir.path().join("state").display(),
            top = setup.top_extra,
        );
        if let Some((maxretry, shared)) = setup.jail {
            let _ = write!(
                text,
                "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nport = [\"pop3\"]\n\
                 maxretry = {maxretry}\nfindtime = \"10m\"\nbantime = \"1h\"\nshared_failures = {shared}\n",
                dir.path().join("mail.log").display()
            );
            fs::write(dir.path().join("mail.log"), "").expect("mail.log");
        }
        let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        let _ = write!(
            text,
            "[fleet]\nurl = [{}]\nname = \"{name}\"\nuser = \"{USER}\"\npassword = \"{}\"\n{}\n",
            urls.join(", "),
            setup.password.as_deref().unwrap_or(PASSWORD),
            setup.fleet_extra
        );
        let config_path = dir.path().join("jailer.toml");
        fs::write(&config_path, text).expect("write jailer.toml");
        // Checked where its interface is.
        let config = {
            let path = config_path.clone();
            pair.server.run(move || Config::load_for_run(&path))
        }
        .unwrap_or_else(|e| panic!("{name}'s config: {}", jailer::error::Chain(&e)));
        Self {
            name: name.to_owned(),
            pair,
            bpffs,
            dir,
            config_path,
            config,
            ns: hub.ns.clone(),
            jailer: hub.jailer.clone(),
            agent: None,
        }
    }

    /// Starts the agent: XDP attached in the member's namespace, the agent
    /// on a thread in the hub.
    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "{} is running", self.name);
        let config = self.config.clone();
        let datapath = self.pair.server.run(move || {
            kernel::attach(
                &config.bpffs,
                &config.interfaces,
                config.xdp_mode,
                config.max_bans,
            )
            .expect("attach")
        });
        let config = self.config.clone();
        let config_path = self.config_path.clone();
        self.agent = Some(self.ns.run(move || {
            Agent::start_with(move || {
                let options = AgentOptions {
                    config_path: Some(config_path),
                    attached: datapath.attached,
                    ..AgentOptions::default()
                };
                (config, datapath.bans, options)
            })
        }));
    }

    /// Stops the agent (a clean stop; the maps and the link stay pinned).
    pub fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().expect("the agent stopped cleanly");
        }
    }

    pub fn is_running(&self) -> bool {
        self.agent.is_some()
    }

    /// Runs the jailer command line with this member's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(&self.jailer)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .expect("run jailer");
        assert!(
            out.status.success(),
            "{} `jailer {}` failed: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `jailer ban TARGET` for an hour.
    pub fn ban(&self, target: &str) {
        self.cli(&["ban", target, "--time", "1h"]);
    }

    /// The ban table, opened from the pins.
    pub fn table(&self) -> XdpBanTable {
        XdpBanTable::open_existing(&self.bpffs.pins()).expect("open the pinned maps")
    }

    /// Whether a ban in force on `target` is in this member's kernel map.
    pub fn enforces(&self, table: &XdpBanTable, target: &str) -> bool {
        let target: Target = target.parse().expect("a target");
        table
            .get(target)
            .expect("read the ban map")
            .is_some_and(|b| b.expiry.is_active(std::time::SystemTime::now()))
    }

    /// Waits until this member's map does (or does not) hold `target`.
    pub fn wait_enforces(&self, target: &str, wanted: bool, limit: Duration) {
        let table = self.table();
        wait_for(
            &format!(
                "{} to {} {target}",
                self.name,
                if wanted { "enforce" } else { "lift" }
            ),
            limit,
            || self.enforces(&table, target) == wanted,
        );
    }

    /// Whether a TCP connection from `src` (behind this member) to its POP3
    /// port gets through, within 300 ms.
    pub fn reaches_pop3(&self, src: &str) -> bool {
        let src = src.parse().expect("an address");
        let dst = "10.77.0.1:110".parse().expect("an address");
        self.pair
            .client
            .run(move || crate::connect_from(src, dst, Duration::from_millis(300)).is_ok())
    }

    /// The agent's fleet report.
    pub fn fleet(&self) -> FleetReport {
        match control::ask(&self.config.state_dir, &Request::Fleet) {
            Ok(Some(Response::Fleet { report })) => report,
            other => panic!("{}: no fleet report: {other:?}", self.name),
        }
    }

    /// Waits until the member is connected and in sync with the bucket.
    pub fn wait_synced(&self, limit: Duration) {
        wait_for(&format!("{} to be in sync", self.name), limit, || {
            let r = self.fleet();
            r.state == "connected" && r.synced
        });
    }

    /// Appends a vchkpw failure from `ip` to this member's mail log.
    pub fn failure(&self, ip: &str) {
        crate::append_failure(&self.dir.path().join("mail.log"), ip);
    }

    /// The ban journal's lines.
    pub fn journal(&self) -> String {
        fs::read_to_string(self.config.state_dir.join(jailer::state::JOURNAL)).unwrap_or_default()
    }

    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // The agent first (it holds the maps), then the pins and namespaces.
        self.agent.take();
    }
}

/// A private CA, a server certificate for 127.0.0.1 and a client
/// certificate, made with the openssl command.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let dir = dir.join("pki");
        fs::create_dir_all(&dir).expect("pki dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl (`cargo xtask setup` installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &key,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=jailer test CA",
            ],
        ]
        .concat());
        for (who, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "subjectAltName=DNS:mx1\nextendedKeyUsage=clientAuth\n",
            ),
        ] {
            let extfile = format!("{who}.ext");
            fs::write(dir.join(&extfile), ext).expect("ext file");
            run(&[
                &["req"][..],
                &key,
                &[
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "2",
                "-extfile",
                &extfile,
            ]);
        }
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// The `tls = {...}` line of a member that trusts the CA and shows its
    /// client certificate.
    pub fn member_tls(&self) -> String {
        format!(
            "tls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}",
            self.ca.display(),
            self.client_cert.display(),
            self.client_key.display()
        )
    }
}
