//! Value parsers for clap: an argument is checked where it is parsed, and a
//! bad one gets clap's usage error naming the flag and the reason.

use std::time::Duration;

use crate::{
    ban::{PortSet, Target, parse_port},
    time::parse_bantime,
};

/// An address or CIDR network (`203.0.113.7`, `2001:db8:1::/48`).
pub fn target(text: &str) -> Result<Target, String> {
    text.parse()
        .map_err(|e: crate::ban::TargetError| e.to_string())
}

/// One `--port` item: a number, a service name, or `all` (as 0).
pub fn port(text: &str) -> Result<String, String> {
    if text.trim().eq_ignore_ascii_case("all") {
        return Ok("all".into());
    }
    // Comma lists are accepted too: `--port 110,995`.
    for item in text.split(',') {
        parse_port(item).map_err(|e| e.to_string())?;
    }
    Ok(text.to_owned())
}

/// The `--port` values as one set.
pub fn port_set(items: &[String]) -> Result<PortSet, String> {
    let parts: Vec<&str> = items.iter().flat_map(|i| i.split(',')).collect();
    PortSet::parse(&parts).map_err(|e| e.to_string())
}

/// A bantime as given on the command line; `None` is permanent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bantime(pub Option<Duration>);

/// A bantime: `600`, `10m`, `1d`, `permanent`.
pub fn bantime(text: &str) -> Result<Bantime, String> {
    parse_bantime(text).map(Bantime).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_accept_and_explain() {
        assert_eq!(target("203.0.113.7").unwrap().to_string(), "203.0.113.7");
        assert!(
            target("203.0.113.300")
                .unwrap_err()
                .contains("not an address")
        );
        assert_eq!(
            port_set(&["pop3".into(), "995,143".into()]).unwrap(),
            PortSet::only(&[110, 143, 995])
        );
        assert!(port("gopher").unwrap_err().contains("unknown port"));
        assert_eq!(bantime("permanent").unwrap(), Bantime(None));
        assert!(bantime("-5").unwrap_err().contains("invalid duration `-5`"));
        assert!(
            bantime("18446744073709551615")
                .unwrap_err()
                .contains("longer than 10 years")
        );
    }
}
