//! Date templates (server/datetemplate.py): a `datepattern` line, `EPOCH`,
//! `LEPOCH` or `TAI64N` turned into the regex fail2ban searches lines with,
//! and the conversion of a match to a time.
//!
//! fail2ban builds these regexes by rewriting regex source with a handful of
//! meta-regexes (word boundaries, `{^LN-BEG}`, `**`, global flags); they are
//! ported verbatim and run by PCRE2 too, so the result is the same string
//! fail2ban compiles (checked against its own output in tests/dates.rs).

mod compiled;

use pcre2::bytes::Regex;

pub(crate) use self::compiled::{Draft, Template};
use super::strptime::{self, TimeRe};
use crate::filter::fail2ban::runtime::error::{FilterError, RegexKind};
use crate::filter::fail2ban::runtime::failregex;

/// The template is anchored at line start (`DateTemplate.LINE_BEGIN`).
pub(crate) const LINE_BEGIN: u8 = 8;
/// The template is anchored at line end.
pub(crate) const LINE_END: u8 = 4;
const WORD_BEGIN: u8 = 2;
const WORD_END: u8 = 1;

/// `DateDetectorCache.DEFAULT_TEMPLATES`, in order.
pub(crate) const DEFAULT_PATTERNS: [&str; 17] = [
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    r"EPOCH",
    r"{^LN-BEG}%H:%M:%S",
    r"^<%m/%d/%Exy@%H:%M:%S>",
    r"%Exy%Exm%Exd  ?%H:%M:%S",
    r"%b %d, %ExY %I:%M:%S %p",
    r"^%b-%d-%Exy %k:%M:%S",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"TAI64N",
];

/// The meta-regexes of datetemplate.py and datedetector.py.
#[derive(Debug)]
pub(crate) struct Meta {
    grouped: Regex,
    group: Regex,
    global_flags: Regex,
    no_bounds: Regex,
    line_bound_beg_tag: Regex,
    start_anchor: Regex,
    end_anchor: Regex,
    no_word_bound_beg: Regex,
    no_word_bound_end: Regex,
    del_word_bounds: Regex,
    line_bound_beg: Regex,
    line_bound_end: Regex,
    alpha: Regex,
    epoch_pattern: Regex,
    date_prematch: Regex,
}

impl Meta {
    pub(crate) fn new() -> Result<Self, FilterError> {
        let re = |src: &str| {
            failregex::build(src, false).map_err(|source| FilterError::Compile {
                kind: RegexKind::Datepattern,
                index: 0,
                regex: src.to_owned(),
                expanded: src.to_owned(),
                source,
            })
        };
        Ok(Self {
            grouped: re(r"(?<!(?:\(\?))(?<!\\)\((?!\?)")?,
            group: re(r"^((?:\(\?\w+\))?\^?(?:\(\?\w+\))?)(.*?)(\$?)$")?,
            global_flags: re(r"((?:^|(?!<\\))\(\?[a-z]+\))")?,
            no_bounds: re(r"^\{UNB\}")?,
            line_bound_beg_tag: re(r"^\{\^LN-BEG\}")?,
            start_anchor: re(r"^\((?:\?:)?\^\|\\b\|\\W\)")?,
            end_anchor: re(r"\(\?=\\b\|\\W\|\$\)$")?,
            no_word_bound_beg: re(r"^\(*(?:\(\?\w+\))?(?:\^|\(*\*\*|\((?:\?:)?\^)")?,
            no_word_bound_end: re(r"(?<!\\)(?:\$\)?|\\b|\\s|\*\*\)*)$")?,
            del_word_bounds: re(r"^\(*(?:\(\?\w+\))?\(*\*\*|(?<!\\)\*\*\)*$")?,
            line_bound_beg: re(r"^(?:\(\?\w+\))?(?:\^|\((?:\?:)?\^(?!\|))")?,
            line_bound_end: re(r"(?<![\\\|])(?:\$\)?)$")?,
            alpha: re(r"(?<!\%)\%[aAbBpc]")?,
            epoch_pattern: re(r"(?i)(?<!\\)\{L?EPOCH\}")?,
            date_prematch: re(r"(?i)(?<!\\)\{DATE\}")?,
        })
    }

