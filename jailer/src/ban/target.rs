//! What a ban applies to: one address, or a network (CIDR). One type for
//! every caller, so an address is parsed, made canonical and printed the
//! same way in the CLI, the config, the journal, the maps and the logs.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// An address (a host: /32 or /128) or a network, always canonical:
/// host bits cleared, and `::ffff:a.b.c.d` stored as the IPv4 host it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target(IpNet);

/// Text that is not an address or a CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an address or CIDR network")]
pub struct TargetError {
    /// The text as given.
    pub text: String,
}

impl Target {
    /// One host.
    pub fn host(ip: IpAddr) -> Self {
        Self(IpNet::from(canonical_ip(ip)))
    }

    /// A network; host bits are cleared, a full-length prefix is a host,
    /// and `::ffff:a.b.c.d/96+n` is the IPv4 network `a.b.c.d/n`.
    pub fn network(net: IpNet) -> Self {
        let net = net.trunc();
        if let IpNet::V6(v6) = net
            && v6.prefix_len() >= 96
            && let Some(v4) = v6.addr().to_ipv4_mapped()
            && let Ok(v4net) = IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96)
        {
            return Self::network(v4net);
        }
        if net.prefix_len() == net.max_prefix_len() {
            Self::host(net.addr())
        } else {
            Self(net)
        }
    }

    /// IPv6 attackers own whole prefixes: `ip` widened to `/prefix_v6`
    /// (IPv4 and `prefix_v6 >= 128` stay single hosts).
    pub fn widened(ip: IpAddr, prefix_v6: u8) -> Self {
        match canonical_ip(ip) {
            IpAddr::V6(v6) if prefix_v6 < 128 => {
                IpNet::new(IpAddr::V6(v6), prefix_v6).map_or_else(|_| Self::host(ip), Self::network)
            }
            other => Self::host(other),
        }
    }

    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The address (for a network, its first address).
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// A single address (kept in the exact-address maps), not a network.
    pub fn is_host(&self) -> bool {
        self.0.prefix_len() == self.0.max_prefix_len()
    }

    /// Whether this target covers `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical_ip(ip))
    }
}

/// `::ffff:a.b.c.d` is the IPv4 host `a.b.c.d`; everything else as is.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `::ffff:a.b.c.d` as the IPv4 address, other IPv6 addresses as they are.
pub fn canonical_v6(ip: Ipv6Addr) -> IpAddr {
    canonical_ip(IpAddr::V6(ip))
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let parsed = if t.contains('/') {
            t.parse::<IpNet>().ok().map(Self::network)
        } else {
            t.parse::<IpAddr>().ok().map(Self::host)
        };
        parsed.ok_or_else(|| TargetError {
            text: text.to_owned(),
        })
    }
}

impl From<IpAddr> for Target {
    fn from(ip: IpAddr) -> Self {
        Self::host(ip)
    }
}

impl From<IpNet> for Target {
    fn from(net: IpNet) -> Self {
        Self::network(net)
    }
}

/// `203.0.113.7` for a host, `203.0.113.0/24` for a network.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            self.0.addr().fmt(f)
        } else {
            self.0.fmt(f)
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// Why banning `target` could lock out the server or everyone, if it could.
pub fn lockout_risk(target: Target, own: &[IpAddr]) -> Option<String> {
    if target.prefix_len() == 0 {
        return Some("a /0 network is every address".into());
    }
    let ranges: [(&str, Target); 7] = [
        (
            "loopback",
            Target::network(IpNet::new(Ipv4Addr::LOCALHOST.into(), 8).ok()?),
        ),
        ("loopback", Target::host(Ipv6Addr::LOCALHOST.into())),
        (
            "the unspecified address",
            Target::host(Ipv4Addr::UNSPECIFIED.into()),
        ),
        (
            "the unspecified address",
            Target::host(Ipv6Addr::UNSPECIFIED.into()),
        ),
        ("broadcast", Target::host(Ipv4Addr::BROADCAST.into())),
        (
            "multicast",
            Target::network(IpNet::new(Ipv4Addr::new(224, 0, 0, 0).into(), 4).ok()?),
        ),
        (
            "multicast",
            Target::network(IpNet::new(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0).into(), 8).ok()?),
        ),
    ];
    let overlaps = |a: &Target, b: &Target| a.contains(b.addr()) || b.contains(a.addr());
    if let Some((what, _)) = ranges.iter().find(|(_, range)| overlaps(&target, range)) {
        return Some(format!("it covers {what} addresses"));
    }
    own.iter()
        .find(|ip| target.contains(**ip))
        .map(|ip| format!("it covers {ip}, an address of this host"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Target {
        text.parse().unwrap()
    }

    #[test]
    fn hosts_and_networks_parse_canonical_and_print_back() {
        assert_eq!(t("203.0.113.7").to_string(), "203.0.113.7");
        assert!(t("203.0.113.7").is_host());
        assert_eq!(t(" 203.0.113.9/24 ").to_string(), "203.0.113.0/24");
        assert!(!t("203.0.113.0/24").is_host());
        assert_eq!(t("2001:db8:1::5/48").to_string(), "2001:db8:1::/48");
        assert_eq!(t("::ffff:203.0.113.7"), t("203.0.113.7"));
        assert_eq!(t("203.0.113.7/32"), t("203.0.113.7"));
        assert_eq!(t("2001:db8::1/128").to_string(), "2001:db8::1");
        assert_eq!(t("::ffff:192.0.2.9/120"), t("192.0.2.0/24"));
        for bad in ["", "300.1.1.1", "1.2.3.4/33", "example.com", "1.2.3.4/x"] {
            assert!(bad.parse::<Target>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn widening_applies_to_ipv6_only() {
        let v6: IpAddr = "2001:db8:1:2::c".parse().unwrap();
        assert_eq!(Target::widened(v6, 64), t("2001:db8:1:2::/64"));
        assert_eq!(Target::widened(v6, 128), t("2001:db8:1:2::c"));
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(Target::widened(v4, 64), t("203.0.113.7"));
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(Target::widened(mapped, 64), t("203.0.113.7"));
    }

    #[test]
    fn serde_as_text() {
        let json = serde_json::to_string(&t("2001:db8:1::/48")).unwrap();
        assert_eq!(json, "\"2001:db8:1::/48\"");
        assert_eq!(
            serde_json::from_str::<Target>("\"203.0.113.7\"").unwrap(),
            t("203.0.113.7")
        );
        assert!(serde_json::from_str::<Target>("\"nope\"").is_err());
    }

    #[test]
    fn contains_mapped_addresses() {
        assert!(t("203.0.113.0/24").contains("::ffff:203.0.113.9".parse().unwrap()));
        assert!(!t("203.0.113.0/24").contains("203.0.114.1".parse().unwrap()));
    }

    fn risk(text: &str) -> Option<String> {
        lockout_risk(text.parse().unwrap(), &["198.51.100.1".parse().unwrap()])
    }

    #[test]
    fn lockout_foot_guns_are_named() {
        for (target, why) in [
            ("0.0.0.0/0", "/0"),
            ("::/0", "/0"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.5", "multicast"),
            ("ff02::1", "multicast"),
            ("198.51.100.1", "this host"),
            ("198.51.100.0/24", "this host"),
            ("0.0.0.0/1", "loopback"),
        ] {
            let got = risk(target).unwrap_or_default();
            assert!(got.contains(why), "{target}: {got:?}");
        }
        for fine in [
            "203.0.113.7",
            "203.0.113.0/24",
            "2001:db8::1",
            "198.51.100.2",
        ] {
            assert_eq!(risk(fine), None, "{fine}");
        }
    }
}
