//! `jailer regex` against `fail2ban-regex` with fail2ban's stock dovecot and
//! postfix filters, on the same generated 1M-line mail log.
//!
//! `cargo bench -p jailer --bench regex` writes the log to
//! `target/bench/dovecot-postfix.log` (mixed dovecot and postfix traffic,
//! about 6% failures from a few hundred addresses, deterministic), then per
//! filter measures jailer's `scan` (what `jailer regex` runs: the file through
//! the same 1 MiB reader, the filter loaded from
//! `/etc/fail2ban/filter.d/NAME.conf`; best of 3) and runs `fail2ban-regex`
//! on the same file and filter file (its own "processed in" time; slow). It
//! prints lines/s, the speed-up and both matched-line counts, and exits
//! non-zero when the counts differ.
//!
//! Environment: `JAILER_BENCH_LINES` (default 1000000);
//! `JAILER_BENCH_SKIP_FAIL2BAN=1` measures jailer only.

use std::{
    fmt::Write as _,
    fs::{self, File},
    hint::black_box,
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    sync::Arc,
    time::{Duration, Instant},
};

use jailer::{
    cli::scan,
    filter::{Filter, FilterContext},
};

const FAIL2BAN_DIR: &str = "/etc/fail2ban";
const FILTERS: [&str; 2] = ["dovecot", "postfix"];
/// Issue 12's goal for the speed-up over fail2ban-regex.
const GOAL: f64 = 20.0;

/// Failure lines; `{ip}`, `{user}`, `{pid}`, `{sess}` are filled in.
const DOVECOT_FAIL: &[&str] = &[
    "dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, session=<{sess}>",
    "dovecot: imap-login: Aborted login (auth failed, 1 attempts in 17 secs): user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, TLS, session=<{sess}>",
    "dovecot: auth: passwd-file({user},{ip},<{sess}>): unknown user",
    "dovecot: auth-worker({pid}): pam({user},{ip},<{sess}>): pam_authenticate() failed: Authentication failure (password mismatch?)",
    "dovecot: auth: sql({user}@example.org,{ip},<{sess}>): Password mismatch",
    "dovecot: submission-login: Disconnected: Connection closed (auth failed, 1 attempts in 4 secs): user=<{user}>, method=LOGIN, rip={ip}, lip=192.0.2.1, TLS, session=<{sess}>",
];
const DOVECOT_OK: &[&str] = &[
    "dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid={pid}, TLS, session=<{sess}>",
    "dovecot: imap({user})<{pid}><{sess}>: Logged out in=312 out=2845 deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0",
    "dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid={pid}, session=<{sess}>",
    "dovecot: pop3({user})<{pid}><{sess}>: Disconnected: Logged out top=0/0, retr=1/5321, del=1/1, size=5304",
    "dovecot: lmtp({pid}): Connect from local",
    "dovecot: lmtp({user})<{pid}><{sess}>: msgid=<{sess}@mail.example.org>: saved mail to INBOX",
    "dovecot: lmtp({pid}): Disconnect from local: Client has quit the connection (state=READY)",
    "dovecot: imap-login: Disconnected: Connection closed (no auth attempts in 0 secs): user=<>, rip={ip}, lip=192.0.2.1, TLS handshaking: Connection closed, session=<{sess}>",
];
const POSTFIX_FAIL: &[&str] = &[
    "postfix/smtpd[{pid}]: warning: unknown[{ip}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
    "postfix/submission/smtpd[{pid}]: warning: unknown[{ip}]: SASL PLAIN authentication failed:",
    "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 <{user}@example.net>: Relay access denied; from=<{user}@example.com> to=<{user}@example.net> proto=ESMTP helo=<example.com>",
    "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 550 5.1.1 <{user}@example.org>: Recipient address rejected: User unknown in virtual mailbox table; from=<spam@example.com> to=<{user}@example.org> proto=ESMTP helo=<EXAMPLE>",
    "postfix/smtpd[{pid}]: NOQUEUE: reject: EHLO from unknown[{ip}]: 504 5.5.2 <{user}>: Helo command rejected: need fully-qualified hostname; proto=SMTP helo=<{user}>",
    "postfix/smtpd[{pid}]: improper command pipelining after CONNECT from unknown[{ip}]: ",
];
const POSTFIX_OK: &[&str] = &[
    "postfix/smtpd[{pid}]: connect from mail-{pid}.example.com[{ip}]",
    "postfix/smtpd[{pid}]: disconnect from mail-{pid}.example.com[{ip}] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
    "postfix/smtpd[{pid}]: {sess}: client=mail-{pid}.example.com[{ip}]",
    "postfix/cleanup[{pid}]: {sess}: message-id=<{sess}@example.com>",
    "postfix/qmgr[{pid}]: {sess}: from=<{user}@example.com>, size=5321, nrcpt=1 (queue active)",
    "postfix/lmtp[{pid}]: {sess}: to=<{user}@example.org>, relay=mail.example.org[private/dovecot-lmtp], delay=0.18, delays=0.09/0.01/0/0.08, dsn=2.0.0, status=sent (250 2.0.0 <{user}@example.org> Saved)",
    "postfix/qmgr[{pid}]: {sess}: removed",
    "postfix/smtp[{pid}]: {sess}: to=<{user}@example.net>, relay=mx.example.net[{ip}]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {sess})",
    "postfix/anvil[{pid}]: statistics: max connection rate 3/60s for (smtp:{ip}) at Nov 28 10:11:12",
    "postfix/smtpd[{pid}]: lost connection after AUTH from unknown[{ip}]",
];
const USERS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "dave",
    "info",
    "admin",
    "test",
    "sales",
    "postmaster",
];

