//! The built-in `vpopmail` filter: vchkpw's failure lines, matched by hand
//! (~10x faster than a regex and immune to greedy-match tricks).
//!
//! Attackers write part of every line (user names, passwords), so the
//! address is only ever taken from where vchkpw writes it: the very end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use memchr::memmem;

use super::{FilterError, Verdict};
use crate::ban::{PortSet, canonical_v6, parse_port};

/// space (`is_username_valid`/`is_domain_valid`); `false`: NAME is raw input.
const VCHKPW_FAILURES: &[(&str, bool)] = &[
    ("vpopmail user not found ", true),
    ("password fail ", true),
    ("user has no password ", true),
    ("system user not found ", true),
    ("system user shadow entry not found ", true),
    ("system password fail ", true),
    ("null user name given ", false),
    ("null password given ", false),
    ("invalid user/domain characters ", false),
];

/// Service tags vchkpw puts after `vchkpw-` (besides a bare port number).
const VCHKPW_TAGS: &[&str] = &[
    "pop3",
    "pop3s",
    "imap",
    "imaps",
    "smtp",
    "smtps",
    "submission",
    "webmail",
];

/// vchkpw formats its message into a 500-byte buffer (`LOG_LINE_SIZE`): a
/// message this long may have been cut inside the address, and a cut address
/// is someone else's (`203.0.113.77` -> `203.0.113.7`).
const VCHKPW_MAX_MESSAGE: usize = 499;

/// Which vchkpw services a `vpopmail` filter counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Services {
    /// Every service.
    All,
    /// These tags (`pop3`, `imap`, `2110`...), and the old untagged form.
    Only(Vec<String>),
}

impl Services {
    /// The services of a jail's ports: a jail that closes POP3 counts POP3
    /// failures, not SMTP-AUTH guesses it would never stop.
    pub fn of_ports(ports: &PortSet) -> Self {
        match ports {
            PortSet::All => Self::All,
            PortSet::Only(ports) => {
                let mut tags: Vec<String> = VCHKPW_TAGS
                    .iter()
                    .filter(|t| parse_port(t).is_ok_and(|p| ports.contains(&p)))
                    .map(|t| (*t).to_owned())
                    .collect();
                // vchkpw logs a bare port number when it cannot name the service.
                tags.extend(ports.iter().map(u16::to_string));
                Self::Only(tags)
            }
        }
    }

    fn counts(&self, tag: Option<&str>) -> bool {
        match (self, tag) {
            (Self::All, _) | (_, None) => true,
            (Self::Only(tags), Some(tag)) => tags.iter().any(|t| t == tag),
        }
    }
}

/// The built-in `vpopmail` filter.
#[derive(Debug)]
pub struct Vpopmail {
    services: Services,
    /// `service=` as given, for `spec()`.
    given: Option<String>,
}

impl Default for Vpopmail {
    fn default() -> Self {
        Self::new(Services::All)
    }
}

impl Vpopmail {
    pub fn new(services: Services) -> Self {
        Self {
            services,
            given: None,
        }
    }

    /// `vpopmail` (the services of `ports`, or all without a jail) or
    /// `vpopmail[service=pop3,imap]` (`service=all` for every one); `None`
    /// when `spec` names another filter.
    pub fn from_spec(spec: &str, ports: Option<&PortSet>) -> Result<Option<Self>, FilterError> {
        let (name, options) = match spec.split_once('[') {
            Some((name, rest)) => (name, Some(rest)),
            None => (spec, None),
        };
        if name.trim() != "vpopmail" {
            return Ok(None);
        }
        let bad = |problem: String| FilterError::Builtin {
            spec: spec.to_owned(),
            problem,
        };
        let Some(options) = options else {
            return Ok(Some(Self::new(
                ports.map_or(Services::All, Services::of_ports),
            )));
        };
        let list = options
            .strip_suffix(']')
            .and_then(|o| o.trim().strip_prefix("service"))
            .and_then(|o| o.trim_start().strip_prefix('='))
            .ok_or_else(|| bad("expected vpopmail[service=pop3,imap,...]".into()))?
            .trim();
        let mut tags = Vec::new();
        for tag in list.split(',').map(str::trim) {
            let numeric =
                !tag.is_empty() && tag.len() <= 5 && tag.bytes().all(|b| b.is_ascii_digit());
            if tag == "all" {
                return Ok(Some(Self {
                    services: Services::All,
                    given: Some(list.to_owned()),
                }));
            }
            if !numeric && !VCHKPW_TAGS.contains(&tag) {
                return Err(bad(format!(
                    "unknown service `{tag}`: use a port number, `all`, or one of {}",
                    VCHKPW_TAGS.join(", ")
                )));
            }
            tags.push(tag.to_owned());
        }
        Ok(Some(Self {
            services: Services::Only(tags),
            given: Some(list.to_owned()),
        }))
    }

