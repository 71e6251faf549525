//! Helpers for the root-only tests: privilege checks, network namespaces with
//! RAII cleanup, a private bpffs, and frame builders.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use nix::sched::{CloneFlags, setns};

/// Returns early (skipping the test loudly) when not root.
#[macro_export]
macro_rules! require_root {
    ($name:expr) => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP {}: needs root; run `sudo -E cargo xtask test`", $name);
            return;
        }
    };
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name unique to this process and call, short enough for an interface.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted on drop (with everything in it).
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> Self {
        let name = unique(&format!("jt{prefix}"));
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets made
    /// there stay in the namespace when used from elsewhere.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = PathBuf::from("/run/netns").join(&self.name);
        thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread panicked")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A bpffs mounted on a temp dir, unmounted on drop.
pub struct TempBpffs {
    dir: tempfile::TempDir,
}

impl TempBpffs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        nix::mount::mount(
            Some("bpffs"),
            dir.path(),
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount bpffs");
        Self { dir }
    }

    /// The directory jailer pins into (below the mount, like /sys/fs/bpf/jailer).
    pub fn pins(&self) -> PathBuf {
        self.dir.path().join("jailer")
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TempBpffs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempBpffs {
    fn drop(&mut self) {
        let _ = jailer::bpf::detach(&self.pins());
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Ethernet + IPv4 (`ihl` words, options zero-filled) + TCP to `dport`.
pub fn tcp4(src: [u8; 4], dport: u16, ihl: u8, frag_off: u16) -> Vec<u8> {
    let mut f = eth(0x0800);
    let hl = usize::from(ihl) * 4;
    let mut ip = vec![0u8; hl];
    ip[0] = 0x40 | ihl;
    ip[2..4].copy_from_slice(&((hl + 20) as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&[10, 0, 0, 1]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp(dport));
    f
}

/// Ethernet + IPv4 + UDP to `dport`.
pub fn udp4(src: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = tcp4(src, dport, 5, 0);
    f[14 + 9] = 17;
    f
}

/// Ethernet + IPv6 + TCP to `dport`.
pub fn tcp6(src: [u8; 16], dport: u16) -> Vec<u8> {
    let mut f = eth(0x86DD);
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&20u16.to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[39] = 1;
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp(dport));
    f
}

fn eth(ether_type: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

fn tcp(dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t
}

/// A TCP server in the current namespace answering `+OK` to every line.
pub fn serve(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).expect("bind");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut s = stream;
                let _ = s.write_all(b"+OK ready\r\n");
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(b"+OK\r\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Connects from `src` to `dst` within `timeout`; returns the stream.
pub fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let domain = if dst.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(src, 0).into())?;
    sock.connect_timeout(&dst.into(), timeout)?;
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(timeout))?;
    let mut greeting = [0u8; 64];
    let n = (&stream).read(&mut greeting)?;
    if n == 0 {
        return Err(std::io::Error::other("closed before greeting"));
    }
    Ok(stream)
}

/// Sends a line and waits for the reply.
pub fn exchange(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(b"NOOP\r\n")?;
    let mut buf = [0u8; 64];
    match stream.read(&mut buf)? {
        0 => Err(std::io::Error::other("closed")),
        _ => Ok(()),
    }
}

/// A POP3 server that accepts `PASS secret` and logs every other password
/// as vchkpw does, with the client's address at the end of the line.
pub fn pop3_server(addr: SocketAddr, log: PathBuf) {
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
pub fn login(client: &NetNs, src: &str, dst: &str, pass: &str) -> std::io::Result<bool> {
    let src: IpAddr = src.parse().unwrap();
    let dst: SocketAddr = dst.parse().unwrap();
    let pass = pass.to_owned();
    client.run(move || {
        let stream = connect_from(src, dst, Duration::from_millis(700))?;
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

/// Two namespaces joined by a veth pair: the server side has `10.N.0.1` and
/// `fd00:N::1`, the client side `10.N.0.2`, `10.N.0.3`, `fd00:N::2`, `fd00:N::3`.
pub struct Pair {
    pub server: NetNs,
    pub client: NetNs,
    /// The server-side interface (where XDP goes).
    pub iface: String,
    /// The client-side end.
    pub peer: String,
    n: u8,
}

impl Pair {
    pub fn new(n: u8) -> Self {
        let server = NetNs::new("s");
        let client = NetNs::new("c");
        let iface = unique("vs");
        let peer = unique("vc");
        let pair = Self {
            server,
            client,
            iface,
            peer,
            n,
        };
        pair.link();
        pair
    }

    /// Deletes the veth pair and makes it again, same names and addresses
    /// (an interface removed and re-added).
    pub fn relink(&self) {
        self.server.ip(&["link", "del", &self.iface]);
        self.link();
    }

    fn link(&self) {
        let (server, client, iface, peer, n) =
            (&self.server, &self.client, &self.iface, &self.peer, self.n);
        server.ip(&[
            "link",
            "add",
            iface,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            &client.name,
        ]);
        server.ip(&["addr", "add", &format!("10.{n}.0.1/24"), "dev", iface]);
        server.ip(&[
            "addr",
            "add",
            &format!("fd00:{n}::1/64"),
            "dev",
            iface,
            "nodad",
        ]);
        server.ip(&["link", "set", iface, "up"]);
        for host in [2, 3] {
            client.ip(&["addr", "add", &format!("10.{n}.0.{host}/24"), "dev", peer]);
            client.ip(&[
                "addr",
                "add",
                &format!("fd00:{n}::{host}/64"),
                "dev",
                peer,
                "nodad",
            ]);
        }
        client.ip(&["link", "set", peer, "up"]);
    }
}

/// An address as the host network the ban tables are keyed by.
pub fn host(addr: &str) -> ipnet::IpNet {
    ipnet::IpNet::from(addr.parse::<IpAddr>().expect("an address"))
}

/// Inserts VLAN tags (each `tpid`, TCI 0x0064) after the MAC addresses.
pub fn with_vlans(frame: &[u8], tpids: &[u16]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for tpid in tpids {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&0x0064u16.to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// An IPv6 extension header for [`tcp6_ext`].
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    /// Hop-by-hop options, `n` extra 8-octet units.
    HopByHop(u8),
    /// Routing header, `n` extra units.
    Routing(u8),
    /// Destination options, `n` extra units.
    DestOpts(u8),
    /// Fragment header with this fragment offset (8-octet units).
    Fragment(u16),
}

/// Ethernet + IPv6 + `exts` + TCP to `dport`.
pub fn tcp6_ext(src: [u8; 16], dport: u16, exts: &[Ext]) -> Vec<u8> {
    let base = tcp6(src, dport);
    let (head, tcp_hdr) = base.split_at(14 + 40);
    let mut f = head.to_vec();
    let number = |e: &Ext| match e {
        Ext::HopByHop(_) => 0u8,
        Ext::Routing(_) => 43,
        Ext::DestOpts(_) => 60,
        Ext::Fragment(_) => 44,
    };
    f[14 + 6] = exts.first().map_or(6, number);
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(6, number);
        match *e {
            Ext::HopByHop(n) | Ext::Routing(n) | Ext::DestOpts(n) => {
                let mut h = vec![0u8; (usize::from(n) + 1) * 8];
                h[0] = next;
                h[1] = n;
                f.extend_from_slice(&h);
            }
            Ext::Fragment(offset) => {
                f.extend_from_slice(&[next, 0]);
                f.extend_from_slice(&((offset << 3) | 1).to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 42]);
            }
        }
    }
    f.extend_from_slice(tcp_hdr);
    let payload = (f.len() - 14 - 40) as u16;
    f[14 + 4..14 + 6].copy_from_slice(&payload.to_be_bytes());
    f
}

/// The agent as `jailer run` starts it (XDP attached, reload and interface
/// tracking on), inside a namespace, on its own thread; stopped on drop or
/// with [`NsAgent::stop`].
pub struct NsAgent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<Result<(), jailer::error::Error>>>,
}

impl NsAgent {
    /// Attaches per `config` inside `ns` and runs the agent; returns once its
    /// control socket answers.
    pub fn start(
        ns: &NetNs,
        config: &jailer::config::Config,
        config_path: Option<PathBuf>,
    ) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = config.clone();
        let state_dir = config.state_dir.clone();
        let thread = ns.run(move || {
            let datapath = jailer::bpf::attach(
                &config.bpffs,
                &config.interfaces,
                config.xdp_mode,
                config.max_bans,
            )
            .expect("attach");
            let options = jailer::AgentOptions {
                config_path,
                manage_xdp: true,
                attached: datapath.attached,
            };
            // Threads inherit the namespace of the thread that makes them.
            thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(jailer::run_agent_with(
                    &config,
                    datapath.bans,
                    async {
                        let _ = stopped.await;
                    },
                    options,
                ))
            })
        });
        let agent = Self {
            stop: Some(stop),
            thread: Some(thread),
        };
        wait_for("the agent's control socket", Duration::from_secs(5), || {
            jailer::control::socket_path(&state_dir).exists()
        });
        agent
    }

    /// Stops the agent and returns how it ended.
    pub fn stop(mut self) -> Result<(), jailer::error::Error> {
        self.finish().unwrap_or(Ok(()))
    }

    fn finish(&mut self) -> Option<Result<(), jailer::error::Error>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread
            .take()
            .map(|t| t.join().expect("agent thread panicked"))
    }
}

impl Drop for NsAgent {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Waits (bounded by `limit`) until `cond` holds; panics naming `what`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The XDP object loaded (maps unpinned) and its program through the verifier.
pub fn load_xdp() -> aya::Ebpf {
    let mut ebpf = aya::EbpfLoader::new()
        .load(jailer::bpf::XDP_OBJECT)
        .expect("load object");
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(jailer_common::PROGRAM_NAME)
        .expect("program")
        .try_into()
        .expect("an XDP program");
    prog.load().expect("verifier accepts the program");
    ebpf
}

/// One BPF_PROG_TEST_RUN of `frame`: the XDP action.
pub fn xdp_verdict(ebpf: &aya::Ebpf, frame: &[u8]) -> u32 {
    use aya::programs::TestRun as _;
    let prog: &aya::programs::Xdp = ebpf
        .program(jailer_common::PROGRAM_NAME)
        .expect("program")
        .try_into()
        .expect("an XDP program");
    let mut opts = aya::programs::TestRunOptions::new();
    opts.data_in = Some(frame);
    prog.test_run(opts).expect("test run").return_value
}

/// Appends a vchkpw `password fail` line from `ip`, stamped now.
pub fn append_failure(log: &Path, ip: &str) {
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    writeln!(
        f,
        "{stamp} mail vpopmail[1]: vchkpw-pop3: password fail bob@example.com:{ip}"
    )
    .expect("write log");
}
