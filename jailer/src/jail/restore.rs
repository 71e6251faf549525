//! The journal made ready for the engine: [`Restoration`], prepared off the
//! agent's loop, and [`Engine::restore`], which takes it in.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::SystemTime,
};

use tracing::{info, warn};

use super::{Engine, known::KnownBans};
use crate::{
    ban::{Ban, Expiry, Target},
    config::Jail,
    kernel::{BanTable, BpfError},
    state::{Record, Replay},
};

/// The journal read and made ready for [`Engine::restore`]: a million bans
/// are prepared on another thread while the agent already follows its logs,
/// and after a reboot written into the maps there too
/// ([`Restoration::prepare_writing`]).
#[derive(Debug, Default)]
pub struct Restoration {
    known: KnownBans,
    /// Built here, off the agent's loop (a million take a tenth of a second).
    expiry: BTreeSet<(SystemTime, Target)>,
    /// Previous bans per target, by jail.
    counts: HashMap<String, Vec<(Target, u32)>>,
    /// Fleet members' bans enforced here: (member, jail, target, ban).
    remote: Vec<(String, String, Target, Ban)>,
    /// Bans to write to the table: every ban in force when the maps are
    /// empty (after a reboot), none when they survived (a restart: the maps
    /// are the truth, and may carry bans set while the agent was down).
    to_write: Vec<(Target, Ban)>,
    /// Bans already written by [`Restoration::prepare_writing`], of how many.
    written: usize,
    wanted: usize,
}

impl Restoration {
    /// `counted`: the jails whose repeat counts matter (`bantime_increment`).
    pub fn prepare(replay: &Replay, now: SystemTime, maps_empty: bool, counted: &[String]) -> Self {
        let mut r = Self::prepare_known(replay, now, counted);
        if maps_empty {
            r.to_write = Self::bans_in_force(replay, now);
        }
        r
    }

    /// [`Restoration::prepare`] for empty maps, the bans in force written
    /// into `tables` (other handles on the engine's table) meanwhile, each
    /// writing its share on a thread of its own: the maps fill while the
    /// rest is prepared.
    pub fn prepare_writing(
        replay: &Replay,
        now: SystemTime,
        counted: &[String],
        tables: &mut [Box<dyn BanTable>],
    ) -> Result<Self, BpfError> {
        let to_write = Self::bans_in_force(replay, now);
        let share = to_write.len().div_ceil(tables.len().max(1)).max(1);
        let (mut r, written) = std::thread::scope(|s| {
            let writers: Vec<_> = tables
                .iter_mut()
                .zip(to_write.chunks(share))
                .map(|(table, bans)| s.spawn(move || table.insert_many(bans)))
                .collect();
            let r = Self::prepare_known(replay, now, counted);
            let written: Vec<_> = writers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect();
            (r, written)
        });
        for n in written {
            r.written += n?;
        }
        r.wanted = to_write.len();
        Ok(r)
    }

    /// Everything but the bans to write: repeat counts, the bans known in
    /// force, their expiry queue, members' bans.
    fn prepare_known(replay: &Replay, now: SystemTime, counted: &[String]) -> Self {
        let mut r = Self::default();
        for jail in counted {
            let counts: Vec<(Target, u32)> = replay.counts(jail).into_iter().collect();
            if !counts.is_empty() {
                r.counts.insert(jail.clone(), counts);
            }
        }
        r.known.reserve(replay.bans.len());
        let mut expiry = Vec::with_capacity(replay.bans.len());
        for (target, entry) in replay.active(now) {
            let ban = replay.ban(entry);
            if let Expiry::At(t) = ban.expiry {
                expiry.push((t, target));
            }
            r.known.remember(target, &ban, replay.jail(entry));
        }
        for (origin, target, entry) in replay.active_remote(now) {
            let ban = replay.ban(entry);
            if let Expiry::At(t) = ban.expiry {
                expiry.push((t, target));
            }
            r.remote.push((
                origin.to_owned(),
                replay.jail(entry).to_owned(),
                target,
                ban,
            ));
        }
        // Sorted first: a set built from a sorted run is built in one pass.
        expiry.sort_unstable();
        r.expiry = expiry.into_iter().collect();
        r
    }

    /// Every ban in force, own and members', one value per target (an own
    /// ban and members' on the same target as their union).
    fn bans_in_force(replay: &Replay, now: SystemTime) -> Vec<(Target, Ban)> {
        let mut bans: Vec<(Target, Ban)> = Vec::with_capacity(replay.bans.len());
        bans.extend(replay.active(now).map(|(t, e)| (t, replay.ban(e))));
        let own = bans.len();
        bans.extend(
            replay
                .active_remote(now)
                .map(|(_, t, e)| (t, replay.ban(e))),
        );
        if bans.len() > own {
            bans.sort_by_key(|(t, _)| *t);
            bans.dedup_by(|(t, b), (kept_t, kept)| {
                let same = t == kept_t;
                if same {
                    *kept = kept.merge(b);
                }
                same
            });
        }
        bans
    }

