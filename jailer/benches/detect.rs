//! Matching throughput and failure-window memory.
//!
//! `cargo bench -p jailer --bench detect` writes the 1M-line workload to
//! `target/bench/mail.log` (for fail2ban-regex, see README), then measures
//! single-thread lines/s of the built-in filter and of a fail2ban-style regex
//! filter, and the RSS growth of tracking 100k failing addresses.

mod workload;

use std::{
    fs,
    hint::black_box,
    io::BufRead as _,
    net::IpAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use jailer::{
    cli::scan,
    filter::{Filter, FilterContext},
    jail::FailureWindow,
};

const LINES: usize = 1_000_000;

fn rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn throughput(name: &str, filter: &Arc<Filter>, log: &str) {
    let mut best = f64::MAX;
    let mut matched = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let s = scan(filter, log.as_bytes(), |_, failure| {
            black_box(failure);
            Ok(())
        })
        .unwrap();
        best = best.min(start.elapsed().as_secs_f64());
        matched = s.matched;
    }
    println!(
        "{name:<28} {:>12.0} lines/s   ({} lines, {matched} matched, best of 5: {:.3} s)",
        LINES as f64 / best,
        LINES,
        best
    );
}

fn main() {
    let log = workload::mail_log(LINES, 20_000);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("mail.log"), &log).unwrap();
    let f2b_filter = "[Definition]\nfailregex = vchkpw-\\w+: (?:vpopmail user not found|password fail) .*:<HOST>$\n";
    fs::write(dir.join("vpopmail-filter.conf"), f2b_filter).unwrap();
    println!(
        "workload: {} ({} lines, {} MiB)",
        dir.join("mail.log").display(),
        LINES,
        log.len() >> 20
    );

    let ctx = FilterContext {
        base: &dir,
        fail2ban_dir: Path::new("/etc/fail2ban"),
        ports: None,
        journal: false,
    };
    let builtin = Arc::new(Filter::load("vpopmail", &ctx).unwrap());
    throughput("built-in vpopmail filter", &builtin, &log);
    let regex = Arc::new(Filter::load("vpopmail-filter.conf", &ctx).unwrap());
    throughput("fail2ban-style failregex", &regex, &log);

    // Same through the line reader `jailer regex` uses on a file.
    let start = Instant::now();
    let file = fs::File::open(dir.join("mail.log")).unwrap();
    let n = std::io::BufReader::with_capacity(1 << 20, file)
        .lines()
        .count();
    println!(
        "read-only baseline            {:>12.0} lines/s",
        n as f64 / start.elapsed().as_secs_f64()
    );

    // Memory: 100k distinct failing addresses (one failure each) in a window.
    drop(log);
    let before = rss_kib();
    let mut w = FailureWindow::new(3, Duration::from_secs(600), 1_000_000);
    let now = SystemTime::now();
    for i in 0..100_000u32 {
        w.record(IpAddr::V4((0xCB00_0000 | i).into()), now, now);
    }
    let after = rss_kib();
    println!(
        "failure windows, 100k addresses: +{} KiB RSS ({} bytes/address); tracked {}",
        after.saturating_sub(before),
        after.saturating_sub(before) * 1024 / 100_000,
        w.len()
    );
}
