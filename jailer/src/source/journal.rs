//! The systemd journal as a log source: what fail2ban does with
//! `backend = systemd` and `journalmatch`.
//!
//! Reading goes through libsystemd (the `systemd` crate), the same reader
//! journalctl and fail2ban's python-systemd use, so match semantics, cursors,
//! rotation, compression and file-format versions are exactly the journal's
//! own. An `sd_journal` handle is neither `Send` nor `Sync`, so a dedicated
//! thread owns it: it reads entries, formats them as fail2ban does and sends
//! them in batches over a bounded tokio channel; when caught up it sleeps in
//! poll(2) on the journal's inotify descriptor and on a stop pipe, so it
//! neither busy-polls nor needs a timeout to notice that it must stop.
//!
//! Building needs pkg-config and libsystemd's development files (Debian:
//! `libsystemd-dev pkg-config`); the binary then needs `libsystemd.so.0`
//! (Debian's libsystemd0, always present) even where no journal is read.

use std::{
    ffi::{CString, c_int},
    fmt,
    io::{self, PipeReader, PipeWriter},
    mem::MaybeUninit,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
    sync::mpsc as std_mpsc,
    thread::{self, JoinHandle},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use foreign_types::ForeignTypeRef;
use systemd::journal::{Journal, OpenDirectoryOptions, OpenFilesOptions, OpenOptions};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Most entries sent in one batch.
pub const BATCH: usize = 1024;
/// Batches in flight; the reader blocks (and so stops reading) when full.
const CHANNEL: usize = 4;

/// Which journal to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalLocation {
    /// The local system journal (`/run/log/journal`, `/var/log/journal`),
    /// without user journals: fail2ban's default `journalflags` (4,
    /// `SD_JOURNAL_SYSTEM`), which also avoids opening one file per user.
    System,
    /// Every journal file in a directory (fail2ban's `journalpath`); new
    /// files appearing there (rotation) are picked up.
    Directory(PathBuf),
    /// These journal files only (fail2ban's `journalfiles`, after globbing).
    Files(Vec<PathBuf>),
}

impl fmt::Display for JournalLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::System => f.write_str("the system journal"),
            Self::Directory(dir) => write!(f, "journal directory {}", dir.display()),
            Self::Files(files) => {
                f.write_str("journal file(s) ")?;
                for (i, file) in files.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", file.display())?;
                }
                Ok(())
            }
        }
    }
}

/// Where reading starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// After the last entry present at open: only new entries are delivered.
    Tail,
    /// After the entry with this cursor (one delivered before, persisted by
    /// the caller); that entry itself is not delivered again. If it is gone
    /// (vacuumed), reading resumes at the first entry after where it was.
    AfterCursor(String),
    /// At the first entry at or after this time (fail2ban without a saved
    /// position starts at now - findtime).
    Since(SystemTime),
}

/// A fail2ban `journalmatch` expression.
///
/// Each line is split into words as Python's `shlex.split` does (quotes and
/// backslashes); the words are `FIELD=value` terms ANDed together, a `+` word
/// separates alternatives, and lines are alternatives too. As in libsystemd,
/// terms on the *same* field within one alternative are ORed with each other
/// (`_SYSTEMD_UNIT=a.service _SYSTEMD_UNIT=b.service` matches either unit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalMatch {
    groups: Vec<Vec<String>>,
}

impl JournalMatch {
    /// Parses a `journalmatch` value (possibly several lines).
    pub fn parse(expr: &str) -> Result<Self, MatchError> {
        let mut groups = Vec::new();
        for line in expr.split('\n') {
            let mut group = Vec::new();
            for word in shlex_split(line).map_err(|reason| MatchError::Syntax {
                line: line.to_owned(),
                reason,
            })? {
                if word == "+" {
                    groups.push(std::mem::take(&mut group));
                } else {
                    check_term(&word)?;
                    group.push(word);
                }
            }
            groups.push(group);
        }
        // An empty alternative ("A=1 + + B=2", a trailing "+", a blank line)
        // adds nothing in libsystemd either.
        groups.retain(|group| !group.is_empty());
        Ok(Self { groups })
    }

