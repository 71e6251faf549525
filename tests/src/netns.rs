//! Network namespaces and veth pairs, removed on drop (even when a test
//! fails), with names unique to the process so two runs cannot collide.

use std::{
    fs::File,
    os::fd::AsFd,
    path::PathBuf,
    process::{Child, Command},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) {
    sh_output(args);
}

/// [`sh`], returning the command's output.
pub fn sh_output(args: &[&str]) -> std::process::Output {
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
    out
}

/// Waits up to `grace` for `child` to exit on its own, then kills it
/// (SIGKILL); reaps it either way, so no zombie is left behind.
pub fn reap(child: &mut Child, grace: Duration) {
    let start = Instant::now();
    while matches!(child.try_wait(), Ok(None)) {
        if start.elapsed() >= grace {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
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
        self.unlink();
        self.link();
    }

    /// Deletes the veth pair (both ends): the interface is gone.
    pub fn unlink(&self) {
        self.server.ip(&["link", "del", &self.iface]);
    }

    /// Makes the veth pair, its addresses, and brings both ends up.
    pub fn link(&self) {
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
