//! Following one log file: inotify-driven (no polling), safe across
//! rotation by rename+create and by copytruncate, resumable from a saved
//! (device, inode, offset), and bounded: each poll reads at most a budget of
//! bytes, so a burst of gigabytes flows through in batches instead of
//! landing in memory at once.

use std::{
    collections::VecDeque,
    fs::{self, File},
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::Lines;
use crate::state::Position;

/// Longest line kept; longer ones are counted and skipped (vchkpw's own
/// lines are under 600 bytes).
pub const MAX_LINE: usize = 16 * 1024;
/// How long a rotated-away file is still read after the switch, for writers
/// (syslog) that keep writing to it until they reopen.
pub const ROTATE_GRACE: Duration = Duration::from_secs(5);
/// Bytes compared to recognise the copy made by copytruncate.
const FINGERPRINT: usize = 64;
/// Bytes per read syscall.
const READ_SIZE: usize = 64 * 1024;

struct OpenLog {
    file: File,
    dev: u64,
    ino: u64,
    /// Offset of the first byte not yet consumed: the start of the line
    /// being assembled (or skipped), so a restart never begins mid-line.
    offset: u64,
    partial: Vec<u8>,
    /// Inside an over-long line, dropping bytes until its end.
    skipping: bool,
    last_data: Instant,
    /// The file will not grow (a copytruncate copy): finish it at its end.
    complete: bool,
    /// The last bytes read (up to `FINGERPRINT`) and where they end: after a
    /// copytruncate they find the copy, which holds what we had not read yet.
    recent: Vec<u8>,
    read_pos: u64,
}

impl OpenLog {
    fn open(path: &Path, offset: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let offset = if meta.len() >= offset { offset } else { 0 };
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            partial: Vec::new(),
            skipping: false,
            last_data: Instant::now(),
            complete: false,
            recent: Vec::new(),
            read_pos: offset,
        })
    }

    /// Reads until end of file or until `budget` bytes are read, pushing
    /// complete lines; returns over-long lines skipped.
    fn read_lines(&mut self, out: &mut Lines, budget: &mut usize) -> io::Result<u64> {
        let mut overlong = 0;
        let mut buf = vec![0u8; READ_SIZE];
        while *budget > 0 {
            let want = READ_SIZE.min(*budget);
            let n = self.file.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            *budget -= n;
            self.last_data = Instant::now();
            let start = self.read_pos;
            self.read_pos += n as u64;
            let keep = FINGERPRINT.min(n);
            let drop_old = (self.recent.len() + keep).saturating_sub(FINGERPRINT);
            self.recent.drain(..drop_old);
            self.recent.extend_from_slice(&buf[n - keep..n]);
            let mut chunk = &buf[..n];
            let mut at = start;
            while let Some(nl) = memchr::memchr(b'\n', chunk) {
                let piece = &chunk[..nl];
                if self.skipping {
                    self.skipping = false;
                } else if self.partial.len() + piece.len() > MAX_LINE {
                    overlong += 1;
                } else if self.partial.is_empty() {
                    out.push(piece);
                } else {
                    self.partial.extend_from_slice(piece);
                    out.push(&self.partial);
                }
                self.partial.clear();
                at += nl as u64 + 1;
                self.offset = at;
                chunk = &chunk[nl + 1..];
            }
            if self.skipping {
                // consumed, dropped
            } else if self.partial.len() + chunk.len() > MAX_LINE {
                overlong += 1;
                self.skipping = true;
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(chunk);
            }
        }
        Ok(overlong)
    }

    /// The last line of a file that will not grow any more may lack `\n`.
    fn flush_partial(&mut self, out: &mut Lines) {
        if !self.partial.is_empty() && !self.skipping {
            out.push(&self.partial);
            self.offset += self.partial.len() as u64;
        }
        self.partial.clear();
    }

    fn position(&self) -> Position {
        Position {
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
        }
    }
}

/// What one [`Follower::poll`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Polled {
    /// Over-long lines skipped.
    pub overlong: u64,
    /// The budget ran out before the end: poll again without waiting.
    pub more: bool,
}

/// One followed log file.
pub struct Follower {
    path: PathBuf,
    current: Option<OpenLog>,
    /// Files rotated away, oldest first, read to their end before the
    /// current one; a renamed file for `ROTATE_GRACE` after its last data.
    draining: VecDeque<OpenLog>,
}