    /// Bans it will write (or wrote).
    pub fn to_write(&self) -> usize {
        self.wanted + self.to_write.len()
    }
}

/// The names of `jails` whose repeat counts a restore reads
/// (`bantime_increment`).
pub fn counted_jails<'a>(jails: impl IntoIterator<Item = &'a Jail>) -> Vec<String> {
    jails
        .into_iter()
        .filter(|j| j.bantime_increment)
        .map(|j| j.name.clone())
        .collect()
}

impl<T: BanTable> Engine<T> {
    /// The jails whose repeat counts a restore reads (`bantime_increment`).
    pub fn counted_jails(&self) -> Vec<String> {
        counted_jails(self.jails.iter().map(|j| &j.jail))
    }

    /// Takes in what the journal says ([`Restoration::prepare`], built off
    /// the agent's loop): repeat-offence counts, the bans in force (for
    /// expiry, status, "already banned"), and after a reboot the bans
    /// themselves, written in batches (unless
    /// [`Restoration::prepare_writing`] wrote them). What the engine learned
    /// since the journal was read is newer and kept; bans it met in the table
    /// meanwhile that the journal lacks are queued for the journal
    /// ([`Engine::take_records`]). Returns how many bans were written.
    pub fn restore(&mut self, r: Restoration) -> Result<usize, BpfError> {
        for (jail, counts) in r.counts {
            // Only bantime_increment reads them: other jails keep none.
            let Some(j) = self
                .jails
                .iter_mut()
                .find(|j| j.jail.name == jail && j.jail.bantime_increment)
            else {
                continue;
            };
            for (target, n) in counts {
                let count = j.ban_counts.entry(target).or_default();
                *count = (*count).max(n);
            }
        }
        // Bans met in the table before the journal was read, and not in it.
        let now = SystemTime::now();
        let mut missing = 0;
        let remote: HashSet<Target> = r.remote.iter().map(|(_, _, t, _)| *t).collect();
        for (target, jail) in self.unconfirmed.take().unwrap_or_default() {
            // Journaled as this server's, or as a fleet member's.
            if r.known.get(target).is_some() || remote.contains(&target) {
                continue;
            }
            if let Ok(Some(ban)) = self.table.get(target)
                && ban.expiry.is_active(now)
            {
                self.pending.push(Record::ban(target, &jail, &ban, now));
                missing += 1;
            }
        }
        if missing > 0 {
            info!(
                count = missing,
                "bans in the maps were missing from the journal (set just before the agent stopped): journaled"
            );
        }
        self.known.absorb(r.known);
        for (origin, jail, target, ban) in r.remote {
            // A member may protect ports no jail here does.
            self.table.protect(&ban.ports)?;
            self.remember_remote(&origin, &jail, target, ban);
        }
        if self.expiry.is_empty() {
            self.expiry = r.expiry;
        } else {
            let mut expiry = r.expiry;
            expiry.append(&mut self.expiry);
            self.expiry = expiry;
        }
        let mut written = r.written;
        if !r.to_write.is_empty() {
            written += self.table.insert_many(&r.to_write)?;
        }
        let wanted = r.wanted + r.to_write.len();
        if written < wanted {
            warn!(
                written,
                wanted, "ban map full: not every ban could be restored"
            );
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ban::PortSet,
        jail::test_support::{jail, target},
        kernel::MemBanTable,
        state::Journal,
        time::{from_unix_secs, unix_secs},
    };

    #[test]
    fn restore_puts_unexpired_bans_back() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let now = SystemTime::now();
        let rec = |ip: &str, until: Option<u64>| Record::Ban {
            addr: target(ip),
            jail: "vpopmail".into(),
            ports: PortSet::only(&[110]),
            until,
            at: unix_secs(now) - 10,
            monitor: false,
            origin: None,
        };
        journal
            .append(
                &[
                    rec("203.0.113.7", Some(unix_secs(now) + 600)),
                    rec("203.0.113.8", Some(unix_secs(now) - 1)),
                    rec("2001:db8::1", None),
                ],
                false,
            )
            .unwrap();
        let replay = journal.replay(now).unwrap();
        let mut e = Engine::new(vec![jail(3, &["pop3"])], MemBanTable::default());
        assert_eq!(
            e.restore(Restoration::prepare(&replay, now, true, &e.counted_jails()))
                .unwrap(),
            2
        );
        let bans = e.table().bans();
        assert!(bans.contains_key(&target("203.0.113.7")));
        assert!(!bans.contains_key(&target("203.0.113.8")));
        assert_eq!(bans[&target("2001:db8::1")].expiry, Expiry::Never);
        assert_eq!(
            bans[&target("203.0.113.7")].expiry,
            Expiry::At(from_unix_secs(unix_secs(now) + 600))
        );
    }
}
