//! Journal lines read back: a fast reader for the canonical form, serde
//! for any other, and the checks a record must pass to be believed.

use std::borrow::Cow;

use super::Record;
use crate::{
    ban::{PortSet, Target},
    time::MAX_DURATION,
};

/// Clock skew tolerated on a record's own time.
const SKEW: u64 = 86_400;

/// A port list as the journal writes it; anything else is refused, never
/// widened.
pub(super) fn ports_text(text: &str) -> Result<PortSet, String> {
    text.parse()
        .map_err(|e: crate::ban::PortError| format!("ports `{text}`: {e}"))
}

/// A journal line as read: borrowed, so replaying a million bans does not
/// allocate a million strings.
#[derive(Debug)]
pub(super) enum Parsed<'a> {
    Ban {
        addr: Target,
        jail: Cow<'a, str>,
        ports: Cow<'a, str>,
        until: Option<u64>,
        at: u64,
        monitor: bool,
        origin: Option<Cow<'a, str>>,
    },
    Unban {
        addr: Target,
        at: u64,
        origin: Option<Cow<'a, str>>,
    },
    UnbanAll {
        at: u64,
    },
}

impl Parsed<'_> {
    /// The values a parsed record must hold to be believed.
    fn check(&self, now: u64) -> Result<(), String> {
        let at = match self {
            Self::Ban { at, .. } | Self::Unban { at, .. } | Self::UnbanAll { at } => *at,
        };
        if at > now + SKEW {
            return Err(format!("`at` {at} is in the future"));
        }
        if let Self::Ban {
            until: Some(until),
            at,
            ..
        } = self
            && (*until <= *at || *until > at + MAX_DURATION.as_secs() + SKEW)
        {
            return Err(format!(
                "`until` {until} is not within 10 years after `at` {at}"
            ));
        }
        Ok(())
    }
}

impl Parsed<'_> {
    /// The record, its port list parsed.
    pub(super) fn into_record(self) -> Result<Record, String> {
        Ok(match self {
            Self::Ban {
                addr,
                jail,
                ports,
                until,
                at,
                monitor,
                origin,
            } => Record::Ban {
                addr,
                jail: jail.into_owned(),
                ports: ports_text(&ports)?,
                until,
                at,
                monitor,
                origin: origin.map(Cow::into_owned),
            },
            Self::Unban { addr, at, origin } => Record::Unban {
                addr,
                at,
                origin: origin.map(Cow::into_owned),
            },
            Self::UnbanAll { at } => Record::UnbanAll { at },
        })
    }
}

impl From<Record> for Parsed<'_> {
    fn from(r: Record) -> Self {
        match r {
            Record::Ban {
                addr,
                jail,
                ports,
                until,
                at,
                monitor,
                origin,
            } => Self::Ban {
                addr,
                jail: Cow::Owned(jail),
                ports: Cow::Owned(ports.to_string()),
                until,
                at,
                monitor,
                origin: origin.map(Cow::Owned),
            },
            Record::Unban { addr, at, origin } => Self::Unban {
                addr,
                at,
                origin: origin.map(Cow::Owned),
            },
            Record::UnbanAll { at } => Self::UnbanAll { at },
        }
    }
}

/// Reads the exact form [`Journal::append`](super::Journal::append)
/// writes, without serde (a million records after a reboot); `None` for any
/// other form, which then goes through serde and its full checks.
fn parse_canonical(line: &[u8]) -> Option<Parsed<'_>> {
    let mut c = Cursor(line);
    c.eat(b"{\"op\":\"")?;
    let record = if c.eat(b"ban\",\"addr\":\"").is_some() {
        let addr = c.string()?.parse().ok()?;
        c.eat(b",\"jail\":\"")?;
        let jail = c.string()?;
        c.eat(b",\"ports\":\"")?;
        let ports = c.string()?;
        c.eat(b",\"until\":")?;
        let until = if c.eat(b"null").is_some() {
            None
        } else {
            Some(c.number()?)
        };
        c.eat(b",\"at\":")?;
        let at = c.number()?;
        let monitor = c.eat(b",\"monitor\":true").is_some();
        let origin = c.origin()?;
        Parsed::Ban {
            addr,
            jail: Cow::Borrowed(jail),
            ports: Cow::Borrowed(ports),
            until,
            at,
            monitor,
            origin,
        }
    } else if c.eat(b"unban\",\"addr\":\"").is_some() {
        let addr = c.string()?.parse().ok()?;
        c.eat(b",\"at\":")?;
        let at = c.number()?;
        let origin = c.origin()?;
        Parsed::Unban { addr, at, origin }
    } else {
        c.eat(b"unban_all\",\"at\":")?;
        Parsed::UnbanAll { at: c.number()? }
    };
    c.eat(b"}")?;
    c.0.is_empty().then_some(record)
}

