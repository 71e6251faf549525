//! What survives restarts, and cannot be turned against the root that
//! reads it: a journal with absurd numbers restores the rest; symlinks
//! planted in the state directory are never written through; the state
//! directory jailer makes is root's alone; a second agent on the same state
//! directory leaves the first one's links, maps, journal and socket alone.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jailer::{
    agent::control::{self, Request, Response},
    config::Config,
    kernel::{BanTable, MemBanTable, XdpBanTable},
    state::{JOURNAL, SNAPSHOT, Snapshot},
};
use jailer_tests::{
    Agent, AgentProcess, Pair, TempBpffs, append, append_failure, ban, host, output_within,
    require_root, target, wait_for,
};

const BIN: &str = env!("CARGO_BIN_EXE_jailer-under-test");
const WITHIN: Duration = Duration::from_secs(10);

fn config(dir: &Path, log: &Path, state: &Path, maxretry: u32) -> Config {
    let text = format!(
        "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nmaxretry = {maxretry}\n",
        log.display()
    );
    let mut c = Config::parse(&dir.join("jailer.toml"), &text).unwrap();
    c.state_dir = state.to_owned();
    c
}

fn banned(table: &MemBanTable, ip: &str) -> bool {
    table.ban_on(ip.parse().unwrap()).is_some()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Finding 2 of issue 11: a journal record with `until` = u64::MAX (or an
/// absurd `at`) made the agent crash at every start. It is skipped; the
/// agent starts, restores every other ban into the empty maps, and the next
/// start finds the line gone (compaction writes only what parsed).
#[test]
fn a_journal_with_absurd_numbers_restores_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    append(&log, "");
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    let now = unix_now();
    let lines = [
        format!(
            r#"{{"op":"ban","addr":"203.0.113.50","jail":"vpopmail","ports":"110","until":18446744073709551615,"at":{now}}}"#
        ),
        format!(
            r#"{{"op":"ban","addr":"203.0.113.51","jail":"vpopmail","ports":"110","until":{},"at":{now}}}"#,
            now + 3600
        ),
        r#"{"op":"ban","addr":"203.0.113.52","jail":"vpopmail","ports":"110","until":null,"at":18446744073709551615}"#.to_owned(),
        format!(
            r#"{{"op":"ban","addr":"203.0.113.53","jail":"manual","ports":"all","until":null,"at":{now}}}"#
        ),
        format!(
            r#"{{"op":"ban","addr":"203.0.113.54","jail":"vpopmail","ports":"110","until":99999999999999999999,"at":{now}}}"#
        ),
        format!(
            r#"{{"op":"ban","addr":"2001:db8:5::/48","jail":"manual","ports":"110,995","until":{},"at":{now}}}"#,
            now + 600
        ),
    ];
    fs::write(state.join(JOURNAL), lines.join("\n") + "\n").unwrap();

    for start in ["first", "second"] {
        let table = MemBanTable::default();
        let agent = Agent::start(config(dir.path(), &log, &state, 3), table.clone());
        wait_for(
            &format!("the {start} start restored the good bans"),
            WITHIN,
            || table.bans().len() == 3,
        );
        for good in ["203.0.113.51", "203.0.113.53", "2001:db8:5::/48"] {
            assert!(
                table.bans().contains_key(&target(good)),
                "{good} restored ({start} start)"
            );
        }
        for bad in ["203.0.113.50", "203.0.113.52", "203.0.113.54"] {
            assert!(!banned(&table, bad), "{bad} has an absurd time: skipped");
        }
        let permanent = table.ban_on("203.0.113.53".parse().unwrap()).unwrap();
        assert_eq!(permanent.expiry, jailer::ban::Expiry::Never);
        agent.stop().expect("the agent ran and stopped cleanly");
    }
    let journal = fs::read_to_string(state.join(JOURNAL)).unwrap();
    assert!(
        !journal.contains("18446744073709551615") && !journal.contains("99999999999999999999"),
        "compaction kept an unreadable record:\n{journal}"
    );
}

/// The state file's bytes and inode, to show nothing wrote to it.
fn fingerprint(path: &Path) -> (Vec<u8>, u64, i64) {
    let meta = fs::symlink_metadata(path).unwrap();
    (fs::read(path).unwrap(), meta.ino(), meta.mtime_nsec())
}

/// Finding 4 of issue 11: symlinks planted where the agent writes its temp
/// files (`bans.jsonl.tmp`, `snapshot.json.tmp`) point at a file root must
/// not overwrite. Through a running agent — the journal compacted at start,
/// bans appended, snapshots saved — the file is untouched, and the planted
/// links are replaced by real files, never written through.
#[test]
fn planted_symlinks_in_the_state_dir_are_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    append(&log, "");
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let victim = dir.path().join("shadow");
    fs::write(&victim, "root:precious:0:0\n").unwrap();
    let before = fingerprint(&victim);
    let plant = |name: &str| {
        let link = state.join(name);
        let _ = fs::remove_file(&link);
        symlink(&victim, &link).unwrap();
    };
    let saved_offset = |state: &Path, log: &Path| {
        Snapshot::load(state)
            .unwrap()
            .positions
            .get(log)
            .map_or(0, |p| p.offset)
    };
    let len = |p: &Path| fs::metadata(p).unwrap().len();

    for round in 0..2 {
        // Planted before a start: compaction writes the journal through
        // `bans.jsonl.tmp`, the first snapshot through `snapshot.json.tmp`.
        plant("bans.jsonl.tmp");
        plant("snapshot.json.tmp");
        // A torn line makes compaction at start pay (a journal of bans in
        // force is only read).
        append(&state.join(JOURNAL), "{\"op\":\"ban\",\"ad\n");
        let table = MemBanTable::default();
        let agent = Agent::start(config(dir.path(), &log, &state, 1), table.clone());
        let attacker = format!("203.0.113.{}", 60 + round);
        append_failure(&log, &attacker);
        wait_for("a ban", WITHIN, || banned(&table, &attacker));
        wait_for("a snapshot saved", WITHIN, || {
            saved_offset(&state, &log) == len(&log)
        });
        // Planted while it runs: the next snapshot save.
        plant("snapshot.json.tmp");
        append(&log, "a line that moves the position\n");
        wait_for("another snapshot saved", WITHIN, || {
            saved_offset(&state, &log) == len(&log)
        });
        agent.stop().unwrap();
        assert_eq!(
            fingerprint(&victim),
            before,
            "round {round}: written through a link"
        );
        for name in [JOURNAL, SNAPSHOT] {
            let meta = fs::symlink_metadata(state.join(name)).unwrap();
            assert!(meta.is_file(), "{name} is a regular file");
            // The planted link was taken away, a fresh file renamed in.
            assert!(
                fs::symlink_metadata(state.join(format!("{name}.tmp"))).is_err(),
                "{name}.tmp left behind"
            );
        }
        assert!(
            fs::read_to_string(state.join(JOURNAL))
                .unwrap()
                .contains(&attacker),
            "the ban is journaled in the real journal"
        );
    }
    assert_eq!(
        fs::symlink_metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o644,
        "the victim's mode is untouched"
    );
}

