//! What travels between members: ban values in the KV bucket, failure
//! batches and heartbeats on core NATS subjects. All JSON, in the agent's own
//! text forms (`203.0.113.7`, `2001:db8::/64`, ports `110,995` or `all`), so
//! `nats kv get` is readable. Unknown fields are ignored: a newer member may
//! add some without breaking older ones.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::key;
use crate::ban::{PortError, PortSet, Target};

/// Largest ban value accepted from the bucket.
pub const MAX_VALUE_LEN: usize = 4096;
/// Longest jail name and reason carried (longer ones are cut when published).
pub const MAX_JAIL_LEN: usize = 64;
pub const MAX_REASON_LEN: usize = 256;
/// Failures in one published message, and the most accepted from one.
pub const MAX_FAILURES_PER_MESSAGE: usize = 256;

/// A ban as the fleet carries it: this server's own (published) or another
/// member's (received).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub net: Target,
    pub ports: PortSet,
    /// Unix seconds when it lapses; `None` is permanent.
    pub until: Option<u64>,
    pub jail: String,
    /// Free text for people (e.g. the matched failure line's summary).
    pub reason: String,
    /// Unix seconds when it was set.
    pub at: u64,
}

impl Ban {
    /// Whether the ban still holds at unix time `now`.
    pub fn is_active(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// Another member's ban, with the member that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteBan {
    pub origin: String,
    pub ban: Ban,
}

/// One failure (a matched log line) a member saw, for fleet-wide counting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub jail: String,
    pub ip: IpAddr,
    /// Unix seconds of the log line.
    pub at: u64,
}

/// A value that is not a ban this module can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value of {0} bytes is over the {MAX_VALUE_LEN}-byte limit")]
    TooLarge(usize),
    #[error("not a ban value: {0}")]
    Json(String),
    #[error("bad `{0}`: `{1}`")]
    Field(&'static str, String),
    #[error("value says origin `{value}` and target {value_net}, its key says `{key}`")]
    KeyMismatch {
        value: String,
        value_net: Target,
        key: String,
    },
}

/// The JSON object stored under a key.
#[derive(Serialize, Deserialize)]
struct BanValue {
    net: String,
    ports: String,
    /// Absent or null: permanent.
    #[serde(default)]
    until: Option<u64>,
    jail: String,
    origin: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    at: u64,
    /// Unix seconds of this write: the origin re-puts live bans before a
    /// bucket max_age would collect them. (Not the server's timestamp: its
    /// Rust type depends on async-nats's `chrono` feature.)
    #[serde(default)]
    written: u64,
}

fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The bytes stored for `origin`'s `ban`, written at unix time `now`.
pub fn encode_ban(origin: &str, ban: &Ban, now: u64) -> Vec<u8> {
    let value = BanValue {
        net: ban.net.to_string(),
        ports: ban.ports.to_string(),
        until: ban.until,
        jail: cut(&ban.jail, MAX_JAIL_LEN),
        origin: origin.to_owned(),
        reason: cut(&ban.reason, MAX_REASON_LEN),
        at: ban.at,
        written: now,
    };
    // Serializing a struct of strings and integers cannot fail.
    serde_json::to_vec(&value).unwrap_or_default()
}

/// A value read from the bucket under the key `origin.net`: checked against
/// its key, since the key (which NATS permissions can restrict per member) is
/// what says who set it. Returns the ban and when it was written.
pub fn decode_ban(origin: &str, net: Target, bytes: &[u8]) -> Result<(Ban, u64), ValueError> {
    if bytes.len() > MAX_VALUE_LEN {
        return Err(ValueError::TooLarge(bytes.len()));
    }
    let value: BanValue =
        serde_json::from_slice(bytes).map_err(|e| ValueError::Json(e.to_string()))?;
    let value_net: Target = value
        .net
        .parse()
        .map_err(|_| ValueError::Field("net", value.net.clone()))?;
    if value.origin != origin || value_net != net {
        return Err(ValueError::KeyMismatch {
            value: value.origin,
            value_net,
            key: key::encode(origin, net),
        });
    }
    if value.jail.len() > MAX_JAIL_LEN {
        return Err(ValueError::Field("jail", cut(&value.jail, MAX_JAIL_LEN)));
    }
    let ban = Ban {
        net,
        ports: value
            .ports
            .parse()
            .map_err(|_: PortError| ValueError::Field("ports", value.ports.clone()))?,
        until: value.until,
        jail: value.jail,
        reason: cut(&value.reason, MAX_REASON_LEN),
        at: value.at,
    };
    Ok((ban, value.written))
}

/// A batch of failures, as published on `<bucket>.fail.<origin>`.
pub fn encode_failures(failures: &[Failure]) -> Vec<u8> {
    serde_json::to_vec(failures).unwrap_or_default()
}

/// A received batch; `None` if it is not one. At most
/// [`MAX_FAILURES_PER_MESSAGE`] are kept.
pub fn decode_failures(bytes: &[u8]) -> Option<Vec<Failure>> {
    if bytes.len() > MAX_FAILURES_PER_MESSAGE * 192 {
        return None;
    }
    let mut failures: Vec<Failure> = serde_json::from_slice(bytes).ok()?;
    failures.truncate(MAX_FAILURES_PER_MESSAGE);
    failures.retain(|f| f.jail.len() <= MAX_JAIL_LEN);
    Some(failures)
}

