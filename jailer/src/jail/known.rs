//! The bans the engine knows to be in force — its own, those restored from
//! the journal, those an admin set with `jailer ban` — and the jails behind
//! each. `status`, metrics and "already banned" are answered from here, not
//! by listing the kernel maps (a million bans take a third of a second to
//! list). Compact: port sets and jail lists are interned, an entry is a few
//! words.

use std::{collections::HashMap, hash::Hash, time::SystemTime};

use crate::ban::{Ban, Expiry, PortSet, Target};

/// Values shared by many entries, stored once and referred to by index.
#[derive(Debug)]
struct Interned<T> {
    values: Vec<T>,
    index: HashMap<T, u16>,
    /// The index returned last: a restore asks for the same one a million
    /// times in a row.
    last: u16,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            index: HashMap::new(),
            last: 0,
        }
    }
}

impl<T: Clone + Eq + Hash> Interned<T> {
    /// The index of `value`. Port sets and jail lists come from the
    /// configuration and the journal: a few dozen, far below u16.
    fn id(&mut self, value: &T) -> u16 {
        if self.values.get(usize::from(self.last)) == Some(value) {
            return self.last;
        }
        let i = match self.index.get(value) {
            Some(&i) => i,
            None => {
                let i = u16::try_from(self.values.len()).unwrap_or(u16::MAX);
                self.values.push(value.clone());
                self.index.insert(value.clone(), i);
                i
            }
        };
        self.last = i;
        i
    }
}

/// One known ban in 12 bytes: a million take tens of megabytes, not
/// hundreds.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Unix seconds of the expiry; 0 is permanent. (Journal and fleet times
    /// are whole seconds; u32 lasts until 2106.)
    until: u32,
    ports: u16,
    jails: u16,
    monitor: bool,
}

impl Entry {
    fn expiry(&self) -> Expiry {
        match self.until {
            0 => Expiry::Never,
            secs => {
                Expiry::At(std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(secs)))
            }
        }
    }
}

/// An expiry as [`Entry::until`]: rounded up to the second (a ban never
/// ends early), past 2106 permanent.
fn until(expiry: Expiry) -> u32 {
    match expiry {
        Expiry::Never => 0,
        Expiry::At(t) => {
            let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            u32::try_from(secs.max(1)).unwrap_or(0)
        }
    }
}

/// Bans in force as far as the engine knows, by target.
#[derive(Debug, Default)]
pub struct KnownBans {
    entries: HashMap<Target, Entry>,
    port_sets: Interned<PortSet>,
    /// Sorted jail names (`manual` for bans set by hand).
    jail_sets: Interned<Vec<String>>,
    /// The id of each one-jail set, by name (the common case, no allocation).
    single: HashMap<String, u16>,
}

impl KnownBans {
    /// The ban on `target`, if known (expired or not).
    pub fn get(&self, target: Target) -> Option<Ban> {
        self.entries.get(&target).map(|e| Ban {
            ports: self.port_sets.values[usize::from(e.ports)],
            expiry: e.expiry(),
            monitor: e.monitor,
        })
    }

    /// Whether a known ban on `target` is in force at `now` and drops
    /// everything `probe` would (ports, and not only counting).
    pub fn covers(&self, target: Target, probe: &Ban, now: SystemTime) -> bool {
        self.entries.get(&target).is_some_and(|e| {
            e.expiry().is_active(now)
                && (probe.monitor || !e.monitor)
                && self.port_sets.values[usize::from(e.ports)].covers(&probe.ports)
        })
    }

    /// Records `ban` on `target`, set (or confirmed) by `jail`; the jails of
    /// an earlier ban on the target stay listed.
    pub fn remember(&mut self, target: Target, ban: &Ban, jail: &str) {
        let ports = self.port_sets.id(&ban.ports);
        let entry = Entry {
            until: until(ban.expiry),
            ports,
            jails: 0,
            monitor: ban.monitor,
        };
        // One hash of the target, new or not (a restore remembers a million).
        match self.entries.entry(target) {
            std::collections::hash_map::Entry::Vacant(v) => {
                let sets = &mut self.jail_sets;
                let last = sets.values.get(usize::from(sets.last));
                let jails = if last.is_some_and(|l| l.len() == 1 && l[0] == jail) {
                    sets.last
                } else {
                    let id = match self.single.get(jail) {
                        Some(&id) => id,
                        None => {
                            let id = sets.id(&vec![jail.to_owned()]);
                            self.single.insert(jail.to_owned(), id);
                            id
                        }
                    };
                    sets.last = id;
                    id
                };
                v.insert(Entry { jails, ..entry });
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let mut jails = self.jail_sets.values[usize::from(o.get().jails)].clone();
                if let Err(at) = jails.binary_search_by(|j| j.as_str().cmp(jail)) {
                    jails.insert(at, jail.to_owned());
                }
                let jails = self.jail_sets.id(&jails);
                o.insert(Entry { jails, ..entry });
            }
        }
    }

