//! fail2ban's `MyTime.str2seconds`: `10m`, `1h 30m`, `1d12h`, `-1`,
//! `1year-6mo`, `2 * 3h`.
//!
//! fail2ban rewrites unit abbreviations into `*<seconds>`, joins adjacent
//! numbers with `+` and hands the result to Python's `eval`. The rewriting is
//! reproduced exactly; `eval` is replaced by an evaluator for the arithmetic
//! subset (numbers, `+ - * / // % **`, parentheses), which is all a time
//! value can sensibly contain.

mod arithmetic;

use self::arithmetic::{Num, Parser};
use super::{
    pystr::{is_space, is_word},
    text::Origin,
};

/// A time value fail2ban could not evaluate either (or, for the rare
/// non-arithmetic Python expression, one it could but we do not).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a time (like 10m, 1h 30m, 1d, -1): {reason} in `{expression}`")]
pub struct TimeError {
    /// The value as written.
    pub text: String,
    /// The expression it was rewritten to.
    pub expression: String,
    /// What is wrong.
    pub reason: String,
}

/// A time option: as written and in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSpec {
    /// The resolved value (`10m`, `1h 30m`, `-1`).
    pub text: String,
    /// fail2ban's `str2seconds` of it.
    pub seconds: f64,
    /// Where it is written.
    pub origin: Option<Origin>,
}

/// Unit spellings (regex alternatives, longest first where `?` makes two)
/// and their seconds, in fail2ban's replacement order.
const UNITS: [(&[&str], &str); 7] = [
    (&["days", "day", "da", "dd", "d"], "*86400"),
    (&["weeks", "week", "wee", "we", "ww", "w"], "*604800"),
    (&["months", "month", "mon", "mo"], "*2629800.0"),
    (&["years", "year", "yea", "ye", "yy", "y"], "*31557600.0"),
    (&["seconds", "second", "sec", "se", "ss", "s"], "*1"),
    (&["minutes", "minute", "min", "mi", "mm", "m"], "*60"),
    (&["hours", "hour", "hou", "ho", "hh", "h"], "*3600"),
];

/// Seconds in a fail2ban time value.
pub fn str2seconds(text: &str) -> Result<f64, TimeError> {
    let expression = rewrite(text);
    let mut parser = Parser {
        s: expression.as_bytes(),
        pos: 0,
        depth: 0,
        nesting: 0,
    };
    let result = parser.expression_with_trailer().and_then(|n| match n {
        Num::Int(i) => Ok(i as f64),
        Num::Float(f) if f.is_finite() => Ok(f),
        Num::Float(_) => Err("result is not finite".to_owned()),
    });
    result.map_err(|reason| TimeError {
        text: text.to_owned(),
        expression,
        reason,
    })
}

/// The regex rewriting of `str2seconds`, before `eval`.
fn rewrite(text: &str) -> String {
    // `(?i)(?<=[a-z])(\d)` -> ` \1` ('1d12h' -> '1d 12h').
    let mut s = String::with_capacity(text.len() + 8);
    let mut previous: Option<char> = None;
    for c in text.chars() {
        if c.is_ascii_digit() && previous.is_some_and(is_ascii_letter_ci) {
            s.push(' ');
        }
        s.push(c);
        previous = Some(c);
    }
    for (spellings, seconds) in UNITS {
        s = replace_unit(&s, spellings, seconds);
    }
    join_numbers(&s)
}

/// `[a-z]` under `re.IGNORECASE`, which in Python also matches a few
/// non-ASCII letters that fold to ASCII ones.
fn is_ascii_letter_ci(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '\u{130}' | '\u{131}' | '\u{17f}' | '\u{212a}')
}

/// Case-insensitive match of an ASCII spelling at the start of `s`,
/// returning the byte length matched.
fn match_spelling(s: &str, spelling: &str) -> Option<usize> {
    let mut len = 0;
    let mut chars = s.chars();
    for want in spelling.chars() {
        let c = chars.next()?;
        let ok = c.to_ascii_lowercase() == want || (want == 's' && c == '\u{17f}');
        if !ok {
            return None;
        }
        len += c.len_utf8();
    }
    Some(len)
}