    /// How it was named.
    pub fn spec(&self) -> String {
        match &self.given {
            Some(list) => format!("vpopmail[service={list}]"),
            None => "vpopmail".to_owned(),
        }
    }

    pub fn check(&self, line: &str) -> Verdict {
        // The syslog tag ends at the line's first ": ": vchkpw's own tag must
        // follow it directly. Everything after may be attacker text, and so
        // may the end of other daemons' lines ("sshd[1]: Invalid user x
        // vpopmail[1]: vchkpw-pop3: password fail a@b:VICTIM").
        let Some(colon) = memmem::find(line.as_bytes(), b": ") else {
            return Verdict::Miss;
        };
        if !line[colon..].starts_with(": vchkpw") || !logged_by_vpopmail(&line[..colon]) {
            return Verdict::Miss;
        }
        let message = line[colon + 2..].trim_end();
        let Some((tag, body)) = strip_tag(&message["vchkpw".len()..]) else {
            return Verdict::Miss;
        };
        let Some(&(_, validated)) = VCHKPW_FAILURES
            .iter()
            .find(|(kind, _)| body.starts_with(kind))
        else {
            return Verdict::Miss;
        };
        if !self.services.counts(tag) {
            return Verdict::Miss;
        }
        if message.len() >= VCHKPW_MAX_MESSAGE {
            return Verdict::Ignored;
        }
        vchkpw_address(body, validated)
    }
}

/// Whether a syslog header (`... host vpopmail[123]`) names vpopmail or
/// vchkpw as the program.
fn logged_by_vpopmail(header: &str) -> bool {
    let program = header.rsplit(' ').next().unwrap_or(header);
    let name = program.split_once('[').map_or(program, |(name, pid)| {
        if pid
            .strip_suffix(']')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            name
        } else {
            ""
        }
    });
    name == "vpopmail" || name == "vchkpw"
}

/// `-pop3: rest` / `-2110: rest` / `: rest` (old vchkpw) -> (tag, `rest`).
fn strip_tag(after: &str) -> Option<(Option<&str>, &str)> {
    let (tag, rest) = match after.strip_prefix('-') {
        Some(tagged) => {
            let colon = tagged.find(':')?;
            let tag = &tagged[..colon];
            let numeric =
                !tag.is_empty() && tag.len() <= 5 && tag.bytes().all(|b| b.is_ascii_digit());
            if !numeric && !VCHKPW_TAGS.contains(&tag) {
                return None;
            }
            (Some(tag), &tagged[colon..])
        }
        None => (None, after),
    };
    Some((tag, rest.strip_prefix(": ")?))
}