impl Follower {
    /// Opens `path`: at the saved position when it is the same file, reading
    /// the rest of the rotated file first when it was rotated meanwhile, at
    /// the end on first run. A missing file is followed once it appears.
    pub fn open(path: &Path, saved: Option<Position>) -> Self {
        let meta = fs::metadata(path).ok();
        let mut draining = VecDeque::new();
        let opened = match (meta, saved) {
            (Some(m), Some(p)) if m.dev() == p.dev && m.ino() == p.ino => {
                Some(OpenLog::open(path, p.offset))
            }
            (meta, Some(p)) => {
                if let Some(old) =
                    find_rotated(path, p).and_then(|old| OpenLog::open(&old, p.offset).ok())
                {
                    info!(log = %path.display(), "resuming in the rotated file first");
                    draining.push_back(old);
                }
                meta.map(|_| OpenLog::open(path, 0))
            }
            (Some(m), None) => Some(OpenLog::open(path, m.len())),
            (None, None) => None,
        };
        let current = match opened {
            Some(Ok(log)) => Some(log),
            // Not a silent skip: say why, keep watching, read once it works.
            Some(Err(e)) => {
                warn!(log = %path.display(), error = %e, "cannot read log; following it once it can be opened");
                None
            }
            None => {
                warn!(log = %path.display(), "log file absent; following it once it appears");
                None
            }
        };
        Self {
            path: path.to_owned(),
            current,
            draining,
        }
    }

    /// Reads what is new, up to `budget` bytes, handling rotation and
    /// truncation.
    pub fn poll(&mut self, out: &mut Lines, budget: usize) -> io::Result<Polled> {
        let mut budget = budget.max(1);
        self.notice_rotation()?;
        let mut overlong = 0;
        // Each rotated file to its end, oldest first. One still in its grace
        // period does not hold back the next: after two quick rotations the
        // newer one's lines are read now, not when the older one's grace ends.
        let mut i = 0;
        while let Some(old) = self.draining.get_mut(i) {
            overlong += old.read_lines(out, &mut budget)?;
            if budget == 0 {
                break;
            }
            // At its end: done if it will not grow, or syslog has let go of it.
            if old.complete || old.last_data.elapsed() >= ROTATE_GRACE {
                old.flush_partial(out);
                self.draining.remove(i);
            } else {
                i += 1;
            }
        }
        if budget > 0
            && let Some(cur) = &mut self.current
        {
            overlong += cur.read_lines(out, &mut budget)?;
        }
        Ok(Polled {
            overlong,
            more: budget == 0,
        })
    }

    /// Switches files on rename+create, and rewinds on copytruncate (the
    /// unread rest of the old content is read from the copy first).
    fn notice_rotation(&mut self) -> io::Result<()> {
        let on_disk = fs::metadata(&self.path).ok();
        match (&mut self.current, on_disk) {
            (None, Some(_)) => {
                info!(log = %self.path.display(), "log file appeared");
                self.current = Some(OpenLog::open(&self.path, 0)?);
            }
            (Some(cur), Some(m)) if m.dev() != cur.dev || m.ino() != cur.ino => {
                // Renamed away and a new file created: the old one is read to
                // its end (and for a grace period) before the new one.
                info!(log = %self.path.display(), "log rotated (new file)");
                let new = OpenLog::open(&self.path, 0)?;
                if let Some(old) = self.current.replace(new) {
                    self.draining.push_back(old);
                }
            }
            (Some(cur), Some(m)) if m.len() < cur.read_pos => {
                // copytruncate: what was written after our last read and before
                // the copy is only in the copy; read it there, then start over.
                match find_copy(&self.path, cur) {
                    Some(copy) => {
                        info!(log = %self.path.display(), copy = %copy.display(), "log truncated (copytruncate); reading the rest from the copy, then from the start");
                        let mut rest = OpenLog::open(&copy, cur.offset)?;
                        rest.complete = true;
                        self.draining.push_back(rest);
                    }
                    None => {
                        info!(log = %self.path.display(), "log truncated (copytruncate); reading from the start")
                    }
                }
                cur.file.seek(SeekFrom::Start(0))?;
                cur.offset = 0;
                cur.read_pos = 0;
                cur.recent.clear();
                cur.partial.clear();
                cur.skipping = false;
            }
            _ => {}
        }
        Ok(())
    }

