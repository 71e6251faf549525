//! `jailer import-fail2ban` on Debian's own fail2ban configuration (a copy;
//! /etc/fail2ban is never touched) plus a jail.local enabling dovecot,
//! postfix and sshd: the printed config passes `jailer check` and bans as
//! those jails would on fail2ban's own sample lines; the bans in force in a
//! database made by fail2ban's own code come across with their time left.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, SystemTime},
};

use clap::Parser as _;
use jailer::{
    agent::control::{self, Request, Response},
    ban::{Expiry, PortSet, Target},
    cli::Cli,
    config::{Backend, Config},
    kernel::{BanTable, MemBanTable, XdpBanTable},
    state::Journal,
    time::unix_secs,
};
use jailer_tests::{Agent, TempBpffs, append, now_stamp, require_root, sh, sh_output, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_jailer-under-test");
const FAIL2BAN: &str = "/etc/fail2ban";
/// fail2ban's annotated sample logs (Debian's python3 fail2ban package).
const SAMPLES: &str = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs";

/// Debian's dovecot jail's ports.
const DOVECOT_PORTS: [&str; 7] = [
    "pop3",
    "pop3s",
    "imap",
    "imaps",
    "submission",
    "465",
    "sieve",
];

/// The dovecot, postfix and sshd jails enabled, with the options the
/// import maps; sshd reads the journal.
const JAIL_LOCAL: &str = "[DEFAULT]\n\
    ignoreip = 127.0.0.1/8 ::1 192.0.2.0/24 mail.example.org\n\
    bantime.increment = true\nbantime.factor = 2\nbantime.maxtime = 1w\n\
    [sshd]\nbackend = systemd\n\
    [dovecot]\nenabled = true\nmaxretry = 3\n\
    [postfix]\nenabled = true\nport = smtp,465,submission,imap,imaps,pop3,pop3s\n\
    findtime = 1h\nbantime = 2h\n";

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Debian's fail2ban configuration copied to `dir/fail2ban`, its mail and
/// auth logs in `dir` (through paths-overrides.local, which Debian's
/// paths-debian.conf reads last), and [`JAIL_LOCAL`].
fn fail2ban_copy(dir: &Path) -> PathBuf {
    assert!(
        Path::new(FAIL2BAN).join("jail.conf").is_file(),
        "fail2ban is not installed: run `cargo xtask setup`"
    );
    let copy = dir.join("fail2ban");
    copy_dir(Path::new(FAIL2BAN), &copy);
    fs::write(
        copy.join("paths-overrides.local"),
        format!(
            "[DEFAULT]\nsyslog_mail = {0}/mail.log\nsyslog_authpriv = {0}/auth.log\n",
            dir.display()
        ),
    )
    .unwrap();
    fs::write(copy.join("jail.local"), JAIL_LOCAL).unwrap();
    fs::write(dir.join("mail.log"), "").unwrap();
    copy
}

/// `jailer import-fail2ban ARGS` as its own process.
fn import(args: &[&str]) -> Output {
    sh_output(&[[BIN, "import-fail2ban"].as_slice(), args].concat())
}

/// The printed config with what a test machine needs instead of the
/// placeholders: `lo`, a private bpffs and state directory.
fn localize(text: &str, bpffs: &Path, state_dir: &Path) -> String {
    assert!(text.contains("\ninterface = \"eth0\"\n"), "{text}");
    text.replacen(
        "\ninterface = \"eth0\"\n",
        &format!(
            "\ninterface = \"lo\"\nbpffs = \"{}\"\nstate_dir = \"{}\"\n",
            bpffs.display(),
            state_dir.display()
        ),
        1,
    )
}

/// The line of fail2ban's sample log `name` holding `marker`, stamped now.
fn sample_line(name: &str, marker: &str) -> String {
    let samples = fs::read_to_string(Path::new(SAMPLES).join(name)).unwrap();
    let line = samples
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no `{marker}` in fail2ban's {name} samples"));
    // `Jul 02 13:49:31 host ...`: the same line, now.
    format!("{}{}\n", now_stamp(), &line[15..])
}

fn lines_read(config: &Config) -> u64 {
    match control::ask(&config.state_dir, &Request::Status) {
        Ok(Some(Response::Status { status })) => status.logs.iter().map(|l| l.lines).sum(),
        other => panic!("no status from the agent: {other:?}"),
    }
}

fn ports(names: &[&str]) -> PortSet {
    PortSet::parse(names).unwrap()
}

#[test]
fn debian_stock_with_mail_jails_checks_and_bans_as_fail2ban_would() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fail2ban = fail2ban_copy(d);
    let out = import(&["--fail2ban-dir", fail2ban.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "[jails.dovecot]\n",
        "filter = \"dovecot[mode=normal]\"\n",
        "port = [\"pop3\", \"pop3s\", \"imap\", \"imaps\", \"submission\", 465, \"sieve\"]\n",
        "maxretry = 3\n",
        "filter = \"postfix[mode=more]\"\n",
        "port = [\"smtp\", 465, \"submission\", \"imap\", \"imaps\", \"pop3\", \"pop3s\"]\n",
        "findtime = \"1h\"\nbantime = \"2h\"\n",
        "bantime_increment = true\nbantime_factor = 2.0\nbantime_max = \"7d\"\n",
        "ignoreip = [\"127.0.0.0/8\", \"::1\", \"192.0.2.0/24\"]\n",
        "# ignoreip: `mail.example.org` is not an address or network",
        "filter = \"sshd[mode=normal]\"\nbackend = \"systemd\"\njournalmatch = \"_SYSTEMD_UNIT=sshd.service + _COMM=sshd\"\nport = [22]\n",
        "#   banaction = iptables-multiport\n#   mta = sendmail\n",
        &format!("logpath = [\"{}/mail.log\"]\n", d.display()),
        &format!("fail2ban_dir = \"{}\"\n", fail2ban.display()),
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert_eq!(
        text.matches("\n[jails.").count(),
        3,
        "exactly the enabled jails:\n{text}"
    );

    // `jailer check` takes it once the placeholders are set.
    let path = d.join("jailer.toml");
    fs::write(&path, localize(&text, &d.join("bpf"), &d.join("state"))).unwrap();
    let cli = Cli::try_parse_from(["jailer", "check", "--config", path.to_str().unwrap()]).unwrap();
    jailer::cli::run(cli).expect("jailer check accepts the imported config");
    let config = Config::load(&path).unwrap();
    let names: Vec<&str> = config.jails.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["dovecot", "postfix", "sshd"]);
    assert_eq!(config.jails[2].backend, Backend::Systemd);

    // Bans as those jails would: fail2ban's own sample lines, maxretry each.
    let table = MemBanTable::default();
    let agent = Agent::start(config.clone(), table.clone());
    let log = d.join("mail.log");
    let dovecot = sample_line(
        "dovecot",
        "pop3-login: Aborted login (auth failed, 1 attempts in 17 secs)",
    );
    let postfix = sample_line("postfix", "Relay access denied");
    let (dovecot_ip, postfix_ip) = ("192.51.100.13", "1.2.3.4");
    let mut read = 0;
    for _ in 0..2 {
        append(&log, &dovecot);
        append(&log, &postfix);
    }
    read += 4;
    wait_for("4 lines read", Duration::from_secs(10), || {
        lines_read(&config) >= read
    });
    assert!(
        table.bans().is_empty(),
        "below maxretry: {:?}",
        table.bans()
    );
    append(&log, &dovecot);
    wait_for("dovecot's ban", Duration::from_secs(10), || {
        table.ban_on(dovecot_ip.parse().unwrap()).is_some()
    });
    let now = SystemTime::now();
    let ban = table.ban_on(dovecot_ip.parse().unwrap()).unwrap();
    assert_eq!(ban.ports, ports(&DOVECOT_PORTS));
    let left = ban.expiry.remaining(now).unwrap();
    assert!(
        left > Duration::from_secs(590) && left <= Duration::from_secs(600),
        "{left:?}"
    );
    assert!(
        table.ban_on(postfix_ip.parse().unwrap()).is_none(),
        "postfix's maxretry is 5"
    );
    for _ in 0..3 {
        append(&log, &postfix);
    }
    wait_for("postfix's ban", Duration::from_secs(10), || {
        table.ban_on(postfix_ip.parse().unwrap()).is_some()
    });
    let ban = table.ban_on(postfix_ip.parse().unwrap()).unwrap();
    assert_eq!(
        ban.ports,
        ports(&[
            "smtp",
            "465",
            "submission",
            "imap",
            "imaps",
            "pop3",
            "pop3s"
        ])
    );
    let left = ban.expiry.remaining(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(7190) && left <= Duration::from_secs(7200),
        "{left:?}"
    );
    // ignoreip holds: an address of 192.0.2.0/24 is never banned.
    let ignored = dovecot.replace(dovecot_ip, "192.0.2.9");
    for _ in 0..5 {
        append(&log, &ignored);
    }
    read += 1 + 3 + 5;
    wait_for("every line read", Duration::from_secs(10), || {
        lines_read(&config) >= read
    });
    assert_eq!(table.bans().len(), 2, "{:?}", table.bans());
    agent.stop().unwrap();
}

/// A fail2ban database as fail2ban 1.0.2 creates it (its own code makes the
/// schema), holding `rows` as its `addBan` writes them: (jail, ip,
/// timeofban, bantime).
fn fail2ban_db(path: &Path, rows: &[(&str, &str, u64, i64)]) {
    let rows: Vec<String> = rows
        .iter()
        .map(|(jail, ip, at, bantime)| format!("({jail:?}, {ip:?}, {at}, {bantime})"))
        .collect();
    let script = format!(
        "import sqlite3, sys\n\
         from fail2ban.server.database import Fail2BanDb\n\
         Fail2BanDb(sys.argv[1])\n\
         db = sqlite3.connect(sys.argv[1])\n\
         for jail, ip, at, bantime in [{}]:\n\
         \x20   db.execute('INSERT OR IGNORE INTO jails(name) VALUES(?)', (jail,))\n\
         \x20   db.execute('INSERT INTO bans(jail, ip, timeofban, bantime, bancount, data) VALUES(?, ?, ?, ?, 1, ?)', (jail, ip, at, bantime, '{{}}'))\n\
         \x20   db.execute('INSERT OR REPLACE INTO bips(ip, jail, timeofban, bantime, bancount, data) VALUES(?, ?, ?, ?, 1, ?)', (ip, jail, at, bantime, '{{}}'))\n\
         db.commit()\n",
        rows.join(", ")
    );
    // Debian's python3, the one fail2ban is installed for.
    sh(&["/usr/bin/python3", "-c", &script, path.to_str().unwrap()]);
}

#[test]
#[ignore = "needs root"]
fn bans_in_a_fail2ban_database_come_across_with_their_time_left() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fail2ban = fail2ban_copy(d);
    let db = d.join("fail2ban.sqlite3");
    // Found through fail2ban.conf's dbfile, as fail2ban finds it.
    fs::write(
        fail2ban.join("fail2ban.local"),
        format!("[Definition]\ndbfile = {}\n", db.display()),
    )
    .unwrap();
    let now = unix_secs(SystemTime::now());
    fail2ban_db(
        &db,
        &[
            // In force: 3300 s left.
            ("dovecot", "203.0.113.10", now - 300, 3600),
            // Expired an hour ago.
            ("postfix", "203.0.113.11", now - 7200, 3600),
            // Permanent, in a jail not imported (recidive is not enabled).
            ("recidive", "2001:db8::7", now - 86_400, -1),
            // Permanent, but sshd's longest ban now is bantime.maxtime:
            // fail2ban restores it for 1w from its time of ban.
            ("sshd", "198.51.100.5", now - 60, -1),
            // In the jails' ignoreip; not an address.
            ("dovecot", "192.0.2.50", now - 10, 3600),
            ("dovecot", "mail.example.org", now - 10, 3600),
        ],
    );
    let db_before = fs::read(&db).unwrap();
    let bpffs = TempBpffs::new();
    let state_dir = d.join("state");
    let config = d.join("jailer.toml");
    fs::write(
        &config,
        format!(
            "bpffs = \"{}\"\nstate_dir = \"{}\"\n",
            bpffs.pins().display(),
            state_dir.display()
        ),
    )
    .unwrap();
    let out = import(&[
        "--fail2ban-dir",
        fail2ban.to_str().unwrap(),
        "--bans",
        "--config",
        config.to_str().unwrap(),
    ]);
    let summary = String::from_utf8(out.stderr).unwrap();
    assert!(
        summary.contains(&format!(
            "fail2ban bans from {}: 3 imported into",
            db.display()
        )) && summary
            .contains("skipped: 1 expired, 0 already banned as widely, 1 ignored, 1 invalid"),
        "{summary}"
    );
    assert!(
        summary.contains("192.0.2.50 (jail dovecot): in the jail's ignoreip")
            && summary.contains("`mail.example.org` (jail dovecot): not an address")
            && summary.contains("jail recidive is not among the imported jails"),
        "{summary}"
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("[jails.dovecot]"),
        "the config is printed too"
    );
    assert_eq!(
        fs::read(&db).unwrap(),
        db_before,
        "fail2ban's database is only read"
    );

    let at = SystemTime::now();
    let about = |expiry: Expiry, secs: u64| match expiry.remaining(at) {
        Some(left) => left.as_secs().abs_diff(secs) <= 5,
        None => false,
    };
    let dovecot = ports(&DOVECOT_PORTS);
    let check = |what: &str, listed: Vec<(Target, String, PortSet, Expiry)>| {
        assert_eq!(listed.len(), 3, "{what}: {listed:?}");
        let (t, jail, p, e) = &listed[0];
        assert_eq!(
            (t.to_string().as_str(), p),
            ("198.51.100.5", &ports(&["22"])),
            "{what}"
        );
        assert!(about(*e, 7 * 86_400 - 60), "{what}: {e:?}");
        assert!(jail == "sshd" || jail.is_empty(), "{what}");
        let (t, jail, p, e) = &listed[1];
        assert_eq!(
            (t.to_string().as_str(), p),
            ("203.0.113.10", &dovecot),
            "{what}"
        );
        assert!(about(*e, 3300), "{what}: {e:?}");
        assert!(jail == "dovecot" || jail.is_empty(), "{what}");
        let (t, jail, p, e) = &listed[2];
        assert_eq!(
            (t.to_string().as_str(), p, *e),
            ("2001:db8::7", &ports(&["pop3"]), Expiry::Never),
            "{what}"
        );
        assert!(jail == "recidive" || jail.is_empty(), "{what}");
    };
    let table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    let mut maps: Vec<_> = table
        .list()
        .unwrap()
        .into_iter()
        .map(|l| (l.target, String::new(), l.ban.ports, l.ban.expiry))
        .collect();
    maps.sort_by_key(|m| m.0);
    check("maps", maps);
    let replay = Journal::new(&state_dir).replay(at).unwrap();
    let mut journal: Vec<_> = replay
        .active(at)
        .map(|(t, e)| {
            let ban = replay.ban(e);
            (t, replay.jail(e).to_owned(), ban.ports, ban.expiry)
        })
        .collect();
    journal.sort_by_key(|j| j.0);
    check("journal", journal);
}
