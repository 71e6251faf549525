//! One journal line: [`Record`], and the canonical text jailer writes for
//! it (serde's form, written without serde), one at a time or in bulk
//! ([`BanLines`]).

use std::{io, time::SystemTime};

use serde::{Deserialize, Deserializer, Serialize};

use crate::{
    ban::{Ban, Expiry, PortSet, Target},
    time::{from_unix_secs, unix_secs},
};

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    Ban {
        /// An address, or a network for prefix bans.
        addr: Target,
        /// Jail name, or `manual` for `jailer ban`.
        jail: String,
        /// `110,995` or `all`.
        ports: PortSet,
        /// Unix seconds; `null` is permanent. Required: a record that does
        /// not say is refused, not taken as permanent.
        #[serde(deserialize_with = "present")]
        until: Option<u64>,
        /// Unix seconds when the ban was set.
        at: u64,
        /// Counting only (`ban --monitor`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        monitor: bool,
        /// The fleet member that set it; absent for this server's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    Unban {
        addr: Target,
        at: u64,
        /// The fleet member whose ban is lifted; absent for this server's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    UnbanAll {
        at: u64,
    },
}

/// `Option` that must be present (`null` or a value), never defaulted.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)
}

impl Record {
    /// A ban record for `ban` on `target` set at `now` by `jail`.
    pub fn ban(target: Target, jail: &str, ban: &Ban, now: SystemTime) -> Self {
        Self::Ban {
            addr: target,
            jail: jail.to_owned(),
            ports: ban.ports,
            until: match ban.expiry {
                Expiry::Never => None,
                Expiry::At(t) => Some(unix_secs(t).max(1)),
            },
            at: unix_secs(now),
            monitor: ban.monitor,
            origin: None,
        }
    }

    /// A fleet member's ban, as this server enforces it.
    pub fn remote_ban(target: Target, jail: &str, ban: &Ban, origin: &str, at: u64) -> Self {
        let mut record = Self::ban(target, jail, ban, from_unix_secs(at));
        if let Self::Ban { origin: o, .. } = &mut record {
            *o = Some(origin.to_owned());
        }
        record
    }
}

/// Whether `s` needs no JSON escape.
fn plain(s: &str) -> bool {
    !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

/// A ban record's fields, borrowed: one line is written without building
/// a [`Record`] (a million bans by hand, no string each).
struct BanLine<'a> {
    addr: &'a Target,
    jail: &'a str,
    ports: &'a PortSet,
    until: Option<u64>,
    at: u64,
    monitor: bool,
    origin: Option<&'a str>,
}

impl BanLine<'_> {
    /// Appends the canonical line: what serde writes for the record,
    /// without serde. Names that need JSON escapes go through serde.
    fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let Self {
            addr,
            jail,
            ports,
            until,
            at,
            monitor,
            origin,
        } = self;
        if !plain(jail) || !origin.is_none_or(plain) {
            let record = Record::Ban {
                addr: **addr,
                jail: (*jail).to_owned(),
                ports: **ports,
                until: *until,
                at: *at,
                monitor: *monitor,
                origin: origin.map(str::to_owned),
            };
            let _ = serde_json::to_writer(&mut *out, &record);
            out.push(b'\n');
            return;
        }
        // Writes into a Vec cannot fail.
        let _ = write!(
            out,
            "{{\"op\":\"ban\",\"addr\":\"{addr}\",\"jail\":\"{jail}\",\"ports\":\"{ports}\",\"until\":"
        );
        let _ = match until {
            Some(u) => write!(out, "{u}"),
            None => write!(out, "null"),
        };
        let _ = write!(out, ",\"at\":{at}");
        if *monitor {
            let _ = write!(out, ",\"monitor\":true");
        }
        if let Some(origin) = origin {
            let _ = write!(out, ",\"origin\":\"{origin}\"");
        }
        let _ = writeln!(out, "}}");
    }
}

/// Appends `record` as one canonical journal line: what serde writes for
/// it, without serde (a million bans by hand). Jail names that need JSON
/// escapes go through serde.
pub(super) fn write_record(record: &Record, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writes into a Vec cannot fail.
    let _ = match record {
        Record::Ban {
            addr,
            jail,
            ports,
            until,
            at,
            monitor,
            origin,
        } => {
            BanLine {
                addr,
                jail,
                ports,
                until: *until,
                at: *at,
                monitor: *monitor,
                origin: origin.as_deref(),
            }
            .write(out);
            Ok(())
        }
        Record::Unban {
            addr,
            at,
            origin: None,
        } => writeln!(out, "{{\"op\":\"unban\",\"addr\":\"{addr}\",\"at\":{at}}}"),
        Record::Unban {
            addr,
            at,
            origin: Some(origin),
        } if plain(origin) => writeln!(
            out,
            "{{\"op\":\"unban\",\"addr\":\"{addr}\",\"at\":{at},\"origin\":\"{origin}\"}}"
        ),
        Record::Unban { .. } => serde_json::to_writer(&mut *out, record)
            .map_err(io::Error::other)
            .and_then(|()| writeln!(out)),
        Record::UnbanAll { at } => writeln!(out, "{{\"op\":\"unban_all\",\"at\":{at}}}"),
    };
}

/// The journal lines of one ban set by hand on many targets
/// (`jailer ban --file`), made while the maps are written; the first `n`
/// of them are appended once it is known how many fitted.
#[derive(Debug, Default)]
pub struct BanLines {
    text: Vec<u8>,
    /// Where each line ends in `text`.
    ends: Vec<usize>,
}

impl BanLines {
    /// The lines [`Record::ban`] would make for each of `targets`.
    pub fn new(targets: &[Target], jail: &str, ban: &Ban, now: SystemTime) -> Self {
        let until = match ban.expiry {
            Expiry::Never => None,
            Expiry::At(t) => Some(unix_secs(t).max(1)),
        };
        let mut lines = Self {
            text: Vec::with_capacity(targets.len() * 100),
            ends: Vec::with_capacity(targets.len()),
        };
        for addr in targets {
            BanLine {
                addr,
                jail,
                ports: &ban.ports,
                until,
                at: unix_secs(now),
                monitor: ban.monitor,
                origin: None,
            }
            .write(&mut lines.text);
            lines.ends.push(lines.text.len());
        }
        lines
    }

    /// Lines `from..to` (0-based, `to` excluded; clamped to the lines).
    pub fn range(&self, from: usize, to: usize) -> &[u8] {
        let end_of = |n: usize| match n.min(self.ends.len()) {
            0 => 0,
            n => self.ends[n - 1],
        };
        &self.text[end_of(from)..end_of(to.max(from))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::journal::tests::ban;

    #[test]
    fn records_write_addresses_plainly_and_networks_as_cidr() {
        let host = ban("203.0.113.7", "manual", None, 1);
        let text = serde_json::to_string(&host).unwrap();
        assert_eq!(
            text,
            r#"{"op":"ban","addr":"203.0.113.7","jail":"manual","ports":"110","until":null,"at":1}"#
        );
        let net = ban("2001:db8:1::/48", "manual", Some(5), 1);
        let text = serde_json::to_string(&net).unwrap();
        assert!(text.contains("\"addr\":\"2001:db8:1::/48\""), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), net);
    }
}