    /// Where reading got to in the current file.
    pub fn position(&self) -> Option<Position> {
        self.current.as_ref().map(OpenLog::position)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A rotated file is still being read (the caller re-polls on a timer:
    /// its grace period ends without an inotify event).
    pub fn draining(&self) -> bool {
        !self.draining.is_empty()
    }
}

/// A file in the same directory that is the rotated `saved` file.
fn find_rotated(path: &Path, saved: Position) -> Option<PathBuf> {
    let dir = path.parent()?;
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| {
            let m = e.metadata().ok()?;
            (m.dev() == saved.dev && m.ino() == saved.ino).then(|| e.path())
        })
}

/// The copy copytruncate made of `cur`: a sibling named like the log whose
/// bytes just before our read position are the ones we read last.
fn find_copy(path: &Path, cur: &OpenLog) -> Option<PathBuf> {
    use std::os::unix::fs::FileExt;
    if cur.recent.is_empty() {
        return None;
    }
    let dir = path.parent()?;
    let name = path.file_name()?.to_string_lossy().into_owned();
    let at = cur.read_pos.checked_sub(cur.recent.len() as u64)?;
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| {
            let candidate = e.path();
            let file_name = e.file_name().to_string_lossy().into_owned();
            if candidate == path || !file_name.starts_with(&name) {
                return None;
            }
            let m = e.metadata().ok()?;
            if !m.is_file() || m.ino() == cur.ino || m.len() < cur.read_pos {
                return None;
            }
            let mut bytes = vec![0u8; cur.recent.len()];
            File::open(&candidate)
                .ok()?
                .read_exact_at(&mut bytes, at)
                .ok()?;
            (bytes == cur.recent).then_some(candidate)
        })
}

#[cfg(test)]
mod tests {
    use std::{fs::OpenOptions, io::Write};

    use super::*;

    fn append(path: &Path, text: &str) {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    /// A fresh empty log in a temp dir, followed from its (empty) end.
    fn following() -> (tempfile::TempDir, PathBuf, Follower) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.log");
        append(&log, "");
        let f = Follower::open(&log, None);
        (dir, log, f)
    }

    fn poll(f: &mut Follower) -> Vec<String> {
        let mut v = Lines::default();
        while f.poll(&mut v, 1 << 20).unwrap().more {}
        v.iter().map(str::to_owned).collect()
    }