/// `(?i)(?<=[\d\s])(spellings)\b` -> `seconds`.
fn replace_unit(s: &str, spellings: &[&str], seconds: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut previous: Option<char> = None;
    let mut pos = 0;
    while pos < s.len() {
        let rest = &s[pos..];
        if previous.is_some_and(|p| p.is_ascii_digit() || is_space(p)) {
            let matched = spellings.iter().find_map(|sp| {
                let len = match_spelling(rest, sp)?;
                // `\b`: the spelling ends in a letter, so a non-word must follow.
                (!rest[len..].chars().next().is_some_and(is_word)).then_some(len)
            });
            if let Some(len) = matched {
                out.push_str(seconds);
                previous = rest[..len].chars().last();
                pos += len;
                continue;
            }
        }
        let Some(c) = rest.chars().next() else { break };
        out.push(c);
        previous = Some(c);
        pos += c.len_utf8();
    }
    out
}

/// `(\d)\s+(\d)` -> `\1+\2` ("1*86400 2*3600" -> "1*86400+2*3600").
fn join_numbers(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        out.push(c);
        i += 1;
        if c.is_ascii_digit() {
            let spaces = chars[i..].iter().take_while(|&&c| is_space(c)).count();
            if let Some(&digit) = chars
                .get(i + spaces)
                .filter(|d| spaces > 0 && d.is_ascii_digit())
            {
                out.push('+');
                out.push(digit);
                i += spaces + 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values are Python's (`MyTime.str2seconds`).
    #[test]
    fn like_fail2ban() {
        let cases: &[(&str, f64)] = &[
            ("10m", 600.0),
            ("1h", 3600.0),
            ("-1", -1.0),
            ("1d 2h", 93600.0),
            ("1d2h", 93600.0),
            ("1h30m", 5400.0),
            ("0.5d", 43200.0),
            ("1year-6mo", 15778800.0),
            ("6 months", 15778800.0),
            (" 1h", 3600.0),
            ("1D", 86400.0),
            ("1mo", 2629800.0),
            ("2 * 3h", 21600.0),
            ("(1+2)*3", 9.0),
            ("7//2", 3.0),
            ("-7%3", 2.0),
            ("2**-1", 0.5),
            ("1h\n", 3600.0),
            ("\t5", 5.0),
            ("5 ", 5.0),
            ("1\u{17f}2", 3.0),
            ("3 weeks", 1814400.0),
            ("1 w 2 d", 777600.0),
            ("5min", 300.0),
            ("1.5", 1.5),
            ("1_000", 1000.0),
            ("00", 0.0),
            ("0xa", 10.0),
            ("1e+3", 1000.0),
            ("-2**2", -4.0),
            ("600", 600.0),
            ("48h", 172800.0),
            ("1w", 604800.0),
            ("(1\n+2)", 3.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("\n1h", 3600.0),
            ("1\n2", 3.0),
            ("5%-3", -1.0),
            ("-5//2", -3.0),
            ("5.5//2", 2.0),
            ("-5.5%2", 0.5),
        ];
        for (text, want) in cases {
            assert_eq!(str2seconds(text), Ok(*want), "{text:?}");
        }
    }

    #[test]
    fn errors_like_fail2ban() {
        let bad = [
            "1 2 3",
            "010m",
            "1e3",
            "0x10",
            "",
            "1x",
            "abc",
            "1h +",
            "(1",
            "1/0",
            "1j",
            "1\n+2",
            "1.e5",
            "(-8)**0.5",
            "1//0",
            "5%0",
        ];
        for text in bad {
            assert!(str2seconds(text).is_err(), "{text:?}");
        }
        let e = str2seconds("5 apples").unwrap_err();
        assert_eq!(e.expression, "5 apples");
        assert!(e.to_string().starts_with("`5 apples` is not a time"), "{e}");
    }

    #[test]
    fn rewriting_is_fail2bans() {
        assert_eq!(rewrite("1d12h"), "1*86400+12*3600");
        assert_eq!(rewrite("1year-6mo"), "1*31557600.0-6*2629800.0");
        assert_eq!(rewrite("1 2 3"), "1+2 3");
    }
}