    /// The alternatives, each a list of `FIELD=value` terms.
    pub fn groups(&self) -> &[Vec<String>] {
        &self.groups
    }

    /// No terms at all: every entry matches.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Shown as fail2ban's `status` shows it: alternatives joined by ` + `.
impl fmt::Display for JournalMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            f.write_str(&group.join(" "))?;
        }
        Ok(())
    }
}

/// A `journalmatch` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// Unbalanced quotes or a trailing backslash.
    #[error("journalmatch `{line}`: {reason}")]
    Syntax { line: String, reason: &'static str },
    /// A word that libsystemd would reject as a match.
    #[error(
        "journalmatch term `{term}` is not FIELD=value with FIELD made of A-Z, 0-9 and _ (not starting with __)"
    )]
    Term { term: String },
}

/// One journal entry, ready for the filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `HOSTNAME IDENTIFIER[PID]: MESSAGE`, as fail2ban's
    /// `formatJournalEntry` builds it (the date is not part of it).
    pub line: String,
    /// When it was logged: `_SOURCE_REALTIME_TIMESTAMP` when the sender's
    /// time is known, else the journal's receive time; fail2ban's choice.
    pub time: SystemTime,
    /// The journal's receive time (`__REALTIME_TIMESTAMP`).
    pub realtime: SystemTime,
    /// Opaque position; persist the last one handled and pass it back as
    /// [`Start::AfterCursor`] to resume after it.
    pub cursor: String,
}

/// The journal could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Opening failed (a missing or unreadable directory or file, ...).
    #[error("cannot open {location}")]
    Open {
        location: JournalLocation,
        #[source]
        source: io::Error,
    },
    /// A match that libsystemd refused.
    #[error("{location}: journal match `{term}` rejected")]
    AddMatch {
        location: JournalLocation,
        term: String,
        #[source]
        source: io::Error,
    },
    /// A saved cursor that is not a journal cursor.
    #[error("{location}: saved cursor `{cursor}` is not usable")]
    Cursor {
        location: JournalLocation,
        cursor: String,
        #[source]
        source: io::Error,
    },
    /// Reading or waiting failed; the source has stopped.
    #[error("reading {location}: {op}")]
    Read {
        location: JournalLocation,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The reader thread could not be started.
    #[error("cannot start the reader thread for {location}")]
    Thread {
        location: JournalLocation,
        #[source]
        source: io::Error,
    },
    /// A bad `journalmatch`.
    #[error(transparent)]
    Match(#[from] MatchError),
}

/// What to read and where to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    pub location: JournalLocation,
    pub matches: JournalMatch,
    pub start: Start,
}

/// Batches of entries, or the error that stopped reading.
pub type JournalItem = Result<Vec<JournalEntry>, JournalError>;

/// A followed journal: entries arrive in order, in batches, as they are
/// appended. Dropping it stops the reader thread (without waiting for it).
#[derive(Debug)]
pub struct JournalSource {
    rx: mpsc::Receiver<JournalItem>,
    /// Closing it wakes the reader out of poll(2).
    stop: Option<PipeWriter>,
    thread: Option<JoinHandle<()>>,
}

