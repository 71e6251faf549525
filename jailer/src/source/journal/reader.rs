//! The reader thread's side: it owns the `sd_journal` handle (neither `Send`
//! nor `Sync`), reads and batches entries, and sleeps in poll(2) when caught up.

use std::{
    ffi::{CString, c_int},
    io::{self, PipeReader},
    mem::MaybeUninit,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use foreign_types::ForeignTypeRef;
use systemd::journal::{Journal, OpenDirectoryOptions, OpenFilesOptions, OpenOptions};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    BATCH, JournalConfig, JournalEntry, JournalError, JournalItem, JournalLocation, JournalMatch,
    Start, fields::Fields,
};

/// The thread's side: the journal handle and where it stands.
pub(super) struct Reader {
    journal: Journal,
    location: JournalLocation,
    /// The entry the journal is positioned on has not been delivered yet.
    pending: bool,
}

impl Reader {
    pub(super) fn open(config: &JournalConfig) -> Result<Self, JournalError> {
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
    pub(super) fn follow(
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

fn c_path(path: &Path) -> Result<CString, io::Error> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}
