//! fail2ban's `MyTime.str2seconds`: `10m`, `1h 30m`, `1d12h`, `-1`,
//! `1year-6mo`, `2 * 3h`.
//!
//! fail2ban rewrites unit abbreviations into `*<seconds>`, joins adjacent
//! numbers with `+` and hands the result to Python's `eval`. The rewriting is
//! reproduced exactly; `eval` is replaced by an evaluator for the arithmetic
//! subset (numbers, `+ - * / // % **`, parentheses), which is all a time
//! value can sensibly contain.

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

#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn float(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Recursive descent over Python's arithmetic grammar.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    /// Open parentheses (inside which line breaks are whitespace).
    depth: usize,
    /// Recursion depth, bounded so no input can overflow the stack.
    nesting: usize,
}

type Res = Result<Num, String>;

const OVERFLOW: &str = "number too large";

impl Parser<'_> {
    fn skip_space(&mut self) {
        // Python's tokenizer: spaces, tabs, form feeds; line breaks only
        // inside parentheses or at the very end.
        while let Some(&b) = self.s.get(self.pos) {
            let newline_ok =
                self.depth > 0 || self.s[self.pos..].iter().all(u8::is_ascii_whitespace);
            if b == b' ' || b == b'\t' || b == b'\x0c' || ((b == b'\n' || b == b'\r') && newline_ok)
            {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.s[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expression_with_trailer(&mut self) -> Res {
        // `eval` ignores leading whitespace, line breaks included.
        while self
            .s
            .get(self.pos)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'))
        {
            self.pos += 1;
        }
        let value = self.sum()?;
        self.skip_space();
        match self.s.get(self.pos) {
            None => Ok(value),
            Some(_) => Err(format!(
                "unexpected `{}`",
                String::from_utf8_lossy(&self.s[self.pos..])
            )),
        }
    }

    fn sum(&mut self) -> Res {
        let mut left = self.term()?;
        loop {
            if self.eat("+") {
                let right = self.term()?;
                left = arith(left, right, i128::checked_add, |a, b| a + b)?;
            } else if self.eat("-") {
                let right = self.term()?;
                left = arith(left, right, i128::checked_sub, |a, b| a - b)?;
            } else {
                return Ok(left);
            }
        }
    }

    fn term(&mut self) -> Res {
        let mut left = self.unary()?;
        loop {
            if self.eat("//") {
                let right = self.unary()?;
                left = floor_div(left, right)?;
            } else if self.eat("/") {
                let right = self.unary()?;
                if right.float() == 0.0 {
                    return Err("division by zero".to_owned());
                }
                left = Num::Float(left.float() / right.float());
            } else if self.eat("*") {
                if self.peek() == Some(b'*') {
                    return Err("unexpected `**`".to_owned());
                }
                let right = self.unary()?;
                left = arith(left, right, i128::checked_mul, |a, b| a * b)?;
            } else if self.eat("%") {
                let right = self.unary()?;
                left = modulo(left, right)?;
            } else {
                return Ok(left);
            }
        }
    }

    fn unary(&mut self) -> Res {
        self.nesting += 1;
        if self.nesting > 200 {
            return Err("too deeply nested".to_owned());
        }
        let result = if self.eat("-") {
            match self.unary()? {
                Num::Int(i) => i
                    .checked_neg()
                    .map(Num::Int)
                    .ok_or_else(|| OVERFLOW.to_owned()),
                Num::Float(f) => Ok(Num::Float(-f)),
            }
        } else if self.eat("+") {
            self.unary()
        } else {
            self.power()
        };
        self.nesting -= 1;
        result
    }

    fn power(&mut self) -> Res {
        let base = self.atom()?;
        if self.eat("**") {
            let exponent = self.unary()?;
            return pow(base, exponent);
        }
        Ok(base)
    }

    fn atom(&mut self) -> Res {
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                self.depth += 1;
                let value = self.sum()?;
                if !self.eat(")") {
                    return Err("missing `)`".to_owned());
                }
                self.depth -= 1;
                Ok(value)
            }
            Some(b'0'..=b'9' | b'.') => self.number(),
            Some(_) => Err(format!(
                "unexpected `{}`",
                String::from_utf8_lossy(&self.s[self.pos..])
            )),
            None => Err("missing number".to_owned()),
        }
    }

    /// Digits accepted by `ok`, with single `_` between them, from `pos`.
    fn digits(&self, pos: &mut usize, ok: fn(u8) -> bool) -> usize {
        let s = self.s;
        let begin = *pos;
        while *pos < s.len()
            && (ok(s[*pos])
                || (s[*pos] == b'_' && *pos > begin && s.get(*pos + 1).is_some_and(|&b| ok(b))))
        {
            *pos += 1;
        }
        *pos - begin
    }

    /// A Python numeric literal (decimal, `0x`/`0o`/`0b`, float, `_` separators).
    fn number(&mut self) -> Res {
        let s = self.s;
        let start = self.pos;
        let mut pos = start;
        let invalid = || Err("invalid number".to_owned());
        let radix = match (s.get(pos), s.get(pos + 1)) {
            (Some(b'0'), Some(b'x' | b'X')) => Some((16, u8::is_ascii_hexdigit as fn(&u8) -> bool)),
            (Some(b'0'), Some(b'o' | b'O')) => {
                Some((8, (|b: &u8| (b'0'..=b'7').contains(b)) as fn(&u8) -> bool))
            }
            (Some(b'0'), Some(b'b' | b'B')) => {
                Some((2, (|b: &u8| *b == b'0' || *b == b'1') as fn(&u8) -> bool))
            }
            _ => None,
        };
        if let Some((radix, ok)) = radix {
            pos += 2;
            // `0x_1f` is valid Python: one underscore may follow the prefix.
            if s.get(pos) == Some(&b'_') {
                pos += 1;
            }
            let begin = pos;
            while pos < s.len()
                && (ok(&s[pos])
                    || (s[pos] == b'_' && pos > begin && s.get(pos + 1).is_some_and(ok)))
            {
                pos += 1;
            }
            if pos == begin || s.get(pos).is_some_and(u8::is_ascii_alphanumeric) {
                return invalid();
            }
            let text = String::from_utf8_lossy(&s[begin..pos]).replace('_', "");
            self.pos = pos;
            return i128::from_str_radix(&text, radix)
                .map(Num::Int)
                .map_err(|_| OVERFLOW.to_owned());
        }
        let int_len = self.digits(&mut pos, |b| b.is_ascii_digit());
        let mut is_float = false;
        if s.get(pos) == Some(&b'.') {
            is_float = true;
            pos += 1;
            if self.digits(&mut pos, |b| b.is_ascii_digit()) == 0 && int_len == 0 {
                return invalid();
            }
        }
        if matches!(s.get(pos), Some(b'e' | b'E')) {
            let mut p = pos + 1;
            if matches!(s.get(p), Some(b'+' | b'-')) {
                p += 1;
            }
            if self.digits(&mut p, |b| b.is_ascii_digit()) == 0 {
                return invalid();
            }
            is_float = true;
            pos = p;
        }
        if s.get(pos)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
        {
            return invalid();
        }
        let text = String::from_utf8_lossy(&s[start..pos]).replace('_', "");
        self.pos = pos;
        if is_float {
            return text.parse::<f64>().map(Num::Float).or_else(|_| invalid());
        }
        if text.len() > 1 && text.starts_with('0') && text.bytes().any(|b| b != b'0') {
            return Err("leading zeros in a decimal number".to_owned());
        }
        text.parse::<i128>()
            .map(Num::Int)
            .map_err(|_| OVERFLOW.to_owned())
    }
}

fn arith(a: Num, b: Num, int: fn(i128, i128) -> Option<i128>, float: fn(f64, f64) -> f64) -> Res {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => int(x, y).map(Num::Int).ok_or_else(|| OVERFLOW.to_owned()),
        _ => Ok(Num::Float(float(a.float(), b.float()))),
    }
}