impl JournalSource {
    /// Opens the journal, applies the matches and positions the reader, then
    /// starts following. Blocks while libsystemd opens the files (a few ms;
    /// use `spawn_blocking` where that matters). Errors in opening, matching
    /// or seeking are returned here, naming the journal concerned.
    pub fn open(config: JournalConfig) -> Result<Self, JournalError> {
        let location = config.location.clone();
        let (stop_rx, stop_tx) = io::pipe().map_err(|source| JournalError::Thread {
            location: location.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let thread = thread::Builder::new()
            .name("journal".into())
            .spawn(move || match Reader::open(&config) {
                Ok(mut reader) => {
                    // open() below is waiting for this; it cannot be gone.
                    let _ = ready_tx.send(Ok(()));
                    if let Err(e) = reader.follow(&tx, &stop_rx) {
                        let _ = tx.blocking_send(Err(e));
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|source| JournalError::Thread {
                location: location.clone(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                rx,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            // The thread died before reporting (a panic in libsystemd glue).
            Err(_) => {
                let _ = thread.join();
                Err(JournalError::Thread {
                    location,
                    source: io::Error::other("reader thread ended while opening"),
                })
            }
        }
    }

    /// The next batch (never empty), the error that stopped the reader (then
    /// `None` follows), or `None` once stopped.
    pub async fn recv(&mut self) -> Option<JournalItem> {
        self.rx.recv().await
    }

    /// Stops the reader thread and waits for it to exit (promptly: it is
    /// woken out of poll(2) and out of a full channel).
    pub fn stop(mut self) {
        self.rx.close();
        self.stop.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("journal reader thread panicked");
        }
    }
}

impl Drop for JournalSource {
    fn drop(&mut self) {
        // Wake the thread; it exits on its own. Joining here could block an
        // async runtime.
        self.rx.close();
        self.stop.take();
    }
}

/// The thread's side: the journal handle and where it stands.
struct Reader {
    journal: Journal,
    location: JournalLocation,
    /// The entry the journal is positioned on has not been delivered yet.
    pending: bool,
}

impl Reader {
    fn open(config: &JournalConfig) -> Result<Self, JournalError> {
        let location = config.location.clone();
        let open_error = |source: io::Error| JournalError::Open {
            location: location.clone(),
            source,
        };
        let opened = match &location {
            JournalLocation::System => OpenOptions::default().system(true).open(),
            JournalLocation::Directory(dir) => {
                OpenDirectoryOptions::default().open_directory(c_path(dir).map_err(open_error)?)
            }
            JournalLocation::Files(files) => {
                let files = files
                    .iter()
                    .map(|f| c_path(f))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(open_error)?;
                OpenFilesOptions::default().open_files(&files)
            }
        };
        let journal = opened.map_err(|e| open_error(e.into()))?;
        let mut reader = Self {
            journal,
            location,
            pending: false,
        };
        // The inotify watches are created by the first sd_journal_get_fd();
        // doing it before seeking means nothing appended meanwhile is missed.
        reader
            .journal
            .fd()
            .map_err(read_error(&reader.location, "sd_journal_get_fd"))?;
        reader.add_matches(&config.matches)?;
        reader.seek(&config.start)?;
        if config.matches.is_empty() {
            warn!(journal = %reader.location, "no journalmatch: every journal entry goes to the filters");
        }
        if reader.location == JournalLocation::System && reader.journal.usage().unwrap_or(0) == 0 {
            warn!(
                "no journal files found in /run/log/journal or /var/log/journal: \
                 journald is not running here, or this process may not read them \
                 (root, or group systemd-journal or adm, needed); waiting for them to appear"
            );
        }
        info!(journal = %reader.location, matches = %config.matches, start = ?config.start, "following the journal");
        Ok(reader)
    }

    /// As fail2ban's `_addJournalMatches`: the terms of a group, then a
    /// disjunction.
    fn add_matches(&mut self, matches: &JournalMatch) -> Result<(), JournalError> {
        for group in matches.groups() {
            for term in group {
                // check_term() guaranteed the `=`.
                let (field, value) = term.split_once('=').unwrap_or((term, ""));
                self.journal
                    .match_add(field, value)
                    .map_err(|e| JournalError::AddMatch {
                        location: self.location.clone(),
                        term: term.clone(),
                        source: e.into(),
                    })?;
            }
            self.journal
                .match_or()
                .map_err(read_error(&self.location, "sd_journal_add_disjunction"))?;
        }
        Ok(())
    }

    fn seek(&mut self, start: &Start) -> Result<(), JournalError> {
        match start {
            Start::Tail => {
                // Stand on the last matching entry so that next() returns
                // what follows it: next() straight after seek_tail() returns
                // the last entry again (libsystemd 252), and fail2ban saw it
                // skip entries when nothing matched.
                self.journal
                    .seek_tail()
                    .map_err(read_error(&self.location, "sd_journal_seek_tail"))?;
                let on_last = self
                    .journal
                    .previous()
                    .map_err(read_error(&self.location, "sd_journal_previous"))?;
                if on_last == 0 {
                    // Nothing matches yet: the first match ever is new.
                    self.journal
                        .seek_head()
                        .map_err(read_error(&self.location, "sd_journal_seek_head"))?;
                }
            }
            Start::AfterCursor(cursor) => {
                let location = self.location.clone();
                let bad_cursor = |e: systemd::Error| JournalError::Cursor {
                    location,
                    cursor: cursor.clone(),
                    source: e.into(),
                };
                self.journal
                    .seek_cursor(cursor.as_str())
                    .map_err(bad_cursor)?;
                // Land on the cursor's entry, or on the first after where it
                // was if it is gone; deliver it only in the latter case.
                let found = self
                    .journal
                    .next()
                    .map_err(read_error(&self.location, "sd_journal_next"))?;
                if found > 0 {
                    self.pending = !self
                        .journal
                        .test_cursor(cursor.as_str())
                        .map_err(read_error(&self.location, "sd_journal_test_cursor"))?;
                }
            }
            Start::Since(time) => {
                let usec = time
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
                self.journal
                    .seek_realtime_usec(usec)
                    .map_err(read_error(&self.location, "sd_journal_seek_realtime_usec"))?;
            }
        }
        Ok(())
    }

    /// Reads, sends and waits until stopped or failed.
    fn follow(
        &mut self,
        tx: &mpsc::Sender<JournalItem>,
        stop: &PipeReader,
    ) -> Result<(), JournalError> {
        loop {
            let mut batch = Vec::new();
            if std::mem::take(&mut self.pending) {
                self.push_current(&mut batch);
            }
            while batch.len() < BATCH {
                let moved = self
                    .journal
                    .next()
                    .map_err(read_error(&self.location, "sd_journal_next"))?;
                if moved == 0 {
                    break;
                }
                self.push_current(&mut batch);
            }
            if !batch.is_empty() {
                if tx.blocking_send(Ok(batch)).is_err() {
                    return Ok(()); // receiver gone: stopped
                }
                continue;
            }
            if self.wait(stop)? {
                return Ok(());
            }
        }
    }

    fn push_current(&mut self, batch: &mut Vec<JournalEntry>) {
        match self.current() {
            Ok(entry) => batch.push(entry),
            // journalctl skips entries it cannot read (corrupt or with an
            // unsupported compression) the same way.
            Err(e) => {
                warn!(journal = %self.location, error = %e, "skipping an unreadable journal entry")
            }
        }
    }

    /// The entry the journal is positioned on.
    fn current(&mut self) -> Result<JournalEntry, JournalError> {
        let mut fields = Fields::default();
        self.journal.restart_data();
        loop {
            let field = self
                .journal
                .enumerate_data()
                .map_err(read_error(&self.location, "sd_journal_enumerate_data"))?;
            let Some(field) = field else { break };
            fields.take(field.name(), field.value().unwrap_or_default());
        }
        let monotonic = if fields.needs_monotonic() {
            let (usec, _boot) = self
                .journal
                .monotonic_timestamp()
                .map_err(read_error(&self.location, "sd_journal_get_monotonic_usec"))?;
            Some(usec)
        } else {
            None
        };
        let realtime_usec = self
            .journal
            .timestamp_usec()
            .map_err(read_error(&self.location, "sd_journal_get_realtime_usec"))?;
        let cursor = self
            .journal
            .cursor()
            .map_err(read_error(&self.location, "sd_journal_get_cursor"))?;
        let realtime = from_usec(realtime_usec);
        Ok(JournalEntry {
            line: fields.line(monotonic),
            time: fields.source_realtime.map_or(realtime, from_usec),
            realtime,
            cursor,
        })
    }

    /// Sleeps until the journal changes or the stop pipe closes; returns
    /// whether to stop.
    fn wait(&mut self, stop: &PipeReader) -> Result<bool, JournalError> {
        let fd = self
            .journal
            .fd()
            .map_err(read_error(&self.location, "sd_journal_get_fd"))?;
        let timeout = self.poll_timeout()?;
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a valid array of two pollfd for the call.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if r >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(JournalError::Read {
                    location: self.location.clone(),
                    op: "poll",
                    source: e,
                });
            }
        }
        if fds[1].revents != 0 {
            return Ok(true);
        }
        // Also on a timeout: it is libsystemd's cue to re-check files.
        let change = self
            .journal
            .process()
            .map_err(read_error(&self.location, "sd_journal_process"))?;
        debug!(journal = %self.location, ?change, "journal changed");
        Ok(false)
    }

    /// poll(2) timeout in ms: -1 (none) unless libsystemd wants periodic
    /// re-checks, which it does when a journal file is on a network file
    /// system where inotify does not see remote writes.
    fn poll_timeout(&self) -> Result<c_int, JournalError> {
        let mut until = 0u64;
        // SAFETY: the handle is valid for `self`'s lifetime and `until` is a
        // valid out-pointer.
        let r = unsafe {
            libsystemd_sys::journal::sd_journal_get_timeout(self.journal.as_ptr(), &mut until)
        };
        if r < 0 {
            return Err(JournalError::Read {
                location: self.location.clone(),
                op: "sd_journal_get_timeout",
                source: io::Error::from_raw_os_error(-r),
            });
        }
        if until == u64::MAX {
            return Ok(-1);
        }
        // `until` is an absolute CLOCK_MONOTONIC time in µs.
        let mut now = MaybeUninit::<libc::timespec>::uninit();
        // SAFETY: valid clock id and out-pointer; on success it is initialised.
        let now = if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, now.as_mut_ptr()) } == 0 {
            // SAFETY: initialised by the successful call above.
            let now = unsafe { now.assume_init() };
            u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
                + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000
        } else {
            0
        };
        Ok(c_int::try_from(until.saturating_sub(now).div_ceil(1_000)).unwrap_or(c_int::MAX))
    }
}

/// Maps a libsystemd failure to [`JournalError::Read`] for `op`.
fn read_error<'a>(
    location: &'a JournalLocation,
    op: &'static str,
) -> impl FnOnce(systemd::Error) -> JournalError + 'a {
    move |e| JournalError::Read {
        location: location.clone(),
        op,
        source: e.into(),
    }
}

