//! A ban: which ports it closes, until when, and whether it only counts
//! (monitor). The one place bans are built, compared and merged; the kernel
//! side ([`crate::kernel`]) only encodes them, the journal only records them.

mod ports;
mod target;

use std::time::{Duration, SystemTime};

pub use self::{
    ports::{PortError, PortSet, Ports, parse_port},
    target::{Target, TargetError, canonical_ip, canonical_v6, lockout_risk},
};

/// When a ban lapses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expiry {
    /// At this wall-clock time.
    At(SystemTime),
    /// Never (`bantime = "permanent"`).
    Never,
}

impl Expiry {
    /// `duration` from `now`; `None` is permanent. Saturates instead of
    /// overflowing (durations are bounded where they are parsed anyway).
    pub fn after(now: SystemTime, duration: Option<Duration>) -> Self {
        match duration {
            None => Self::Never,
            Some(d) => Self::At(
                now.checked_add(d)
                    .unwrap_or(now + crate::time::MAX_DURATION),
            ),
        }
    }

    /// Whether the ban still holds at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        match self {
            Self::Never => true,
            Self::At(t) => now < *t,
        }
    }

    /// Time left at `now`; `None` for a permanent ban.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        match self {
            Self::Never => None,
            Self::At(t) => Some(t.duration_since(now).unwrap_or(Duration::ZERO)),
        }
    }
}

/// One ban, independent of where it is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ban {
    pub ports: PortSet,
    pub expiry: Expiry,
    /// Count would-be drops, let packets pass.
    pub monitor: bool,
}

impl Ban {
    pub fn new(ports: PortSet, expiry: Expiry) -> Self {
        Self {
            ports,
            expiry,
            monitor: false,
        }
    }

    /// Whether `self`, already in force, makes `new` redundant: it closes
    /// every port of `new`, for at least as long, and drops if `new` drops.
    pub fn covers(&self, new: &Ban) -> bool {
        self.covers_ports_of(new) && self.expiry >= new.expiry
    }

    /// Whether `self` drops everything `other` would (its ports, and it is
    /// not only counting when `other` drops), however long each lasts.
    pub fn covers_ports_of(&self, other: &Ban) -> bool {
        self.ports.covers(&other.ports) && (other.monitor || !self.monitor)
    }

    /// Two bans on one target as one: ports of both, the later expiry, and
    /// enforcing when either enforces.
    pub fn merge(&self, new: &Ban) -> Ban {
        Ban {
            ports: self.ports.union(&new.ports),
            expiry: self.expiry.max(new.expiry),
            monitor: self.monitor && new.monitor,
        }
    }
}

/// A ban as found in the kernel maps, with the packets it dropped (or, in
/// monitor mode, would have dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub target: Target,
    pub ban: Ban,
    pub drops: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(ports: &[u16], secs: Option<u64>) -> Ban {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        Ban::new(
            PortSet::only(ports),
            Expiry::after(t0, secs.map(Duration::from_secs)),
        )
    }

    #[test]
    fn later_and_wider_covers_earlier_and_narrower() {
        assert!(ban(&[110, 143], Some(600)).covers(&ban(&[110], Some(60))));
        assert!(!ban(&[110], Some(600)).covers(&ban(&[143], Some(60))));
        assert!(!ban(&[110], Some(60)).covers(&ban(&[110], Some(600))));
        assert!(ban(&[110], None).covers(&ban(&[110], Some(600))));
        assert!(!ban(&[110], Some(600)).covers(&ban(&[110], None)));
        let mut monitor = ban(&[110], None);
        monitor.monitor = true;
        assert!(
            !monitor.covers(&ban(&[110], Some(1))),
            "a drop is not covered by a count"
        );
        assert!(ban(&[110], None).covers(&monitor));
    }

    #[test]
    fn merge_takes_union_and_later_expiry() {
        let m = ban(&[110], Some(600)).merge(&ban(&[143], Some(60)));
        assert_eq!(m.ports, PortSet::only(&[110, 143]));
        assert_eq!(m.expiry, ban(&[], Some(600)).expiry);
        assert_eq!(
            ban(&[110], Some(6)).merge(&ban(&[110], None)).expiry,
            Expiry::Never
        );
        let mut monitor = ban(&[110], None);
        monitor.monitor = true;
        assert!(!monitor.merge(&ban(&[110], None)).monitor);
    }

    #[test]
    fn expiry_is_exclusive_and_never_is_forever() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let e = Expiry::At(t);
        assert!(e.is_active(t - Duration::from_secs(1)));
        assert!(!e.is_active(t));
        assert_eq!(
            e.remaining(t + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        assert!(Expiry::Never.is_active(t) && Expiry::Never.remaining(t).is_none());
        assert!(Expiry::Never > e, "permanent outlasts any time");
    }
}
