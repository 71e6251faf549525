//! The TCP ports a ban covers: a jail's `port` list, or every port.

use std::{fmt, ops::Deref, str::FromStr};

use jailer_common::{BAN_ALL_PORTS, BAN_MAX_PORTS};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Mail service names an admin writes in `port = [...]` or `--port`.
const SERVICES: &[(&str, u16)] = &[
    ("smtp", 25),
    ("pop3", 110),
    ("imap", 143),
    ("imap2", 143),
    ("submissions", 465),
    ("smtps", 465),
    ("submission", 587),
    ("imaps", 993),
    ("pop3s", 995),
    ("sieve", 4190),
];

/// Ports a ban applies to. `All` is fail2ban's `port = 0:65535`. A value,
/// not a heap list: a million bans carry their ports without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortSet {
    All,
    Only(Ports),
}

/// A few ports: sorted, deduplicated, non-zero, at most `BAN_MAX_PORTS`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ports {
    ports: [u16; BAN_MAX_PORTS],
    len: u8,
}

impl Ports {
    /// `list` sorted and deduplicated, zeros dropped; `None` when more than
    /// `BAN_MAX_PORTS` remain.
    pub fn new(list: &[u16]) -> Option<Self> {
        let mut sorted: Vec<u16> = list.iter().copied().filter(|&p| p != 0).collect();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() > BAN_MAX_PORTS {
            return None;
        }
        let mut ports = [0; BAN_MAX_PORTS];
        ports[..sorted.len()].copy_from_slice(&sorted);
        Some(Self {
            ports,
            len: sorted.len() as u8,
        })
    }
}

impl Deref for Ports {
    type Target = [u16];

    fn deref(&self) -> &[u16] {
        &self.ports[..usize::from(self.len)]
    }
}

impl fmt::Debug for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Why a port list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    /// Neither a number from 1 to 65535 nor a known service name.
    #[error(
        "unknown port `{port}`: use a number 1-65535, `all`, or one of {}",
        known_services()
    )]
    Unknown { port: String },
    /// More distinct ports than a ban can carry.
    #[error("{count} ports given, a ban holds at most {BAN_MAX_PORTS}; use `all`")]
    TooMany { count: usize },
    /// No port at all.
    #[error("the port list is empty")]
    Empty,
}

fn known_services() -> String {
    let names: Vec<&str> = SERVICES.iter().map(|(n, _)| *n).collect();
    names.join(", ")
}

/// One port by number or service name.
pub fn parse_port(text: &str) -> Result<u16, PortError> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u16>()
        && n != 0
    {
        return Ok(n);
    }
    SERVICES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(t))
        .map(|&(_, port)| port)
        .ok_or_else(|| PortError::Unknown {
            port: text.to_owned(),
        })
}

impl PortSet {
    /// Parses a list of names/numbers; `all` anywhere makes it `All`. Every
    /// item must be valid: a typo is refused, never widened.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, PortError> {
        let mut all = false;
        let mut ports = Vec::with_capacity(items.len());
        for item in items {
            if item.as_ref().trim().eq_ignore_ascii_case("all") {
                all = true;
            } else {
                ports.push(parse_port(item.as_ref())?);
            }
        }
        if all {
            return Ok(Self::All);
        }
        ports.sort_unstable();
        ports.dedup();
        match (ports.len(), Ports::new(&ports)) {
            (0, _) => Err(PortError::Empty),
            (_, Some(ports)) => Ok(Self::Only(ports)),
            (n, None) => Err(PortError::TooMany { count: n }),
        }
    }

    /// These ports; more than a ban can carry is `All` (wider, never
    /// narrower).
    pub fn only(list: &[u16]) -> Self {
        Ports::new(list).map_or(Self::All, Self::Only)
    }

    /// The `(ports, flags)` pair stored in a `BanValue`.
    pub fn to_raw(&self) -> ([u16; BAN_MAX_PORTS], u32) {
        let mut raw = [0; BAN_MAX_PORTS];
        match self {
            Self::All => (raw, BAN_ALL_PORTS),
            Self::Only(ports) => {
                raw[..ports.len()].copy_from_slice(ports);
                (raw, 0)
            }
        }
    }

    /// Inverse of [`Self::to_raw`].
    pub fn from_raw(ports: &[u16; BAN_MAX_PORTS], flags: u32) -> Self {
        if flags & BAN_ALL_PORTS != 0 {
            return Self::All;
        }
        Self::only(ports)
    }
}

