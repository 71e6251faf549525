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
    error::Chain,
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
    /// empty (after a reboot); with [`Restoration::prepare`] none when they
    /// survived (a restart: the maps may carry bans set while the agent was
    /// down); a failed writer's share with [`Restoration::prepare_writing`].
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

    /// [`Restoration::prepare`], the bans in force written into `tables`
    /// (other handles on the engine's table) meanwhile, each writing its
    /// share on a thread of its own: the maps fill while the rest is
    /// prepared. When the maps are not empty (a restart) only the bans they
    /// lack are written: maps made anew (an upgrade, a command run before
    /// the agent) or a ban deleted by hand would otherwise lose the
    /// journal's bans for good. A writer that fails hands its share back
    /// to [`Engine::restore`], which writes it through the engine's table.
    pub fn prepare_writing(
        replay: &Replay,
        now: SystemTime,
        counted: &[String],
        tables: &mut [Box<dyn BanTable>],
        maps_empty: bool,
    ) -> Self {
        let mut to_write = Self::bans_in_force(replay, now);
        if !maps_empty && let Some(table) = tables.first() {
            match table.list() {
                Ok(listed) => {
                    let present: HashSet<Target> = listed.into_iter().map(|l| l.target).collect();
                    to_write.retain(|(t, _)| !present.contains(t));
                    if !to_write.is_empty() {
                        info!(
                            count = to_write.len(),
                            "bans in the journal missing from the maps: written again"
                        );
                    }
                }
                Err(e) => {
                    warn!(error = %Chain(&e), "listing the maps failed: the bans they lack are not restored");
                    to_write.clear();
                }
            }
        }
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
        r.wanted = to_write.len();
        for (n, bans) in written.into_iter().zip(to_write.chunks(share)) {
            match n {
                Ok(n) => r.written += n,
                Err(e) => {
                    warn!(error = %Chain(&e), bans = bans.len(), "a restore writer failed: its share is written by the agent");
                    r.wanted -= bans.len();
                    r.to_write.extend_from_slice(bans);
                }
            }
        }
        r
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

    /// A table whose bulk writes always fail (a writer whose map was full
    /// or whose allocator gave up).
    #[derive(Debug)]
    struct Refusing;

    impl BanTable for Refusing {
        fn insert(&mut self, _: Target, _: &Ban) -> Result<(), BpfError> {
            Err(BpfError::NotRoot)
        }
        fn entry(&self, _: Target) -> Result<Option<crate::ban::Listed>, BpfError> {
            Ok(None)
        }
        fn remove(&mut self, _: Target) -> Result<bool, BpfError> {
            Ok(false)
        }
        fn list(&self) -> Result<Vec<crate::ban::Listed>, BpfError> {
            Ok(Vec::new())
        }
        fn set_monitor(&mut self, _: bool) -> Result<(), BpfError> {
            Ok(())
        }
        fn monitor(&self) -> Result<bool, BpfError> {
            Ok(false)
        }
        fn protect(&mut self, _: &PortSet) -> Result<(), BpfError> {
            Ok(())
        }
    }

    fn journal_of(dir: &std::path::Path, now: SystemTime, ips: &[&str]) -> Replay {
        let journal = Journal::new(dir);
        let records: Vec<Record> = ips
            .iter()
            .map(|ip| Record::Ban {
                addr: target(ip),
                jail: "vpopmail".into(),
                ports: PortSet::only(&[110]),
                until: Some(unix_secs(now) + 600),
                at: unix_secs(now) - 10,
                monitor: false,
                origin: None,
            })
            .collect();
        journal.append(&records, false).unwrap();
        journal.replay(now).unwrap()
    }

    #[test]
    fn a_failed_writer_hands_its_share_to_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ips = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "2001:db8::4"];
        let replay = journal_of(dir.path(), now, &ips);
        let table = MemBanTable::default();
        let mut e = Engine::new(vec![jail(3, &["pop3"])], table.clone());
        let mut writers: Vec<Box<dyn BanTable>> = vec![Box::new(table.clone()), Box::new(Refusing)];
        let r = Restoration::prepare_writing(&replay, now, &e.counted_jails(), &mut writers, true);
        // The working writer wrote its half; the other half waits for the engine.
        assert_eq!(table.bans().len(), 2);
        assert_eq!(r.to_write(), 4);
        assert_eq!(e.restore(r).unwrap(), 4);
        for ip in ips {
            assert!(table.bans().contains_key(&target(ip)), "{ip} restored");
        }
        // And the engine knows them all (expiry, status).
        assert!(e.next_expiry().is_some());
    }

    #[test]
    fn a_restart_writes_the_bans_the_maps_lack() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ips = ["203.0.113.1", "203.0.113.2", "2001:db8::4"];
        let replay = journal_of(dir.path(), now, &ips);
        // Maps made anew before the agent started (an upgrade, then a
        // `jailer ban`): one ban of their own, none of the journal's.
        let table = MemBanTable::default();
        let mut own = table.clone();
        let theirs = Ban {
            ports: PortSet::All,
            expiry: Expiry::Never,
            monitor: false,
        };
        own.insert(target("198.51.100.9"), &theirs).unwrap();
        let mut e = Engine::new(vec![jail(3, &["pop3"])], table.clone());
        let mut writers: Vec<Box<dyn BanTable>> = vec![Box::new(table.clone())];
        let r = Restoration::prepare_writing(&replay, now, &e.counted_jails(), &mut writers, false);
        assert_eq!(e.restore(r).unwrap(), 3);
        let bans = table.bans();
        assert_eq!(bans.len(), 4);
        for ip in ips {
            assert_eq!(bans[&target(ip)].ports, PortSet::only(&[110]), "{ip}");
        }
        // The maps' own ban is kept as it is, not replaced by the journal.
        assert_eq!(bans[&target("198.51.100.9")], theirs);
    }
}