/// Finding 11 of issue 11: the state directory jailer creates (parents
/// included) is 0700, and every file it leaves there is 0600.
#[test]
fn the_state_dir_jailer_creates_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    append(&log, "");
    let state: PathBuf = dir.path().join("var/lib/jailer");
    let table = MemBanTable::default();
    let agent = Agent::start(config(dir.path(), &log, &state, 1), table.clone());
    append_failure(&log, "203.0.113.70");
    wait_for("a ban", WITHIN, || banned(&table, "203.0.113.70"));
    wait_for("a snapshot", WITHIN, || state.join(SNAPSHOT).exists());
    agent.stop().unwrap();

    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&state), 0o700, "state_dir");
    let mut files = Vec::new();
    for entry in fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            fs::symlink_metadata(&path).unwrap().is_file(),
            "{} is a regular file",
            path.display()
        );
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    files.sort();
    assert_eq!(
        files,
        [
            "bans.jsonl",
            "bans.jsonl.lock",
            "jailer.lock",
            "snapshot.json"
        ]
    );
}

/// The program id of a pinned XDP link, as bpftool reports it.
fn link_prog_id(pin: &Path) -> u64 {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show", "pinned"])
        .arg(pin)
        .output()
        .expect("bpftool");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\"prog_id\":")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no prog_id for {}: {text}", pin.display()))
}

