//! The ban journal read at start: on a thread of its own (begun before XDP
//! attaches when `jailer run` asks), prepared off the loop, then taken into
//! the engine. Runs once, alongside the loop, hence apart from it.

use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::Agent;
use crate::{
    error::{Chain, Error},
    jail::Restoration,
    kernel::BanTable,
    state::{Journal, Replay},
};

/// The ban journal read (compacted when that pays) on a thread of its own.
#[derive(Debug)]
pub struct JournalRead {
    thread: std::thread::JoinHandle<Result<(Replay, u64), Error>>,
    started: Instant,
}

impl JournalRead {
    /// Starts reading the journal of `state_dir` as of `now`.
    pub fn start(state_dir: &std::path::Path, now: SystemTime) -> Self {
        let journal = Journal::new(state_dir);
        Self {
            thread: std::thread::spawn(move || read_journal(&journal, now)),
            started: Instant::now(),
        }
    }

    /// The replay and the journal's size after it; how long it has been.
    fn wait(self) -> Result<(Replay, u64, Duration), Error> {
        let (replay, size) = self
            .thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok((replay, size, self.started.elapsed()))
    }
}

/// The journal replayed (compacted when that pays), and its size then
/// (where later records start).
fn read_journal(journal: &Journal, now: SystemTime) -> Result<(Replay, u64), Error> {
    match journal.compact_if_worth_it(now) {
        Ok(done) => Ok(done),
        Err(e) => {
            warn!(error = %Chain(&e), "compacting the ban journal failed; reading it as it is");
            let size = journal.size()?;
            Ok((journal.replay(now)?, size))
        }
    }
}

/// The journal read and prepared for the engine, off the loop, the bans in
/// force the maps lack written through `writers`; and the journal's size
/// then (where later records start).
pub(super) fn restoration(
    read: JournalRead,
    now: SystemTime,
    maps_empty: bool,
    counted: &[String],
    mut writers: Vec<Box<dyn BanTable>>,
) -> Result<(Restoration, u64), Error> {
    let (replay, size, read) = read.wait()?;
    let start = Instant::now();
    let restoration = if !writers.is_empty() {
        Restoration::prepare_writing(&replay, now, counted, &mut writers, maps_empty)
    } else {
        Restoration::prepare(&replay, now, maps_empty, counted)
    };
    debug!(
        records = replay.records,
        read_ms = read.as_millis(),
        prepared_ms = start.elapsed().as_millis(),
        "ban journal read"
    );
    Ok((restoration, size))
}

impl<T: BanTable> Agent<T> {
    /// Takes in the journal read at start.
    pub(super) fn restore(&mut self, restoration: Restoration, offset: u64) {
        let to_write = restoration.to_write();
        match self.engine.restore(restoration) {
            Ok(n) if n > 0 => info!(count = n, "bans restored from the journal into the maps"),
            Ok(_) => {}
            Err(e) => warn!(error = %Chain(&e), wanted = to_write, "restoring bans failed"),
        }
        // Bans met in the maps before the journal was read, missing from it.
        self.unjournaled.extend(self.engine.take_records());
        self.write_journal();
        self.journal_offset = Some(offset);
        // Whatever was appended since the journal was read.
        self.read_journal();
        // Reading a million bans leaves a lot freed: give it back.
        // SAFETY: malloc_trim only returns free heap memory to the system.
        unsafe { libc::malloc_trim(0) };
    }
}
