//! strptime-style `%` directives as regexes (`timeRE` in server/strptime.py)
//! and the conversion of the matched fields to a time
//! (`reGroupDictStrptime`).

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// Multi-character directive keys, in the order fail2ban's directive regex
/// tries them (`getTimePatternRE`).
const MULTI_KEYS: [&str; 11] = [
    "ExZ", "Exz", "Exd", "Exm", "ExH", "Exk", "Exl", "ExM", "ExS", "ExY", "Exy",
];
/// Single-character directive keys.
const SINGLE_KEYS: &str = "dfHIGjmMSUwuVyYzAaBbpZ%WcxXkl";

/// `TZ_ABBR_RE`.
const TZ_ABBR: &str = "[A-Z](?:[A-Z]{2,4})?";

/// The directive key at the start of `s` (just after a `%`).
pub(crate) fn directive_at(s: &str) -> Option<&str> {
    if let Some(k) = MULTI_KEYS.iter().find(|k| s.starts_with(**k)) {
        return Some(k);
    }
    let c = s.chars().next()?;
    SINGLE_KEYS.contains(c).then(|| &s[..c.len_utf8()])
}

/// The regexes of the directives; only `%ExY` depends on the current year.
#[derive(Clone, Debug)]
pub(crate) struct TimeRe {
    ex_year: String,
}

impl TimeRe {
    /// `_updateTimeRE` for a process started in `now_year`: `%ExY` accepts
    /// 2000 up to the decade after `now_year + 3`.
    pub(crate) fn new(now_year: i16) -> Self {
        Self {
            ex_year: format!(r"(?P<Y>{}\d)", year_century_re(now_year, 2001)),
        }
    }

    /// The regex of a directive key (Python's `timeRE[key]`).
    pub(crate) fn regex(&self, key: &str) -> Option<&str> {
        Some(match key {
            "d" => r"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])",
            "f" => r"(?P<f>[0-9]{1,6})",
            "H" => r"(?P<H>[0-1]?\d|2[0-3])",
            "I" => r"(?P<I>1[0-2]|0[1-9]|[1-9])",
            "G" => r"(?P<G>\d\d\d\d)",
            "j" => r"(?P<j>36[0-6]|3[0-5]\d|[1-2]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])",
            "m" => r"(?P<m>0?[1-9]|1[0-2])",
            "M" => r"(?P<M>[0-5]?\d)",
            "S" => r"(?P<S>[0-5]?\d|6[0-1])",
            "U" => r"(?P<U>5[0-3]|[0-4]\d|\d)",
            "w" => r"(?P<w>[0-6])",
            "u" => r"(?P<u>[1-7])",
            "V" => r"(?P<V>5[0-3]|0[1-9]|[1-4]\d|\d)",
            "y" => r"(?P<y>\d\d)",
            "Y" => r"(?P<Y>\d{4})",
            "z" => r"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)",
            "A" => r"(?P<A>wednesday|thursday|saturday|tuesday|monday|friday|sunday)",
            "a" => r"(?P<a>mon|tue|wed|thu|fri|sat|sun)",
            "B" => {
                r"(?P<B>september|february|november|december|january|october|august|march|april|june|july|may)"
            }
            "b" => r"(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
            "p" => r"(?P<p>am|pm)",
            "Z" => r"(?P<Z>Z|[A-Z]{3,5})",
            "%" => "%",
            "W" => r"(?P<W>5[0-3]|[0-4]\d|\d)",
            "c" => {
                r"(?P<a>mon|tue|wed|thu|fri|sat|sun)\s+(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)\s+(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])\s+(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)\s+(?P<Y>\d\d\d\d)"
            }
            "x" => {
                r"(?P<m>1[0-2]|0[1-9]|[1-9])/(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])/(?P<y>\d\d)"
            }
            "X" => r"(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)",
            "k" => r" ?(?P<H>[0-2]?\d)",
            "l" => r" ?(?P<I>1?\d)",
            "ExZ" => concat!("(?P<Z>", "[A-Z](?:[A-Z]{2,4})?", ")"),
            "Exz" => concat!(
                "(?P<z>(?:",
                "[A-Z](?:[A-Z]{2,4})?",
                r")?[+-][01]\d(?::?\d{2})?|",
                "[A-Z](?:[A-Z]{2,4})?",
                ")"
            ),
            "Exd" => r"(?P<d>[1-2]\d|0[1-9]|3[0-1])",
            "Exm" => r"(?P<m>0[1-9]|1[0-2])",
            "ExH" => r"(?P<H>[0-1]\d|2[0-3])",
            "Exk" => r" ?(?P<H>[0-1]?\d|2[0-3])",
            "Exl" => r" ?(?P<I>1[0-2]|\d)",
            "ExM" => r"(?P<M>[0-5]\d)",
            "ExS" => r"(?P<S>[0-5]\d|6[0-1])",
            "ExY" => &self.ex_year,
            "Exy" => r"(?P<y>\d{2})",
            _ => return None,
        })
    }
}