    #[test]
    fn starts_at_end_then_follows() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.log");
        append(&log, "old 1\nold 2\n");
        let mut f = Follower::open(&log, None);
        assert!(poll(&mut f).is_empty());
        append(&log, "new 1\nnew ");
        assert_eq!(poll(&mut f), ["new 1"]);
        append(&log, "2\n");
        assert_eq!(poll(&mut f), ["new 2"]);
    }

    #[test]
    fn absent_at_start_then_created() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.log");
        let mut f = Follower::open(&log, None);
        assert!(poll(&mut f).is_empty());
        append(&log, "a\n");
        assert_eq!(poll(&mut f), ["a"]);
    }

    #[test]
    fn rotation_by_rename_and_create_reads_both_once() {
        let (dir, log, mut f) = following();
        append(&log, "1\n2\n");
        assert_eq!(poll(&mut f), ["1", "2"]);
        append(&log, "3\n4");
        fs::rename(&log, dir.path().join("mail.log.1")).unwrap();
        // syslog writes once more to the old file before reopening
        append(&dir.path().join("mail.log.1"), "\n5\n");
        append(&log, "6\n");
        let mut got = poll(&mut f);
        append(&dir.path().join("mail.log.1"), "7\n");
        got.extend(poll(&mut f));
        got.sort();
        assert_eq!(got, ["1", "2", "3", "4", "5", "6", "7"][2..].to_vec());
        assert!(poll(&mut f).is_empty());
    }

    #[test]
    fn a_rotation_in_the_grace_of_another_is_read_at_once() {
        // Two rotations within ROTATE_GRACE: the first rotated file is still
        // in its grace period when the second one has unread lines.
        let (dir, log, mut f) = following();
        append(&log, "1\n");
        assert_eq!(poll(&mut f), ["1"]);
        fs::rename(&log, dir.path().join("mail.log.1")).unwrap();
        append(&log, "2\n");
        assert_eq!(poll(&mut f), ["2"]);
        append(&log, "3\n");
        fs::rename(dir.path().join("mail.log.1"), dir.path().join("mail.log.2")).unwrap();
        fs::rename(&log, dir.path().join("mail.log.1")).unwrap();
        append(&log, "4\n");
        assert_eq!(
            poll(&mut f),
            ["3", "4"],
            "3 waited for the grace of mail.log.2"
        );
        append(&dir.path().join("mail.log.2"), "late\n");
        assert_eq!(poll(&mut f), ["late"]);
    }

    #[test]
    fn copytruncate_restarts_at_zero() {
        let (dir, log, mut f) = following();
        append(&log, "aaaa\nbbbb\n");
        assert_eq!(poll(&mut f), ["aaaa", "bbbb"]);
        fs::copy(&log, dir.path().join("mail.log.1")).unwrap();
        File::create(&log).unwrap(); // truncate
        append(&log, "c\n");
        assert_eq!(poll(&mut f), ["c"]);
    }

    #[test]
    fn resume_from_saved_position_same_and_rotated_file() {
        let (dir, log, mut f) = following();
        append(&log, "1\n2\n");
        assert_eq!(poll(&mut f), ["1", "2"]);
        let saved = f.position().unwrap();
        drop(f);
        // Agent down: more lines, then a rotation, then more lines.
        append(&log, "3\n");
        let mut f = Follower::open(&log, Some(saved));
        assert_eq!(poll(&mut f), ["3"]);
        let saved = f.position().unwrap();
        drop(f);
        append(&log, "4\n");
        fs::rename(&log, dir.path().join("mail.log.1")).unwrap();
        append(&log, "5\n");
        let mut f = Follower::open(&log, Some(saved));
        let mut got = poll(&mut f);
        got.sort();
        assert_eq!(got, ["4", "5"]);
    }

    #[test]
    fn overlong_lines_are_counted_and_skipped_and_bad_utf8_survives() {
        let (_dir, log, mut f) = following();
        let long = "x".repeat(MAX_LINE * 3);
        append(&log, &format!("a\n{long}\nb\n"));
        OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"\xff\xfe ok\n")
            .unwrap();
        let mut lines = Lines::default();
        let polled = f.poll(&mut lines, 1 << 20).unwrap();
        assert_eq!(polled.overlong, 1);
        let v: Vec<&str> = lines.iter().collect();
        assert_eq!(v.len(), 3);
        assert_eq!(&v[..2], ["a", "b"]);
        assert!(v[2].ends_with(" ok"));
        // the position stays exact after the skip
        assert_eq!(
            f.position().unwrap().offset,
            fs::metadata(&log).unwrap().len()
        );
    }

    #[test]
    fn an_unreadable_log_is_an_error_not_a_silent_skip() {
        // Root reads any file, so stand in a directory for an unreadable log:
        // it opens, and every read fails.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.log");
        fs::create_dir(&log).unwrap();
        let mut f = Follower::open(&log, None);
        let err = f.poll(&mut Lines::default(), 1 << 20).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EISDIR), "{err}");
    }

    #[test]
    fn copytruncate_lines_not_read_before_the_copy_come_from_the_copy() {
        let (dir, log, mut f) = following();
        append(&log, "line one\nline two\n");
        assert_eq!(poll(&mut f), ["line one", "line two"]);
        append(&log, "line three\nline fo"); // not read before the rotation
        fs::copy(&log, dir.path().join("mail.log.1")).unwrap();
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        append(&log, "line five\n");
        assert_eq!(poll(&mut f), ["line three", "line fo", "line five"]);
        assert!(poll(&mut f).is_empty());
    }

    #[test]
    fn a_burst_is_read_in_bounded_batches_with_nothing_lost() {
        let (_dir, log, mut f) = following();
        let burst: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
        append(&log, &burst);
        let (mut batches, mut total, mut biggest) = (0, 0, 0);
        loop {
            let mut lines = Lines::default();
            let polled = f.poll(&mut lines, 64 * 1024).unwrap();
            biggest = biggest.max(lines.bytes());
            for (i, line) in lines.iter().enumerate() {
                assert_eq!(line, format!("line {}", total + i));
            }
            total += lines.len();
            batches += 1;
            if !polled.more {
                break;
            }
        }
        assert_eq!(total, 200_000);
        assert!(batches > 20, "{batches} batches");
        assert!(biggest <= 64 * 1024, "a batch held {biggest} bytes");
    }

    #[test]
    fn a_restart_inside_an_overlong_line_skips_it_whole() {
        let (_dir, log, mut f) = following();
        // The tail of an over-long line looks like a line of its own: it
        // must never be read as one, even across a restart mid-line.
        let long = format!(
            "{} vpopmail[1]: vchkpw-pop3: password fail a@b:192.0.2.9",
            "x".repeat(MAX_LINE)
        );
        append(&log, &format!("a\n{long}"));
        assert_eq!(poll(&mut f), ["a"]);
        let saved = f.position().unwrap();
        assert_eq!(
            saved.offset, 2,
            "position stays at the start of the unfinished line"
        );
        drop(f);
        append(&log, "\nb\n");
        let mut f = Follower::open(&log, Some(saved));
        assert_eq!(poll(&mut f), ["b"]);
    }
}
