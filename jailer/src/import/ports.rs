//! fail2ban's `port` values as jailer's `port` lists.
//!
//! fail2ban hands `port` to its firewall actions, which resolve service
//! names through `/etc/services` and read `a:b` as a range. jailer's bans
//! hold up to `BAN_MAX_PORTS` ports, or every port.

use std::{collections::HashMap, fmt};

use jailer_common::BAN_MAX_PORTS;

use crate::ban::parse_port;

/// TCP service names and aliases of `/etc/services`, as fail2ban's
/// firewall actions resolve `port = ssh`.
#[derive(Debug, Clone, Default)]
pub struct Services(HashMap<String, u16>);

impl Services {
    /// `/etc/services` of this machine (none if it cannot be read).
    pub fn system() -> Self {
        std::fs::read_to_string("/etc/services")
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// `name port/proto aliases... # comment` lines; TCP only (jailer's
    /// bans are TCP), the first line of a name wins.
    pub fn parse(text: &str) -> Self {
        let mut names = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let (Some(name), Some(port)) = (words.next(), words.next()) else {
                continue;
            };
            let Some(port) = port
                .strip_suffix("/tcp")
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|&p| p != 0)
            else {
                continue;
            };
            for name in std::iter::once(name).chain(words) {
                names.entry(name.to_owned()).or_insert(port);
            }
        }
        Self(names)
    }

    fn port(&self, name: &str) -> Option<u16> {
        self.0.get(name).copied()
    }
}

/// One item of a jailer `port` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortItem {
    /// A name jailer knows (`pop3`, `submission`), as fail2ban wrote it.
    Name(String),
    Number(u16),
}

impl PortItem {
    fn port(&self) -> u16 {
        match self {
            // Only names `parse_port` accepted are kept.
            Self::Name(name) => parse_port(name).unwrap_or_default(),
            Self::Number(n) => *n,
        }
    }
}

/// As a TOML value: `"pop3"` or `465`.
impl fmt::Display for PortItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => write!(f, "{}", toml::Value::from(name.as_str())),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

/// The ports a jail's bans close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    All,
    /// In fail2ban's order, each port once, at most `BAN_MAX_PORTS`.
    Only(Vec<PortItem>),
}

