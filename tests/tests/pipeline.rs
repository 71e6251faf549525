//! The whole agent without privileges: a temp log feeding the agent with an
//! in-memory ban table; rotation, restart and reboot restore included.
//! Synchronised on the agent's readiness and its own status, never on sleeps.

use std::{
    collections::BTreeSet,
    fs::{self, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use jailer::{
    AgentOptions,
    agent::{
        control::{self, Request, Response},
        status::Status,
    },
    config::Config,
    filter::{Verdict, Vpopmail},
    kernel::MemBanTable,
};
use jailer_tests::{Agent, JournalRemote, append, failure_line, now_stamp};

const FIXTURE: &str = include_str!("fixtures/mail.log");

fn config(dir: &Path, log: &Path) -> Config {
    let text = format!(
        "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\nignoreip = [\"192.0.2.0/24\"]\n",
        log.display()
    );
    let mut c = Config::parse(&dir.join("jailer.toml"), &text).unwrap();
    c.state_dir = dir.join("state");
    c
}

fn banned(table: &MemBanTable, ip: &str) -> bool {
    table.ban_on(ip.parse().unwrap()).is_some()
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    jailer_tests::wait_for(what, Duration::from_secs(10), cond);
}

/// The running agent's own status.
fn status(config: &Config) -> Status {
    match control::ask(&config.state_dir, &Request::Status) {
        Ok(Some(Response::Status { status })) => status,
        other => panic!("no status from the agent: {other:?}"),
    }
}

/// Waits until the agent has read `lines` lines (all logs together).
fn wait_read(config: &Config, lines: u64) {
    let mut read = 0;
    let start = Instant::now();
    while read < lines {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {lines} lines read: {read} read"
        );
        thread::sleep(Duration::from_millis(10));
        read = status(config).logs.iter().map(|l| l.lines).sum::<u64>();
    }
}

fn total_failed(config: &Config) -> u64 {
    status(config).jails[0].total_failed.unwrap_or(0)
}

fn failure(ip: &str) -> String {
    failure_line(ip)
}

#[test]
fn fixture_lines_match_as_documented() {
    let f = Vpopmail::default();
    let got: Vec<Option<String>> = FIXTURE
        .lines()
        .map(|l| match f.check(l) {
            Verdict::Failure(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    let want = [
        None,
        Some("203.0.113.7"),
        Some("203.0.113.7"),
        Some("203.0.113.7"),
        Some("2001:db8::25"),
        None, // raw IPv6 after a raw name: ambiguous, ignored
        Some("203.0.113.8"),
        Some("203.0.113.9"),
        Some("203.0.113.10"),
        Some("203.0.113.11"),
        Some("203.0.113.12"),
        None,
        None,
        None,
        Some("203.0.113.13"),
        None,
    ];
    let want: Vec<Option<String>> = want.iter().map(|w| w.map(str::to_owned)).collect();
    assert_eq!(got, want);
}

#[test]
fn follows_bans_rotates_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let log: PathBuf = dir.path().join("mail.log");
    append(&log, FIXTURE); // history before the first start is not read
    let table = MemBanTable::default();
    let agent = Agent::start(config(dir.path(), &log), table.clone());
    assert!(
        table.bans().is_empty(),
        "old lines are skipped on first run"
    );

    for _ in 0..3 {
        append(&log, &failure("203.0.113.7"));
    }
    for _ in 0..5 {
        append(&log, &failure("192.0.2.50")); // ignoreip
    }
    append(&log, &failure("203.0.113.8"));
    append(&log, &failure("203.0.113.8"));
    wait_for("203.0.113.7 banned", || banned(&table, "203.0.113.7"));
    let v = table.ban_on("203.0.113.7".parse().unwrap()).unwrap();
    assert!(v.ports.contains(110) && !v.ports.contains(25));

    // Rotation by rename + create: the third failure of .8 is in the new file.
    fs::rename(&log, dir.path().join("mail.log.1")).unwrap();
    append(&log, &failure("203.0.113.8"));
    wait_for("203.0.113.8 banned across rotation", || {
        banned(&table, "203.0.113.8")
    });
    assert!(!banned(&table, "192.0.2.50"), "ignoreip never banned");
    drop(agent);

    // Down: two more failures of .9 land; a restart resumes at the saved
    // position and counts them with the third.
    append(&log, &failure("203.0.113.9"));
    append(&log, &failure("203.0.113.9"));
    let agent = Agent::start(config(dir.path(), &log), table.clone());
    assert!(!banned(&table, "203.0.113.9"));
    append(&log, &failure("203.0.113.9"));
    wait_for("203.0.113.9 banned after restart", || {
        banned(&table, "203.0.113.9")
    });
    drop(agent);

    // Reboot: the maps are empty; the journal restores every unexpired ban.
    let fresh = MemBanTable::default();
    let agent = Agent::start(config(dir.path(), &log), fresh.clone());
    // Restored while the logs are already followed.
    wait_for("the journal restored", || fresh.bans().len() == 3);
    for ip in ["203.0.113.7", "203.0.113.8", "203.0.113.9"] {
        assert!(banned(&fresh, ip), "{ip} restored");
    }
    assert_eq!(fresh.bans().len(), 3);
    drop(agent);
}

/// A dovecot failure from `ip`, logged by a process of `unit`, as journald
/// records it.
fn dovecot_entry(journal: &JournalRemote, unit: &str, ip: &str) {
    let message = format!(
        "pop3-login: Info: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 0 secs): \
         user=<alice>, method=PLAIN, rip={ip}, lip=192.0.2.1, session=<x>"
    );
    journal.append(&[
        ("_HOSTNAME", "mail"),
        ("_SYSTEMD_UNIT", unit),
        ("_COMM", "dovecot"),
        ("_PID", "812"),
        ("SYSLOG_IDENTIFIER", "dovecot"),
        ("MESSAGE", &message),
    ]);
}

#[test]
fn journal_entries_written_once_the_agent_is_ready_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let journal = JournalRemote::start(dir.path());
    // History: the first run starts after it.
    dovecot_entry(&journal, "dovecot.service", "203.0.113.7");
    journal.wait_entries(1);
    let text = format!(
        "[jails.dovecot]\nfilter = \"dovecot\"\nbackend = \"systemd\"\njournalpath = \"{}\"\nmaxretry = 3\n",
        journal.dir().display()
    );
    let mut config = Config::parse(&dir.path().join("jailer.toml"), &text).unwrap();
    config.state_dir = dir.path().join("state");
    // No journalmatch in the jail: dovecot.conf's own.
    assert_eq!(
        config.jails[0].journalmatch,
        "_SYSTEMD_UNIT=dovecot.service"
    );
    let table = MemBanTable::default();
    let agent = Agent::start(config.clone(), table.clone());
    // Ready means positioned in the journal: nothing written from now on
    // is missed.
    for _ in 0..3 {
        dovecot_entry(&journal, "other.service", "203.0.113.8");
        dovecot_entry(&journal, "dovecot.service", "203.0.113.7");
    }
    wait_for("203.0.113.7 banned", || banned(&table, "203.0.113.7"));
    assert!(
        !banned(&table, "203.0.113.8"),
        "another unit's entries are not read"
    );
    assert_eq!(total_failed(&config), 3, "nor is the history");
    drop(agent);
}

#[test]
fn copytruncate_is_followed_without_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    append(&log, "");
    let table = MemBanTable::default();
    let config = config(dir.path(), &log);
    let _agent = Agent::start(config.clone(), table.clone());
    append(&log, &failure("203.0.113.20"));
    append(&log, &failure("203.0.113.20"));
    wait_for("two failures counted", || total_failed(&config) == 2);
    fs::copy(&log, dir.path().join("mail.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    append(&log, "a line after the truncate\n");
    wait_read(&config, 3);
    assert!(
        !banned(&table, "203.0.113.20"),
        "lines before the truncate counted once"
    );
    assert_eq!(total_failed(&config), 2);
    append(&log, &failure("203.0.113.20"));
    wait_for("ban after copytruncate", || banned(&table, "203.0.113.20"));
}

#[test]
fn injected_text_bans_nobody_but_the_real_source() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    append(&log, "");
    let table = MemBanTable::default();
    let text = format!(
        "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nmaxretry = 1\n",
        log.display()
    );
    let mut config = Config::parse(&dir.path().join("jailer.toml"), &text).unwrap();
    config.state_dir = dir.path().join("state");
    let _agent = Agent::start(config.clone(), table.clone());

    let real = "203.0.113.66";
    let stamp = now_stamp();
    let pre = format!("{stamp} www vpopmail[1]: vchkpw-pop3:");
    let long = "A".repeat(64 * 1024);
    let payloads = [
        format!("{pre} vpopmail user not found x:198.51.100.1@example.com:{real}"),
        format!("{pre} password fail (pass: 'a:198.51.100.2') bob@example.com:{real}"),
        format!("{pre} password fail (pass: '') b@x:198.51.100.3') bob@example.com:{real}"),
        format!(
            "{pre} null password given x#012{stamp} www vpopmail[1]: vchkpw-pop3: password fail a@b:198.51.100.4:{real}"
        ),
        format!(
            "{pre} invalid user/domain characters \u{1b}[2J\u{1b}[31m198.51.100.5\u{1b}[0m:{real}"
        ),
        format!("{pre} invalid user/domain characters a\u{0}198.51.100.6:{real}"),
        format!(
            "{pre} invalid user/domain characters {stamp} www vpopmail[1]: vchkpw-pop3: vpopmail user not found a@:198.51.100.7 :{real}"
        ),
        format!("{pre} password fail {long}@example.com:198.51.100.8"),
        format!("{pre} invalid user/domain characters a:2001:db8::99:{real}"),
        format!("{pre} login success 198.51.100.9@example.com:198.51.100.10"),
    ];
    for p in &payloads {
        append(&log, p);
        append(&log, "\n");
    }
    // Invalid UTF-8 around the address.
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(format!("{pre} null password given \u{0}\u{1}").as_bytes())
        .and_then(|()| {
            OpenOptions::new()
                .append(true)
                .open(&log)
                .unwrap()
                .write_all(b"\xff\xfe198.51.100.11:203.0.113.66\n")
        })
        .unwrap();
    wait_for("the real source banned", || banned(&table, real));
    // Every line read (the 64 KiB one is skipped as over-long).
    wait_read(&config, payloads.len() as u64);
    let bans: Vec<String> = table.bans().keys().map(ToString::to_string).collect();
    assert_eq!(bans, [real], "only the real source may be banned");
}

/// A writer at 50,000 lines/s for 6 s rotating every second, in turn by
/// rename+create, copytruncate, and delete+recreate (older rotations shifted
/// to `.2` as logrotate does). Attackers fail exactly maxretry times, decoys
/// one time less: the bans must be exactly the attackers (a lost line misses
/// one, a line counted twice bans a decoy).
#[test]
fn rotation_under_load_bans_exactly_the_attackers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    append(&log, "");
    let table = MemBanTable::default();
    let text = format!(
        "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nmaxretry = 3\nfindtime = \"1h\"\n",
        log.display()
    );
    let mut config = Config::parse(&dir.path().join("jailer.toml"), &text).unwrap();
    config.state_dir = dir.path().join("state");
    let _agent = Agent::start(config.clone(), table.clone());

    // Schedule: each attacker 3 failures, each decoy 2, spread over the run.
    let attackers: Vec<String> = (0..600)
        .map(|i| format!("10.{}.{}.1", 100 + i / 250, i % 250))
        .collect();
    let decoys: Vec<String> = (0..600)
        .map(|i| format!("10.{}.{}.2", 100 + i / 250, i % 250))
        .collect();
    let mut failures: Vec<&str> = Vec::new();
    for _ in 0..3 {
        failures.extend(attackers.iter().map(String::as_str));
    }
    for _ in 0..2 {
        failures.extend(decoys.iter().map(String::as_str));
    }
    // Deterministic shuffle.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..failures.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        failures.swap(i, (seed % (i as u64 + 1)) as usize);
    }

    let rotated = |n: u32| dir.path().join(format!("mail.log.{n}"));
    let shift = || {
        let _ = fs::remove_file(rotated(2));
        if rotated(1).exists() {
            fs::rename(rotated(1), rotated(2)).unwrap();
        }
    };
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap()
    };
    let mut file = open();
    let slices = 600; // 10 ms each
    let per_slice = 500;
    let mut next = 0;
    let mut lines_written = 0u64;
    let start = Instant::now();
    for slice in 0..slices {
        let stamp = now_stamp();
        let mut buf = String::with_capacity(per_slice * 100);
        for j in 0..per_slice {
            // Spread the failures evenly over the slices.
            if next < failures.len() && (slice * per_slice + j) % 100 == 0 {
                buf.push_str(&format!(
                    "{stamp} www vpopmail[1]: vchkpw-pop3: password fail bob@example.com:{}\n",
                    failures[next]
                ));
                next += 1;
            } else {
                buf.push_str(&format!(
                    "{stamp} www postfix/smtpd[2]: connect from unknown[192.0.2.{}]\n",
                    j % 250
                ));
            }
        }
        file.write_all(buf.as_bytes()).unwrap();
        lines_written += per_slice as u64;
        if slice % 100 == 99 {
            match (slice / 100) % 3 {
                0 => {
                    // rename + create; syslog writes once more to the old file first
                    shift();
                    fs::rename(&log, rotated(1)).unwrap();
                    file.write_all(format!("{stamp} www postfix/smtpd[2]: late line\n").as_bytes())
                        .unwrap();
                    lines_written += 1;
                    file = open();
                }
                1 => {
                    // copytruncate (copy and truncate back to back)
                    shift();
                    fs::copy(&log, rotated(1)).unwrap();
                    OpenOptions::new()
                        .write(true)
                        .open(&log)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                }
                _ => {
                    // deleted and recreated
                    fs::remove_file(&log).unwrap();
                    file.write_all(format!("{stamp} www postfix/smtpd[2]: late line\n").as_bytes())
                        .unwrap();
                    lines_written += 1;
                    file = open();
                }
            }
        }
        let due = start + Duration::from_millis(10 * (slice as u64 + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    assert_eq!(next, failures.len(), "every scheduled failure was written");
    let expected: BTreeSet<String> = attackers.iter().cloned().collect();
    let banned = || -> BTreeSet<String> { table.bans().keys().map(ToString::to_string).collect() };
    // Every line written is read, once: then the count of failures is exact.
    wait_read(&config, lines_written);
    assert_eq!(
        total_failed(&config),
        failures.len() as u64,
        "each failure counted once"
    );
    let got = banned();
    let missed: Vec<&String> = expected.difference(&got).collect();
    let extra: Vec<&String> = got.difference(&expected).collect();
    assert!(
        missed.is_empty() && extra.is_empty(),
        "missed {} (lost lines): {missed:?}\nextra {} (counted twice): {extra:?}",
        missed.len(),
        extra.len()
    );
}

/// Finding 3 of issue 11: a reload whose new logpath is in a directory
/// that does not exist is refused as a whole (an error reply), and the
/// agent goes on with the old configuration: failures appended to the old
/// log are counted with the old maxretry and ban.
#[test]
fn a_reload_that_cannot_follow_its_logs_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let log = dir.path().join("mail.log");
    append(&log, "");
    let path = dir.path().join("jailer.toml");
    let write = |logpath: &str, maxretry: u32| {
        fs::write(
            &path,
            format!(
                "interface = \"lo\"\nbpffs = \"{d}/bpf\"\nstate_dir = \"{d}/state\"\n\
                 [jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{logpath}\"\nmaxretry = {maxretry}\n"
            ),
        )
        .unwrap();
    };
    write(&log.display().to_string(), 3);
    let config = Config::load_for_run(&path).unwrap();
    let table = MemBanTable::default();
    let (c, t, p) = (config.clone(), table.clone(), path.clone());
    let _agent = Agent::start_with(move || {
        let options = AgentOptions {
            config_path: Some(p),
            ..AgentOptions::default()
        };
        (c, t, options)
    });

    write(&format!("{d}/missing/mail.log"), 1);
    let message = match control::ask(&config.state_dir, &Request::Reload).unwrap() {
        Some(Response::Error { message }) => message,
        other => panic!("the reload was not refused: {other:?}"),
    };
    assert!(
        message.contains("missing/mail.log") && message.contains("does not exist"),
        "{message}"
    );
    let s = status(&config);
    assert_eq!(s.logs.len(), 1);
    assert_eq!(s.logs[0].path, log.display().to_string(), "the old log");

    // The old log, the old maxretry: one failure does not ban, three do.
    append(&log, &failure("203.0.113.30"));
    for _ in 0..3 {
        append(&log, &failure("203.0.113.31"));
    }
    wait_for("a ban from the old log", || banned(&table, "203.0.113.31"));
    assert!(
        !banned(&table, "203.0.113.30"),
        "maxretry is still the old one"
    );
    assert_eq!(total_failed(&config), 4);
}

/// Finding 9 of issue 11, under load: 10,000 lines/s for 3 s, in which 300
/// attackers keep failing long after their ban. Each is banned once:
/// `total_banned` is the number of addresses banned, and the journal holds
/// one ban record per address.
#[test]
fn failures_from_banned_addresses_under_load_ban_once() {
    const ATTACKERS: usize = 300;
    const FAILURES_EACH: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    append(&log, "");
    let table = MemBanTable::default();
    let text = format!(
        "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nmaxretry = 3\nfindtime = \"1h\"\n",
        log.display()
    );
    let mut config = Config::parse(&dir.path().join("jailer.toml"), &text).unwrap();
    config.state_dir = dir.path().join("state");
    let _agent = Agent::start(config.clone(), table.clone());

    let attackers: Vec<String> = (0..ATTACKERS)
        .map(|i| format!("10.{}.{}.7", 50 + i / 250, i % 250))
        .collect();
    let mut file = OpenOptions::new().append(true).open(&log).unwrap();
    let slices = 300; // 10 ms each, 100 lines each: 10,000 lines/s
    let failures = ATTACKERS * FAILURES_EACH;
    let mut written = 0u64;
    let start = Instant::now();
    for slice in 0..slices {
        let stamp = now_stamp();
        let mut buf = String::new();
        for j in 0..100 {
            let n = slice * 100 + j;
            // One line in five a failure, the attackers in turn.
            if n % 5 == 0 && n / 5 < failures {
                buf.push_str(&format!(
                    "{stamp} www vpopmail[1]: vchkpw-pop3: password fail bob@example.com:{}\n",
                    attackers[(n / 5) % ATTACKERS]
                ));
            } else {
                buf.push_str(&format!(
                    "{stamp} www postfix/smtpd[2]: connect from unknown[192.0.2.{}]\n",
                    j
                ));
            }
        }
        file.write_all(buf.as_bytes()).unwrap();
        written += 100;
        let due = start + Duration::from_millis(10 * (slice as u64 + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    wait_read(&config, written);
    let s = status(&config);
    let j = &s.jails[0];
    assert_eq!(j.total_failed, Some(failures as u64));
    assert_eq!(table.bans().len(), ATTACKERS, "every attacker banned");
    assert_eq!(
        j.total_banned,
        Some(ATTACKERS as u64),
        "a ban counted once, not once per failure while banned"
    );
    let journal = fs::read_to_string(config.state_dir.join("bans.jsonl")).unwrap();
    assert_eq!(
        journal.matches("\"op\":\"ban\"").count(),
        ATTACKERS,
        "a ban journaled once"
    );
}
