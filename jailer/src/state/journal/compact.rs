//! Compaction: the journal rewritten with only what still matters (bans in
//! force, ban history within the window), so it does not grow forever.

use std::time::SystemTime;

use super::{BanEntry, Journal, Record, Replay, record::write_record};
use crate::{
    ban::Target,
    state::{StateError, files},
    time::unix_secs,
};

impl Replay {
    /// How many records compaction would keep of this journal at `now`.
    pub fn compacted_len(&self, now: SystemTime) -> usize {
        let nows = unix_secs(now);
        let past = self
            .history
            .iter()
            .filter(|(t, e)| !(self.bans.get(t) == Some(e) && e.until.is_none_or(|u| u > nows)))
            .count();
        2 * past + self.active(now).count() + self.active_remote(now).count()
    }

    fn record(&self, target: Target, e: &BanEntry, origin: Option<&str>) -> Record {
        Record::Ban {
            addr: target,
            jail: self.jail(e).to_owned(),
            ports: self.port_set(e),
            until: e.until,
            at: e.at,
            monitor: e.monitor,
            origin: origin.map(str::to_owned),
        }
    }
}

impl Journal {
    /// Rewrites the journal with only what still matters and parsed: bans in
    /// force and ban history within the window. Atomic (temp file + rename).
    /// Returns the replay it made, so the caller need not read it twice, and
    /// the size of the journal it wrote (records appended later start there).
    pub fn compact(&self, now: SystemTime) -> Result<(Replay, u64), StateError> {
        let _lock = self.lock()?;
        let replay = self.replay(now)?;
        let size = self.rewrite(&replay, now)?;
        Ok((replay, size))
    }

    /// [`Journal::compact`] when it pays: when compaction would keep at most
    /// half the records, some lines were unreadable, or the last line has no
    /// newline (a crash mid-append: the next append would run into it).
    /// Otherwise (a journal of bans in force, as after a reboot) it is only
    /// read: rewriting a million bans in force would delay restoring them
    /// by a third of a second, for nothing.
    pub fn compact_if_worth_it(&self, now: SystemTime) -> Result<(Replay, u64), StateError> {
        let _lock = self.lock()?;
        let replay = self.replay(now)?;
        if replay.skipped == 0
            && replay.compacted_len(now) * 2 > replay.records
            && !replay.ends_mid_line
        {
            let size = replay.bytes;
            return Ok((replay, size));
        }
        let size = self.rewrite(&replay, now)?;
        Ok((replay, size))
    }

    /// Writes what `replay` keeps in place of the journal; its new size.
    fn rewrite(&self, replay: &Replay, now: SystemTime) -> Result<u64, StateError> {
        let nows = unix_secs(now);
        let in_force = |target: &Target, e: &BanEntry| {
            replay.bans.get(target) == Some(e) && e.until.is_none_or(|u| u > nows)
        };
        let mut text = Vec::new();
        let mut push = |r: &Record| write_record(r, &mut text);
        // Past bans as ban+unban pairs (they count, they do not drop), then
        // the bans in force last so they win.
        for (target, e) in &replay.history {
            if !in_force(target, e) {
                push(&replay.record(*target, e, None));
                push(&Record::Unban {
                    addr: *target,
                    at: e.at,
                    origin: None,
                });
            }
        }
        for (target, e) in replay.active(now) {
            push(&replay.record(target, e, None));
        }
        for (origin, target, e) in replay.active_remote(now) {
            push(&replay.record(target, e, Some(origin)));
        }
        files::write_atomic(&self.path, &text).map_err(self.io_err())?;
        Ok(text.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, io::Write};

    use super::*;

    #[test]
    fn a_last_line_without_its_newline_is_mended_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let now = SystemTime::now();
        let at = unix_secs(now);
        let line = |ip: &str| {
            format!(
                "{{\"op\":\"ban\",\"addr\":\"{ip}\",\"jail\":\"vpopmail\",\"ports\":\"110\",\"until\":{},\"at\":{at}}}",
                at + 600
            )
        };
        // A crash after the record, before its newline: the record parses.
        fs::write(
            journal.path(),
            format!("{}\n{}", line("203.0.113.1"), line("203.0.113.2")),
        )
        .unwrap();
        let (replay, size) = journal.compact_if_worth_it(now).unwrap();
        assert_eq!(replay.bans.len(), 2);
        let text = fs::read_to_string(journal.path()).unwrap();
        assert!(text.ends_with('\n'), "mended: {text:?}");
        assert_eq!(size, text.len() as u64);
        // The next record lands on a line of its own: all three read back.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(journal.path())
            .unwrap();
        writeln!(f, "{}", line("203.0.113.3")).unwrap();
        assert_eq!(journal.replay(now).unwrap().bans.len(), 3);
        // A whole journal is only read, not rewritten.
        let before = fs::metadata(journal.path()).unwrap().modified().unwrap();
        journal.compact_if_worth_it(now).unwrap();
        assert_eq!(
            fs::metadata(journal.path()).unwrap().modified().unwrap(),
            before
        );
    }
}
