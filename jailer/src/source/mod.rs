//! Log sources: where failure lines come from. Each followed file has a
//! [`Follower`] driven by [`follow`], woken by the [`DirWatcher`]; lines
//! reach the agent in bounded [`LogBatch`]es over a bounded channel, so a
//! flood slows the reader down instead of filling memory.

mod file;
mod watcher;

use std::{path::PathBuf, sync::Arc, time::Instant};

use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};

pub use self::{
    file::{Follower, MAX_LINE, Polled, ROTATE_GRACE},
    watcher::DirWatcher,
};
use crate::state::Position;

/// A log source that cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
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
}

impl Lines {
    /// Appends one line (without its `\n`); invalid UTF-8 is replaced.
    pub fn push(&mut self, bytes: &[u8]) {
        self.text.push_str(&String::from_utf8_lossy(bytes));
        self.ends.push(self.text.len());
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let line = &self.text[start..end];
            start = end;
            line
        })
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

/// Lines read from one log, and where reading got to after them.
#[derive(Debug)]
pub struct LogBatch {
    /// The log path as configured.
    pub source: PathBuf,
    pub lines: Lines,
    pub position: Option<Position>,
    /// When the lines were read (ban latency is measured from here).
    pub read_at: Instant,
}

/// Drives one follower: reads on every wake-up and sends batches until the
/// log is drained. Waits only on inotify, except while a rotated file is
/// draining (then also on a timer).
pub async fn follow(mut follower: Follower, wake: Arc<Notify>, tx: mpsc::Sender<LogBatch>) {
    let source = follower.path().to_owned();
    let mut sent_position = None;
    loop {
        let mut lines = Lines::default();
        let polled = match follower.poll(&mut lines, BATCH_BYTES) {
            Ok(p) => p,
            Err(e) => {
                warn!(log = %source.display(), error = %e, "reading log failed; retrying on the next change");
                Polled::default()
            }
        };
        if polled.overlong > 0 {
            warn!(log = %source.display(), count = polled.overlong, max = MAX_LINE, "over-long lines skipped");
        }
        let position = follower.position();
        if !lines.is_empty() || position != sent_position {
            let batch = LogBatch {
                source: source.clone(),
                lines,
                position,
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
        debug!(log = %source.display(), "woken");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