    /// `DateTemplate.unboundPattern`.
    pub(crate) fn unbound_pattern(&self, pattern: &str) -> String {
        let p = sub(&self.no_bounds, pattern, 0, |_| String::new());
        let p = sub(&self.line_bound_beg_tag, &p, 0, |_| String::new());
        let p = sub(&self.start_anchor, &p, 0, |_| String::new());
        sub(&self.end_anchor, &p, 0, |_| String::new())
    }

    /// `RE_DATE_PREMATCH.sub(unboundPattern(s), prematch)`: the `{DATE}`
    /// of a `datepattern` line replaced by a default template.
    pub(crate) fn wrap_prematch(&self, prematch: &str, s: &str) -> String {
        let inner = self.unbound_pattern(s);
        sub(&self.date_prematch, prematch, 0, |_| inner.clone())
    }
}

fn is_match(re: &Regex, s: &str) -> bool {
    matches!(re.is_match(s.as_bytes()), Ok(true))
}

/// Python's `re.sub(pattern, f, s, count)` (`count` 0: all).
fn sub(re: &Regex, s: &str, count: usize, f: impl Fn(&[Option<&str>]) -> String) -> String {
    let mut caps = re.capture_locations();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut at = 0;
    let mut done = 0;
    while at <= s.len() && (count == 0 || done < count) {
        let Ok(Some(m)) = re.captures_read_at(&mut caps, s.as_bytes(), at) else {
            break;
        };
        let (start, end) = (m.start(), m.end());
        let groups: Vec<Option<&str>> = (0..caps.len())
            .map(|i| caps.get(i).and_then(|(a, b)| s.get(a..b)))
            .collect();
        out.push_str(&s[copied..start]);
        out.push_str(&f(&groups));
        copied = end;
        done += 1;
        // After an empty match the search goes on one character later.
        at = if end > start {
            end
        } else {
            end + s[end..].chars().next().map_or(1, char::len_utf8)
        };
    }
    out.push_str(&s[copied..]);
    out
}

/// How a template's regex is bounded at its start (`wordBegin`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum WordBegin {
    No,
    Word,
    /// `'start'`: at line start, optionally after two non-word characters.
    Start,
}

/// What a template is before it is compiled (`_getPatternTemplate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Spec {
    /// `DatePatternRegex`: strptime directives in a regex.
    Pattern(String),
    /// `DateEpoch` without pattern.
    Epoch { line_begin: bool, long: bool },
    /// `DateEpoch` with `{EPOCH}`/`{LEPOCH}` inside a pattern.
    EpochPattern { pattern: String, long: bool },
    /// `DateTai64n`.
    Tai64n { start: bool },
}

/// The key fail2ban caches a template under (`DD_patternCache`).
pub(crate) fn cache_key(pattern: &str) -> String {
    if pattern.contains('%') {
        pattern.to_owned()
    } else {
        pattern.to_uppercase()
    }
}

impl Spec {
    /// `_getPatternTemplate(pattern, key)`.
    pub(crate) fn of(meta: &Meta, pattern: &str, key: Option<&str>) -> Self {
        let key = key.map_or_else(|| cache_key(pattern), str::to_owned);
        if key.contains("EPOCH") {
            if is_match(&meta.epoch_pattern, pattern) {
                return Self::EpochPattern {
                    pattern: pattern.to_owned(),
                    long: key.contains("LEPOCH"),
                };
            }
            if matches!(key.as_str(), "EPOCH" | "{^LN-BEG}EPOCH" | "^EPOCH") {
                return Self::Epoch {
                    line_begin: key != "EPOCH",
                    long: false,
                };
            }
            if matches!(key.as_str(), "LEPOCH" | "{^LN-BEG}LEPOCH" | "^LEPOCH") {
                return Self::Epoch {
                    line_begin: key != "LEPOCH",
                    long: true,
                };
            }
        }
        if matches!(key.as_str(), "TAI64N" | "{^LN-BEG}TAI64N" | "^TAI64N") {
            return Self::Tai64n {
                start: key != "TAI64N",
            };
        }
        Self::Pattern(pattern.to_owned())
    }
}