/// The address vchkpw appended after `NAME:`. IPv4 as is; IPv6 either as
/// vchkpw mangles it (`2001_db8__25`) or raw; `::ffff:a.b.c.d` is IPv4.
///
/// IPv4 and mangled IPv6 hold no `:`, so the last `:` is the separator
/// whatever NAME holds. Raw IPv6 has colons of its own: it is only trusted
/// after a validated NAME (no `:`, no space), where the separator is the
/// first `:` of the last word. After raw NAMEs (`null password given`,
/// `invalid user/domain characters`) it is ambiguous (`a:2001:2001:db8::25`)
/// and the line is ignored rather than risk banning a chosen address.
pub fn vchkpw_address(body: &str, validated: bool) -> Verdict {
    let Some(colon) = body.rfind(':') else {
        return Verdict::Miss;
    };
    let tail = &body[colon + 1..];
    if tail.is_empty() {
        // `www@:` (no TCPREMOTEIP): nothing to ban.
        return Verdict::Miss;
    }
    if tail.contains('_') {
        return match tail.replace('_', ":").parse::<Ipv6Addr>() {
            Ok(ip) => Verdict::Failure(canonical_v6(ip)),
            Err(_) => Verdict::Miss,
        };
    }
    if let Ok(v4) = tail.parse::<Ipv4Addr>() {
        // Also the end of `::ffff:a.b.c.d`, which means the same host.
        return Verdict::Failure(IpAddr::V4(v4));
    }
    if !validated {
        return Verdict::Ignored;
    }
    let word = &body[body.rfind(' ').map_or(0, |i| i + 1)..];
    let Some((_, addr)) = word.split_once(':') else {
        return Verdict::Miss;
    };
    match addr.parse::<Ipv6Addr>() {
        Ok(ip) => Verdict::Failure(canonical_v6(ip)),
        Err(_) => Verdict::Miss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(line: &str) -> Verdict {
        Vpopmail::default().check(line)
    }

    fn fail(ip: &str) -> Verdict {
        Verdict::Failure(ip.parse().unwrap())
    }

    const HDR: &str = "Sep 28 13:01:03 www vpopmail[20410]: ";

    #[test]
    fn every_failure_message_and_tag() {
        let bodies = [
            "vpopmail user not found www@example.com:203.0.113.7",
            "password fail bob@example.com:203.0.113.7",
            "password fail (pass: 'hunter2') bob@example.com:203.0.113.7",
            "null user name given :203.0.113.7",
            "null password given bob:203.0.113.7",
            "invalid user/domain characters b|b:203.0.113.7",
            "user has no password bob@example.com:203.0.113.7",
            "system user not found bob:203.0.113.7",
            "system user shadow entry not found bob:203.0.113.7",
            "system password fail bob:203.0.113.7",
        ];
        let tags: Vec<&str> = VCHKPW_TAGS.iter().copied().chain(["2110"]).collect();
        for body in bodies {
            for tag in &tags {
                let line = format!("{HDR}vchkpw-{tag}: {body}");
                assert_eq!(vp(&line), fail("203.0.113.7"), "{line}");
            }
            assert_eq!(
                vp(&format!("{HDR}vchkpw: {body}")),
                fail("203.0.113.7"),
                "untagged {body}"
            );
        }
    }

    #[test]
    fn the_seed_line() {
        assert_eq!(
            vp(
                "Sep 28 13:01:03 www vpopmail[20410]: vchkpw-pop3: vpopmail user not found www@:203.0.113.7"
            ),
            fail("203.0.113.7")
        );
    }

    #[test]
    fn non_failures_are_misses() {
        for body in [
            "login success bob@example.com:203.0.113.7",
            "pop access denied bob@example.com:203.0.113.7",
            "smtp access denied bob@example.com:203.0.113.7",
            "setgid 89 failed errno 1 bob@example.com:203.0.113.7",
            "chdir failed errno 2 /home/vpopmail bob@example.com:203.0.113.7",
            "vpopmail user not found www@:",
        ] {
            assert_eq!(
                vp(&format!("{HDR}vchkpw-pop3: {body}")),
                Verdict::Miss,
                "{body}"
            );
        }
        assert_eq!(
            vp("Sep 28 13:01:03 www postfix/smtpd[1]: connect from x[203.0.113.7]"),
            Verdict::Miss
        );
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-gopher: password fail a@b:203.0.113.7"
            )),
            Verdict::Miss
        );
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-123456: password fail a@b:203.0.113.7"
            )),
            Verdict::Miss
        );
    }

    #[test]
    fn ipv6_mangled_raw_and_mapped() {
        let cases = [
            ("bob@example.com:2001_db8__25", "2001:db8::25"),
            ("bob@example.com:2001:db8::25", "2001:db8::25"),
            ("bob@example.com:::1", "::1"),
            ("bob@example.com:__1", "::1"),
            ("bob@example.com:::ffff:198.51.100.4", "198.51.100.4"),
            ("bob@example.com:__ffff_198.51.100.4", "198.51.100.4"),
            ("bob@example.com:2001_DB8_0_0_0_0_0_1", "2001:db8::1"),
        ];
        for (tail, want) in cases {
            assert_eq!(
                vp(&format!("{HDR}vchkpw-pop3: password fail {tail}")),
                fail(want),
                "{tail}"
            );
        }
    }

    #[test]
    fn attacker_text_never_supplies_the_address() {
        let cases = [
            // fake `:IP` inside the user name
            (
                "vpopmail user not found x:198.51.100.9@example.com:203.0.113.7",
                "203.0.113.7",
            ),
            (
                "invalid user/domain characters a:198.51.100.9 :203.0.113.7",
                "203.0.113.7",
            ),
            // a password that looks like the end of a line
            (
                "password fail (pass: 'x:198.51.100.9') bob@example.com:203.0.113.7",
                "203.0.113.7",
            ),
            (
                "password fail (pass: '') bob@x:198.51.100.9') bob@example.com:2001_db8__25",
                "2001:db8::25",
            ),
            // syslog-escaped newline carrying a fake line
            (
                "null password given x#012Sep 28 13:01:03 www vpopmail[1]: vchkpw-pop3: password fail a@b:198.51.100.9:203.0.113.7",
                "203.0.113.7",
            ),
            // another tag embedded in the name
            (
                "system user not found vchkpw-pop3: password fail a:198.51.100.9:203.0.113.7",
                "203.0.113.7",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                vp(&format!("{HDR}vchkpw-pop3: {body}")),
                fail(want),
                "{body}"
            );
        }
        // Another daemon's line ending in attacker text shaped like vchkpw's.
        for line in [
            "Sep 28 13:01:03 www sshd[9]: Invalid user x: vchkpw-pop3: password fail a@b:198.51.100.9",
            "Sep 28 13:01:03 www postfix/smtpd[9]: NOQUEUE: reject: vchkpw-pop3: password fail a@b:198.51.100.9",
            "Sep 28 13:01:03 www evilvpopmail[9]: vchkpw-pop3: password fail a@b:198.51.100.9",
            "Sep 28 13:01:03 www vpopmail[9x]: vchkpw-pop3: password fail a@b:198.51.100.9",
        ] {
            assert_eq!(vp(line), Verdict::Miss, "{line}");
        }
        assert_eq!(
            vp(
                "2025-09-15T09:10:01.262668+02:00 www vchkpw[7]: vchkpw-imap: password fail a@b:203.0.113.7"
            ),
            fail("203.0.113.7")
        );
        // A failure phrase inside a non-failure message does not count.
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-pop3: login success password fail x@y:198.51.100.9"
            )),
            Verdict::Miss
        );
    }

    #[test]
    fn raw_ipv6_after_raw_names_is_refused() {
        // NAME is raw input here: `a:2001:2001:db8::25` reads as two addresses.
        for body in [
            "invalid user/domain characters a:2001:2001:db8::25",
            "null password given bob:2001:db8::25",
            "null password given :::1",
        ] {
            assert_eq!(
                vp(&format!("{HDR}vchkpw-pop3: {body}")),
                Verdict::Ignored,
                "{body}"
            );
        }
        // After a validated NAME (no `:` possible) the first `:` of the last word separates.
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-pop3: password fail bob@example.ad:2001:db8::25"
            )),
            fail("2001:db8::25")
        );
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-pop3: password fail (pass: 'x a@b:2001:db8::66') bob@example.com:2001:db8::25"
            )),
            fail("2001:db8::25")
        );
    }

    #[test]
    fn possibly_truncated_lines_are_not_trusted() {
        let pass = "p".repeat(155);
        let user = "u".repeat(155);
        let dom = "d".repeat(150);
        let line =
            format!("{HDR}vchkpw-pop3: password fail (pass: '{pass}') {user}@{dom}:203.0.113.7");
        assert_eq!(vp(&line), Verdict::Ignored);
    }

    #[test]
    fn odd_bytes_do_not_break_it() {
        assert_eq!(vp(""), Verdict::Miss);
        assert_eq!(vp("vchkpw"), Verdict::Miss);
        assert_eq!(vp("vchkpw-"), Verdict::Miss);
        assert_eq!(vp("vchkpw-pop3:"), Verdict::Miss);
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-pop3: password fail \u{1b}[31mred\u{0}:203.0.113.7  \r"
            )),
            fail("203.0.113.7")
        );
        assert_eq!(
            vp(&format!("{HDR}vchkpw-pop3: password fail bob:203.0.113.7:")),
            Verdict::Miss
        );
    }
}
