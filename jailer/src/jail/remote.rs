//! Bans other fleet members set, enforced here: after this server's own
//! allowlist (the top-level `ignoreip`, its own addresses, and never what
//! would lock everyone out), merged with any own ban on the same target,
//! lifted when their member lifts them, journaled with their origin so a
//! reboot restores them, and never published again.

use std::{collections::HashMap, net::IpAddr, time::SystemTime};

use tracing::{debug, info};

use super::Engine;
use crate::{
    ban::{Ban, Expiry, Target, lockout_risk},
    kernel::{BanTable, BpfError},
    state::Record,
    time::unix_secs,
};

/// The members' bans enforced here, by target.
#[derive(Debug, Default)]
pub struct RemoteBans {
    by_target: HashMap<Target, Vec<Held>>,
}

/// One member's ban on a target.
#[derive(Debug)]
struct Held {
    origin: String,
    jail: String,
    ban: Ban,
}

impl RemoteBans {
    /// Whether `origin`'s very ban on `target` is held.
    fn holds(&self, origin: &str, jail: &str, target: Target, ban: &Ban) -> bool {
        self.by_target.get(&target).is_some_and(|list| {
            list.iter()
                .any(|h| h.origin == origin && h.jail == jail && h.ban == *ban)
        })
    }

    /// Records `origin`'s ban on `target`; `false` when it held this very ban.
    fn set(&mut self, origin: &str, jail: &str, target: Target, ban: Ban) -> bool {
        let list = self.by_target.entry(target).or_default();
        match list.iter_mut().find(|h| h.origin == origin) {
            Some(held) if held.ban == ban && held.jail == jail => false,
            Some(held) => {
                held.ban = ban;
                jail.clone_into(&mut held.jail);
                true
            }
            None => {
                list.push(Held {
                    origin: origin.to_owned(),
                    jail: jail.to_owned(),
                    ban,
                });
                true
            }
        }
    }

    /// Forgets `origin`'s ban on `target`; `false` when there was none.
    fn remove(&mut self, origin: &str, target: Target) -> bool {
        let Some(list) = self.by_target.get_mut(&target) else {
            return false;
        };
        let before = list.len();
        list.retain(|h| h.origin != origin);
        let removed = list.len() < before;
        if list.is_empty() {
            self.by_target.remove(&target);
        }
        removed
    }

    /// The bans still in force on `target` at `now`.
    fn in_force(&self, target: Target, now: SystemTime) -> impl Iterator<Item = &Ban> {
        self.by_target
            .get(&target)
            .into_iter()
            .flatten()
            .map(|h| &h.ban)
            .filter(move |b| b.expiry.is_active(now))
    }

    /// Whether a member's ban in force on `target` drops what `probe` would.
    pub fn covers(&self, target: Target, probe: &Ban, now: SystemTime) -> bool {
        self.in_force(target, now).any(|b| b.covers_ports_of(probe))
    }

    /// (origin, target) of every ban held.
    pub fn held(&self) -> Vec<(String, Target)> {
        self.by_target
            .iter()
            .flat_map(|(t, list)| list.iter().map(move |h| (h.origin.clone(), *t)))
            .collect()
    }

    /// Bans in force per (member, jail).
    pub fn per_origin(&self, now: SystemTime) -> HashMap<(String, String), usize> {
        let mut counts = HashMap::new();
        for held in self.by_target.values().flatten() {
            if held.ban.expiry.is_active(now) {
                *counts
                    .entry((held.origin.clone(), held.jail.clone()))
                    .or_default() += 1;
            }
        }
        counts
    }

    /// Targets with a member's ban in force that `known` does not cover.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.by_target.keys()
    }

    /// Forgets bans that lapsed on `target`.
    fn prune(&mut self, target: Target, now: SystemTime) {
        if let Some(list) = self.by_target.get_mut(&target) {
            list.retain(|h| h.ban.expiry.is_active(now));
            if list.is_empty() {
                self.by_target.remove(&target);
            }
        }
    }
}

/// A member's ban as the fleet hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBan {
    pub origin: String,
    pub target: Target,
    pub ban: Ban,
    pub jail: String,
    /// Unix seconds when the member set it.
    pub at: u64,
}

