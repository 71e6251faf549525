//! What a matched failure yields: the offending host (an address, a network
//! or a name, never resolved), the failure id, user and time.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use crate::filter::fail2ban::runtime::failregex::Groups;

/// Who failed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An address (`<HOST>`, `<ADDR>`, `<IP4>`, `<IP6>`). IPv4-mapped IPv6
    /// addresses are IPv4, as in fail2ban.
    Ip(IpAddr),
    /// A network (`<SUBNET>`, `<ADDR>/<CIDR>`): the address with its host
    /// bits cleared, and the prefix length.
    Subnet {
        /// The network address.
        addr: IpAddr,
        /// The prefix length.
        prefix: u8,
    },
    /// Not an address: a host name (`<HOST>`, `<DNS>`; fail2ban would
    /// resolve it, this crate never does), a failure id that names no
    /// address (`<F-ID>`), or address-shaped text that does not parse.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Subnet { addr, prefix } => write!(f, "{addr}/{prefix}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// Which address family `IPAddr(text, cidr)` may parse.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
    Any,
}

impl Host {
    /// Read text as fail2ban's `IPAddr(text)` does: brackets dropped,
    /// `addr/prefix` and plain addresses parsed, anything else a name.
    pub fn parse(text: &str) -> Self {
        let inner = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .filter(|_| text.len() > 2)
            .unwrap_or(text);
        if let Some((addr, prefix)) = inner.split_once('/') {
            if let Ok(prefix) = prefix.parse::<u8>()
                && let Some(host) = Self::address(addr, Family::Any, Some(prefix))
            {
                return host;
            }
            return Self::Name(text.to_owned());
        }
        Self::address(inner, Family::Any, None).unwrap_or_else(|| Self::Name(text.to_owned()))
    }

    /// `IPAddr(text, cidr)` for a matched `ip4`/`ip6` group (with the `cidr`
    /// group as `prefix`); `None` if the text is no address of the family.
    pub(crate) fn address(text: &str, family: Family, prefix: Option<u8>) -> Option<Self> {
        let ip = match family {
            Family::V4 => IpAddr::V4(text.parse::<Ipv4Addr>().ok()?),
            Family::V6 => IpAddr::V6(text.parse::<Ipv6Addr>().ok()?),
            Family::Any => text.parse::<IpAddr>().ok()?,
        };
        let Some(prefix) = prefix else {
            return Some(Self::Ip(match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            }));
        };
        let (addr, full) = match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix.min(32)))
                    .unwrap_or(0);
                (IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)), 32)
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix.min(128)))
                    .unwrap_or(0);
                (IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)), 128)
            }
        };
        Some(match prefix {
            p if p == full => Self::Ip(addr),
            p if p < full => Self::Subnet { addr, prefix: p },
            _ => return None,
        })
    }
}

/// A failure found in the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The offending host.
    pub host: Host,
    /// The `<F-ID>` text when the failregex has one and it differs from the
    /// host: fail2ban then counts failures by it instead of by host.
    pub fid: Option<String>,
    /// The `<F-USER>` text, if the regex has one and it took part.
    pub user: Option<String>,
    /// Every user seen on a multi-line failure (`<F-MLFID>`), in order.
    pub users: Vec<String>,
    /// When it happened: the line's date, or the last date seen within a
    /// minute for a line without one; `None` if there was neither.
    pub time: Option<SystemTime>,
    /// The log lines that make up the failure (more than one for
    /// multi-line failures); fail2ban's `attempts` is their number.
    pub lines: Vec<String>,
    /// Index of the failregex that matched.
    pub regex: usize,
}

impl Failure {
    /// What fail2ban counts this failure by: the failure id if there is one,
    /// else the host.
    pub fn id(&self) -> String {
        match &self.fid {
            Some(fid) => fid.clone(),
            None => self.host.to_string(),
        }
    }
}

/// The failure data fail2ban carries in a `dict` through prefregex merge and
/// multi-line merging (`fail` in filter.py).
#[derive(Clone, Debug, Default)]
pub(crate) struct FailData {
    pub(crate) groups: Groups,
    /// `users`: every user of a multi-line failure (a set).
    pub(crate) users: Option<Vec<String>>,
    /// `matches`: lines of the failure.
    pub(crate) matches: Vec<String>,
    /// `nofail-matches`: lines held back while the failure is not (yet) one.
    pub(crate) nofail_matches: Vec<String>,
    /// `mlfpending`: a failure is waiting for its address.
    pub(crate) mlfpending: bool,
}

impl FailData {
    pub(crate) fn new(groups: Groups) -> Self {
        Self {
            groups,
            ..Self::default()
        }
    }

    /// `_updateUsers`: add the user (if any) to `users`; the set's size.
    pub(crate) fn update_users(&mut self, user: Option<&str>) -> usize {
        if let Some(user) = user.filter(|u| !u.is_empty()) {
            let users = self.users.get_or_insert_with(Vec::new);
            if !users.iter().any(|u| u == user) {
                users.push(user.to_owned());
            }
        }
        self.users.as_ref().map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_hosts() {
        assert_eq!(
            Host::parse("192.0.2.1"),
            Host::Ip(
                "192.0.2.1"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            )
        );
        assert_eq!(Host::parse("[2001:db8::1]").to_string(), "2001:db8::1");
        assert_eq!(Host::parse("::ffff:192.0.2.1").to_string(), "192.0.2.1");
        assert_eq!(Host::parse("192.0.2.77/24").to_string(), "192.0.2.0/24");
        assert_eq!(Host::parse("2001:db8::1/128").to_string(), "2001:db8::1");
        assert_eq!(Host::parse("example.com"), Host::Name("example.com".into()));
        assert_eq!(Host::parse("999.1.1.1"), Host::Name("999.1.1.1".into()));
        assert_eq!(Host::address("192.0.2.1", Family::V6, None), None);
    }
}
