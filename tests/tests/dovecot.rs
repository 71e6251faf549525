//! A real dovecot, as root in namespaces the test makes: Debian's
//! dovecot-pop3d serves POP3 in the server namespace and writes its own log
//! lines, to a file or (as a systemd unit's output) into real journal files
//! written by systemd-journal-remote. The agent reads them with fail2ban's
//! `dovecot` filter and bans through XDP: three failed logins get the client
//! dropped on port 110 within 5 s, port 25 stays open to it, and a
//! successful login never counts.

use std::{
    fs,
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use jailer::{
    agent::{
        control::{self, Request, Response},
        status::Status,
    },
    config::Config,
    kernel::{BanTable, XdpBanTable},
};
use jailer_tests::{
    Dovecot, DovecotLog, JournalRemote, PASSWORD, Pair, TempBpffs, USER, connect_from, host,
    ns_agent, pop3_login, require_root, serve, wait_for,
};

/// The bar: banned this soon after the failure that makes maxretry.
const BAN_WITHIN: Duration = Duration::from_secs(5);
/// The journalmatch of the issue: dovecot's unit, or any process named dovecot.
const JOURNALMATCH: &str = "_SYSTEMD_UNIT=dovecot.service + _COMM=dovecot";

/// The server namespace (dovecot at .1, port 25 open) and a client
/// namespace with three addresses: a user who knows the password, an
/// attacker, and a second attacker who fails slowly.
struct Mail {
    net: Pair,
    n: u8,
}

impl Mail {
    fn new(n: u8) -> Self {
        let net = Pair::new(n);
        net.client
            .ip(&["addr", "add", &format!("10.{n}.0.4/24"), "dev", &net.peer]);
        Self { net, n }
    }

    fn server(&self) -> IpAddr {
        self.addr(1)
    }

    /// The one who logs in.
    fn user(&self) -> IpAddr {
        self.addr(3)
    }

    /// Three failures in a row.
    fn attacker(&self) -> IpAddr {
        self.addr(2)
    }

    /// One failure now and then.
    fn slow_attacker(&self) -> IpAddr {
        self.addr(4)
    }

    fn addr(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.n, 0, host))
    }

    /// A POP3 login to dovecot from `src`: `Ok(true)` accepted, `Ok(false)`
    /// refused, an error when no connection was made.
    fn login(&self, src: IpAddr, pass: &str) -> std::io::Result<bool> {
        let pop3 = SocketAddr::new(self.server(), 110);
        pop3_login(&self.net.client, src, pop3, USER, pass)
    }

    fn fail(&self, src: IpAddr) {
        assert!(
            !self.login(src, "guess").expect("dovecot answers"),
            "a wrong password from {src} is refused"
        );
    }

    fn succeed(&self) {
        let ok = self.login(self.user(), PASSWORD);
        assert!(ok.expect("dovecot answers"), "the user logs in");
    }

    /// A connect (and greeting) from `src` to the server's `port`.
    fn connect(&self, src: IpAddr, port: u16) -> std::io::Result<()> {
        let dst = SocketAddr::new(self.server(), port);
        self.net
            .client
            .run(move || connect_from(src, dst, Duration::from_millis(700)).map(drop))
    }
}

fn config(dir: &Path, bpffs: &TempBpffs, iface: &str, source: &str) -> Config {
    let text = format!(
        "interface = \"{iface}\"\nxdp_mode = \"generic\"\nbpffs = \"{}\"\nstate_dir = \"{}\"\n\
         [jails.dovecot]\nfilter = \"dovecot\"\n{source}\nport = [\"pop3\"]\n\
         maxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n",
        bpffs.pins().display(),
        dir.join("state").display(),
    );
    let path = dir.join("jailer.toml");
    fs::write(&path, &text).unwrap();
    Config::load(&path).unwrap()
}

fn status(state_dir: &Path) -> Status {
    match control::ask(state_dir, &Request::Status).unwrap() {
        Some(Response::Status { status }) => status,
        other => panic!("no status from the agent: {other:?}"),
    }
}

/// The jail's failures counted since the agent started.
fn total_failed(state_dir: &Path) -> u64 {
    status(state_dir).jails[0]
        .total_failed
        .expect("agent status")
}

fn banned(table: &XdpBanTable, ip: IpAddr) -> bool {
    table.get(host(&ip.to_string())).unwrap().is_some()
}

