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

mod fields;
mod journalmatch;
mod reader;

use std::{
    fmt,
    io::{self, PipeWriter},
    path::PathBuf,
    sync::mpsc as std_mpsc,
    thread::{self, JoinHandle},
    time::SystemTime,
};

use tokio::sync::mpsc;
use tracing::warn;

pub use self::journalmatch::{JournalMatch, MatchError};
use self::reader::Reader;

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