/// xorshift64*: the same log on every run, for jailer and fail2ban-regex.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

fn fill(template: &str, rng: &mut Rng, attacker: bool) -> String {
    let ip = if attacker {
        // A few hundred attackers, IPv6 among them.
        match rng.below(10) {
            0 => format!("2001:db8:{:x}::{:x}", rng.below(16), rng.below(256)),
            _ => format!("203.0.{}.{}", 113 + rng.below(3), rng.below(100)),
        }
    } else {
        format!("198.51.{}.{}", rng.below(256), rng.below(256))
    };
    template
        .replace("{ip}", &ip)
        .replace("{user}", rng.pick(USERS))
        .replace("{pid}", &(1000 + rng.below(60_000)).to_string())
        .replace("{sess}", &format!("{:016X}", rng.next()))
}

/// `lines` syslog lines, 20 a second from Nov 28 00:00:00 on; about 6%
/// failures, half dovecot, half postfix.
fn generate(lines: usize) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(lines * 150);
    for i in 0..lines {
        let second = i / 20;
        let (day, h, m, s) = (
            28 + second / 86_400 % 2,
            second / 3600 % 24,
            second / 60 % 60,
            second % 60,
        );
        let attacker = rng.below(100) < 6;
        let table = match (rng.below(2) == 0, attacker) {
            (true, true) => DOVECOT_FAIL,
            (true, false) => DOVECOT_OK,
            (false, true) => POSTFIX_FAIL,
            (false, false) => POSTFIX_OK,
        };
        let template = rng.pick(table);
        let msg = fill(template, &mut rng, attacker);
        let _ = writeln!(out, "Nov {day} {h:02}:{m:02}:{s:02} mail {msg}");
    }
    out
}

