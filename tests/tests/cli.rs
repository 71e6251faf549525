//! The command line as a process: exit codes and messages. What `check`
//! accepts `run` starts with, and both refuse the same configs with the same
//! line; absurd durations are refused by the parser; lockout foot-guns are
//! refused unless forced; commands that need root say so; a mistyped log is
//! an error; a reader that leaves ends the command quietly.

use std::{
    fs,
    net::IpAddr,
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use jailer::kernel::{BanTable, XdpBanTable};
use jailer_tests::{NetNs, TempBpffs, failure_line, output_within, require_root, wait_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_jailer-under-test");
const WITHIN: Duration = Duration::from_secs(20);

/// Runs the CLI with `args`: (exit code, stderr).
fn jailer(args: &[&str]) -> (Option<i32>, String) {
    let out = output_within(Command::new(BIN).args(args), WITHIN);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `jailer: ...` error line of a command's stderr.
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("jailer: "))
        .unwrap_or_else(|| panic!("no `jailer:` error line in:\n{stderr}"))
}

/// Finding 2 of issue 11: a bantime past ten years is refused where it is
/// parsed, with clap's usage exit code 2, never turned into a crash.
#[test]
fn durations_longer_than_ten_years_are_refused_by_the_parser() {
    for time in ["18446744073709551615", "30000000000000w", "3651d"] {
        let (code, stderr) = jailer(&["ban", "203.0.113.7", "--time", time]);
        assert_eq!(code, Some(2), "--time {time}: {stderr}");
        assert!(
            stderr.contains("longer than 10 years"),
            "--time {time}: {stderr}"
        );
    }
}

/// Finding 11 of issue 11: `jailer regex` with a mistyped log path (a word,
/// not a line) is an error, not a silent scan of the text itself.
#[test]
fn a_mistyped_log_path_is_an_error() {
    let (code, stderr) = jailer(&["regex", "/var/log/mial.log", "vpopmail"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        error_line(&stderr).contains("/var/log/mial.log: no such log file"),
        "{stderr}"
    );
}

/// Runs `args` with stdout a pipe whose reader has already left; the
/// command must end by itself, quietly: exit 0 or SIGPIPE, no panic.
fn into_a_closed_pipe(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take()); // the reader leaves at once
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = wait_bounded(&mut child, WITHIN)
        .unwrap_or_else(|| panic!("{args:?} did not end with its reader gone"));
    (status, reader.join().unwrap())
}

fn assert_quiet(args: &[&str]) {
    let (status, stderr) = into_a_closed_pipe(args);
    assert!(
        status.code() == Some(0) || status.signal() == Some(libc::SIGPIPE),
        "{args:?} ended with {status}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

/// Finding 10 of issue 11: `jailer regex ... | head` and the like. Output
/// far larger than a pipe's buffer, into a pipe nobody reads.
#[test]
fn a_reader_that_leaves_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let lines: String = (0..20_000)
        .map(|i| failure_line(&format!("198.51.{}.{}", i / 250, i % 250 + 1)))
        .collect();
    fs::write(&log, lines).unwrap();
    let log = log.to_str().unwrap();
    assert_quiet(&["regex", log, "vpopmail"]);
    assert_quiet(&["regex", log, "vpopmail", "--json"]);
    assert_quiet(&["man"]);
    assert_quiet(&["completions", "bash"]);
    assert_quiet(&["--help"]);
}

/// A config with only `bpffs` and `state_dir`, for ban/list/status.
fn store_config(dir: &Path, bpffs: &TempBpffs) -> String {
    let path = dir.join("jailer.toml");
    fs::write(
        &path,
        format!(
            "bpffs = \"{}\"\nstate_dir = \"{}\"\n",
            bpffs.pins().display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// The same, as root: `list` and `status` over many bans.
#[test]
#[ignore = "needs root"]
fn a_reader_that_leaves_ends_list_and_status_quietly() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bpffs = TempBpffs::new();
    let config = store_config(dir.path(), &bpffs);
    let (mut table, _) = XdpBanTable::open(&bpffs.pins()).unwrap();
    let bans: Vec<_> = (0..5_000)
        .map(|i| {
            (
                jailer_tests::host(&format!("198.51.{}.{}", i / 250, i % 250 + 1)),
                jailer_tests::ban(&[110], Some(3600)),
            )
        })
        .collect();
    table.insert_many(&bans).unwrap();
    assert_quiet(&["list", "--config", &config]);
    assert_quiet(&["list", "--json", "--config", &config]);
    assert_quiet(&["status", "--config", &config]);
    assert_quiet(&["status", "--json", "--config", &config]);
}

/// Finding 11 of issue 11: without root, the commands that need it exit 2
/// saying so, before touching anything.
#[test]
#[ignore = "needs root"]
fn commands_that_need_root_say_so() {
    require_root();
    let as_nobody = |args: &[&str]| {
        let out = output_within(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
                .args(args),
            WITHIN,
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [
        &["list"][..],
        &["ban", "203.0.113.7"],
        &["unban", "203.0.113.7"],
        &["status"],
        &["run"],
        &["reload"],
        &["detach"],
    ] {
        let (code, stderr) = as_nobody(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        let line = error_line(&stderr);
        assert!(
            line.contains(&format!("`jailer {}` needs root", args[0])),
            "{args:?}: {line}"
        );
    }
}

/// Finding 5 of issue 11: bans that would lock out everyone or the server
/// itself are refused with exit 2 and the reason, and the maps and the
/// journal stay empty; `--force` bans anyway; `--file` skips such lines,
/// saying why, and bans the rest.
#[test]
#[ignore = "needs root"]
fn bans_that_would_lock_out_the_server_are_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bpffs = TempBpffs::new();
    let config = store_config(dir.path(), &bpffs);
    let (table, _) = XdpBanTable::open(&bpffs.pins()).unwrap();
    let own: Vec<IpAddr> = jailer::host::own_addresses()
        .into_iter()
        .filter(|ip| !ip.is_loopback())
        .collect();
    assert!(!own.is_empty(), "this host has an address besides loopback");
    let mut cases: Vec<(String, Vec<&str>, &str)> = vec![
        ("0.0.0.0/0".into(), vec!["--port", "all"], "/0 network"),
        ("::/0".into(), vec![], "/0 network"),
        ("127.0.0.1".into(), vec![], "loopback"),
        ("::1".into(), vec![], "loopback"),
        ("255.255.255.255".into(), vec![], "broadcast"),
        ("224.0.0.5".into(), vec![], "multicast"),
        ("ff02::1".into(), vec![], "multicast"),
        ("0.0.0.0".into(), vec![], "unspecified"),
    ];
    for ip in &own {
        cases.push((ip.to_string(), vec![], "an address of this host"));
    }
    for (target, extra, why) in &cases {
        let mut args = vec!["ban", target.as_str(), "--config", &config];
        args.extend(extra);
        let (code, stderr) = jailer(&args);
        assert_eq!(code, Some(2), "{target}: {stderr}");
        let line = error_line(&stderr);
        assert!(
            line.contains(&format!("refusing to ban {target}")) && line.contains(why),
            "{target}: {line}"
        );
        assert!(line.contains("--force"), "says how to insist: {line}");
    }
    assert!(table.list().unwrap().is_empty(), "nothing in the maps");
    let journal = fs::read_to_string(dir.path().join("state/bans.jsonl")).unwrap_or_default();
    assert!(!journal.contains("\"op\":\"ban\""), "nothing journaled");

    // One list with foot-guns and a real attacker.
    let list = dir.path().join("list.txt");
    fs::write(&list, "127.0.0.1\n0.0.0.0/0\n203.0.113.7\n").unwrap();
    let (code, stderr) = jailer(&["ban", "--file", list.to_str().unwrap(), "--config", &config]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("list.txt:1: `127.0.0.1` skipped") && stderr.contains("list.txt:2:"),
        "{stderr}"
    );
    let listed: Vec<String> = table
        .list()
        .unwrap()
        .iter()
        .map(|l| l.target.to_string())
        .collect();
    assert_eq!(listed, ["203.0.113.7"]);

    // Insisting works (the maps are this test's, attached nowhere).
    let (code, stderr) = jailer(&["ban", "127.0.0.1", "--force", "--config", &config]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        table
            .get(jailer_tests::host("127.0.0.1"))
            .unwrap()
            .is_some()
    );
}

/// A config for the refusal table: `lo` (in every namespace), a jail on a
/// log in `d`, bpffs and state_dir in `d`, each overridable.
struct Case {
    name: &'static str,
    /// Config text; `{d}` is the case's directory.
    text: String,
    /// Prepares `d` (directories, modes, links).
    setup: fn(&Path),
    /// A piece of the one-line message.
    says: &'static str,
}

fn base(over: &[(&str, &str)], jail: &str) -> String {
    let mut keys = vec![
        ("interface", "\"lo\""),
        ("bpffs", "\"{d}/bpf/jailer\""),
        ("state_dir", "\"{d}/state\""),
    ];
    for (k, v) in over {
        keys.retain(|(key, _)| key != k);
        if !v.is_empty() {
            keys.push((k, v));
        }
    }
    let mut text: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    text.push_str(jail);
    text
}

const JAIL: &str =
    "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{d}/mail.log\"\nmaxretry = 3\n";

fn cases() -> Vec<Case> {
    let none: fn(&Path) = |_| {};
    let jail_with = |extra: &str| format!("{JAIL}{extra}\n");
    vec![
        Case {
            name: "no interface",
            text: base(&[("interface", "")], JAIL),
            setup: none,
            says: "no `interface` set",
        },
        Case {
            name: "an interface listed twice",
            text: base(&[("interface", "[\"lo\", \"lo\"]")], JAIL),
            setup: none,
            says: "`lo` is listed twice",
        },
        Case {
            name: "an interface that does not exist",
            text: base(&[("interface", "\"nosuch0\"")], JAIL),
            setup: none,
            says: "`nosuch0` does not exist",
        },
        Case {
            name: "no enabled jail",
            text: base(&[], ""),
            setup: none,
            says: "no enabled jail",
        },
        Case {
            name: "a relative bpffs",
            text: base(&[("bpffs", "\"bpf/jailer\"")], JAIL),
            setup: none,
            says: "bpffs: `bpf/jailer` is not an absolute path",
        },
        Case {
            name: "a relative state_dir",
            text: base(&[("state_dir", "\"state\"")], JAIL),
            setup: none,
            says: "state_dir: `state` is not an absolute path",
        },
        Case {
            name: "bpffs inside state_dir",
            text: base(&[("bpffs", "\"{d}/state/bpf\"")], JAIL),
            setup: none,
            says: "must not contain each other",
        },
        Case {
            name: "bpffs equal to state_dir",
            text: base(&[("bpffs", "\"{d}/state\"")], JAIL),
            setup: none,
            says: "must not contain each other",
        },
        Case {
            name: "a logpath that is a directory",
            text: base(&[], &JAIL.replace("{d}/mail.log", "{d}/logs")),
            setup: |d| fs::create_dir(d.join("logs")).unwrap(),
            says: "is a directory, not a log file",
        },
        Case {
            name: "a logpath in a missing directory",
            text: base(&[], &JAIL.replace("{d}/mail.log", "{d}/missing/mail.log")),
            setup: none,
            says: "is in a directory that does not exist",
        },
        Case {
            name: "no log for a file backend",
            text: base(&[], "[jails.vpopmail]\nfilter = \"vpopmail\"\n"),
            setup: none,
            says: "no log to follow",
        },
        Case {
            name: "a bantime of 30000000000000w",
            text: base(&[], &jail_with("bantime = \"30000000000000w\"")),
            setup: none,
            says: "longer than 10 years",
        },
        Case {
            name: "a group-writable state_dir",
            text: base(&[], JAIL),
            setup: |d| {
                fs::create_dir(d.join("state")).unwrap();
                fs::set_permissions(d.join("state"), fs::Permissions::from_mode(0o770)).unwrap();
            },
            says: "writable by group or others",
        },
        Case {
            name: "a world-writable state_dir",
            text: base(&[], JAIL),
            setup: |d| {
                fs::create_dir(d.join("state")).unwrap();
                fs::set_permissions(d.join("state"), fs::Permissions::from_mode(0o1777)).unwrap();
            },
            says: "writable by group or others",
        },
        Case {
            name: "a state_dir that is a symlink",
            text: base(&[], JAIL),
            setup: |d| {
                fs::create_dir(d.join("elsewhere")).unwrap();
                std::os::unix::fs::symlink(d.join("elsewhere"), d.join("state")).unwrap();
            },
            says: "is a symlink",
        },
        Case {
            name: "a bpffs path through a symlink",
            text: base(&[("bpffs", "\"{d}/link/jailer\"")], JAIL),
            setup: |d| {
                fs::create_dir(d.join("real")).unwrap();
                std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
            },
            says: "link is a symlink",
        },
        Case {
            name: "a bpffs directory that is not bpffs and holds files",
            text: base(&[("bpffs", "\"{d}/data\"")], JAIL),
            setup: |d| {
                fs::create_dir(d.join("data")).unwrap();
                fs::write(d.join("data/keep"), "mine").unwrap();
            },
            says: "is not a bpf filesystem and is not empty",
        },
    ]
}

/// Whether anything is mounted at or below `dir` (in this mount namespace).
fn mounted_under(dir: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_str().unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| mount_point.starts_with(dir))
}

/// Findings 2, 4 and 11 of issue 11: for each config `run` cannot work
/// with, `jailer check` and `jailer run` both refuse it with exit 2 and the
/// same one-line message, and `run` attached, mounted and wrote nothing.
/// `run` runs in a namespace of its own (`nsenter --net`, so its `lo` is
/// not the host's and a mount would show in this mount namespace).
#[test]
#[ignore = "needs root"]
fn check_and_run_refuse_the_same_configs_alike() {
    require_root();
    let ns = NetNs::new("r");
    let netns = format!("--net=/run/netns/{}", ns.name);
    let cases = cases();
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("mail.log"), "").unwrap();
        (case.setup)(d);
        let path = d.join("jailer.toml");
        fs::write(&path, case.text.replace("{d}", d.to_str().unwrap())).unwrap();
        let config = path.to_str().unwrap();

        let (check_code, check_err) = jailer(&["check", "--config", config]);
        let run = output_within(
            Command::new("nsenter")
                .args([netns.as_str(), BIN, "run", "--config", config])
                .env("RUST_LOG", "warn"),
            WITHIN,
        );
        let run_err = String::from_utf8_lossy(&run.stderr);
        let what = format!("{}:\n{}", case.name, fs::read_to_string(&path).unwrap());
        assert_eq!(check_code, Some(2), "check, {what}\n{check_err}");
        assert_eq!(run.status.code(), Some(2), "run, {what}\n{run_err}");
        let line = error_line(&check_err);
        assert_eq!(error_line(&run_err), line, "the same message, {what}");
        assert!(line.contains(case.says), "{what}\n{line}");
        assert!(!line.contains('\n'));
        assert!(!mounted_under(d), "run mounted something, {what}");
        assert!(
            !d.join("bpf").exists(),
            "run made the bpffs directory, {what}"
        );
        if case.name.contains("not bpffs") {
            assert_eq!(fs::read_to_string(d.join("data/keep")).unwrap(), "mine");
        }
        if case.name.contains("writable") {
            assert!(
                fs::read_dir(d.join("state")).unwrap().next().is_none(),
                "run wrote into the unsafe state_dir, {what}"
            );
        }
    }
    assert!(cases.len() >= 17, "{} cases", cases.len());
}
