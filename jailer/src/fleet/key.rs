//! KV keys: one per origin and banned target, `<origin>.<target>`.
//!
//! KV keys allow only `[-/_=.a-zA-Z0-9]`, so an IPv6 address has its `:`
//! written as `-` (`2001-db8--1`); a network keeps its `/len`. Hosts are
//! written without `/32` or `/128`. Every target has exactly one key (the
//! decoder refuses non-canonical spellings), so a ban and its unban always
//! meet on the same key.

use crate::ban::Target;

/// Longest member name; keeps keys and subjects short.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` can be a member (origin) name: it must be one subject token
/// (no `.`, no wildcard) so that `<origin>.` prefixes a member's keys.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A host name made into a member name: other characters become `_`
/// (`mx1.example.org` -> `mx1_example_org`), so distinct hosts stay distinct.
pub fn name_from_host(host: &str) -> Option<String> {
    let name: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME_LEN)
        .collect();
    valid_name(&name).then_some(name)
}

/// The target part of a key: the target's own text (already canonical),
/// `:` written as `-`.
pub fn encode_target(target: Target) -> String {
    target.to_string().replace(':', "-")
}

/// `<origin>.<target>`.
pub fn encode(origin: &str, target: Target) -> String {
    format!("{origin}.{}", encode_target(target))
}

/// The origin and target of a key, if it is one this module writes.
pub fn decode(key: &str) -> Option<(&str, Target)> {
    let (origin, target) = key.split_once('.')?;
    if !valid_name(origin) {
        return None;
    }
    let parsed: Target = target.replace('-', ":").parse().ok()?;
    // Refuse other spellings (`1.2.3.4/32`, `10.0.0.1/8`, `--ffff-1.2.3.4`):
    // two keys for one target would let a ban and its unban miss each other.
    (encode_target(parsed) == target).then_some((origin, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Target {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_and_networks_round_trip() {
        for (target, key) in [
            ("203.0.113.7", "mx1.203.0.113.7"),
            ("203.0.113.7/32", "mx1.203.0.113.7"),
            ("203.0.113.0/24", "mx1.203.0.113.0/24"),
            ("203.0.113.9/24", "mx1.203.0.113.0/24"),
            ("2001:db8::1", "mx1.2001-db8--1"),
            ("2001:db8::1/128", "mx1.2001-db8--1"),
            ("2001:db8:0:1::/64", "mx1.2001-db8-0-1--/64"),
            ("2001:db8:0:1::99/64", "mx1.2001-db8-0-1--/64"),
            ("::", "mx1.--"),
            ("::1", "mx1.--1"),
            ("::ffff:192.0.2.1", "mx1.192.0.2.1"),
            ("::ffff:192.0.2.0/120", "mx1.192.0.2.0/24"),
        ] {
            let n = net(target);
            assert_eq!(encode("mx1", n), key, "{target}");
            let (origin, back) = decode(key).unwrap();
            assert_eq!(origin, "mx1");
            assert_eq!(back, n, "{target}");
        }
    }

    #[test]
    fn keys_are_valid_kv_keys() {
        for target in ["203.0.113.7", "2001:db8::/32", "fe80::1", "::"] {
            let key = encode("edge-2_b", net(target));
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)),
                "{key}"
            );
            assert!(!key.ends_with('.') && !key.starts_with('.'), "{key}");
        }
    }

    #[test]
    fn refuses_foreign_or_non_canonical_keys() {
        for key in [
            "mx1",
            "mx1.",
            ".203.0.113.7",
            "mx.1.203.0.113.7",
            "mx1.203.0.113.7/32",
            "mx1.203.0.113.9/24",
            "mx1.2001-DB8--1",
            "mx1.2001-db8-0-0-0-0-0-1",
            "mx1.--ffff-192.0.2.1",
            "mx1.hello",
            "mx1.203.0.113.256",
            "m*.203.0.113.7",
        ] {
            assert_eq!(decode(key), None, "{key}");
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("mx1"));
        assert!(valid_name("edge-2_b"));
        assert!(!valid_name(""));
        assert!(!valid_name("mx1.example"));
        assert!(!valid_name("mx*"));
        assert!(!valid_name(&"a".repeat(65)));
        assert_eq!(
            name_from_host("mx1.example.org\n").as_deref(),
            Some("mx1_example_org")
        );
        assert_eq!(name_from_host("  "), None);
    }
}
