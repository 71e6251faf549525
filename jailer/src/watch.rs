//! Following log files: inotify-driven (no polling), safe across rotation by
//! rename+create and by copytruncate, bounded memory on any line length,
//! resumable from a saved (device, inode, offset).

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use crate::state::Position;

/// Longest line kept; longer ones are counted and skipped (vchkpw's own
/// lines are under 600 bytes).
pub const MAX_LINE: usize = 16 * 1024;
/// How long a rotated-away file is still read after the switch, for writers
/// (syslog) that keep writing to it until they reopen.
pub const ROTATE_GRACE: Duration = Duration::from_secs(5);
/// Lines per batch sent to the matcher.
const BATCH: usize = 4096;

/// Lines read from one log, and where reading got to after them.
#[derive(Debug)]
pub struct LogBatch {
    /// The log path as configured.
    pub source: PathBuf,
    pub lines: Vec<String>,
    pub position: Option<Position>,
    /// Over-long lines skipped in this batch.
    pub overlong: u64,
}

struct OpenLog {
    file: File,
    dev: u64,
    ino: u64,
    /// Offset of the first byte not yet consumed (the start of `partial`).
    offset: u64,
    partial: Vec<u8>,
    skipping: bool,
    last_data: Instant,
    /// The last bytes read (up to `FINGERPRINT`) and where they end: after a
    /// copytruncate they find the copy, which holds what we had not read yet.
    recent: Vec<u8>,
    read_pos: u64,
}

/// Bytes compared to recognise the copy made by copytruncate.
const FINGERPRINT: usize = 64;

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
            recent: Vec::new(),
            read_pos: offset,
        })
    }

    /// Reads to EOF, pushing complete lines; returns over-long lines skipped.
    fn read_lines(&mut self, out: &mut Vec<String>) -> io::Result<u64> {
        let mut overlong = 0;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = self.file.read(&mut buf)?;
            if n == 0 {
                return Ok(overlong);
            }
            self.last_data = Instant::now();
            self.read_pos += n as u64;
            let keep = FINGERPRINT.min(n);
            let drop_old = (self.recent.len() + keep).saturating_sub(FINGERPRINT);
            self.recent.drain(..drop_old);
            self.recent.extend_from_slice(&buf[n - keep..n]);
            let mut chunk = &buf[..n];
            while let Some(nl) = memchr::memchr(b'\n', chunk) {
                let piece = &chunk[..nl];
                if self.skipping {
                    self.skipping = false;
                } else if self.partial.len() + piece.len() > MAX_LINE {
                    overlong += 1;
                } else {
                    self.partial.extend_from_slice(piece);
                    out.push(String::from_utf8_lossy(&self.partial).into_owned());
                }
                self.partial.clear();
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
            // The offset is the read position minus the incomplete line.
            self.offset = self.file.stream_position()? - self.partial.len() as u64;
        }
    }

    /// The rest of a file that will not grow any more: its last line may lack `\n`.
    fn finish(&mut self, out: &mut Vec<String>) -> io::Result<u64> {
        let overlong = self.read_lines(out)?;
        if !self.partial.is_empty() && !self.skipping {
            out.push(String::from_utf8_lossy(&self.partial).into_owned());
            self.offset += self.partial.len() as u64;
            self.partial.clear();
        }
        Ok(overlong)
    }

    fn position(&self) -> Position {
        Position {
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
        }
    }
}

/// One followed log file.
pub struct Follower {
    path: PathBuf,
    current: Option<OpenLog>,
    /// The file rotated away, still read for `ROTATE_GRACE`.
    draining: Option<OpenLog>,
}

