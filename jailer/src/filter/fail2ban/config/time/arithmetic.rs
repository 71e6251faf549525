//! The evaluator standing in for Python's `eval`: numbers, `+ - * / // % **`
//! and parentheses with Python's semantics, which is all a time can hold.

#[derive(Clone, Copy, Debug)]
pub(super) enum Num {
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
pub(super) struct Parser<'a> {
    pub(super) s: &'a [u8],
    pub(super) pos: usize,
    /// Open parentheses (inside which line breaks are whitespace).
    pub(super) depth: usize,
    /// Recursion depth, bounded so no input can overflow the stack.
    pub(super) nesting: usize,
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

    pub(super) fn expression_with_trailer(&mut self) -> Res {
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
