//! The `%` directives: which keys there are, the regex each stands for
//! (`timeRE`) and the name it gets in a template's name.

/// Multi-character directive keys, in the order fail2ban's directive regex
/// tries them (`getTimePatternRE`).
const MULTI_KEYS: [&str; 11] = [
    "ExZ", "Exz", "Exd", "Exm", "ExH", "Exk", "Exl", "ExM", "ExS", "ExY", "Exy",
];
/// Single-character directive keys.
const SINGLE_KEYS: &str = "dfHIGjmMSUwuVyYzAaBbpZ%WcxXkl";

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
    fn directives() {
        assert_eq!(directive_at("ExYx"), Some("ExY"));
        assert_eq!(directive_at("Y-"), Some("Y"));
        assert_eq!(directive_at("q"), None);
        assert_eq!(directive_name("ExY"), "ExYear");
        assert_eq!(directive_name("k"), "%k");
    }
}