fn from_usec(usec: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(usec)
}

/// The fields of an entry that the line is made of.
#[derive(Debug, Default)]
struct Fields {
    hostname: Option<Vec<u8>>,
    identifier: Option<Vec<u8>>,
    comm: Option<Vec<u8>>,
    syslog_pid: Option<Vec<u8>>,
    pid: Option<Vec<u8>>,
    /// All of them: an entry may carry several, which fail2ban joins.
    message: Vec<Vec<u8>>,
    source_realtime: Option<u64>,
    source_monotonic: Option<u64>,
}

impl Fields {
    /// Keeps `name=value` if it is one of ours (the first value of a
    /// repeated field, except MESSAGE).
    fn take(&mut self, name: &[u8], value: &[u8]) {
        let slot = match name {
            b"_HOSTNAME" => &mut self.hostname,
            b"SYSLOG_IDENTIFIER" => &mut self.identifier,
            b"_COMM" => &mut self.comm,
            b"SYSLOG_PID" => &mut self.syslog_pid,
            b"_PID" => &mut self.pid,
            b"MESSAGE" => {
                self.message.push(value.to_vec());
                return;
            }
            b"_SOURCE_REALTIME_TIMESTAMP" => {
                self.source_realtime = self.source_realtime.or_else(|| parse_u64(value));
                return;
            }
            b"_SOURCE_MONOTONIC_TIMESTAMP" => {
                self.source_monotonic = self.source_monotonic.or_else(|| parse_u64(value));
                return;
            }
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(value.to_vec());
        }
    }

