//! strptime-style `%` directives as regexes (`timeRE` in server/strptime.py)
//! and the conversion of the matched fields to a time
//! (`reGroupDictStrptime`).

mod directive;
mod zone;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

pub(crate) use self::directive::{TimeRe, directive_at, directive_name};
pub(crate) use self::zone::zone_offset;

/// Everything a template match may tell about a date.
#[derive(Default)]
struct Fields {
    year: Option<i32>,
    month: Option<i32>,
    day: Option<i32>,
    hour: i32,
    minute: i32,
    second: i32,
    weekday: Option<i32>,
    julian: Option<i32>,
    week_of_year: Option<(i32, bool)>,
    tzoffset: Option<i32>,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn int(v: &str) -> Option<i32> {
    // Matched digits, mostly: no need for str::parse. Python's int() ignores
    // surrounding blanks (`%d` may capture " 5").
    let b = v.as_bytes();
    if !b.is_empty() && b.len() <= 9 && b.iter().all(u8::is_ascii_digit) {
        return Some(b.iter().fold(0, |n, d| n * 10 + i32::from(d - b'0')));
    }
    v.trim().parse().ok()
}

/// Position of `v` (any case) among `names`, or among their first three
/// letters.
fn name_index(names: &[&str], v: &str, full: bool) -> Option<i32> {
    let vb = v.as_bytes();
    if !full && vb.len() != 3 {
        return None;
    }
    let i = names.iter().position(|n| {
        let n = n.as_bytes();
        let n = if full { n } else { &n[..3] };
        n.eq_ignore_ascii_case(vb)
    })?;
    i32::try_from(i).ok()
}

/// The reference "now" of a conversion (`MyTime.now()`): local wall time,
/// and a day later.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalNow {
    now: DateTime,
    next_day: DateTime,
}

impl LocalNow {
    pub(crate) fn new(now: DateTime) -> Self {
        Self {
            now,
            next_day: now
                .checked_add(SignedDuration::from_hours(24))
                .unwrap_or(DateTime::MAX),
        }
    }
}

/// A named group of a date template that `reGroupDictStrptime` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Year2,
    Year,
    Month,
    MonthName,
    MonthAbbr,
    Day,
    Hour,
    Hour12,
    AmPm,
    Minute,
    Second,
    DayName,
    DayAbbr,
    Weekday,
    Julian,
    WeekSunday,
    WeekMonday,
    Zone,
}

impl Field {
    /// The field a group name stands for; `None` for groups it ignores
    /// (`f`, `_sep`, `square`...).
    pub(crate) fn of(name: &str) -> Option<Self> {
        Some(match name {
            "y" => Self::Year2,
            "Y" => Self::Year,
            "m" => Self::Month,
            "B" => Self::MonthName,
            "b" => Self::MonthAbbr,
            "d" => Self::Day,
            "H" => Self::Hour,
            "I" => Self::Hour12,
            "p" => Self::AmPm,
            "M" => Self::Minute,
            "S" => Self::Second,
            "A" => Self::DayName,
            "a" => Self::DayAbbr,
            "w" => Self::Weekday,
            "j" => Self::Julian,
            "U" => Self::WeekSunday,
            "W" => Self::WeekMonday,
            "z" | "Z" => Self::Zone,
            _ => return None,
        })
    }
}

/// `reGroupDictStrptime`: the Unix time of the matched fields, `None` where
/// fail2ban raises (invalid date, unknown zone). `fields` are the named
/// groups that took part in the match, in group order.
pub(crate) fn to_time<'a>(
    fields: impl Iterator<Item = (Field, &'a str)> + Clone,
    now: LocalNow,
    tz: &TimeZone,
    default_tz: Option<i32>,
) -> Option<f64> {
    let mut f = Fields::default();
    let ampm = fields
        .clone()
        .find(|(k, _)| *k == Field::AmPm)
        .map_or("", |(_, v)| v);
    for (key, val) in fields {
        match key {
            Field::Year2 => {
                let y = int(val)?;
                // fail2ban keeps two-digit years in this century.
                f.year = Some(if y <= 2000 { y + 2000 } else { y });
            }
            Field::Year => f.year = Some(int(val)?),
            Field::Month => f.month = Some(int(val)?),
            Field::MonthName => f.month = Some(name_index(&MONTHS, val, true)? + 1),
            Field::MonthAbbr => f.month = Some(name_index(&MONTHS, val, false)? + 1),
            Field::Day => f.day = Some(int(val)?),
            Field::Hour => f.hour = int(val)?,
            Field::Hour12 => {
                let h = int(val)?;
                let pm = ampm.eq_ignore_ascii_case("pm");
                f.hour = match h {
                    12 if !pm => 0,
                    h if pm && h != 12 => h + 12,
                    h => h,
                };
            }
            Field::Minute => f.minute = int(val)?,
            Field::Second => f.second = int(val)?,
            Field::DayName => f.weekday = Some(name_index(&DAYS, val, true)?),
            Field::DayAbbr => f.weekday = Some(name_index(&DAYS, val, false)?),
            Field::Weekday => f.weekday = Some((int(val)? - 1).rem_euclid(7)),
            Field::Julian => f.julian = Some(int(val)?),
            Field::WeekSunday => f.week_of_year = Some((int(val)?, false)),
            Field::WeekMonday => f.week_of_year = Some((int(val)?, true)),
            Field::Zone => {
                f.tzoffset = Some(if matches!(val, "Z" | "UTC" | "GMT") {
                    0
                } else {
                    zone_offset(val)?
                });
            }
            Field::AmPm => {}
        }
    }
    compose(f, now, tz, default_tz)
}

