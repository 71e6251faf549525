//! Python's notion of whitespace, word characters and case folding.
//!
//! fail2ban's behaviour is defined by CPython's `str` methods and `re` classes,
//! which differ from Rust's in small ways (e.g. Python counts U+001C..U+001F
//! as whitespace); these helpers follow Python.

/// `str.isspace()` for one character (also what `\s` matches in a `str` regex).
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `\w` in a `str` regex, approximated by Unicode alphanumerics and `_`.
pub(crate) fn is_word(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// `str.strip()`.
pub(crate) fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// `str.rstrip()`.
pub(crate) fn rstrip(s: &str) -> &str {
    s.trim_end_matches(is_space)
}

/// `str.lower()`, which is what configparser's `optionxform` does to option names.
pub(crate) fn lower(s: &str) -> String {
    if s.bytes().all(|b| !b.is_ascii_uppercase() && b.is_ascii()) {
        s.to_owned()
    } else {
        s.to_lowercase()
    }
}

/// Python's `int()` on a string: surrounding whitespace, an optional sign,
/// decimal digits with single `_` between them.
pub(crate) fn parse_int(s: &str) -> Option<i64> {
    let s = strip(s);
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut value: i64 = 0;
    for b in digits.bytes().filter(|&b| b != b'_') {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// fail2ban's `_as_bool`: true only for `1`, `on`, `true`, `yes` (any case).
pub(crate) fn as_bool(s: &str) -> bool {
    matches!(lower(s).as_str(), "1" | "on" | "true" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_includes_information_separators() {
        assert!(is_space('\u{1c}') && is_space('\u{3000}') && is_space('\u{85}'));
        assert!(!is_space('\u{200b}'));
        assert_eq!(strip("\u{1f} a b \t"), "a b");
    }

    #[test]
    fn int_like_python() {
        assert_eq!(parse_int(" 12 "), Some(12));
        assert_eq!(parse_int("-1_000"), Some(-1000));
        assert_eq!(parse_int("+5"), Some(5));
        assert_eq!(parse_int("1__0"), None);
        assert_eq!(parse_int("_1"), None);
        assert_eq!(parse_int("0x10"), None);
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_int("99999999999999999999"), None);
    }

    #[test]
    fn bool_like_fail2ban() {
        assert!(as_bool("Yes") && as_bool("1") && as_bool("ON"));
        assert!(!as_bool("y") && !as_bool("enabled") && !as_bool(""));
    }
}