/// The name a directive gets in a template's name (`getTimePatternRE`).
pub(crate) fn directive_name(key: &str) -> String {
    fn base(key: &str) -> Option<&'static str> {
        Some(match key {
            "a" => "DAY",
            "A" => "DAYNAME",
            "b" => "MON",
            "B" => "MONTH",
            "d" => "Day",
            "H" => "24hour",
            "I" => "12hour",
            "j" => "Yearday",
            "m" => "Month",
            "M" => "Minute",
            "p" => "AMPM",
            "S" => "Second",
            "U" | "W" => "Yearweek",
            "w" => "Weekday",
            "y" => "Year2",
            "Y" => "Year",
            "%" => "%",
            "z" => "Zone offset",
            "f" => "Microseconds",
            "Z" => "Zone name",
            _ => return None,
        })
    }
    if let Some(name) = base(key) {
        return name.to_owned();
    }
    // fail2ban derives these from a set in hash order, so `%Exk` may also be
    // called `Ex%k` there; names only need to be consistent within a run.
    match key.strip_prefix("Ex").and_then(base) {
        Some(name) => format!("Ex{name}"),
        None => format!("%{key}"),
    }
}

/// `_getYearCentRE`: a regex for the first three digits of the years from
/// `alt_year - 1` to `now_year + 3`.
fn year_century_re(now_year: i16, alt_year: i16) -> String {
    let cent = |y: i32| y.to_string().chars().take(3).collect::<String>();
    let now = i32::from(now_year);
    let alt = i32::from(alt_year);
    let mut set: Vec<String> = vec![cent(now - 1), cent(now + 3)];
    let mut y = alt - 1;
    while y < now + 1 {
        set.push(cent(y));
        y += 3;
    }
    set.sort();
    set.dedup();
    group(&set)
}

/// `grp` inside `_getYearCentRE`: factor out common prefixes.
fn group(set: &[String]) -> String {
    if set.len() > 1 {
        let mut common: Option<&str> = None;
        for i in set {
            let head = &i[..i.len().saturating_sub(1)];
            match common {
                None => common = Some(head),
                Some(c) if c == head => {}
                Some(_) => {
                    common = None;
                    break;
                }
            }
        }
        if common.is_none_or(str::is_empty) {
            common = None;
            for i in set {
                let head = &i[..i.len().min(1)];
                match common {
                    None => common = Some(head),
                    Some(c) if c == head => {}
                    Some(_) => {
                        common = None;
                        break;
                    }
                }
            }
        }
        if let Some(c) = common.filter(|c| !c.is_empty()) {
            let rest: Vec<String> = set.iter().map(|i| i[c.len()..].to_owned()).collect();
            return format!("{c}{}", group(&rest));
        }
        return if set[0].len() > 1 {
            format!("(?:{})", set.join("|"))
        } else {
            format!("[{}]", set.concat())
        };
    }
    set.concat()
}