fn floor_div(a: Num, b: Num) -> Res {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => {
            let q = x.checked_div(y).ok_or_else(|| division_error(y))?;
            // Python rounds towards negative infinity.
            let inexact = x.checked_rem(y).is_some_and(|r| r != 0);
            Ok(Num::Int(if inexact && ((x < 0) != (y < 0)) {
                q - 1
            } else {
                q
            }))
        }
        _ if b.float() == 0.0 => Err("division by zero".to_owned()),
        _ => Ok(Num::Float((a.float() / b.float()).floor())),
    }
}

fn modulo(a: Num, b: Num) -> Res {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => {
            let r = x.checked_rem(y).ok_or_else(|| division_error(y))?;
            // Python's result takes the divisor's sign.
            Ok(Num::Int(if r != 0 && ((r < 0) != (y < 0)) {
                r + y
            } else {
                r
            }))
        }
        _ if b.float() == 0.0 => Err("division by zero".to_owned()),
        _ => {
            let (x, y) = (a.float(), b.float());
            let r = x % y;
            Ok(Num::Float(if r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                r + y
            } else {
                r
            }))
        }
    }
}

fn division_error(divisor: i128) -> String {
    if divisor == 0 {
        "division by zero"
    } else {
        OVERFLOW
    }
    .to_owned()
}

fn pow(base: Num, exponent: Num) -> Res {
    match (base, exponent) {
        (Num::Int(b), Num::Int(e)) if e >= 0 => u32::try_from(e)
            .ok()
            .and_then(|e| b.checked_pow(e))
            .map(Num::Int)
            .ok_or_else(|| OVERFLOW.to_owned()),
        _ => {
            let r = base.float().powf(exponent.float());
            if r.is_nan() {
                Err("complex result".to_owned())
            } else {
                Ok(Num::Float(r))
            }
        }
    }
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