    /// SYSLOG_IDENTIFIER, or _COMM when it is missing or empty.
    fn identifier(&self) -> Option<&[u8]> {
        non_empty(&self.identifier).or_else(|| non_empty(&self.comm))
    }

    /// SYSLOG_PID, or _PID; python-systemd makes them ints, so a 0 counts as
    /// missing too (`if not v`).
    fn pid(&self) -> Option<String> {
        pid_text(&self.syslog_pid).or_else(|| pid_text(&self.pid))
    }

    /// The kernel's lines carry the monotonic time (fail2ban's `[%12.6f]`).
    fn needs_monotonic(&self) -> bool {
        self.source_monotonic.is_none() && self.is_kernel()
    }

    fn is_kernel(&self) -> bool {
        self.identifier() == Some(b"kernel".as_slice()) && self.pid().is_none()
    }

    /// fail2ban's `formatJournalEntry`: `HOST IDENT[PID]: MESSAGE`, each part
    /// left out when missing; newlines escaped as `\n`.
    fn line(&self, monotonic: Option<u64>) -> String {
        let mut parts: Vec<String> = Vec::with_capacity(4);
        if let Some(host) = non_empty(&self.hostname) {
            parts.push(String::from_utf8_lossy(host).into_owned());
        }
        if let Some(ident) = self.identifier() {
            let mut tag = String::from_utf8_lossy(ident).into_owned();
            if let Some(pid) = self.pid() {
                tag.push('[');
                tag.push_str(&pid);
                tag.push(']');
            }
            tag.push(':');
            let kernel = tag == "kernel:";
            parts.push(tag);
            if kernel && let Some(usec) = self.source_monotonic.or(monotonic) {
                let secs = format!("{}.{:06}", usec / 1_000_000, usec % 1_000_000);
                parts.push(format!("[{secs:>12}]"));
            }
        }
        let message: Vec<_> = self
            .message
            .iter()
            .map(|m| String::from_utf8_lossy(m))
            .collect();
        parts.push(message.join(" "));
        parts.join(" ").replace('\n', "\\n")
    }
}