/// A failed login from `ip` that must ban it: waits (polling every
/// millisecond, for at most [`BAN_WITHIN`] from the start of the login)
/// until the ban is in the map; returns how long after the start and after
/// the end of the login (its QUIT sent) that was: dovecot writes the
/// failure as it handles that QUIT, 0.5 s or so after the start (it answers
/// a wrong password on its next half-second flush).
fn banning_failure(mail: &Mail, table: &XdpBanTable, ip: IpAddr) -> (Duration, Duration) {
    let start = Instant::now();
    mail.fail(ip);
    let end = Instant::now();
    while !banned(table, ip) {
        assert!(
            start.elapsed() < BAN_WITHIN,
            "{ip} not banned within {BAN_WITHIN:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
    let at = Instant::now();
    (at - start, at.saturating_duration_since(end))
}

/// "banned Xms after the third failed login ended (Yms after it began)".
fn report(what: &str, (from_start, from_end): (Duration, Duration)) {
    println!(
        "{what}: banned {from_end:?} after the third failed login ended ({from_start:?} after it began)"
    );
}

/// A user's logins and three failed ones from an attacker, then what the ban
/// does to traffic; returns how long after the third failed login the ban
/// was in the kernel map (see [`banning_failure`]). `between` runs after the
/// user's first login.
fn three_failures_ban(
    mail: &Mail,
    state_dir: &Path,
    table: &XdpBanTable,
    between: impl FnOnce(),
) -> (Duration, Duration) {
    let (user, attacker) = (mail.user(), mail.attacker());
    mail.succeed();
    between();
    mail.fail(attacker);
    mail.fail(attacker);
    // Read in order: the user's login came before and was not counted.
    wait_for("two failures counted", BAN_WITHIN, || {
        total_failed(state_dir) == 2
    });
    assert!(!banned(table, attacker), "two failures do not ban");
    let latency = banning_failure(mail, table, attacker);

    let s = status(state_dir);
    assert_eq!(
        s.jails[0].total_failed,
        Some(3),
        "the attacker's three failures, nothing else"
    );
    assert_eq!(s.jails[0].banned, [attacker.to_string()]);
    let err = mail
        .login(attacker, PASSWORD)
        .expect_err("the attacker's connect to 110 is dropped");
    assert_eq!(
        err.kind(),
        ErrorKind::TimedOut,
        "dropped, not refused: {err}"
    );
    let ban = table.entry(host(&attacker.to_string())).unwrap().unwrap();
    assert!(ban.drops >= 1, "XDP counted the drop on the ban: {ban:?}");
    mail.connect(attacker, 25)
        .expect("port 25 stays open to the banned attacker");

    // The user still logs in, and that never counts either: the slow
    // attacker's failure, read after it, is the only new one.
    mail.succeed();
    mail.fail(mail.slow_attacker());
    wait_for("the slow attacker's failure counted", BAN_WITHIN, || {
        total_failed(state_dir) == 4
    });
    let s = status(state_dir);
    assert_eq!(
        s.jails[0].currently_failed,
        Some(1),
        "only the slow attacker"
    );
    assert_eq!(s.jails[0].banned, [attacker.to_string()]);
    assert!(!banned(table, user));
    latency
}

#[test]
#[ignore = "needs root"]
fn dovecot_log_file_failures_ban_the_client() {
    require_root();
    let mail = Mail::new(191);
    let dovecot = Dovecot::start(&mail.net.server, mail.server(), DovecotLog::File);
    let smtp = SocketAddr::new(mail.server(), 25);
    mail.net.server.run(move || serve(smtp));
    let dir = tempfile::tempdir().unwrap();
    let bpffs = TempBpffs::new();
    let logpath = format!("logpath = \"{}\"", dovecot.log_path().display());
    let config = config(dir.path(), &bpffs, &mail.net.iface, &logpath);
    let agent = ns_agent(&mail.net.server, &config, None);
    let table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();

    let latency = three_failures_ban(&mail, &config.state_dir, &table, || {});
    report("dovecot log file", latency);
    agent.stop().unwrap();
}

#[test]
#[ignore = "needs root"]
fn dovecot_journal_failures_ban_the_client_and_survive_a_restart() {
    require_root();
    let mail = Mail::new(190);
    let journal_dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(JournalRemote::start(journal_dir.path()));
    let _dovecot = Dovecot::start(
        &mail.net.server,
        mail.server(),
        DovecotLog::Journal(journal.clone()),
    );
    let smtp = SocketAddr::new(mail.server(), 25);
    mail.net.server.run(move || serve(smtp));
    let dir = tempfile::tempdir().unwrap();
    let bpffs = TempBpffs::new();
    let source = format!(
        "backend = \"systemd\"\njournalpath = \"{}\"\njournalmatch = \"{JOURNALMATCH}\"",
        journal.dir().display()
    );
    let config = config(dir.path(), &bpffs, &mail.net.iface, &source);
    let state_dir = config.state_dir.clone();
    let agent = ns_agent(&mail.net.server, &config, None);
    let table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();

    // Another unit's entry, worded as dovecot's failure from the user's
    // address: outside the journalmatch, never read.
    let decoy = format!(
        "pop3-login: Info: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 0 secs): \
         user=<{USER}>, method=PLAIN, rip={}, lip={}, session=<decoy>",
        mail.user(),
        mail.server()
    );
    let latency = three_failures_ban(&mail, &state_dir, &table, || {
        journal.append(&[
            ("_HOSTNAME", "mail"),
            ("_SYSTEMD_UNIT", "other.service"),
            ("_COMM", "other"),
            ("_PID", "4242"),
            ("SYSLOG_IDENTIFIER", "dovecot"),
            ("MESSAGE", &decoy),
        ]);
    });
    report("dovecot via the journal", latency);

    // A restart: the slow attacker has one failure in its window (saved with
    // the journal cursor); one more comes while the agent is down.
    let slow = mail.slow_attacker();
    agent.stop().unwrap();
    mail.fail(slow);
    let agent = ns_agent(&mail.net.server, &config, None);
    wait_for("the failure written while down", BAN_WITHIN, || {
        total_failed(&state_dir) >= 1
    });
    let s = status(&state_dir);
    assert_eq!(
        s.jails[0].total_failed,
        Some(1),
        "entries read before the restart are not counted again"
    );
    assert_eq!(s.jails[0].currently_failed, Some(1));
    assert!(!banned(&table, slow), "two failures in the window so far");
    // The third within findtime: the saved window and the entry written
    // while down both counted.
    report(
        "dovecot via the journal, after a restart",
        banning_failure(&mail, &table, slow),
    );
    assert_eq!(total_failed(&state_dir), 2);
    assert!(mail.login(slow, PASSWORD).is_err(), "dropped");
    assert!(banned(&table, mail.attacker()), "the first ban holds");
    mail.succeed();
    agent.stop().unwrap();
}