/// A position in a canonical journal line.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn eat(&mut self, prefix: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(prefix)?;
        Some(())
    }

    /// A string's content up to its closing quote; escapes and control
    /// bytes are left to serde.
    fn string(&mut self) -> Option<&'a str> {
        let end = self.0.iter().position(|&b| b == b'"')?;
        let (text, rest) = self.0.split_at(end);
        if text.iter().any(|&b| b == b'\\' || b < 0x20) {
            return None;
        }
        self.0 = &rest[1..];
        std::str::from_utf8(text).ok()
    }

    /// An optional `,"origin":"..."`: `Some(None)` when absent, `None`
    /// when malformed.
    fn origin(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.eat(b",\"origin\":\"").is_none() {
            return Some(None);
        }
        Some(Some(Cow::Borrowed(self.string()?)))
    }

    fn number(&mut self) -> Option<u64> {
        let end = self
            .0
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(self.0.len());
        let (digits, rest) = self.0.split_at(end);
        // JSON numbers have no leading zeros; serde judges those.
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        self.0 = rest;
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

/// A journal line: a record, or why it was refused.
pub(super) fn parse_line(line: &[u8], now: u64) -> Option<Result<Parsed<'_>, String>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let parsed = match parse_canonical(line) {
        Some(p) => Ok(p),
        None => serde_json::from_slice::<Record>(line)
            .map(Parsed::from)
            .map_err(|e| e.to_string()),
    };
    Some(parsed.and_then(|p| p.check(now).map(|()| p)))
}

/// Parses every line, in chunks split at line ends, one thread per core;
/// returns (0-based line number, record) in file order.
pub(super) fn parse_parallel(
    bytes: &[u8],
    now: u64,
) -> Vec<Vec<(usize, Result<Parsed<'_>, String>)>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let mut chunks = Vec::new();
    let mut start = 0;
    for k in 1..=threads {
        let mut end = if k == threads {
            bytes.len()
        } else {
            (bytes.len() * k / threads).max(start)
        };
        if end < bytes.len() {
            end = memchr::memchr(b'\n', &bytes[end..]).map_or(bytes.len(), |i| end + i + 1);
        }
        if end > start {
            chunks.push(&bytes[start..end]);
        }
        start = end;
    }
    let mut first_line = Vec::with_capacity(chunks.len());
    let mut lines = 0;
    for c in &chunks {
        first_line.push(lines);
        lines += memchr::memchr_iter(b'\n', c).count();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .zip(first_line)
            .map(|(chunk, first)| {
                scope.spawn(move || {
                    chunk
                        .split(|&b| b == b'\n')
                        .enumerate()
                        .filter_map(|(i, line)| parse_line(line, now).map(|p| (first + i, p)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            // A parser thread cannot panic on input (serde returns errors);
            // if it did, the journal is unreadable as a whole.
            .map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ban::{Ban, Expiry},
        state::journal::{
            record::write_record,
            tests::{ban, target},
        },
    };

    #[test]
    fn the_fast_reader_agrees_with_serde_and_leaves_the_rest_to_it() {
        let records = [
            ban("203.0.113.7", "vpopmail", Some(1_000_600), 1_000_000),
            ban("2001:db8:1::/48", "manual", None, 1_000_000),
            Record::Ban {
                addr: target("198.51.100.9"),
                jail: "manual".into(),
                ports: PortSet::All,
                until: None,
                at: 7,
                monitor: true,
                origin: None,
            },
            Record::remote_ban(
                target("192.0.2.0/24"),
                "postfix",
                &Ban::new(PortSet::only(&[25, 110]), Expiry::Never),
                "mx2",
                8,
            ),
            Record::Unban {
                addr: target("203.0.113.7"),
                at: 9,
                origin: None,
            },
            Record::Unban {
                addr: target("192.0.2.0/24"),
                at: 9,
                origin: Some("mx2".into()),
            },
            Record::UnbanAll { at: 10 },
        ];
        // A jail name JSON must escape: still serde's form, read by serde.
        let odd = ban("203.0.113.7", "a\"b\\c", None, 1);
        let mut line = Vec::new();
        write_record(&odd, &mut line);
        assert_eq!(serde_json::from_slice::<Record>(&line).unwrap(), odd);
        for r in &records {
            let line = serde_json::to_string(r).unwrap();
            let mut ours = Vec::new();
            write_record(r, &mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                format!("{line}\n"),
                "the writer is serde's form"
            );
            let fast = parse_canonical(line.as_bytes()).unwrap_or_else(|| panic!("{line}"));
            let slow = Parsed::from(serde_json::from_str::<Record>(&line).unwrap());
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{line}");
        }
        // Other spellings of valid records go to serde, which reads them.
        for other in [
            r#"{"at":1,"op":"unban_all"}"#,
            r#"{ "op":"unban_all","at":1}"#,
            r#"{"op":"ban","addr":"203.0.113.7","jail":"j\u0041","ports":"110","until":null,"at":1}"#,
        ] {
            assert!(parse_canonical(other.as_bytes()).is_none(), "{other}");
            assert!(
                matches!(parse_line(other.as_bytes(), 100), Some(Ok(_))),
                "{other}"
            );
        }
        // Canonical shape, bad values: refused by both.
        for bad in [
            r#"{"op":"ban","addr":"203.0.113.7","jail":"j","ports":"110","until":01,"at":1}"#,
            r#"{"op":"ban","addr":"nope","jail":"j","ports":"110","until":null,"at":1}"#,
            r#"{"op":"unban_all","at":1}x"#,
        ] {
            assert!(
                matches!(parse_line(bad.as_bytes(), 100), Some(Err(_))),
                "{bad}"
            );
        }
    }
}