impl PortSet {
    /// Whether a packet to `port` is covered.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Self::All => true,
            Self::Only(ports) => ports.binary_search(&port).is_ok(),
        }
    }

    /// Whether every port of `other` is covered by `self`.
    pub fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::All, _) => true,
            (Self::Only(_), Self::All) => false,
            (Self::Only(_), Self::Only(theirs)) => theirs.iter().all(|&p| self.contains(p)),
        }
    }

    /// The ports of both; more than a ban can carry becomes `All` (wider,
    /// never narrower, than what either asked for).
    pub fn union(&self, other: &Self) -> Self {
        match (self, other) {
            (Self::Only(a), Self::Only(b)) => {
                let both: Vec<u16> = a.iter().chain(b.iter()).copied().collect();
                Self::only(&both)
            }
            _ => Self::All,
        }
    }
}

/// `110,995` or `all`, as [`Display`](fmt::Display) writes it; every item must parse.
impl FromStr for PortSet {
    type Err = PortError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let items: Vec<&str> = text.split(',').collect();
        Self::parse(&items)
    }
}

impl Serialize for PortSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Only(ports) => {
                for (i, port) in ports.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{port}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_port("pop3"), Ok(110));
        assert_eq!(parse_port("POP3S"), Ok(995));
        assert_eq!(parse_port("submission"), Ok(587));
        assert_eq!(parse_port("2110"), Ok(2110));
        assert!(matches!(parse_port("0"), Err(PortError::Unknown { .. })));
        assert!(matches!(
            parse_port("65536"),
            Err(PortError::Unknown { .. })
        ));
        assert!(matches!(
            parse_port("gopher"),
            Err(PortError::Unknown { .. })
        ));
    }

    #[test]
    fn set_sorts_dedups_and_roundtrips() {
        let set = PortSet::parse(&["pop3s", "110", "pop3"]).unwrap();
        assert_eq!(set, PortSet::only(&[110, 995]));
        let (raw, flags) = set.to_raw();
        assert_eq!(PortSet::from_raw(&raw, flags), set);
        assert_eq!(set.to_string(), "110,995");
    }

    #[test]
    fn text_form_is_strict() {
        assert_eq!("110,995".parse(), Ok(PortSet::only(&[110, 995])));
        assert_eq!("all".parse(), Ok(PortSet::All));
        for bad in ["", "1l0", "110;995", "110,", "0", "all,x"] {
            assert!(bad.parse::<PortSet>().is_err(), "{bad} accepted");
        }
        let json = serde_json::to_string(&PortSet::only(&[110, 995])).unwrap();
        assert_eq!(json, "\"110,995\"");
        assert!(serde_json::from_str::<PortSet>("\"1l0\"").is_err());
    }

    #[test]
    fn covers_and_union() {
        let pop3 = PortSet::only(&[110]);
        let both = PortSet::only(&[110, 143]);
        assert!(both.covers(&pop3) && !pop3.covers(&both));
        assert!(PortSet::All.covers(&both) && !both.covers(&PortSet::All));
        assert_eq!(pop3.union(&PortSet::only(&[143])), both);
        let many = PortSet::only(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(many.union(&PortSet::only(&[9])), PortSet::All);
        assert!(both.contains(143) && !both.contains(25));
    }

    #[test]
    fn all_wins_and_limits_hold() {
        assert_eq!(PortSet::parse(&["pop3", "all"]).unwrap(), PortSet::All);
        let (_, flags) = PortSet::All.to_raw();
        assert_eq!(PortSet::from_raw(&[0; BAN_MAX_PORTS], flags), PortSet::All);
        let nine: Vec<String> = (1..=9).map(|p| p.to_string()).collect();
        assert_eq!(PortSet::parse(&nine), Err(PortError::TooMany { count: 9 }));
        assert_eq!(PortSet::parse::<&str>(&[]), Err(PortError::Empty));
    }
}