/// Every pin under bpffs with its inode: maps and links recreated would
/// show as new inodes.
fn pins(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().ino(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Finding 6 of issue 11: two agents on one config. The second exits at
/// once, non-zero, naming the first one's pid, and touches nothing: the
/// first one's link keeps its program, the maps and their bans are the
/// same, the journal is not compacted, the socket is the first one's and
/// still answers.
#[test]
#[ignore = "needs root"]
fn a_second_agent_on_the_same_state_dir_touches_nothing() {
    require_root();
    let net = Pair::new(189);
    let bpffs = TempBpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let state = dir.path().join("state");
    fs::write(&log, "").unwrap();
    let path = dir.path().join("jailer.toml");
    fs::write(
        &path,
        format!(
            "interface = \"{}\"\nxdp_mode = \"generic\"\nbpffs = \"{}\"\nstate_dir = \"{}\"\n\
             [jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nmaxretry = 1\n",
            net.iface,
            bpffs.pins().display(),
            state.display(),
            log.display()
        ),
    )
    .unwrap();
    let a = AgentProcess::start(BIN, &net.server, &path, &state, &[]);
    let mut table = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    table
        .insert(host("203.0.113.80"), &ban(&[110], None))
        .unwrap();
    // A line compaction would drop: a second agent compacting the journal
    // at its start would show.
    append(&state.join(JOURNAL), "not a record: compaction drops me\n");
    let link = bpffs.pins().join(format!("link_{}", net.iface));
    let prog = link_prog_id(&link);
    let pinned = pins(&bpffs.pins());
    let bans = table.list().unwrap();
    let journal = fs::read(state.join(JOURNAL)).unwrap();
    let socket = fs::metadata(control::socket_path(&state)).unwrap().ino();

    let started = Instant::now();
    let b = output_within(
        &mut AgentProcess::command(BIN, &net.server, &path, &[]),
        WITHIN,
    );
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&b.stderr);
    assert!(!b.status.success(), "the second agent ran: {stderr}");
    assert!(
        stderr.contains(&format!("pid {}", a.pid())),
        "the message names the first agent's pid {}: {stderr}",
        a.pid()
    );
    assert!(
        took < Duration::from_secs(5),
        "refused at once, took {took:?}"
    );

    assert_eq!(link_prog_id(&link), prog, "the link keeps A's program");
    assert_eq!(pins(&bpffs.pins()), pinned, "no pin made again");
    assert_eq!(table.list().unwrap(), bans, "the bans are the same");
    assert_eq!(
        fs::read(state.join(JOURNAL)).unwrap(),
        journal,
        "the journal is not compacted"
    );
    assert_eq!(
        fs::metadata(control::socket_path(&state)).unwrap().ino(),
        socket,
        "the socket is A's"
    );
    assert!(matches!(
        control::ask(&state, &Request::Status),
        Ok(Some(Response::Status { .. }))
    ));
    // A still works.
    append_failure(&log, "203.0.113.81");
    wait_for("A bans", WITHIN, || {
        table.get(host("203.0.113.81")).unwrap().is_some()
    });
    drop(a);
}
