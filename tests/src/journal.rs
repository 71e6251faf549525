//! Real journal files with no journald: Debian's systemd-journal-remote
//! kept running on a pipe writes each entry given in export format as soon
//! as its block is complete, and readers (libsystemd's inotify) wake up.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::time::{ClockId, clock_gettime};

use crate::{reap, wait_for};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// systemd-journal-remote writing `DIR/remote.journal` from a pipe; stopped
/// (end of input, then a bounded wait, then a kill) and reaped on drop.
/// Shared between threads: entries are appended whole, one at a time.
pub struct JournalRemote {
    dir: PathBuf,
    /// The boot every entry claims; journal files need one.
    boot_id: String,
    /// `None` once closed.
    stdin: Mutex<Option<ChildStdin>>,
    child: Mutex<Child>,
}

impl JournalRemote {
    /// Starts writing journal files into `dir` and returns once the file
    /// exists (so a reader opened afterwards sees it from the start).
    pub fn start(dir: &Path) -> Self {
        let file = dir.join("remote.journal");
        let mut child = Command::new(JOURNAL_REMOTE)
            .arg(format!("--output={}", file.display()))
            .args(["--split-mode=none", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{JOURNAL_REMOTE}: {e} (cargo xtask setup installs it)"));
        let stdin = child.stdin.take();
        let remote = Self {
            dir: dir.to_owned(),
            boot_id: format!("{:032x}", rand_u128()),
            stdin: Mutex::new(stdin),
            child: Mutex::new(child),
        };
        wait_for(
            "systemd-journal-remote to create its file",
            Duration::from_secs(10),
            || file.exists(),
        );
        remote
    }

    /// The directory of journal files (a jail's `journalpath`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits (bounded) until the journal holds `count` entries, as
    /// journalctl reads it: an append only hands the entry to the pipe.
    pub fn wait_entries(&self, count: usize) {
        wait_for(
            &format!("{count} journal entries"),
            Duration::from_secs(10),
            || {
                let out = Command::new("journalctl")
                    .arg(format!("--directory={}", self.dir.display()))
                    .args(["--output=cat", "--quiet", "--no-pager"])
                    .output()
                    .expect("journalctl");
                out.stdout
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count()
                    >= count
            },
        );
    }

    /// Appends one entry, received now, with these fields (values without
    /// newlines: export format's text form).
    pub fn append(&self, fields: &[(&str, &str)]) {
        let realtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_micros();
        let mono = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("monotonic clock");
        let monotonic = mono.tv_sec() as u128 * 1_000_000 + mono.tv_nsec() as u128 / 1_000;
        let mut entry = format!(
            "__REALTIME_TIMESTAMP={realtime}\n__MONOTONIC_TIMESTAMP={monotonic}\n_BOOT_ID={}\n",
            self.boot_id
        );
        for (name, value) in fields {
            assert!(
                !value.contains('\n'),
                "{name}: a newline needs the binary form"
            );
            entry.push_str(&format!("{name}={value}\n"));
        }
        // A blank line ends the entry: journal-remote writes it now.
        entry.push('\n');
        let mut stdin = self.stdin.lock().expect("journal-remote pipe");
        stdin
            .as_mut()
            .expect("journal-remote running")
            .write_all(entry.as_bytes())
            .expect("write to systemd-journal-remote");
    }
}

impl Drop for JournalRemote {
    fn drop(&mut self) {
        // End of input: it finishes writing and exits.
        self.stdin
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        reap(
            self.child.get_mut().unwrap_or_else(PoisonError::into_inner),
            Duration::from_secs(5),
        );
    }
}

/// 128 random bits (a boot ID no other run uses).
fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("/dev/urandom");
    u128::from_ne_bytes(bytes)
}
