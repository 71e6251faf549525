//! A real dovecot (Debian's dovecot-pop3d) as a test's POP3 server, in a
//! namespace the test made: every log line is dovecot's own, written to a
//! file or, as a systemd unit's output, into real journal files.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, Stdio},
    sync::Arc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{self, Signal},
    unistd::{Gid, Pid, Uid, chown},
};

use crate::{JournalRemote, NetNs, connect_with, wait_for};

/// The one account.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";

/// How long dovecot may take to accept POP3 connections, and to stop.
const START_WITHIN: Duration = Duration::from_secs(10);
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// Where dovecot logs.
pub enum DovecotLog {
    /// `log_path` and `info_log_path`: one file, each line stamped
    /// `Mon dd hh:mm:ss` (dovecot's default `log_timestamp`).
    File,
    /// stderr without stamps, as dovecot runs under systemd with
    /// `log_path = /dev/stderr`; each line is written to the journal as
    /// journald records a unit's output.
    Journal(Arc<JournalRemote>),
}

/// dovecot in the foreground (`dovecot -F`), its master in a process
/// group of its own; stopped and reaped, children included, on drop.
pub struct Dovecot {
    child: Child,
    /// Config, passwd file, runtime and state directories, home, log.
    dir: tempfile::TempDir,
    /// Journal mode: the thread writing dovecot's output to the journal.
    forwarder: Option<JoinHandle<()>>,
}

impl Dovecot {
    /// Starts dovecot in `ns`, serving POP3 on `listen`:110, and returns
    /// once it greets a client.
    pub fn start(ns: &NetNs, listen: IpAddr, log: DovecotLog) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // The auth process runs as user dovecot and reads the passwd file.
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod");
        for sub in ["run", "state", "home"] {
            fs::create_dir(d.join(sub)).expect("mkdir");
        }
        chown(
            &d.join("home"),
            Some(Uid::from_raw(65534)),
            Some(Gid::from_raw(65534)),
        )
        .expect("chown home");
        fs::write(d.join("passwd"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).expect("passwd");
        let log_settings = match &log {
            DovecotLog::File => {
                let file = d.join("dovecot.log").display().to_string();
                format!("log_path = {file}\ninfo_log_path = {file}")
            }
            DovecotLog::Journal(_) => "log_path = /dev/stderr\nlog_timestamp = \"\"".to_owned(),
        };
        let conf = d.join("dovecot.conf");
        fs::write(&conf, config(d, listen, &log_settings)).expect("dovecot.conf");

        let journal = matches!(log, DovecotLog::Journal(_));
        become_subreaper();
        // Spawned from a thread inside `ns`: the child lives there.
        let mut child = ns
            .run(move || {
                Command::new("dovecot")
                    .arg("-F")
                    .arg("-c")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(if journal {
                        Stdio::piped()
                    } else {
                        Stdio::inherit()
                    })
                    .process_group(0)
                    .spawn()
            })
            .expect("spawn dovecot (cargo xtask setup installs dovecot-pop3d)");
        let forwarder = match log {
            DovecotLog::File => None,
            DovecotLog::Journal(remote) => {
                let stderr = child.stderr.take().expect("piped stderr");
                let pid = child.id();
                Some(thread::spawn(move || forward(stderr, pid, &remote)))
            }
        };
        let mut dovecot = Self {
            child,
            dir,
            forwarder,
        };
        dovecot.wait_ready(ns, listen);
        dovecot
    }

    /// The log file (`DovecotLog::File`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("dovecot.log")
    }

    fn wait_ready(&mut self, ns: &NetNs, listen: IpAddr) {
        let child = &mut self.child;
        let log = self.dir.path().join("dovecot.log");
        wait_for("dovecot to greet on port 110", START_WITHIN, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "dovecot exited ({status}); its log (journal mode: the test's output):\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            // A greeting, not just a connect: the login process answers.
            ns.run(move || {
                let to = SocketAddr::new(listen, 110);
                connect_with(
                    listen,
                    to,
                    Duration::from_millis(200),
                    Duration::from_secs(2),
                )
                .is_ok()
            })
        });
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // Still running (not a failed start, already reaped): SIGTERM, and
        // the master stops its children and exits.
        if matches!(self.child.try_wait(), Ok(None)) {
            let group = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
            let _ = signal::kill(group, Signal::SIGTERM);
            reap_group(group, STOP_WITHIN);
        }
        // Its output ended with it: the forwarder drains and returns.
        if let Some(forwarder) = self.forwarder.take() {
            let start = Instant::now();
            while !forwarder.is_finished() && start.elapsed() < STOP_WITHIN {
                thread::sleep(Duration::from_millis(10));
            }
            if forwarder.is_finished() {
                let _ = forwarder.join();
            }
        }
    }
}

/// Makes this process the reaper of its orphaned descendants: dovecot's log
/// process outlives the master for a moment, and would otherwise linger as
/// a zombie under PID 1 (which need not reap it).
fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches
    // no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

/// Reaps the master of `group` and the children it leaves behind (ours
/// too: see [`become_subreaper`]) until no process of the group is left;
/// SIGKILLs the group if it has not gone within `grace`, gives up after
/// twice that.
fn reap_group(group: Pid, grace: Duration) {
    let start = Instant::now();
    let mut killed = false;
    // Any member, a zombie too, answers: the group id is not reused while
    // this loop runs.
    while signal::killpg(group, None).is_ok() {
        // SAFETY: a null status pointer is allowed; this only reaps
        // children of `group`.
        while unsafe { libc::waitpid(-group.as_raw(), std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        let elapsed = start.elapsed();
        if elapsed >= grace * 2 {
            break;
        }
        if elapsed >= grace && !killed {
            let _ = signal::killpg(group, Signal::SIGKILL);
            killed = true;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The whole config: enough for POP3 logins against a passwd file.
fn config(dir: &Path, listen: IpAddr, log_settings: &str) -> String {
    let d = dir.display();
    format!(
        "\
base_dir = {d}/run
state_dir = {d}/state
{log_settings}
protocols = pop3
listen = {listen}
ssl = no
disable_plaintext_auth = no
mail_location = maildir:~/Maildir
# Debian's default: one line per failed login (the login process's
# `Disconnected ... (auth failed, ...)`). `yes` adds the auth process's
# `Password mismatch`, a second line fail2ban's filter counts too.
auth_verbose = no
# -ERR at once (auth replies are flushed every 0.5 s), not after 2 s...
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={d}/home
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 110
  }}
}}
# ...and no growing penalty (4, 8, 15 s) for repeated failures from one address.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"
    )
}

/// Writes each line dovecot prints as the entry journald makes of a
/// unit's output line: the message as printed, the unit, the process.
fn forward(stderr: ChildStderr, pid: u32, journal: &JournalRemote) {
    let pid = pid.to_string();
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let message = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line));
        // Shown with the test's output when it fails.
        eprintln!("dovecot: {message}");
        journal.append(&[
            ("_HOSTNAME", "mail"),
            ("_TRANSPORT", "stdout"),
            ("_SYSTEMD_UNIT", "dovecot.service"),
            ("_COMM", "dovecot"),
            ("_EXE", "/usr/sbin/dovecot"),
            ("_PID", &pid),
            ("SYSLOG_IDENTIFIER", "dovecot"),
            ("PRIORITY", "6"),
            ("MESSAGE", &message),
        ]);
        line.clear();
    }
}