/// `TZ_STR` of server/strptime.py: zone abbreviations and their offsets in
/// minutes east of UTC.
const TZ_ABBRS: &[(i32, &[&str])] = &[
    (-12 * 60, &["Y"]),
    (-11 * 60, &["X", "NUT", "SST"]),
    (-10 * 60, &["W", "CKT", "HAST", "HST", "TAHT", "TKT"]),
    (-9 * 60, &["V", "AKST", "GAMT", "GIT", "HADT", "HNY"]),
    (-8 * 60, &["U", "AKDT", "CIST", "HAY", "HNP", "PST", "PT"]),
    (-7 * 60, &["T", "HAP", "HNR", "MST", "PDT"]),
    (-6 * 60, &["S", "CST", "EAST", "GALT", "HAR", "HNC", "MDT"]),
    (
        -5 * 60,
        &[
            "R", "CDT", "COT", "EASST", "ECT", "EST", "ET", "HAC", "HNE", "PET",
        ],
    ),
    (
        -4 * 60,
        &[
            "Q", "AST", "BOT", "CLT", "COST", "EDT", "FKT", "GYT", "HAE", "HNA", "PYT",
        ],
    ),
    (
        -3 * 60,
        &[
            "P", "ADT", "ART", "BRT", "CLST", "FKST", "GFT", "HAA", "PMST", "PYST", "SRT", "UYT",
            "WGT",
        ],
    ),
    (-2 * 60, &["O", "BRST", "FNT", "PMDT", "UYST", "WGST"]),
    (-60, &["N", "AZOT", "CVT", "EGT"]),
    (0, &["Z", "EGST", "GMT", "UTC", "WET", "WT"]),
    (60, &["A", "CET", "DFT", "WAT", "WEDT", "WEST"]),
    (2 * 60, &["B", "CAT", "CEDT", "CEST", "EET", "SAST", "WAST"]),
    (3 * 60, &["C", "EAT", "EEDT", "EEST", "IDT", "MSK"]),
    (
        4 * 60,
        &[
            "D", "AMT", "AZT", "GET", "GST", "KUYT", "MSD", "MUT", "RET", "SAMT", "SCT",
        ],
    ),
    (
        5 * 60,
        &[
            "E", "AMST", "AQTT", "AZST", "HMT", "MAWT", "MVT", "PKT", "TFT", "TJT", "TMT", "UZT",
            "YEKT",
        ],
    ),
    (
        6 * 60,
        &[
            "F", "ALMT", "BIOT", "BTT", "IOT", "KGT", "NOVT", "OMST", "YEKST",
        ],
    ),
    (
        7 * 60,
        &[
            "G", "CXT", "DAVT", "HOVT", "ICT", "KRAT", "NOVST", "OMSST", "THA", "WIB",
        ],
    ),
    (
        8 * 60,
        &[
            "H", "ACT", "AWST", "BDT", "BNT", "CAST", "HKT", "IRKT", "KRAST", "MYT", "PHT", "SGT",
            "ULAT", "WITA", "WST",
        ],
    ),
    (
        9 * 60,
        &[
            "I", "AWDT", "IRKST", "JST", "KST", "PWT", "TLT", "WDT", "WIT", "YAKT",
        ],
    ),
    (
        10 * 60,
        &["K", "AEST", "ChST", "PGT", "VLAT", "YAKST", "YAPT"],
    ),
    (
        11 * 60,
        &[
            "L", "AEDT", "LHDT", "MAGT", "NCT", "PONT", "SBT", "VLAST", "VUT",
        ],
    ),
    (
        12 * 60,
        &[
            "M", "ANAST", "ANAT", "FJT", "GILT", "MAGST", "MHT", "NZST", "PETST", "PETT", "TVT",
            "WFT",
        ],
    ),
    (13 * 60, &["FJST", "NZDT"]),
    (11 * 60 + 30, &["NFT"]),
    (10 * 60 + 30, &["ACDT", "LHST"]),
    (9 * 60 + 30, &["ACST"]),
    (6 * 60 + 30, &["CCT", "MMT"]),
    (5 * 60 + 45, &["NPT"]),
    (5 * 60 + 30, &["SLT"]),
    (4 * 60 + 30, &["AFT", "IRDT"]),
    (3 * 60 + 30, &["IRST"]),
    (-(2 * 60 + 30), &["HAT", "NDT"]),
    (-(3 * 60 + 30), &["HNT", "NST", "NT"]),
    (-(4 * 60 + 30), &["HLV", "VET"]),
    (-(9 * 60 + 30), &["MART", "MIT"]),
];