    /// Forgets `target` (lifted); `false` when it was not known.
    pub fn forget(&mut self, target: Target) -> bool {
        self.entries.remove(&target).is_some()
    }

    /// Forgets everything (`jailer unban --all`).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Targets in force at `now` with the jails behind each.
    pub fn in_force(&self, now: SystemTime) -> impl Iterator<Item = (Target, &[String])> {
        self.entries
            .iter()
            .filter(move |(_, e)| e.expiry().is_active(now))
            .map(|(t, e)| (*t, self.jail_sets.values[usize::from(e.jails)].as_slice()))
    }

    /// How many bans are in force at `now`.
    pub fn count_in_force(&self, now: SystemTime) -> usize {
        self.entries
            .values()
            .filter(|e| e.expiry().is_active(now))
            .count()
    }

    /// Reserves room for `n` more entries (a restore of many).
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
    }

    /// Takes in what `other` knows about targets this set does not know
    /// (what it knows is newer: set since `other` was read).
    pub fn absorb(&mut self, other: KnownBans) {
        if self.entries.is_empty() {
            *self = other;
            return;
        }
        for (target, e) in &other.entries {
            if self.entries.contains_key(target) {
                continue;
            }
            let ban = Ban {
                ports: other.port_sets.values[usize::from(e.ports)],
                expiry: e.expiry(),
                monitor: e.monitor,
            };
            for jail in &other.jail_sets.values[usize::from(e.jails)] {
                self.remember(*target, &ban, jail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ban(ports: &[u16], secs: Option<u64>) -> Ban {
        Ban::new(
            PortSet::only(ports),
            Expiry::after(SystemTime::now(), secs.map(Duration::from_secs)),
        )
    }

    #[test]
    fn remembers_jails_ports_and_expiry() {
        let mut k = KnownBans::default();
        let t: Target = "203.0.113.7".parse().unwrap();
        k.remember(t, &ban(&[110], Some(60)), "vpopmail");
        k.remember(t, &ban(&[110, 143], Some(600)), "imap");
        let now = SystemTime::now();
        assert!(k.covers(t, &ban(&[143], None), now));
        assert!(!k.covers(t, &ban(&[25], None), now));
        let (_, jails) = k.in_force(now).next().unwrap();
        assert_eq!(jails, ["imap", "vpopmail"]);
        assert_eq!(k.get(t).unwrap().ports, PortSet::only(&[110, 143]));
        assert_eq!(k.count_in_force(now + Duration::from_secs(601)), 0);
        assert!(k.forget(t) && !k.forget(t));
    }

    #[test]
    fn absorbing_keeps_what_is_newer() {
        let t1: Target = "203.0.113.1".parse().unwrap();
        let t2: Target = "203.0.113.2".parse().unwrap();
        let mut old = KnownBans::default();
        old.remember(t1, &ban(&[110], Some(60)), "a");
        old.remember(t2, &ban(&[110], Some(60)), "a");
        let mut new = KnownBans::default();
        new.remember(t1, &ban(&[143], None), "b");
        new.absorb(old);
        assert_eq!(
            new.get(t1).unwrap().ports,
            PortSet::only(&[143]),
            "newer kept"
        );
        assert_eq!(
            new.get(t2).unwrap().ports,
            PortSet::only(&[110]),
            "older added"
        );
        let mut empty = KnownBans::default();
        empty.absorb(new);
        assert_eq!(empty.count_in_force(SystemTime::now()), 2);
    }

    #[test]
    fn a_million_bans_share_their_port_sets_and_jails() {
        let mut k = KnownBans::default();
        let b = ban(&[110], Some(3600));
        for i in 0..100_000u32 {
            k.remember(
                Target::host(std::net::Ipv4Addr::from(i).into()),
                &b,
                "vpopmail",
            );
        }
        assert_eq!(k.port_sets.values.len(), 1);
        assert_eq!(k.jail_sets.values.len(), 1);
        assert_eq!(k.count_in_force(SystemTime::now()), 100_000);
    }
}
