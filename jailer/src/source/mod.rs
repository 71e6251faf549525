//! Log sources: where failure lines come from. Each followed file has a
//! [`Follower`] driven by [`follow`], woken by the [`DirWatcher`]; lines
//! reach the agent in bounded [`LogBatch`]es over a bounded channel, so a
//! flood slows the reader down instead of filling memory.

mod file;
pub mod journal;
mod watcher;

use std::{
    fmt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

pub use self::{
    file::{Follower, MAX_LINE, Polled, ROTATE_GRACE},
    journal::{JournalConfig, JournalLocation, JournalMatch, JournalSource, Start},
    watcher::DirWatcher,
};
use crate::{error::Chain, state::Position};

/// A stream of lines: a log file, or the journal as one jail reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceId {
    File(PathBuf),
    /// The systemd journal, through this jail's `journalmatch`.
    Journal(String),
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => path.display().fmt(f),
            Self::Journal(jail) => write!(f, "journal ({jail})"),
        }
    }
}

/// Where a source was read up to, saved with the failure windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    File(Position),
    /// The cursor of the last journal entry handled.
    Journal(String),
}

/// A log source that cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A jail's `journalmatch` does not parse.
    #[error("jail {jail}: journalmatch")]
    Journalmatch {
        jail: String,
        #[source]
        source: journal::MatchError,
    },
    /// inotify on a log's directory failed.
    #[error("cannot watch {}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Bytes read per batch: large enough to amortise the hand-off, small
/// enough that a burst never holds much (the channel holds a few batches).
pub const BATCH_BYTES: usize = 256 * 1024;

/// Lines stored back to back in one string: one allocation per batch, not
/// one per line (a flood of short lines costs little).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lines {
    text: String,
    /// End offset of each line in `text`.
    ends: Vec<usize>,
    /// Each line's time, when the source knows it (journal entries); empty
    /// for log files, whose lines say their time themselves.
    times: Vec<SystemTime>,
}

impl Lines {
    /// Appends one line (without its `\n`); invalid UTF-8 is replaced.
    pub fn push(&mut self, bytes: &[u8]) {
        // Validated the fast way first: nearly every log line is UTF-8.
        match std::str::from_utf8(bytes) {
            Ok(text) => self.text.push_str(text),
            Err(_) => self.text.push_str(&String::from_utf8_lossy(bytes)),
        }
        self.ends.push(self.text.len());
    }

    /// Appends one line whose time is known.
    pub fn push_timed(&mut self, line: &str, time: SystemTime) {
        self.text.push_str(line);
        self.ends.push(self.text.len());
        self.times.push(time);
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let line = &self.text[start..end];
            start = end;
            line
        })
    }

    /// Each line with its known time, if any.
    pub fn iter_timed(&self) -> impl Iterator<Item = (&str, Option<SystemTime>)> {
        self.iter()
            .enumerate()
            .map(|(i, line)| (line, self.times.get(i).copied()))
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of text held.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Lines {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut lines = Self::default();
        for line in iter {
            lines.push(line.as_ref().as_bytes());
        }
        lines
    }
}

/// Lines read from one source, and where reading got to after them.
#[derive(Debug)]
pub struct LogBatch {
    pub source: SourceId,
    pub lines: Lines,
    pub resume: Option<Resume>,
    /// When the lines were read (ban latency is measured from here).
    pub read_at: Instant,
}

/// Drives one follower: reads on every wake-up and sends batches until the
/// log is drained. Waits only on inotify, except while a rotated file is
/// draining (then also on a timer).
pub async fn follow(mut follower: Follower, wake: Arc<Notify>, tx: mpsc::Sender<LogBatch>) {
    let path = follower.path().to_owned();
    let source = SourceId::File(path.clone());
    let mut sent_position = None;
    loop {
        let mut lines = Lines::default();
        let polled = match follower.poll(&mut lines, BATCH_BYTES) {
            Ok(p) => p,
            Err(e) => {
                warn!(log = %path.display(), error = %e, "reading log failed; retrying on the next change");
                Polled::default()
            }
        };
        if polled.overlong > 0 {
            warn!(log = %path.display(), count = polled.overlong, max = MAX_LINE, "over-long lines skipped");
        }
        let position = follower.position();
        if !lines.is_empty() || position != sent_position {
            let batch = LogBatch {
                source: source.clone(),
                lines,
                resume: position.map(Resume::File),
                read_at: Instant::now(),
            };
            // Back-pressure: a busy agent slows the reader, memory stays put.
            if tx.send(batch).await.is_err() {
                return;
            }
            sent_position = position;
        }
        if polled.more {
            continue;
        }
        if follower.draining() {
            let _ = tokio::time::timeout(ROTATE_GRACE, wake.notified()).await;
        } else {
            wake.notified().await;
        }
        debug!(log = %path.display(), "woken");
    }
}