fn compose(f: Fields, now: LocalNow, tz: &TimeZone, default_tz: Option<i32>) -> Option<f64> {
    let LocalNow { now, next_day } = now;
    let (mut year, mut month, mut day) = (f.year, f.month, f.day);
    let assume_year = year.is_none();
    let year_v = *year.get_or_insert(i32::from(now.year()));
    if month.is_none() || day.is_none() {
        let mut julian = f.julian;
        if julian.is_none()
            && let (Some((week, monday)), Some(weekday)) = (f.week_of_year, f.weekday)
        {
            julian = Some(julian_from_week(year_v, week, weekday, monday)?);
        }
        if let Some(j) = julian {
            let jan1 = Date::new(i16::try_from(year_v).ok()?, 1, 1).ok()?;
            let d = jan1
                .checked_add(SignedDuration::from_hours(24 * i64::from(j - 1)))
                .ok()?;
            year = Some(i32::from(d.year()));
            month = Some(i32::from(d.month()));
            day = Some(i32::from(d.day()));
        }
    }
    let assume_today = month.is_none() && day.is_none();
    if assume_today {
        month = Some(i32::from(now.month()));
        day = Some(i32::from(now.day()));
    }
    let (year, month, day) = (year?, month?, day?);
    if year < 1 {
        return None;
    }
    let civil = |y: i32, m: i32, d: i32, h: i32, mi: i32, s: i32| -> Option<DateTime> {
        DateTime::new(
            i16::try_from(y).ok()?,
            i8::try_from(m).ok()?,
            i8::try_from(d).ok()?,
            i8::try_from(h).ok()?,
            i8::try_from(mi).ok()?,
            i8::try_from(s).ok()?,
            0,
        )
        .ok()
    };
    let mut dt = civil(year, month, day, f.hour, f.minute, f.second)?;
    let tzoffset = f.tzoffset.or(default_tz);
    if let Some(off) = tzoffset {
        dt = dt
            .checked_sub(SignedDuration::from_mins(i64::from(off)))
            .ok()?;
    }
    // fail2ban compares with the local wall time even when the line named a
    // zone (the result is UTC then); kept as is.
    if assume_today && dt > now {
        dt = dt.checked_sub(SignedDuration::from_hours(24)).ok()?;
    }
    if assume_year && dt > next_day {
        // Last year's date: year, month and day as logged, time as shifted
        // (Python's datetime has no year 0).
        if year < 2 {
            return None;
        }
        dt = civil(
            year - 1,
            month,
            day,
            i32::from(dt.hour()),
            i32::from(dt.minute()),
            i32::from(dt.second()),
        )?;
    }
    let ts = match tzoffset {
        Some(_) => jiff::tz::Offset::UTC.to_timestamp(dt).ok()?,
        None => tz.to_timestamp(dt).ok()?,
    };
    Some(seconds(ts))
}

/// `_calc_julian_from_U_or_W` of Python's `_strptime`.
fn julian_from_week(year: i32, week: i32, weekday: i32, monday_first: bool) -> Option<i32> {
    let jan1 = Date::new(i16::try_from(year).ok()?, 1, 1).ok()?;
    let mut first = i32::from(jan1.weekday().to_monday_zero_offset());
    let mut dow = weekday;
    if !monday_first {
        first = (first + 1) % 7;
        dow = (dow + 1) % 7;
    }
    let week0 = (7 - first) % 7;
    Some(if week == 0 {
        1 + dow - first
    } else {
        1 + week0 + 7 * (week - 1) + dow
    })
}

/// A timestamp as fail2ban's float seconds.
pub(crate) fn seconds(ts: Timestamp) -> f64 {
    ts.as_second() as f64 + f64::from(ts.subsec_nanosecond()) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_times() {
        let tz = TimeZone::UTC;
        let now = LocalNow::new(DateTime::constant(2005, 8, 14, 12, 0, 0, 0));
        let t = |f: &[(&str, &str)]| {
            to_time(
                f.iter().filter_map(|(k, v)| Some((Field::of(k)?, *v))),
                now,
                &tz,
                None,
            )
        };
        // 2005-08-14 11:00:00 UTC
        assert_eq!(
            t(&[
                ("b", "Aug"),
                ("d", "14"),
                ("H", "11"),
                ("M", "0"),
                ("S", "0")
            ]),
            Some(1_124_017_200.0)
        );
        // Later in the year than now: last year.
        assert_eq!(
            t(&[
                ("b", "Dec"),
                ("d", "31"),
                ("H", "0"),
                ("M", "0"),
                ("S", "0")
            ]),
            Some(1_104_451_200.0)
        );
        // Time only, later than now: yesterday.
        assert_eq!(
            t(&[("H", "13"), ("M", "0"), ("S", "0")]),
            Some(1_123_938_000.0)
        );
        assert_eq!(t(&[("Y", "2005"), ("m", "2"), ("d", "30")]), None);
        assert_eq!(
            t(&[
                ("Y", "2005"),
                ("m", "8"),
                ("d", "14"),
                ("I", "12"),
                ("p", "AM")
            ]),
            Some(1_123_977_600.0)
        );
    }
}