fn c_path(path: &Path) -> Result<CString, io::Error> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn non_empty(value: &Option<Vec<u8>>) -> Option<&[u8]> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// A PID as fail2ban prints it: the integer if it is one (and not 0), else
/// the text as it is.
fn pid_text(value: &Option<Vec<u8>>) -> Option<String> {
    let text = String::from_utf8_lossy(non_empty(value)?);
    match text.trim().parse::<i64>() {
        Ok(0) => None,
        Ok(n) => Some(n.to_string()),
        Err(_) => Some(text.into_owned()),
    }
}

fn parse_u64(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// libsystemd's match_is_valid(): `FIELD=value`, FIELD non-empty, of
/// `A-Z0-9_`, not an address field (`__...`).
fn check_term(term: &str) -> Result<(), MatchError> {
    let bad = || MatchError::Term {
        term: term.to_owned(),
    };
    let (field, _value) = term.split_once('=').ok_or_else(bad)?;
    if field.is_empty()
        || field.starts_with("__")
        || !field
            .bytes()
            .all(|b| b == b'_' || b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(bad());
    }
    Ok(())
}

/// Python's `shlex.split(line)` (POSIX mode, no comments): whitespace
/// separates words; '...' is literal; in "..." a backslash escapes only `"`
/// and `\`; elsewhere a backslash escapes any character.
fn shlex_split(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word has started (so `''` yields an empty word).
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                word.push(chars.next().ok_or("no escaped character")?);
                in_word = true;
            }
            '\'' => {
                loop {
                    match chars.next().ok_or("no closing quotation")? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
                in_word = true;
            }
            '"' => {
                loop {
                    match chars.next().ok_or("no closing quotation")? {
                        '"' => break,
                        '\\' => match chars.next().ok_or("no escaped character")? {
                            c @ ('"' | '\\') => word.push(c),
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        c => word.push(c),
                    }
                }
                in_word = true;
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(expr: &str) -> Vec<Vec<String>> {
        JournalMatch::parse(expr).unwrap().groups().to_vec()
    }

    #[test]
    fn journalmatch_groups_like_fail2ban() {
        assert_eq!(
            groups("_SYSTEMD_UNIT=dovecot.service"),
            [["_SYSTEMD_UNIT=dovecot.service"]]
        );
        assert_eq!(
            groups("_SYSTEMD_UNIT=sshd.service + _COMM=sshd"),
            [["_SYSTEMD_UNIT=sshd.service"], ["_COMM=sshd"]]
        );
        assert_eq!(
            groups("A=1 B=2 + C=3\nD=4"),
            [vec!["A=1", "B=2"], vec!["C=3"], vec!["D=4"]]
        );
        // Empty alternatives vanish, as in libsystemd.
        assert_eq!(groups("+ A=1 + + B=2 +\n\n"), [["A=1"], ["B=2"]]);
        assert!(JournalMatch::parse("").unwrap().is_empty());
        // `+` only as a word of its own.
        assert_eq!(groups("MESSAGE=a+b"), [["MESSAGE=a+b"]]);
    }

    #[test]
    fn journalmatch_display_is_fail2ban_status() {
        let m = JournalMatch::parse("A=1 B=2 + C=3").unwrap();
        assert_eq!(m.to_string(), "A=1 B=2 + C=3");
    }

    #[test]
    fn shlex_like_python() {
        // Expected values from Python 3.11's shlex.split.
        assert_eq!(
            shlex_split(r#"A="x y" B='p q'"#).unwrap(),
            ["A=x y", "B=p q"]
        );
        assert_eq!(shlex_split(r#"A=x\ y"#).unwrap(), ["A=x y"]);
        assert_eq!(shlex_split(r#""a\"b\\c\d""#).unwrap(), [r#"a"b\c\d"#]);
        assert_eq!(shlex_split(r#"'a\b'"#).unwrap(), [r"a\b"]);
        assert_eq!(shlex_split("a '' b").unwrap(), ["a", "", "b"]);
        assert_eq!(shlex_split("A=#x").unwrap(), ["A=#x"]);
        assert_eq!(shlex_split("  \t ").unwrap(), Vec::<String>::new());
        assert_eq!(shlex_split("'a"), Err("no closing quotation"));
        assert_eq!(shlex_split("a\\"), Err("no escaped character"));
    }

    #[test]
    fn bad_terms_are_rejected() {
        for term in ["noequals", "=x", "lower=x", "__CURSOR=x", "A-B=x", "Ä=x"] {
            assert!(
                matches!(JournalMatch::parse(term), Err(MatchError::Term { .. })),
                "{term}"
            );
        }
        for term in ["A=", "_PID=1", "1A=x", "_=x", "A=x=y"] {
            assert!(JournalMatch::parse(term).is_ok(), "{term}");
        }
        assert!(matches!(
            JournalMatch::parse("A='x"),
            Err(MatchError::Syntax { .. })
        ));
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        let mut f = Fields::default();
        for (name, value) in pairs {
            f.take(name.as_bytes(), value.as_bytes());
        }
        f
    }

    #[test]
    fn line_has_host_ident_pid_message() {
        let f = fields(&[
            ("_HOSTNAME", "mail"),
            ("SYSLOG_IDENTIFIER", "dovecot"),
            ("_PID", "812"),
            ("_COMM", "auth"),
            ("MESSAGE", "auth: Info: hi"),
        ]);
        assert_eq!(f.line(None), "mail dovecot[812]: auth: Info: hi");
    }

    #[test]
    fn line_fallbacks() {
        // _COMM when no identifier; SYSLOG_PID before _PID.
        let f = fields(&[
            ("_COMM", "smtpd"),
            ("SYSLOG_PID", "7"),
            ("_PID", "8"),
            ("MESSAGE", "m"),
        ]);
        assert_eq!(f.line(None), "smtpd[7]: m");
        // Empty identifier counts as missing; a 0 PID too.
        let f = fields(&[
            ("SYSLOG_IDENTIFIER", ""),
            ("_COMM", "c"),
            ("SYSLOG_PID", "0"),
            ("_PID", "9"),
            ("MESSAGE", "m"),
        ]);
        assert_eq!(f.line(None), "c[9]: m");
        // No identifier at all: no tag, no colon; the PID is not shown.
        let f = fields(&[("_HOSTNAME", "h"), ("_PID", "9"), ("MESSAGE", "m")]);
        assert_eq!(f.line(None), "h m");
        // No PID.
        let f = fields(&[("SYSLOG_IDENTIFIER", "x"), ("MESSAGE", "m")]);
        assert_eq!(f.line(None), "x: m");
        // A non-numeric PID is shown as it is; a padded one as its number.
        let f = fields(&[
            ("SYSLOG_IDENTIFIER", "x"),
            ("SYSLOG_PID", "a1"),
            ("MESSAGE", "m"),
        ]);
        assert_eq!(f.line(None), "x[a1]: m");
        let f = fields(&[
            ("SYSLOG_IDENTIFIER", "x"),
            ("SYSLOG_PID", " 012 "),
            ("MESSAGE", "m"),
        ]);
        assert_eq!(f.line(None), "x[12]: m");
        // No MESSAGE: the line ends with the separator, as in fail2ban.
        let f = fields(&[("SYSLOG_IDENTIFIER", "x")]);
        assert_eq!(f.line(None), "x: ");
    }

    #[test]
    fn line_joins_messages_and_escapes_newlines() {
        let f = fields(&[
            ("SYSLOG_IDENTIFIER", "x"),
            ("MESSAGE", "one\ntwo"),
            ("MESSAGE", "three"),
        ]);
        assert_eq!(f.line(None), "x: one\\ntwo three");
        let mut f = Fields::default();
        f.take(b"SYSLOG_IDENTIFIER", b"x");
        f.take(b"MESSAGE", b"bad \xff byte");
        assert_eq!(f.line(None), "x: bad \u{fffd} byte");
    }

    #[test]
    fn dovecot_entries_as_formatted_here_match_fail2bans_filter() {
        use crate::filter::tests::{DOVECOT_LOG, dovecot_filter, failures};
        let Some(filter) = dovecot_filter(true) else {
            return;
        };
        // The same lines as dovecot writes them to stderr under systemd
        // (`log_timestamp = ""`), and as journald records them.
        let now = SystemTime::now();
        let entries = DOVECOT_LOG.lines().map(|l| {
            let message = l.splitn(4, ' ').nth(3).unwrap();
            let f = fields(&[
                ("_HOSTNAME", "mail"),
                ("SYSLOG_IDENTIFIER", "dovecot"),
                ("_PID", "812"),
                ("MESSAGE", message),
            ]);
            (f.line(None), Some(now))
        });
        let attacker = Some("10.251.0.2".parse().unwrap());
        assert_eq!(
            failures(&filter, entries),
            [
                None, attacker, attacker, None, None, attacker, attacker, None
            ]
        );
    }

    #[test]
    fn kernel_lines_carry_monotonic_seconds() {
        let f = fields(&[("SYSLOG_IDENTIFIER", "kernel"), ("MESSAGE", "oops")]);
        assert!(f.needs_monotonic());
        assert_eq!(f.line(Some(12_345_678)), "kernel: [   12.345678] oops");
        let f = fields(&[
            ("SYSLOG_IDENTIFIER", "kernel"),
            ("_SOURCE_MONOTONIC_TIMESTAMP", "5"),
            ("MESSAGE", "m"),
        ]);
        assert!(!f.needs_monotonic());
        assert_eq!(f.line(Some(1)), "kernel: [    0.000005] m");
    }
}