fn abbr_offset(abbr: &str) -> Option<i32> {
    if abbr.is_empty() {
        return Some(0);
    }
    TZ_ABBRS
        .iter()
        .find(|(_, names)| names.contains(&abbr))
        .map(|(off, _)| *off)
}

/// `validateTimeZone`/`zone2offset`: `ABBR`, `[+-]hh[[:]mm]` or both, as
/// minutes east of UTC. `None` for what fail2ban rejects (it raises).
pub(crate) fn zone_offset(tz: &str) -> Option<i32> {
    // FIXED_OFFSET_TZ_RE: (TZ_ABBR)?([+-][01]\d(?::?\d{2})?)?$
    let b = tz.as_bytes();
    let mut i = 0;
    if b.first().is_some_and(u8::is_ascii_uppercase) {
        let n = b[1..]
            .iter()
            .take(4)
            .take_while(|c| c.is_ascii_uppercase())
            .count();
        // `[A-Z](?:[A-Z]{2,4})?`: one letter, or three to five.
        i = if n >= 2 { 1 + n } else { 1 };
    }
    let _ = TZ_ABBR;
    let abbr = &tz[..i];
    let rest = &tz[i..];
    let base = abbr_offset(abbr)?;
    if rest.is_empty() {
        return Some(base);
    }
    let rb = rest.as_bytes();
    let sign = match rb[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let hh = rb
        .get(1..3)
        .filter(|d| digits(d) && (d[0] == b'0' || d[0] == b'1'))?;
    let hours = i32::from(hh[0] - b'0') * 10 + i32::from(hh[1] - b'0');
    let minutes = match &rb[3..] {
        [] => return Some(base + sign * hours * 60),
        [b':', m1, m2] | [m1, m2] if m1.is_ascii_digit() && m2.is_ascii_digit() => {
            i32::from(m1 - b'0') * 10 + i32::from(m2 - b'0')
        }
        _ => return None,
    };
    Some(base + sign * (hours * 60 + minutes))
}

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
    fn year_regex_like_fail2ban() {
        assert_eq!(year_century_re(2026, 2001), "20[012]");
        assert_eq!(year_century_re(2031, 2001), "20[0123]");
        assert_eq!(year_century_re(2005, 2001), "200");
    }

    #[test]
    fn zones() {
        assert_eq!(zone_offset("CEST"), Some(120));
        assert_eq!(zone_offset("+0130"), Some(90));
        assert_eq!(zone_offset("-01:30"), Some(-90));
        assert_eq!(zone_offset("UTC+02"), Some(120));
        assert_eq!(zone_offset("ABC"), None);
        assert_eq!(zone_offset("err"), None);
    }

    #[test]
    fn directives() {
        assert_eq!(directive_at("ExYx"), Some("ExY"));
        assert_eq!(directive_at("Y-"), Some("Y"));
        assert_eq!(directive_at("q"), None);
        assert_eq!(directive_name("ExY"), "ExYear");
        assert_eq!(directive_name("k"), "%k");
    }

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
