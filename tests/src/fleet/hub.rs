//! The nats-server side of the fleet: the hub namespace and the server
//! processes in it, standalone, TLS-only or a three-node cluster.

use std::{
    fs,
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{PASSWORD, Pki, USER};
use crate::NetNs;

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
    pub(super) jailer: PathBuf,
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