impl<T: BanTable> Engine<T> {
    /// Why a member's ban on `target` is not enforced here, if it is not.
    fn refusal(&self, target: Target) -> Option<String> {
        if let Some(why) = lockout_risk(target, &self.own.iter().copied().collect::<Vec<IpAddr>>())
        {
            return Some(why);
        }
        self.ignoreip
            .iter()
            .find(|net| net.contains(target.addr()) || target.contains(net.addr()))
            .map(|net| format!("it overlaps ignoreip {net}"))
    }

    /// Enforces a member's ban (unless this server refuses it); `Ok(true)`
    /// when something changed.
    pub fn apply_remote(&mut self, remote: &RemoteBan, now: SystemTime) -> Result<bool, BpfError> {
        let applied = self.enforce_remote(remote, now)?;
        if applied {
            info!(target = %remote.target, origin = remote.origin, jail = remote.jail, "banned (fleet)");
        }
        Ok(applied)
    }

    /// [`Engine::apply_remote`] without the log line (a resync logs once).
    fn enforce_remote(&mut self, remote: &RemoteBan, now: SystemTime) -> Result<bool, BpfError> {
        if let Some(why) = self.refusal(remote.target) {
            debug!(target = %remote.target, origin = remote.origin, why, "fleet ban refused");
            self.remote_refused += 1;
            return Ok(false);
        }
        if !remote.ban.expiry.is_active(now)
            || self
                .remote
                .holds(&remote.origin, &remote.jail, remote.target, &remote.ban)
        {
            return Ok(false);
        }
        // A member may protect ports no jail here does.
        self.table.protect(&remote.ban.ports)?;
        let effective = match self.table.get(remote.target)? {
            Some(old) if old.expiry.is_active(now) && old.covers(&remote.ban) => None,
            Some(old) if old.expiry.is_active(now) => Some(old.merge(&remote.ban)),
            _ => Some(remote.ban),
        };
        if let Some(ban) = effective {
            self.table.insert(remote.target, &ban)?;
        }
        // Held only once in the map: a full map holds no memory here either.
        self.remote
            .set(&remote.origin, &remote.jail, remote.target, remote.ban);
        if let Expiry::At(t) = remote.ban.expiry {
            self.expiry.insert((t, remote.target));
        }
        self.pending.push(Record::remote_ban(
            remote.target,
            &remote.jail,
            &remote.ban,
            &remote.origin,
            remote.at,
        ));
        Ok(true)
    }

    /// Lifts a member's ban: what remains on the target (this server's own
    /// ban, other members') stays enforced.
    pub fn lift_remote(
        &mut self,
        origin: &str,
        target: Target,
        now: SystemTime,
    ) -> Result<bool, BpfError> {
        if !self.remote.remove(origin, target) {
            return Ok(false);
        }
        let own = self.known.get(target).filter(|b| b.expiry.is_active(now));
        let rest = own
            .into_iter()
            .chain(self.remote.in_force(target, now).copied())
            .reduce(|a, b| a.merge(&b));
        match rest {
            Some(ban) => self.table.insert(target, &ban)?,
            None => {
                self.table.remove(target)?;
            }
        }
        info!(%target, origin, "unbanned (fleet)");
        self.pending.push(Record::Unban {
            addr: target,
            at: unix_secs(now),
            origin: Some(origin.to_owned()),
        });
        Ok(true)
    }

    /// The fleet's complete set after a (re)connect: lifts what is no
    /// longer there, applies what is new or changed, leaves the rest alone
    /// (no re-ban). Returns (applied, lifted).
    pub fn resync_remote(
        &mut self,
        all: &[RemoteBan],
        now: SystemTime,
    ) -> Result<(usize, usize), BpfError> {
        let wanted: std::collections::HashSet<(&str, Target)> =
            all.iter().map(|r| (r.origin.as_str(), r.target)).collect();
        let mut lifted = 0;
        for (origin, target) in self.remote.held() {
            if !wanted.contains(&(origin.as_str(), target)) {
                lifted += usize::from(self.lift_remote(&origin, target, now)?);
            }
        }
        let mut applied = 0;
        for remote in all {
            applied += usize::from(self.enforce_remote(remote, now)?);
        }
        Ok((applied, lifted))
    }

    /// Members' bans restored from the journal (the maps already hold them,
    /// or the restore writes them).
    pub(super) fn remember_remote(&mut self, origin: &str, jail: &str, target: Target, ban: Ban) {
        self.remote.set(origin, jail, target, ban);
    }

    /// Forgets members' bans on `target` that lapsed.
    pub(super) fn prune_remote(&mut self, target: Target, now: SystemTime) {
        self.remote.prune(target, now);
    }

