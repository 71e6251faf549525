//! `bans.jsonl`: an append-only journal of bans and unbans (the agent and
//! the CLI both append, under `flock`), replayed at start to restore
//! unexpired bans into empty maps and to count repeat offences, and readable
//! by an admin (`grep 203.0.113.7 /var/lib/jailer/bans.jsonl`).
//!
//! A record that does not parse exactly is skipped with a warning naming the
//! file and line: never widened to more ports, never made permanent, never
//! written back by compaction.

mod compact;
mod parser;
mod record;
mod replay;

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

use self::record::write_record;
pub use self::{
    record::{BanLines, Record},
    replay::{BanEntry, Replay},
};
use super::{StateError, files};

pub const JOURNAL: &str = "bans.jsonl";

/// The journal open for appending, and its lock, held together.
struct Locked {
    file: fs::File,
    _lock: Flock<fs::File>,
}

/// The ban journal in `state_dir`.
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal of `state_dir` (checked and created by
    /// [`super::prepare_state_dir`]).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(JOURNAL),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_err(&self) -> impl FnOnce(io::Error) -> StateError + '_ {
        move |source| StateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> Result<Locked, StateError> {
        self.lock_with(FlockArg::LockExclusive)
    }

    /// The journal, opened for appending under its lock. The lock is a file
    /// of its own: compaction replaces the journal's inode, and a lock on
    /// the old one would not keep a writer off the new one.
    fn lock_with(&self, how: FlockArg) -> Result<Locked, StateError> {
        let lock_path = self.path.with_extension("jsonl.lock");
        let lock = files::open_append(&lock_path).map_err(|source| StateError::Io {
            path: lock_path.clone(),
            source,
        })?;
        let lock = Flock::lock(lock, how).map_err(|(_, e)| StateError::Io {
            path: lock_path,
            source: e.into(),
        })?;
        let file = files::open_append(&self.path).map_err(self.io_err())?;
        Ok(Locked { file, _lock: lock })
    }

    /// Appends records in one write; with `sync`, on disk before returning.
    pub fn append(&self, records: &[Record], sync: bool) -> Result<(), StateError> {
        self.write(records, sync, FlockArg::LockExclusive)
    }

    /// [`Journal::append`], or `Ok(false)` at once when someone holds the
    /// journal (a compaction): the agent's loop never waits on it.
    pub fn try_append(&self, records: &[Record]) -> Result<bool, StateError> {
        match self.write(records, false, FlockArg::LockExclusiveNonblock) {
            Ok(()) => Ok(true),
            Err(StateError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EWOULDBLOCK) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Appends lines made by [`BanLines`] in one write; with `sync`, on
    /// disk before returning.
    pub fn append_lines(&self, lines: &[u8], sync: bool) -> Result<(), StateError> {
        self.write_text(lines, sync, FlockArg::LockExclusive)
    }

    fn write(&self, records: &[Record], sync: bool, how: FlockArg) -> Result<(), StateError> {
        let mut text = Vec::with_capacity(records.len() * 96);
        for r in records {
            write_record(r, &mut text);
        }
        self.write_text(&text, sync, how)
    }

    fn write_text(&self, text: &[u8], sync: bool, how: FlockArg) -> Result<(), StateError> {
        if text.is_empty() {
            return Ok(());
        }
        let mut locked = self.lock_with(how)?;
        locked.file.write_all(text).map_err(self.io_err())?;
        if sync {
            locked.file.sync_data().map_err(self.io_err())?;
        }
        Ok(())
    }

    /// Flushes appended records to disk.
    pub fn sync(&self) -> Result<(), StateError> {
        self.lock()?.file.sync_data().map_err(self.io_err())
    }

    /// The journal's length now: where [`Journal::read_from`] starts.
    pub fn size(&self) -> Result<u64, StateError> {
        match fs::symlink_metadata(&self.path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(self.io_err()(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ban::{Ban, Expiry, PortSet, Target},
        time::from_unix_secs,
    };

    pub(super) fn target(text: &str) -> Target {
        text.parse().unwrap()
    }

    pub(super) fn ban(addr: &str, jail: &str, until: Option<u64>, at: u64) -> Record {
        Record::Ban {
            addr: target(addr),
            jail: jail.into(),
            ports: PortSet::only(&[110]),
            until,
            at,
            monitor: false,
            origin: None,
        }
    }

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        (dir, j)
    }

    #[test]
    fn replay_restores_active_bans_and_counts() {
        let (dir, j) = journal();
        let now = from_unix_secs(1_000_000);
        j.append(
            &[
                ban("203.0.113.7", "vpopmail", Some(999_000), 990_000),
                ban("203.0.113.7", "vpopmail", Some(1_003_600), 1_000_000),
                ban("203.0.113.8", "vpopmail", None, 1_000_000),
                ban("203.0.113.9", "vpopmail", Some(1_003_600), 1_000_000),
                Record::Unban {
                    addr: target("203.0.113.9"),
                    at: 1_000_001,
                    origin: None,
                },
            ],
            true,
        )
        .unwrap();
        // A torn last line after a crash.
        files::open_append(&dir.path().join(JOURNAL))
            .unwrap()
            .write_all(b"{\"op\":\"ban\",\"ad")
            .unwrap();

        let r = j.replay(now).unwrap();
        let mut active: Vec<String> = r.active(now).map(|(t, _)| t.to_string()).collect();
        active.sort();
        assert_eq!(active, ["203.0.113.7", "203.0.113.8"]);
        assert_eq!(r.count("vpopmail", target("203.0.113.7")), 2);
        assert_eq!(r.skipped, 1);

        j.compact(now).unwrap();
        let r2 = j.replay(now).unwrap();
        assert_eq!(r2.active(now).count(), 2);
        assert_eq!(r2.skipped, 0, "compaction writes only what parsed");
        assert_eq!(
            r2.count("vpopmail", target("203.0.113.7")),
            2,
            "history survives compaction"
        );
        assert_eq!(r2.count("vpopmail", target("203.0.113.9")), 1);
    }

    #[test]
    fn ban_lines_are_the_records_lines_and_cut_at_a_line() {
        let now = from_unix_secs(1_000_000);
        let ban = Ban::new(
            PortSet::only(&[110, 995]),
            Expiry::At(from_unix_secs(1_003_600)),
        );
        let targets = [
            target("203.0.113.7"),
            target("2001:db8::/64"),
            target("198.51.100.0/24"),
        ];
        let lines = BanLines::new(&targets, "manual", &ban, now);
        let mut want = Vec::new();
        for t in &targets {
            write_record(&Record::ban(*t, "manual", &ban, now), &mut want);
        }
        assert_eq!(lines.range(0, 3), &want[..]);
        assert_eq!(lines.range(0, 9), &want[..]);
        assert_eq!(lines.range(0, 0), b"");
        assert_eq!(lines.range(2, 1), b"");
        let count = |text: &[u8]| text.iter().filter(|&&b| b == b'\n').count();
        let first = lines.range(0, 1);
        assert!(first.ends_with(b"}\n") && count(first) == 1);
        assert_eq!(lines.range(1, 3), &want[first.len()..]);
        // A journal appended with them replays to the same bans.
        let (_dir, j) = journal();
        j.append_lines(lines.range(0, 1), true).unwrap();
        j.append_lines(lines.range(2, 3), true).unwrap();
        let r = j.replay(now).unwrap();
        let mut active: Vec<String> = r.active(now).map(|(t, _)| t.to_string()).collect();
        active.sort();
        assert_eq!(active, ["198.51.100.0/24", "203.0.113.7"]);
        assert_eq!(r.skipped, 0);
    }

    #[test]
    fn unban_all_clears() {
        let (_dir, j) = journal();
        j.append(
            &[
                ban("203.0.113.7", "manual", None, 1),
                Record::UnbanAll { at: 2 },
            ],
            false,
        )
        .unwrap();
        let now = from_unix_secs(3);
        assert_eq!(j.replay(now).unwrap().active(now).count(), 0);
    }

    #[test]
    fn damaged_records_are_skipped_never_widened() {
        let (dir, j) = journal();
        let now = 1_000_000u64;
        let lines = [
            // damaged, unknown or missing ports
            r#"{"op":"ban","addr":"203.0.113.1","jail":"j","ports":"1l0","until":1000600,"at":1000000}"#,
            r#"{"op":"ban","addr":"203.0.113.2","jail":"j","ports":"110;995","until":1000600,"at":1000000}"#,
            r#"{"op":"ban","addr":"203.0.113.3","jail":"j","until":1000600,"at":1000000}"#,
            // missing until: not permanent by default
            r#"{"op":"ban","addr":"203.0.113.4","jail":"j","ports":"110","at":1000000}"#,
            r#"{"op":"ban","addr":"0.0.0.0/0","at":1}"#,
            // absurd times
            r#"{"op":"ban","addr":"203.0.113.5","jail":"j","ports":"110","until":18446744073709551615,"at":1000000}"#,
            r#"{"op":"ban","addr":"203.0.113.6","jail":"j","ports":"110","until":5,"at":1000000}"#,
            r#"{"op":"ban","addr":"203.0.113.7","jail":"j","ports":"110","until":null,"at":99999999999}"#,
            // unknown field, unknown op, bad address
            r#"{"op":"ban","addr":"203.0.113.8","jail":"j","ports":"110","until":null,"at":1000000,"x":1}"#,
            r#"{"op":"ban_all","at":1000000}"#,
            r#"{"op":"unban","addr":"nope","at":1000000}"#,
            // the one good record
            r#"{"op":"ban","addr":"203.0.113.9","jail":"j","ports":"110,995","until":1000600,"at":1000000}"#,
        ];
        fs::write(dir.path().join(JOURNAL), lines.join("\n") + "\n").unwrap();
        let r = j.replay(from_unix_secs(now)).unwrap();
        assert_eq!(r.skipped, lines.len() - 1);
        let active: Vec<(Target, Ban)> = r
            .active(from_unix_secs(now))
            .map(|(t, e)| (t, r.ban(e)))
            .collect();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].0, target("203.0.113.9"));
        assert_eq!(active[0].1.ports, PortSet::only(&[110, 995]));
        assert_eq!(active[0].1.expiry, Expiry::At(from_unix_secs(1_000_600)));
    }
}