/// How long a journal that failed is left before it is opened again.
const JOURNAL_RETRY: Duration = Duration::from_secs(5);

/// Drives one jail's journal source: batches of entries as they are
/// appended, each line with its entry's time, resumable by cursor. A
/// journal that cannot be read is retried, from the last cursor handled.
/// `opened` is told after the first attempt to open: from then on, every
/// entry appended is read (unless that attempt failed).
pub async fn follow_journal(
    jail: String,
    location: JournalLocation,
    matches: JournalMatch,
    cursor: Option<String>,
    tx: mpsc::Sender<LogBatch>,
    opened: oneshot::Sender<()>,
) {
    let source = SourceId::Journal(jail.clone());
    let mut cursor = cursor;
    let mut opened = Some(opened);
    loop {
        let config = JournalConfig {
            location: location.clone(),
            matches: matches.clone(),
            start: cursor.clone().map_or(Start::Tail, Start::AfterCursor),
        };
        let result = tokio::task::spawn_blocking(move || JournalSource::open(config)).await;
        // Positioned (the tail is fixed), or failed: the agent may say ready.
        if let Some(opened) = opened.take() {
            let _ = opened.send(());
        }
        let mut journal = match result {
            Ok(Ok(journal)) => {
                info!(%jail, %location, journalmatch = %matches, "following the journal");
                journal
            }
            Ok(Err(e)) => {
                warn!(%jail, error = %Chain(&e), "cannot read the journal; retrying");
                tokio::time::sleep(JOURNAL_RETRY).await;
                continue;
            }
            Err(_) => return,
        };
        while let Some(item) = journal.recv().await {
            let entries = match item {
                Ok(entries) => entries,
                Err(e) => {
                    warn!(%jail, error = %Chain(&e), "reading the journal failed; reopening");
                    break;
                }
            };
            let mut lines = Lines::default();
            for entry in &entries {
                lines.push_timed(&entry.line, entry.time);
            }
            cursor = entries.last().map(|e| e.cursor.clone()).or(cursor);
            let batch = LogBatch {
                source: source.clone(),
                lines,
                resume: cursor.clone().map(Resume::Journal),
                read_at: Instant::now(),
            };
            if tx.send(batch).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(JOURNAL_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `follow_journal` on `dir` until it says opened (bounded).
    async fn opened(dir: PathBuf) {
        let (tx, _rx) = mpsc::channel(1);
        let (opened, is_opened) = oneshot::channel();
        let task = tokio::spawn(follow_journal(
            "dovecot".into(),
            JournalLocation::Directory(dir),
            JournalMatch::default(),
            None,
            tx,
            opened,
        ));
        let told = tokio::time::timeout(Duration::from_secs(10), is_opened).await;
        task.abort();
        assert!(matches!(told, Ok(Ok(()))), "opened not told: {told:?}");
    }

    #[tokio::test]
    async fn a_journal_says_when_it_is_positioned() {
        // No journal files yet: positioned at the head, for what comes.
        let dir = tempfile::tempdir().unwrap();
        opened(dir.path().to_owned()).await;
        // Cannot be opened (retried later): told too, so that it does not
        // hold the agent's readiness.
        opened(dir.path().join("missing")).await;
    }

    #[test]
    fn lines_keep_order_and_replace_bad_utf8() {
        let mut l = Lines::default();
        l.push(b"one");
        l.push(b"");
        l.push(b"\xff two");
        let v: Vec<&str> = l.iter().collect();
        assert_eq!(v, ["one", "", "\u{fffd} two"]);
        assert_eq!(l.len(), 3);
        let collected: Lines = ["a", "b"].into_iter().collect();
        assert_eq!(collected.iter().collect::<Vec<_>>(), ["a", "b"]);
    }
}