    /// This server's own bans in force, with the first jail behind each:
    /// what its origin should hold in the fleet's bucket.
    pub fn own_bans(&self, now: SystemTime) -> Vec<(Target, Ban, String)> {
        self.known
            .in_force(now)
            .filter_map(|(target, jails)| {
                let ban = self.known.get(target)?;
                Some((target, ban, jails.first().cloned().unwrap_or_default()))
            })
            .collect()
    }

    /// Members' bans in force here, per (member, jail).
    pub fn remote_per_origin(&self, now: SystemTime) -> HashMap<(String, String), usize> {
        self.remote.per_origin(now)
    }

    /// Members' bans refused here (ignoreip, own addresses, lockout).
    pub fn remote_refused(&self) -> u64 {
        self.remote_refused
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{ban::PortSet, kernel::MemBanTable};

    fn remote(origin: &str, target: &str, ports: &[u16], secs: Option<u64>) -> RemoteBan {
        RemoteBan {
            origin: origin.into(),
            target: target.parse().unwrap(),
            ban: Ban::new(
                PortSet::only(ports),
                Expiry::after(SystemTime::now(), secs.map(Duration::from_secs)),
            ),
            jail: "dovecot".into(),
            at: 1,
        }
    }

    #[test]
    fn members_bans_merge_and_lift_one_by_one() {
        let mut e = Engine::new(Vec::new(), MemBanTable::default());
        let now = SystemTime::now();
        let t: Target = "203.0.113.7".parse().unwrap();
        assert!(
            e.apply_remote(&remote("mx2", "203.0.113.7", &[110], Some(600)), now)
                .unwrap()
        );
        assert!(
            e.apply_remote(&remote("mx3", "203.0.113.7", &[143], None), now)
                .unwrap()
        );
        let b = e.table().get(t).unwrap().unwrap();
        assert_eq!(
            (b.ports, b.expiry),
            (PortSet::only(&[110, 143]), Expiry::Never)
        );
        assert!(
            !e.apply_remote(&remote("mx3", "203.0.113.7", &[143], None), now)
                .unwrap(),
            "held: no re-ban"
        );
        // mx3 lifts: mx2's ban stays, narrowed back to it.
        assert!(e.lift_remote("mx3", t, now).unwrap());
        let b = e.table().get(t).unwrap().unwrap();
        assert_eq!(b.ports, PortSet::only(&[110]));
        assert!(e.lift_remote("mx2", t, now).unwrap());
        assert!(e.table().get(t).unwrap().is_none());
        assert_eq!(
            e.take_records().len(),
            4,
            "two bans and two unbans journaled with their origin"
        );
    }

    #[test]
    fn the_allowlist_and_lockouts_come_first() {
        let mut e = Engine::new(Vec::new(), MemBanTable::default());
        e.set_ignoreip(vec!["192.0.2.0/24".parse().unwrap()]);
        e.set_own_addresses(["198.51.100.1".parse().unwrap()].into());
        let now = SystemTime::now();
        for target in [
            "192.0.2.9",
            "192.0.0.0/16",
            "198.51.100.1",
            "0.0.0.0/0",
            "127.0.0.1",
        ] {
            assert!(
                !e.apply_remote(&remote("mx2", target, &[110], None), now)
                    .unwrap(),
                "{target}"
            );
        }
        assert!(e.table().bans().is_empty());
        assert_eq!(e.remote_refused(), 5);
    }

    #[test]
    fn a_resync_adds_lifts_and_keeps() {
        let mut e = Engine::new(Vec::new(), MemBanTable::default());
        let now = SystemTime::now();
        e.apply_remote(&remote("mx2", "203.0.113.1", &[110], None), now)
            .unwrap();
        e.apply_remote(&remote("mx2", "203.0.113.2", &[110], None), now)
            .unwrap();
        e.take_records();
        let all = [
            remote("mx2", "203.0.113.1", &[110], None),
            remote("mx2", "203.0.113.3", &[110], None),
        ];
        assert_eq!(e.resync_remote(&all, now).unwrap(), (1, 1));
        let bans = e.table().bans();
        assert!(bans.contains_key(&"203.0.113.1".parse().unwrap()));
        assert!(!bans.contains_key(&"203.0.113.2".parse().unwrap()));
        assert!(bans.contains_key(&"203.0.113.3".parse().unwrap()));
        assert_eq!(e.take_records().len(), 2, "only the changes are journaled");
    }
}
