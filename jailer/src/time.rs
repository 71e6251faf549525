//! Time as admins write it and as state files keep it: fail2ban-style
//! durations (`600`, `10m`, `1h30m`, `1d`, `1w`; for bantime also
//! `permanent` or fail2ban's `-1`) and wall-clock unix seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest duration accepted anywhere (config, CLI, journal): ten years.
/// Longer is `permanent`; the bound keeps every time sum far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// A duration that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// Not a duration at all.
    #[error(
        "invalid duration `{text}`: use seconds or a number with s, m, h, d or w, e.g. 600, 10m, 1h30m, 1d"
    )]
    Syntax { text: String },
    /// Longer than [`MAX_DURATION`].
    #[error("duration `{text}` is longer than 10 years (3650d)")]
    TooLong { text: String },
}

/// Parses `600`, `10m`, `1h30m`, `2d`, `1w`. Zero is refused: a zero findtime
/// or bantime is always a typo.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError::Syntax {
        text: text.to_owned(),
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err());
        }
        // Only digits here: a parse failure is an overflow.
        let n: u64 = rest[..digits].parse().map_err(|_| DurationError::TooLong {
            text: text.to_owned(),
        })?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "" if total == 0 && unit_len == rest.len() => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return Err(err()),
        };
        total = n
            .checked_mul(secs)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| DurationError::TooLong {
                text: text.to_owned(),
            })?;
        rest = rest[unit_len..].trim_start();
    }
    if total == 0 {
        return Err(err());
    }
    if total > MAX_DURATION.as_secs() {
        return Err(DurationError::TooLong {
            text: text.to_owned(),
        });
    }
    Ok(Duration::from_secs(total))
}

/// A bantime: `None` is permanent.
pub fn parse_bantime(text: &str) -> Result<Option<Duration>, DurationError> {
    match text.trim() {
        "permanent" | "-1" => Ok(None),
        other => parse_duration(other).map(Some),
    }
}

/// Seconds since the epoch (0 for times before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time `secs` after the epoch, clamped to [`MAX_DURATION`] past `now`
/// so no later sum can overflow (a damaged journal may hold any number).
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.min(MAX_UNIX_SECS))
}

/// Far enough for any bantime (year 2500), small enough to add to safely.
const MAX_UNIX_SECS: u64 = 16_725_225_600;

/// Human form for `list`/`status`: `1h 2m 3s`, `45s`, `2d 3h`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || parts.is_empty() {
        parts.push(format!("{secs}s"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_fail2ban_forms() {
        assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
    }

    #[test]
    fn refuses_junk_and_zero() {
        for bad in [
            "",
            "m",
            "10x",
            "1.5h",
            "-5",
            "0",
            "0m",
            "10m5",
            "99999999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn longer_than_ten_years_is_refused() {
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION));
        assert!(matches!(
            parse_duration("3651d"),
            Err(DurationError::TooLong { .. })
        ));
        for long in [
            "30000000000000w",
            "18446744073709551615",
            "99999999999999999999w",
        ] {
            assert!(
                matches!(parse_bantime(long), Err(DurationError::TooLong { .. })),
                "{long}"
            );
        }
        assert!(from_unix_secs(u64::MAX).checked_add(MAX_DURATION).is_some());
    }

    #[test]
    fn bantime_permanent() {
        assert_eq!(parse_bantime("permanent"), Ok(None));
        assert_eq!(parse_bantime("-1"), Ok(None));
        assert_eq!(parse_bantime("1h"), Ok(Some(Duration::from_secs(3600))));
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h 2m 3s");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(90_000)), "1d 1h");
    }
}
