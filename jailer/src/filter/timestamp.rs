//! The time a log line says it was written: classic syslog (`Sep 28 13:01:03`,
//! local time, year inferred) or RFC 3339 (`2025-09-15T09:10:01.262668+02:00`).

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Datelike, Local, NaiveDate, TimeZone};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A line dated more than this far in the future belongs to last year
/// (December lines read in January).
const FUTURE_SLACK: Duration = Duration::from_secs(2 * 86_400);

/// Parses the timestamp at the start of `line`; `now` decides the year of
/// classic syslog stamps.
pub fn parse_timestamp(line: &str, now: SystemTime) -> Option<SystemTime> {
    let b = line.as_bytes();
    if b.len() >= 15 && b[3] == b' ' && b[0].is_ascii_uppercase() {
        return parse_syslog(line, now);
    }
    if b.len() >= 20 && b[4] == b'-' && b[10] == b'T' {
        let end = line.find(' ').unwrap_or(line.len());
        return DateTime::parse_from_rfc3339(&line[..end])
            .ok()
            .map(SystemTime::from);
    }
    None
}

fn parse_syslog(line: &str, now: SystemTime) -> Option<SystemTime> {
    let month = MONTHS.iter().position(|m| line.starts_with(m))? as u32 + 1;
    let rest = &line[4..];
    let day: u32 = rest.get(..2)?.trim_start().parse().ok()?;
    let hms = rest.get(3..11)?;
    let mut parts = hms.split(':').map(|p| p.parse::<u32>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    let now_local: DateTime<Local> = now.into();
    for year in [now_local.year(), now_local.year() - 1] {
        let Some(naive) =
            NaiveDate::from_ymd_opt(year, month, day).and_then(|d| d.and_hms_opt(h, m, s))
        else {
            continue; // Feb 29 in a non-leap year: try the previous year.
        };
        let Some(t) = Local.from_local_datetime(&naive).earliest() else {
            continue;
        };
        let t = SystemTime::from(t);
        if t <= now + FUTURE_SLACK {
            return Some(t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> SystemTime {
        Local
            .with_ymd_and_hms(y, mo, d, h, mi, s)
            .earliest()
            .unwrap()
            .into()
    }

    #[test]
    fn classic_syslog_this_year() {
        let now = local(2025, 9, 28, 14, 0, 0);
        assert_eq!(
            parse_timestamp("Sep 28 13:01:03 www vpopmail[1]: x", now),
            Some(local(2025, 9, 28, 13, 1, 3))
        );
        assert_eq!(
            parse_timestamp("Sep  8 13:01:03 www x", now),
            Some(local(2025, 9, 8, 13, 1, 3))
        );
    }

    #[test]
    fn december_lines_read_in_january_are_last_year() {
        let now = local(2026, 1, 1, 0, 5, 0);
        assert_eq!(
            parse_timestamp("Dec 31 23:59:58 www x", now),
            Some(local(2025, 12, 31, 23, 59, 58))
        );
        assert_eq!(
            parse_timestamp("Jan  1 00:04:00 www x", now),
            Some(local(2026, 1, 1, 0, 4, 0))
        );
    }

    #[test]
    fn rfc3339_with_offset_and_fraction() {
        let t = parse_timestamp(
            "2025-09-15T09:10:01.262668+02:00 www vpopmail[1]: x",
            SystemTime::now(),
        )
        .unwrap();
        let secs = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(secs.as_secs(), 1_757_920_201);
        assert_eq!(secs.subsec_micros(), 262_668);
    }

    #[test]
    fn junk_is_none() {
        let now = SystemTime::now();
        for line in [
            "",
            "hello",
            "Foo 28 13:01:03 x",
            "Sep 99 13:01:03 x",
            "Sep 28 25:01:03 x",
            "2025-13-15T09:10:01Z x",
        ] {
            assert_eq!(parse_timestamp(line, now), None, "{line}");
        }
    }
}
