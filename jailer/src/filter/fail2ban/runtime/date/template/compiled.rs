//! Templates before and after their regex is compiled: a draft is cheap, so
//! the template list is settled first; compiling fixes how a match becomes a time.

use jiff::tz::TimeZone;
use pcre2::bytes::{CaptureLocations, Regex};

use super::{Meta, Spec, WordBegin, epoch_re, expand_directives, is_match, set_regex, sub};
use crate::filter::fail2ban::runtime::date::strptime::{self, Field, LocalNow, TimeRe};
use crate::filter::fail2ban::runtime::error::{FilterError, RegexKind};
use crate::filter::fail2ban::runtime::failregex;

/// How a match becomes a time.
#[derive(Clone, Debug)]
enum Kind {
    /// strptime fields: group number and field of the named groups.
    Pattern(Vec<(usize, Field)>),
    Epoch {
        long: bool,
        group: usize,
    },
    Tai64n,
}

/// A template before its regex is compiled: cheap to make, so fail2ban's
/// template list can be worked out without compiling templates it drops.
#[derive(Clone, Debug)]
pub(crate) struct Draft {
    pub(crate) name: String,
    /// The regex as fail2ban writes it.
    pub(crate) regex: String,
    pub(crate) flags: u8,
    /// `DatePatternRegex.pattern`, the `datepattern` text.
    pattern: Option<String>,
    kind: Kind,
}

/// A compiled date template.
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) name: String,
    /// The regex as fail2ban writes it (before the `(?u)` flag is dropped).
    pub(crate) regex: String,
    pub(crate) flags: u8,
    pub(crate) weight: f64,
    kind: Kind,
    re: Regex,
}

impl Draft {
    /// The template fail2ban's template classes make of `spec`.
    pub(crate) fn new(meta: &Meta, time_re: &TimeRe, spec: &Spec) -> Result<Self, FilterError> {
        let mut name;
        let (regex, flags, kind, pattern) = match spec {
            Spec::Pattern(pattern) => {
                let mut p = pattern.as_str();
                let (mut begin, mut end) = (WordBegin::Word, true);
                let unbounded;
                if is_match(&meta.no_bounds, p) {
                    unbounded = sub(&meta.no_bounds, p, 0, |_| String::new());
                    p = &unbounded;
                    begin = WordBegin::No;
                    end = false;
                }
                let unanchored;
                if begin != WordBegin::No && is_match(&meta.line_bound_beg_tag, p) {
                    unanchored = sub(&meta.line_bound_beg_tag, p, 0, |_| String::new());
                    p = &unanchored;
                    begin = WordBegin::Start;
                }
                let (n, mut regex) =
                    expand_directives(time_re, p).map_err(|reason| FilterError::DatePattern {
                        pattern: pattern.clone(),
                        reason,
                    })?;
                name = n;
                if is_match(&meta.alpha, p) {
                    regex.insert_str(0, "(?iu)");
                }
                let (regex, flags) = set_regex(meta, &mut name, &regex, begin, end);
                (
                    regex,
                    flags,
                    Kind::Pattern(Vec::new()),
                    Some(pattern.clone()),
                )
            }
            Spec::Epoch { line_begin, long } => {
                name = if *long { "LongEpoch" } else { "Epoch" }.to_owned();
                let epoch = epoch_re(*long);
                let (regex, flags) = if *line_begin {
                    let r = format!(r"((?P<square>(?<=^\[))?{epoch})(?(square)(?=\]))");
                    set_regex(meta, &mut name, &r, WordBegin::Start, true)
                } else {
                    let r = format!(
                        "{}{epoch}{}",
                        r"((?:^|(?P<square>(?<=^\[))|(?P<selinux>(?<=\baudit\()))",
                        r")(?:(?(selinux)(?=:\d+\)))|(?(square)(?=\])))"
                    );
                    set_regex(meta, &mut name, &r, WordBegin::No, true)
                };
                (
                    regex,
                    flags,
                    Kind::Epoch {
                        long: *long,
                        group: 1,
                    },
                    None,
                )
            }
            Spec::EpochPattern { pattern, long } => {
                name = pattern.clone();
                let epoch = epoch_re(*long);
                let inner = sub(&meta.epoch_pattern, pattern, 0, |_| format!("({epoch})"));
                let (regex, flags) = set_regex(
                    meta,
                    &mut name,
                    &format!("({inner})"),
                    WordBegin::Word,
                    true,
                );
                (
                    regex,
                    flags,
                    Kind::Epoch {
                        long: *long,
                        group: 2,
                    },
                    None,
                )
            }
            Spec::Tai64n { start } => {
                name = "TAI64N".to_owned();
                let begin = if *start {
                    WordBegin::Start
                } else {
                    WordBegin::No
                };
                let (regex, flags) = set_regex(meta, &mut name, "@[0-9a-f]{24}", begin, true);
                (regex, flags, Kind::Tai64n, None)
            }
        };
        Ok(Self {
            name,
            regex,
            flags,
            pattern,
            kind,
        })
    }