impl Follower {
    /// Opens `path`: at the saved position when it is the same file, reading
    /// the rest of the rotated file first when it was rotated meanwhile, at
    /// the end on first run. A missing file is followed once it appears.
    pub fn open(path: &Path, saved: Option<Position>) -> Self {
        let meta = fs::metadata(path).ok();
        let mut draining = None;
        let opened = match (meta, saved) {
            (Some(m), Some(p)) if m.dev() == p.dev && m.ino() == p.ino => {
                Some(OpenLog::open(path, p.offset))
            }
            (meta, Some(p)) => {
                draining = find_rotated(path, p).and_then(|old| OpenLog::open(&old, p.offset).ok());
                if draining.is_some() {
                    info!(log = %path.display(), "resuming in the rotated file first");
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

    /// Reads whatever is new, handling rotation and truncation.
    pub fn poll(&mut self, out: &mut Vec<String>) -> io::Result<u64> {
        let mut overlong = 0;
        if let Some(old) = &mut self.draining {
            overlong += old.read_lines(out)?;
            if old.last_data.elapsed() >= ROTATE_GRACE {
                overlong += old.finish(out)?;
                self.draining = None;
            }
        }
        let on_disk = fs::metadata(&self.path).ok();
        match (&mut self.current, on_disk) {
            (None, Some(_)) => {
                info!(log = %self.path.display(), "log file appeared");
                self.current = Some(OpenLog::open(&self.path, 0)?);
            }
            (Some(cur), Some(m)) if m.dev() != cur.dev || m.ino() != cur.ino => {
                // Renamed away and a new file created: finish the old one as far
                // as it goes now, keep reading it for a grace period, switch.
                overlong += cur.read_lines(out)?;
                info!(log = %self.path.display(), "log rotated (new file)");
                let old = self.current.take();
                if let Some(prev) = self.draining.take() {
                    let mut prev = prev;
                    overlong += prev.finish(out)?;
                }
                self.draining = old;
                self.current = Some(OpenLog::open(&self.path, 0)?);
            }
            (Some(cur), Some(m)) if m.len() < cur.offset => {
                // copytruncate: what was written after our last read and before
                // the copy is only in the copy; read it there, then start over.
                match find_copy(&self.path, cur) {
                    Some(copy) => {
                        info!(log = %self.path.display(), copy = %copy.display(), "log truncated (copytruncate); reading the rest from the copy, then from the start");
                        overlong += OpenLog::open(&copy, cur.offset)?.finish(out)?;
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
        if let Some(cur) = &mut self.current {
            overlong += cur.read_lines(out)?;
        }
        Ok(overlong)
    }

    /// Where reading got to in the current file.
    pub fn position(&self) -> Option<Position> {
        self.current.as_ref().map(OpenLog::position)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn draining(&self) -> bool {
        self.draining.is_some()
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

/// Wakes followers on inotify events in their directories.
pub struct DirWatcher {
    _watcher: RecommendedWatcher,
}

impl DirWatcher {
    /// Watches the directory of each path; an event naming a file whose name
    /// starts with a followed file's name (`mail.log`, `mail.log.1`) wakes it.
    pub fn new(files: &[(PathBuf, Arc<Notify>)]) -> notify::Result<Self> {
        let mut by_dir: HashMap<PathBuf, Vec<(String, Arc<Notify>)>> = HashMap::new();
        for (path, wake) in files {
            let dir = path
                .parent()
                .map(Path::to_owned)
                .unwrap_or_else(|| PathBuf::from("."));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            by_dir.entry(dir).or_default().push((name, wake.clone()));
        }
        let table = by_dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(event) = res else {
                    // Queue overflow and the like: wake everyone, they re-check.
                    table.values().flatten().for_each(|(_, w)| w.notify_one());
                    return;
                };
                if event.paths.is_empty() {
                    table.values().flatten().for_each(|(_, w)| w.notify_one());
                }
                for p in &event.paths {
                    let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                        continue;
                    };
                    let name = name.to_string_lossy();
                    if let Some(list) = table.get(dir) {
                        list.iter()
                            .filter(|(n, _)| name.starts_with(n.as_str()))
                            .for_each(|(_, w)| w.notify_one());
                    }
                }
            })?;
        for dir in by_dir.keys() {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        Ok(Self { _watcher: watcher })
    }
}

/// Drives one follower: reads on every wake-up and sends batches. Waits only
/// on inotify, except while a rotated file is draining (then also on a timer).
pub async fn follow(mut follower: Follower, wake: Arc<Notify>, tx: mpsc::Sender<LogBatch>) {
    let source = follower.path().to_owned();
    loop {
        let mut lines = Vec::new();
        let overlong = match follower.poll(&mut lines) {
            Ok(n) => n,
            Err(e) => {
                warn!(log = %follower.path().display(), error = %e, "reading log failed; retrying on the next change");
                0
            }
        };
        if overlong > 0 {
            warn!(log = %follower.path().display(), count = overlong, max = MAX_LINE, "over-long lines skipped");
        }
        let position = follower.position();
        let mut chunks = lines.chunks(BATCH).peekable();
        if chunks.peek().is_none() && overlong > 0 {
            let batch = LogBatch {
                source: source.clone(),
                lines: Vec::new(),
                position,
                overlong,
            };
            if tx.send(batch).await.is_err() {
                return;
            }
        }
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let batch = LogBatch {
                source: source.clone(),
                lines: chunk.to_vec(),
                // Only the last batch carries the position: it covers them all.
                position: if last { position } else { None },
                overlong: if first { overlong } else { 0 },
            };
            first = false;
            if tx.send(batch).await.is_err() {
                return;
            }
        }
        if follower.draining() {
            let _ = tokio::time::timeout(ROTATE_GRACE, wake.notified()).await;
        } else {
            wake.notified().await;
        }
        debug!(log = %follower.path().display(), "woken");
    }
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

    fn poll(f: &mut Follower) -> Vec<String> {
        let mut v = Vec::new();
        f.poll(&mut v).unwrap();
        v
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
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.log");
        append(&log, "");
        let mut f = Follower::open(&log, None);
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
    fn copytruncate_restarts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.log");
        append(&log, "");
        let mut f = Follower::open(&log, None);
        append(&log, "aaaa\nbbbb\n");
        assert_eq!(poll(&mut f), ["aaaa", "bbbb"]);
        fs::copy(&log, dir.path().join("mail.log.1")).unwrap();
        File::create(&log).unwrap(); // truncate
        append(&log, "c\n");
        assert_eq!(poll(&mut f), ["c"]);
    }

    #[test]
    fn resume_from_saved_position_same_and_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.log");
        append(&log, "");
        let mut f = Follower::open(&log, None);
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
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.log");
        append(&log, "");
        let mut f = Follower::open(&log, None);
        let long = "x".repeat(MAX_LINE * 3);
        append(&log, &format!("a\n{long}\nb\n"));
        OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"\xff\xfe ok\n")
            .unwrap();
        let mut v = Vec::new();
        let overlong = f.poll(&mut v).unwrap();
        assert_eq!(overlong, 1);
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
        let mut v = Vec::new();
        let err = f.poll(&mut v).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EISDIR), "{err}");
    }

    #[test]
    fn copytruncate_lines_not_read_before_the_copy_come_from_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.log");
        append(&log, "");
        let mut f = Follower::open(&log, None);
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
}