/// What a member says every heartbeat on `<bucket>.hb.<origin>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Random per start: two processes using one name show up as two
    /// instances.
    pub instance: u64,
    pub at: u64,
    /// Its own bans that it shares.
    pub bans: u64,
    pub share: bool,
    pub enforce: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(net: &str, until: Option<u64>) -> Ban {
        Ban {
            net: net.parse().unwrap(),
            ports: PortSet::only(&[110, 995]),
            until,
            jail: "dovecot".into(),
            reason: "auth failed".into(),
            at: 1_700_000_000,
        }
    }

    #[test]
    fn ban_value_round_trips_and_reads_well() {
        let b = ban("2001:db8::/64", Some(1_700_000_600));
        let bytes = encode_ban("mx1", &b, 7);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"net":"2001:db8::/64","ports":"110,995","until":1700000600,"jail":"dovecot","origin":"mx1","reason":"auth failed","at":1700000000,"written":7}"#
        );
        assert_eq!(decode_ban("mx1", b.net, &bytes), Ok((b, 7)));
    }

    #[test]
    fn permanent_and_all_ports() {
        let mut b = ban("203.0.113.7/32", None);
        b.ports = PortSet::All;
        let bytes = encode_ban("mx1", &b, 7);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains(r#""net":"203.0.113.7","#), "{text}");
        assert!(text.contains(r#""until":null"#), "{text}");
        assert!(text.contains(r#""ports":"all""#), "{text}");
        let (back, written) = decode_ban("mx1", b.net, &bytes).unwrap();
        assert!(back.is_active(u64::MAX));
        assert_eq!((back, written), (b.clone(), 7));
        // A bare address in `net` is accepted too, and so is a missing `until`.
        let bare = br#"{"net":"203.0.113.7","ports":"25","jail":"j","origin":"mx1","x":1}"#;
        let (back, _) = decode_ban("mx1", b.net, bare).unwrap();
        assert_eq!(back.until, None);
        assert_eq!(back.ports, PortSet::only(&[25]));
    }

    #[test]
    fn expiry_is_absolute() {
        let b = ban("203.0.113.7/32", Some(100));
        assert!(b.is_active(99));
        assert!(!b.is_active(100));
    }

    #[test]
    fn refuses_values_that_disagree_with_their_key() {
        let b = ban("203.0.113.7/32", None);
        let bytes = encode_ban("mx1", &b, 7);
        assert!(matches!(
            decode_ban("mx2", b.net, &bytes),
            Err(ValueError::KeyMismatch { .. })
        ));
        let other: Target = "203.0.113.8/32".parse().unwrap();
        assert!(matches!(
            decode_ban("mx1", other, &bytes),
            Err(ValueError::KeyMismatch { .. })
        ));
        assert!(matches!(
            decode_ban("mx1", b.net, b"nope"),
            Err(ValueError::Json(_))
        ));
        let big = vec![b' '; MAX_VALUE_LEN + 1];
        assert!(matches!(
            decode_ban("mx1", b.net, &big),
            Err(ValueError::TooLarge(_))
        ));
        for ports in ["0", "", "1,2,3,4,5,6,7,8,9", "gopher", "110;995"] {
            let v =
                format!(r#"{{"net":"203.0.113.7","ports":"{ports}","jail":"j","origin":"mx1"}}"#);
            assert!(
                matches!(
                    decode_ban("mx1", b.net, v.as_bytes()),
                    Err(ValueError::Field("ports", _))
                ),
                "{ports}"
            );
        }
    }

    #[test]
    fn long_text_is_cut_on_char_boundaries() {
        let mut b = ban("203.0.113.7/32", None);
        b.reason = "é".repeat(300);
        b.jail = "j".repeat(100);
        let (back, _) = decode_ban("mx1", b.net, &encode_ban("mx1", &b, 7)).unwrap();
        assert_eq!(back.reason.len(), 256);
        assert_eq!(back.jail.len(), MAX_JAIL_LEN);
    }

    #[test]
    fn failure_batches() {
        let batch = vec![
            Failure {
                jail: "dovecot".into(),
                ip: "203.0.113.7".parse().unwrap(),
                at: 5,
            },
            Failure {
                jail: "postfix".into(),
                ip: "2001:db8::1".parse().unwrap(),
                at: 6,
            },
        ];
        let bytes = encode_failures(&batch);
        assert_eq!(decode_failures(&bytes), Some(batch));
        assert_eq!(decode_failures(b"{}"), None);
        let many = vec![
            Failure {
                jail: "j".into(),
                ip: "192.0.2.1".parse().unwrap(),
                at: 1,
            };
            MAX_FAILURES_PER_MESSAGE + 10
        ];
        assert_eq!(
            decode_failures(&encode_failures(&many)).map(|f| f.len()),
            Some(MAX_FAILURES_PER_MESSAGE)
        );
    }
}