    /// The `datepattern` text, for pattern templates.
    pub(crate) fn pattern(&self) -> Option<&str> {
        self.pattern.as_deref()
    }

    /// Compile the regex.
    pub(crate) fn compile(self, weight: f64) -> Result<Template, FilterError> {
        let Self {
            name,
            regex,
            flags,
            pattern,
            kind,
        } = self;
        let re = failregex::build(&regex, false).map_err(|source| FilterError::Compile {
            kind: RegexKind::Datepattern,
            index: 0,
            regex: pattern.unwrap_or_else(|| name.clone()),
            expanded: regex.clone(),
            source,
        })?;
        let kind = match kind {
            Kind::Pattern(_) => Kind::Pattern(
                re.capture_names()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| Some((i, Field::of(n.as_deref()?)?)))
                    .collect(),
            ),
            other => other,
        };
        Ok(Template {
            name,
            regex,
            flags,
            weight,
            kind,
            re,
        })
    }
}

impl Template {
    pub(crate) fn capture_locations(&self) -> CaptureLocations {
        self.re.capture_locations()
    }

    /// `matchDate(line, pos, endpos)`: search `line[..endpos]` from `pos`
    /// (look-behind still sees what precedes `pos`, as in Python).
    pub(crate) fn search(
        &self,
        caps: &mut CaptureLocations,
        line: &str,
        pos: usize,
        endpos: usize,
    ) -> Option<(usize, usize)> {
        let end = endpos.min(line.len());
        let subject = line.as_bytes().get(..end)?;
        if pos > end {
            return None;
        }
        match self.re.captures_read_at(caps, subject, pos) {
            Ok(Some(m)) => Some((m.start(), m.end())),
            Ok(None) | Err(_) => None,
        }
    }

    /// `getDate`: the Unix time of a match (`None` where fail2ban gets none
    /// or raises).
    pub(crate) fn time(
        &self,
        caps: &CaptureLocations,
        line: &str,
        now: LocalNow,
        tz: &TimeZone,
        default_tz: Option<i32>,
    ) -> Option<f64> {
        let text = |i: usize| caps.get(i).and_then(|(s, e)| line.get(s..e));
        match &self.kind {
            Kind::Pattern(groups) => {
                let fields = groups
                    .iter()
                    .filter_map(|(i, field)| Some((*field, text(*i)?)));
                strptime::to_time(fields, now, tz, default_tz)
            }
            Kind::Epoch { long, group } => {
                let v = text(*group)?;
                let f: f64 = v.parse().ok()?;
                Some(if *long && v.len() >= 13 {
                    if v.len() >= 16 && !v.contains('.') {
                        f / 1_000_000.0
                    } else {
                        f / 1000.0
                    }
                } else {
                    f
                })
            }
            Kind::Tai64n => {
                let v = text(1)?;
                let secs = i64::from_str_radix(v.get(2..17)?, 16).ok()?;
                Some(secs as f64)
            }
        }
    }
}