/// A jail's ports: fail2ban's `port` value, unless one of its actions bans
/// every port (`allports`, named here). Notes say what was changed and why.
pub fn convert(
    value: Option<&str>,
    allports_action: Option<&str>,
    services: &Services,
    notes: &mut Vec<String>,
) -> Ports {
    if let Some(action) = allports_action {
        notes.push(format!(
            "port: all, as fail2ban's action `{action}` bans every port"
        ));
        return Ports::All;
    }
    // fail2ban's own default is `0:65535`.
    let Some(value) = value else {
        return Ports::All;
    };
    let mut items: Vec<PortItem> = Vec::new();
    let mut push = |item: PortItem| {
        if !items.iter().any(|i| i.port() == item.port()) {
            items.push(item);
        }
    };
    for word in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        if let Some((from, to)) = word.split_once(':') {
            let bound = |end: &str| {
                end.parse::<u16>()
                    .ok()
                    .or_else(|| parse_port(end).ok())
                    .or_else(|| services.port(end))
            };
            match (bound(from), bound(to)) {
                (Some(from), Some(65535)) if from <= 1 => return Ports::All,
                (Some(from), Some(to)) if from <= to && from > 0 => {
                    let count = usize::from(to - from) + 1;
                    if count > BAN_MAX_PORTS {
                        notes.push(format!(
                            "port: `{word}` spans {count} ports, more than a ban holds ({BAN_MAX_PORTS}): all ports"
                        ));
                        return Ports::All;
                    }
                    (from..=to).for_each(|p| push(PortItem::Number(p)));
                }
                _ => notes.push(format!("port: `{word}` is not a port range: left out")),
            }
        } else if let Ok(port) = word.parse::<u16>() {
            match parse_port(word) {
                Ok(_) => push(PortItem::Number(port)),
                Err(_) => notes.push(format!("port: `{word}` is not a port: left out")),
            }
        } else if parse_port(word).is_ok() {
            push(PortItem::Name(word.to_owned()));
        } else if let Some(port) = services.port(word) {
            notes.push(format!("port: `{word}` is {port} (/etc/services)"));
            push(PortItem::Number(port));
        } else {
            notes.push(format!(
                "port: `{word}` is neither a number nor a TCP service in /etc/services: left out"
            ));
        }
    }
    if items.len() > BAN_MAX_PORTS {
        notes.push(format!(
            "port: {} ports, more than a ban holds ({BAN_MAX_PORTS}): all ports",
            items.len()
        ));
        return Ports::All;
    }
    if items.is_empty() {
        notes.push(format!("port: no usable port in `{value}`: all ports"));
        return Ports::All;
    }
    Ports::Only(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: &str = "# comment\nssh\t\t22/tcp\t\t\t# SSH Remote Login Protocol\n\
        http 80/tcp www # WorldWideWeb\nsubmissions 465/tcp ssmtp smtps\n\
        domain 53/udp\ndomain 53/tcp\nbroken\n";

    fn ports(value: &str) -> (Ports, Vec<String>) {
        let mut notes = Vec::new();
        let p = convert(Some(value), None, &Services::parse(SERVICES), &mut notes);
        (p, notes)
    }

    fn names(items: &[&str]) -> Ports {
        Ports::Only(
            items
                .iter()
                .map(|i| match i.parse() {
                    Ok(n) => PortItem::Number(n),
                    Err(_) => PortItem::Name((*i).to_owned()),
                })
                .collect(),
        )
    }

    #[test]
    fn mail_lists_keep_their_names() {
        let (p, notes) = ports("pop3,pop3s,imap,imaps,submission,465,sieve");
        assert_eq!(
            p,
            names(&[
                "pop3",
                "pop3s",
                "imap",
                "imaps",
                "submission",
                "465",
                "sieve"
            ])
        );
        assert!(notes.is_empty(), "{notes:?}");
        // smtps and 465 are one port.
        let (p, _) = ports("smtp, 465,submission,smtps");
        assert_eq!(p, names(&["smtp", "465", "submission"]));
    }

    #[test]
    fn other_names_through_etc_services() {
        let (p, notes) = ports("ssh");
        assert_eq!(p, names(&["22"]));
        assert_eq!(notes, ["port: `ssh` is 22 (/etc/services)"]);
        let (p, notes) = ports("www,domain,gopher");
        assert_eq!(p, names(&["80", "53"]));
        assert!(notes[2].contains("`gopher` is neither"), "{notes:?}");
    }

    #[test]
    fn ranges_and_too_many_ports_mean_all() {
        for all in ["0:65535", "1:65535", "smtp,0:65535"] {
            let (p, notes) = ports(all);
            assert_eq!(p, Ports::All, "{all}");
            assert!(notes.is_empty(), "{all}: {notes:?}");
        }
        assert_eq!(ports("5060:5061").0, names(&["5060", "5061"]));
        let (p, notes) = ports("1000:2000");
        assert_eq!(p, Ports::All);
        assert!(notes[0].contains("spans 1001 ports"), "{notes:?}");
        let (p, notes) = ports("smtp,465,submission,imap,imap2,imaps,pop3,pop3s,sieve,http");
        assert_eq!(p, Ports::All);
        assert!(notes.last().unwrap().contains("9 ports"), "{notes:?}");
        let (p, notes) = ports("9:8,0,x:y");
        assert_eq!(p, Ports::All);
        assert_eq!(notes.len(), 4, "{notes:?}");
    }

    #[test]
    fn allports_actions_and_no_port_mean_all() {
        let mut notes = Vec::new();
        let s = Services::default();
        assert_eq!(
            convert(Some("ssh"), Some("iptables-allports"), &s, &mut notes),
            Ports::All
        );
        assert!(notes[0].contains("`iptables-allports` bans every port"));
        assert_eq!(convert(None, None, &s, &mut notes), Ports::All);
    }

    #[test]
    fn items_are_toml_values() {
        assert_eq!(PortItem::Name("pop3".into()).to_string(), "\"pop3\"");
        assert_eq!(PortItem::Number(465).to_string(), "465");
    }
}