fn epoch_re(long: bool) -> &'static str {
    if long {
        r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?"
    } else {
        r"\d{10,11}\b(?:\.\d{3,6})?"
    }
}

/// `_patternRE.sub(...)` then `fmt % names` and `fmt % timeRE`: the
/// template's name and regex. Any `%` that is not a known directive is an
/// error, as Python's `%`-formatting makes it.
fn expand_directives(time_re: &TimeRe, pattern: &str) -> Result<(String, String), String> {
    let mut name = String::with_capacity(pattern.len());
    let mut regex = String::with_capacity(pattern.len() * 4);
    let mut rest = pattern;
    while let Some(i) = rest.find('%') {
        name.push_str(&rest[..i]);
        regex.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(key) = strptime::directive_at(after) else {
            return Err(format!(
                "`%{}` is not a date directive (write a literal % as %%)",
                after.chars().next().map(String::from).unwrap_or_default()
            ));
        };
        let Some(re) = time_re.regex(key) else {
            return Err(format!("no regex for %{key}"));
        };
        name.push_str(&strptime::directive_name(key));
        regex.push_str(re);
        rest = &after[key.len()..];
    }
    name.push_str(rest);
    regex.push_str(rest);
    Ok((name, regex))
}

/// `DateTemplate.setRegex`: bound the regex at word or line start and word
/// end unless it says otherwise (`^`, `$`, `**`), make sure it has a group 1,
/// and keep a global flag group in front.
fn set_regex(
    meta: &Meta,
    name: &mut String,
    regex: &str,
    begin: WordBegin,
    end: bool,
) -> (String, u8) {
    let mut regex = regex.trim().to_owned();
    let mut global = None;
    if let Ok(Some(caps)) = meta.global_flags.captures(regex.as_bytes())
        && let Some(m) = caps.get(1)
    {
        global = Some(regex[m.start()..m.end()].to_owned());
        regex = sub(&meta.global_flags, &regex, 1, |_| String::new());
    }
    let bound_begin = begin != WordBegin::No && !is_match(&meta.no_word_bound_beg, &regex);
    let bound_end = end && !is_match(&meta.no_word_bound_end, &regex);
    if !is_match(&meta.grouped, &regex) {
        regex = sub(&meta.group, &regex, 0, |g| {
            let part = |i: usize| g.get(i).copied().flatten().unwrap_or("");
            format!("{}({}){}", part(1), part(2), part(3))
        });
    }
    let mut flags = 0;
    if bound_begin {
        if begin == WordBegin::Start {
            flags |= LINE_BEGIN;
            regex.insert_str(0, r"^(?:\W{0,2})?");
            if !name.starts_with("{^LN-BEG}") {
                name.insert_str(0, "{^LN-BEG}");
            }
        } else {
            flags |= WORD_BEGIN;
            regex.insert_str(0, r"(?=^|\b|\W)");
        }
    }
    if bound_end {
        flags |= WORD_END;
        regex.push_str(r"(?=\b|\W|$)");
    }
    if flags & LINE_BEGIN == 0 && is_match(&meta.line_bound_beg, &regex) {
        flags |= LINE_BEGIN;
    }
    if flags & LINE_END == 0 && is_match(&meta.line_bound_end, &regex) {
        flags |= LINE_END;
    }
    regex = sub(&meta.del_word_bounds, &regex, 0, |g| {
        g.first().copied().flatten().unwrap_or("").replace("**", "")
    });
    if let Some(g) = global {
        regex.insert_str(0, &g);
    }
    (regex, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_sub() {
        let re = failregex::build("a*", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sub(&re, "baac", 0, |_| "-".to_owned()), "-b--c-");
    }
}
