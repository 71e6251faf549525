//! Following a log written at 50,000 lines/s for 30 s: agent CPU, ban
//! latency (append of the failure that crosses maxretry -> map write), and
//! how long after the last line the last ban lands.
//!
//! `cargo bench -p jailer --bench follow [-- SECONDS RATE]`. As root the bans
//! go into real pinned BPF maps (a temp bpffs); otherwise into memory.

mod workload;

use std::{
    collections::HashMap,
    fs::{self, OpenOptions},
    io::Write,
    net::IpAddr,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use jailer::{
    ban::{Ban, Listed, PortSet, Target},
    config::Config,
    kernel::{BanTable, BpfError, MemBanTable, XdpBanTable},
};
use tokio::sync::oneshot;

/// Records when each ban reached the table.
struct Recording<T> {
    inner: T,
    seen: Arc<Mutex<HashMap<IpAddr, Instant>>>,
}

impl<T: BanTable> BanTable for Recording<T> {
    fn insert(&mut self, target: Target, ban: &Ban) -> Result<(), BpfError> {
        self.inner.insert(target, ban)?;
        self.seen
            .lock()
            .unwrap()
            .entry(target.addr())
            .or_insert_with(Instant::now);
        Ok(())
    }
    fn entry(&self, target: Target) -> Result<Option<Listed>, BpfError> {
        self.inner.entry(target)
    }
    fn remove(&mut self, target: Target) -> Result<bool, BpfError> {
        self.inner.remove(target)
    }
    fn list(&self) -> Result<Vec<Listed>, BpfError> {
        self.inner.list()
    }
    fn set_monitor(&mut self, on: bool) -> Result<(), BpfError> {
        self.inner.set_monitor(on)
    }
    fn monitor(&self) -> Result<bool, BpfError> {
        self.inner.monitor()
    }
    fn protect(&mut self, ports: &PortSet) -> Result<(), BpfError> {
        self.inner.protect(ports)
    }
}

/// CPU time (user+sys) of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> Duration {
    let tick = 100.0; // USER_HZ
    let mut total = 0.0;
    for task in fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        total += (ut + st) / tick;
    }
    Duration::from_secs_f64(total)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let seconds: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(30);
    let rate: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    fs::write(&log, "").unwrap();
    let text = format!(
        "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n",
        log.display()
    );
    let mut config = Config::parse(&dir.path().join("jailer.toml"), &text).unwrap();
    config.state_dir = dir.path().join("state");

    let seen = Arc::new(Mutex::new(HashMap::new()));
    let root = nix::unistd::geteuid().is_root();
    let bpffs = dir.path().join("bpffs");
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = {
        let seen = seen.clone();
        let bpffs = bpffs.clone();
        let config = config.clone();
        thread::Builder::new()
            .name("agent".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let stopped = async {
                    let _ = stopped.await;
                };
                if root {
                    fs::create_dir_all(&bpffs).unwrap();
                    nix::mount::mount(
                        Some("bpffs"),
                        &bpffs,
                        Some("bpf"),
                        nix::mount::MsFlags::empty(),
                        None::<&str>,
                    )
                    .unwrap();
                    let (table, _) = XdpBanTable::open(&bpffs.join("jailer")).unwrap();
                    rt.block_on(jailer::run_agent(
                        &config,
                        Recording { inner: table, seen },
                        stopped,
                    ))
                    .unwrap();
                } else {
                    let table = Recording {
                        inner: MemBanTable::default(),
                        seen,
                    };
                    rt.block_on(jailer::run_agent(&config, table, stopped))
                        .unwrap();
                }
            })
            .unwrap()
    };
    // The agent thread and notify's inotify thread are the agent's CPU.
    thread::sleep(Duration::from_millis(500));
    let cpu_before = thread_cpu("notify-rs") + thread_cpu("agent");

    // Writer: `rate` lines/s in 10 ms slices; 5% failures; each attacker
    // fails exactly 3 times, spread over the run, so every one is banned.
    let mut rng = workload::Rng::new(7);
    let slices = seconds * 100;
    let per_slice = (rate / 100) as usize;
    let mut pending: Vec<(u32, u8)> = Vec::new();
    let mut next_attacker = 0u32;
    let mut trigger: HashMap<IpAddr, Instant> = HashMap::new();
    let mut file = OpenOptions::new().append(true).open(&log).unwrap();
    let start = Instant::now();
    let mut lines = 0u64;
    let mut last_line = start;
    for slice in 0..slices {
        let mut buf = String::with_capacity(per_slice * 120);
        let mut triggered = Vec::new();
        for _ in 0..per_slice {
            let attacker = if rng.next() % 100 < 5 {
                if pending.len() < 64 || rng.next().is_multiple_of(2) {
                    pending.push((next_attacker, 0));
                    next_attacker += 1;
                }
                let i = (rng.next() % pending.len() as u64) as usize;
                pending[i].1 += 1;
                let (n, count) = pending[i];
                if count == 3 {
                    pending.swap_remove(i);
                    triggered.push(n);
                }
                Some(n)
            } else {
                None
            };
            workload::line(&mut rng, &mut buf, 0, attacker);
        }
        // Stamp lines "now" so findtime counts them.
        let stamp = chrono::Local::now().format("%b %e %H:%M:%S").to_string();
        let buf = buf
            .lines()
            .map(|l| format!("{stamp}{}\n", &l[15..]))
            .collect::<String>();
        file.write_all(buf.as_bytes()).unwrap();
        let t = Instant::now();
        for n in triggered {
            trigger.insert(
                IpAddr::V4(
                    u32::from_be_bytes([203, (n >> 16) as u8, (n >> 8) as u8, n as u8]).into(),
                ),
                t,
            );
        }
        lines += per_slice as u64;
        last_line = t;
        let due = start + Duration::from_millis(10 * (u64::from(slice) + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    let wall = start.elapsed();
    // Wait (bounded) for every expected ban.
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < trigger.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let cpu = thread_cpu("notify-rs") + thread_cpu("agent") - cpu_before;
    let seen = seen.lock().unwrap().clone();
    let mut lat: Vec<Duration> = trigger
        .iter()
        .filter_map(|(ip, t)| seen.get(ip).map(|s| s.saturating_duration_since(*t)))
        .collect();
    lat.sort();
    let last_ban = seen.values().max().copied().unwrap_or(last_line);
    println!(
        "follow: {lines} lines in {:.1} s ({:.0} lines/s), table: {}",
        wall.as_secs_f64(),
        lines as f64 / wall.as_secs_f64(),
        if root { "pinned BPF maps" } else { "memory" }
    );
    println!(
        "agent CPU: {:.2} s = {:.1}% of one core",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    println!(
        "bans: {} expected, {} in the table",
        trigger.len(),
        lat.len()
    );
    if !lat.is_empty() {
        println!(
            "ban latency (append -> map write): p50 {:?}  p99 {:?}  max {:?}",
            pct(&lat, 0.50),
            pct(&lat, 0.99),
            lat[lat.len() - 1]
        );
    }
    println!(
        "last ban {:?} after the last line",
        last_ban.saturating_duration_since(last_line)
    );
    let _ = stop.send(());
    agent.join().unwrap();
    if root {
        let _ = nix::mount::umount2(&bpffs, nix::mount::MntFlags::MNT_DETACH);
    }
}