/// jailer's lines with a failure and best time of three (a fresh matcher
/// each run, as `jailer regex` starts with).
fn jailer_regex(filter: &Arc<Filter>, log: &Path) -> Result<(u64, Duration), String> {
    let mut best = Duration::MAX;
    let mut matched = 0;
    for _ in 0..3 {
        let file = File::open(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let start = Instant::now();
        let summary = scan(filter, BufReader::with_capacity(1 << 20, file), |_, f| {
            black_box(f);
            Ok(())
        })
        .map_err(|e| format!("{}: {e}", log.display()))?;
        best = best.min(start.elapsed());
        matched = summary.matched;
    }
    Ok((matched, best))
}

/// fail2ban-regex's matched lines and its own "processed in" seconds.
fn fail2ban_regex(log: &Path, filter: &str) -> Result<(u64, f64), String> {
    let out = Command::new("fail2ban-regex")
        .args(["--print-no-missed", "--print-no-ignored"])
        .arg(log)
        .arg(filter)
        .output()
        .map_err(|e| format!("fail2ban-regex (apt-get install fail2ban): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let matched = text
        .lines()
        .find_map(|l| l.strip_prefix("Lines: "))
        .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" matched")))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no `Lines:` in fail2ban-regex's output:\n{text}"))?;
    let seconds = text
        .lines()
        .find_map(|l| l.strip_prefix("[processed in "))
        .and_then(|l| l.strip_suffix(" sec]"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no `[processed in` in fail2ban-regex's output:\n{text}"))?;
    Ok((matched, seconds))
}

fn main() -> ExitCode {
    let lines: usize = std::env::var("JAILER_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let skip_fail2ban = std::env::var("JAILER_BENCH_SKIP_FAIL2BAN").is_ok_and(|v| v == "1");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), |root| root.join("target"))
        .join("bench");
    let log = dir.join("dovecot-postfix.log");
    let text = generate(lines);
    if let Err(e) = fs::create_dir_all(&dir).and_then(|()| fs::write(&log, &text)) {
        eprintln!("{}: {e}", log.display());
        return ExitCode::FAILURE;
    }
    println!(
        "log: {} ({lines} lines, {} MiB)",
        log.display(),
        text.len() >> 20
    );
    drop(text);
    println!(
        "{:<8} {:>16} {:>20} {:>9} {:>16} {:>22}",
        "filter",
        "jailer lines/s",
        "fail2ban-regex l/s",
        "speed-up",
        "jailer matched",
        "fail2ban-regex matched"
    );
    let ctx = FilterContext {
        base: &dir,
        fail2ban_dir: Path::new(FAIL2BAN_DIR),
        ports: None,
        journal: false,
    };
    let mut ok = true;
    for name in FILTERS {
        let path = format!("{FAIL2BAN_DIR}/filter.d/{name}.conf");
        let filter = match Filter::load(&path, &ctx) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                eprintln!("{path}: {e} (apt-get install fail2ban)");
                return ExitCode::FAILURE;
            }
        };
        let (matched, best) = match jailer_regex(&filter, &log) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let rate = lines as f64 / best.as_secs_f64();
        let (theirs_rate, speedup, theirs_matched) = if skip_fail2ban {
            ("skipped".to_owned(), "-".to_owned(), "-".to_owned())
        } else {
            match fail2ban_regex(&log, &path) {
                Ok((theirs, seconds)) => {
                    let theirs_rate = lines as f64 / seconds;
                    let speedup = rate / theirs_rate;
                    if theirs != matched {
                        eprintln!(
                            "{name}: MATCHED LINES DIFFER: jailer {matched}, fail2ban-regex {theirs}"
                        );
                        ok = false;
                    }
                    if speedup < GOAL {
                        eprintln!("{name}: speed-up {speedup:.1}x, below the goal of {GOAL}x");
                    }
                    (
                        format!("{theirs_rate:.0}"),
                        format!("{speedup:.1}x"),
                        theirs.to_string(),
                    )
                }
                Err(e) => {
                    eprintln!("{name}: {e}");
                    ok = false;
                    ("error".to_owned(), "-".to_owned(), "-".to_owned())
                }
            }
        };
        println!(
            "{name:<8} {rate:>16.0} {theirs_rate:>20} {speedup:>9} {matched:>16} {theirs_matched:>22}"
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
