//! fail2ban's small value syntaxes: `name[opt=value, ...]` (extractOptions),
//! word lists (splitwords) and journal matches (shlex).

use indexmap::IndexMap;

use super::pystr::{is_space, is_word, strip};

/// A problem in `name[opt=value, ...]`; `at` is a character offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// The text is not `name` optionally followed by `[...]` groups.
    #[error("`{text}`: expected `name` or `name[opt=value, ...]`")]
    Syntax {
        /// The whole text.
        text: String,
    },
    /// Something follows a value that is neither `,` nor `][`.
    #[error("`{text}`: unexpected `{found}` after option `{option}` (character {at})")]
    AfterValue {
        /// The whole text.
        text: String,
        /// The option just read.
        option: String,
        /// Where the unexpected text starts.
        at: usize,
        /// The unexpected text (at most 25 characters).
        found: String,
    },
    /// Text where an `opt=value` was expected.
    #[error("`{text}`: expected `opt=value` at character {at}: `{found}`")]
    ExpectedOption {
        /// The whole text.
        text: String,
        /// Where the unexpected text starts.
        at: usize,
        /// The unexpected text (at most 25 characters).
        found: String,
    },
    /// An unterminated quote in a journal match.
    #[error("`{text}`: unterminated quote")]
    Quote {
        /// The whole text.
        text: String,
    },
}

/// A name with options, e.g. a jail's `filter = sshd[mode=aggressive]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameWithOptions {
    /// The name exactly as written (fail2ban does not trim it).
    pub name: String,
    /// The options in order (a repeated option keeps its first position and
    /// last value); names and values are trimmed.
    pub options: IndexMap<String, String>,
}

impl NameWithOptions {
    /// fail2ban's `extractOptions`: `name`, `name[a=1, b="x,y", c='z']`,
    /// `name[a=1][b=2]`. Values are quoted with `"` or `'`, or run up to the
    /// next `,` or `]`.
    pub fn parse(text: &str) -> Result<Self, OptionsError> {
        let syntax = || OptionsError::Syntax {
            text: text.to_owned(),
        };
        // `^([^\[]+)(?:\[(.*)\])?\s*$`
        let name_end = text.find('[').unwrap_or(text.len());
        if name_end == 0 {
            return Err(syntax());
        }
        let name = &text[..name_end];
        let rest = &text[name_end..];
        let options_text = if rest.is_empty() {
            None
        } else {
            // Up to the last `]` that only whitespace follows.
            let close = rest
                .char_indices()
                .filter(|&(i, c)| c == ']' && rest[i + 1..].chars().all(is_space))
                .map(|(i, _)| i)
                .next()
                .ok_or_else(syntax)?;
            Some(&rest[1..close])
        };
        let mut options = IndexMap::new();
        if let Some(options_text) = options_text.filter(|s| !s.is_empty()) {
            parse_options(text, options_text, &mut options)?;
        }
        Ok(Self {
            name: name.to_owned(),
            options,
        })
    }

    /// Back to `name[opt=value, ...]` as [`Self::parse`] reads it: values
    /// bare where they can be, else quoted. `None` when no spelling reads
    /// back the same (a value holding both quote characters, or spaces at
    /// its ends, which fail2ban trims).
    pub fn to_spec(&self) -> Option<String> {
        if self.name.is_empty() || self.name.contains('[') {
            return None;
        }
        if self.options.is_empty() {
            return Some(self.name.clone());
        }
        let mut parts = Vec::with_capacity(self.options.len());
        for (option, value) in &self.options {
            let name_ok =
                !option.is_empty() && option.chars().all(|c| is_word(c) || c == '-' || c == '.');
            if !name_ok || strip(value) != value {
                return None;
            }
            let bare = !value.contains([',', ']', '\n']) && !value.starts_with(['"', '\'']);
            let value = if bare {
                value.clone()
            } else if !value.contains('"') {
                format!("\"{value}\"")
            } else if !value.contains('\'') {
                format!("'{value}'")
            } else {
                return None;
            };
            parts.push(format!("{option}={value}"));
        }
        Some(format!("{}[{}]", self.name, parts.join(", ")))
    }
}

/// The loop over `OPTION_EXTRACT_CRE` matches.
fn parse_options(
    whole: &str,
    s: &str,
    options: &mut IndexMap<String, String>,
) -> Result<(), OptionsError> {
    let char_at = |byte: usize| s[..byte].chars().count();
    let excerpt = |byte: usize| s[byte..].chars().take(25).collect::<String>();
    let mut pos = 0;
    loop {
        // `\s*([\w\-_\.]+)=`
        let start = pos + s[pos..].len() - s[pos..].trim_start_matches(is_space).len();
        let name_len: usize = s[start..]
            .chars()
            .take_while(|&c| is_word(c) || c == '-' || c == '.')
            .map(char::len_utf8)
            .sum();
        let eq = start + name_len;
        if name_len > 0 && s[eq..].starts_with('=') {
            let name = &s[start..eq];
            let value_start = eq + 1;
            let quoted = ['"', '\''].into_iter().find_map(|q| {
                let inner = s[value_start..].strip_prefix(q)?;
                let close = inner.find(q)?;
                Some((&inner[..close], value_start + 1 + close + 1))
            });
            let (value, end) = quoted.unwrap_or_else(|| {
                let len = s[value_start..]
                    .find([',', ']'])
                    .unwrap_or(s.len() - value_start);
                (&s[value_start..value_start + len], value_start + len)
            });
            options.insert(strip(name).to_owned(), strip(value).to_owned());
            let after = &s[end..];
            pos = if let Some(next) = after.strip_prefix(',') {
                s.len() - next.len()
            } else if let Some(group) = after
                .strip_prefix(']')
                .map(|a| a.trim_start_matches(is_space))
                .and_then(|a| a.strip_prefix('['))
            {
                s.len() - group.len()
            } else if after.is_empty() || after == "\n" {
                return Ok(());
            } else {
                return Err(OptionsError::AfterValue {
                    text: whole.to_owned(),
                    option: name.to_owned(),
                    at: char_at(end),
                    found: excerpt(end),
                });
            };
            continue;
        }
        // `,?\s*$`: only a trailing comma and whitespace are left.
        let tail = s[pos..].strip_prefix(',').unwrap_or(&s[pos..]);
        if tail.chars().all(is_space) {
            return Ok(());
        }
        return Err(OptionsError::ExpectedOption {
            text: whole.to_owned(),
            at: char_at(pos),
            found: excerpt(pos),
        });
    }
}

/// fail2ban's `splitWithOptions`: a jail's `action` value split into
/// actions (`name[opt=value, ...]`, brackets may span lines), each trimmed,
/// empty ones dropped.
pub fn split_actions(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(c) = s[pos..].chars().next() {
        match split_match(s, pos) {
            Some(end) => {
                let action = strip(&s[pos..end]);
                if !action.is_empty() {
                    out.push(action);
                }
                pos = end;
            }
            None => pos += c.len_utf8(),
        }
    }
    out
}

fn skip_space(s: &str, pos: usize) -> usize {
    pos + s[pos..].len() - s[pos..].trim_start_matches(is_space).len()
}

/// One `OPTION_SPLIT_CRE` match at `pos`: its end.
fn split_match(s: &str, pos: usize) -> Option<usize> {
    let first = s[pos..].chars().next()?;
    if is_space(first) {
        return None;
    }
    // `[^\[\s]+` followed by an optional `[...]` group, `\s*` and a
    // lookahead for whitespace or the end; else `\S+`.
    let name_end = s[pos..]
        .find(|c: char| c == '[' || is_space(c))
        .map_or(s.len(), |i| pos + i);
    if name_end > pos {
        let mut memo = std::collections::HashMap::new();
        let mut candidates = group_ends(s, name_end, &mut memo);
        candidates.push(name_end);
        for candidate in candidates {
            let spaces_end = skip_space(s, candidate);
            if spaces_end == s.len() {
                return Some(spaces_end);
            }
            if spaces_end > candidate {
                // Give back one whitespace character for the lookahead.
                let last = s[..spaces_end]
                    .chars()
                    .next_back()
                    .map_or(1, char::len_utf8);
                return Some(spaces_end - last);
            }
        }
    }
    Some(s[pos..].find(is_space).map_or(s.len(), |i| pos + i))
}

/// Ends of `\s*\[\s*(?:item)*\]` at `pos`, in the regex's preference order.
fn group_ends(
    s: &str,
    pos: usize,
    memo: &mut std::collections::HashMap<usize, Vec<usize>>,
) -> Vec<usize> {
    let p = skip_space(s, pos);
    if !s[p..].starts_with('[') {
        return Vec::new();
    }
    item_ends(s, skip_space(s, p + 1), memo)
}

/// Ends of `(?:[\w\-_\.]+=(?:"[^"]*"|'[^']*'|[^,\]]*)\s*(?:,|\]\s*\[)?\s*)*\]`
/// at `pos`: more items first (greedy), alternatives in order. Memoised
/// by position, so quoted values (which also match unquoted) stay linear.
fn item_ends(
    s: &str,
    pos: usize,
    memo: &mut std::collections::HashMap<usize, Vec<usize>>,
) -> Vec<usize> {
    if let Some(known) = memo.get(&pos) {
        return known.clone();
    }
    // A cycle cannot occur (every item consumes text); mark to be safe.
    memo.insert(pos, Vec::new());
    let mut out: Vec<usize> = Vec::new();
    let name_len: usize = s[pos..]
        .chars()
        .take_while(|&c| is_word(c) || c == '-' || c == '.')
        .map(char::len_utf8)
        .sum();
    let eq = pos + name_len;
    if name_len > 0 && s[eq..].starts_with('=') {
        let v = eq + 1;
        let mut value_ends = Vec::new();
        for quote in ['"', '\''] {
            if let Some(inner) = s[v..].strip_prefix(quote)
                && let Some(close) = inner.find(quote)
            {
                value_ends.push(v + 1 + close + 1);
            }
        }
        value_ends.push(s[v..].find([',', ']']).map_or(s.len(), |i| v + i));
        for value_end in value_ends {
            let q = skip_space(s, value_end);
            let mut separators = Vec::new();
            if s[q..].starts_with(',') {
                separators.push(q + 1);
            }
            if s[q..].starts_with(']') {
                let r = skip_space(s, q + 1);
                if s[r..].starts_with('[') {
                    separators.push(r + 1);
                }
            }
            separators.push(q);
            for separator in separators {
                for end in item_ends(s, skip_space(s, separator), memo) {
                    if !out.contains(&end) {
                        out.push(end);
                    }
                }
            }
        }
    }
    if s[pos..].starts_with(']') && !out.contains(&(pos + 1)) {
        out.push(pos + 1);
    }
    memo.insert(pos, out.clone());
    out
}

/// fail2ban's `splitwords`: words separated by spaces, commas or newlines.
pub fn split_words(s: &str) -> Vec<String> {
    s.split([' ', ',', '\n'])
        .map(strip)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Python's `shlex.split(s)` (POSIX mode, no comments), which fail2ban
/// applies to each `journalmatch` line.
pub fn shlex_split(s: &str) -> Result<Vec<String>, OptionsError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                words.extend(word.take());
            }
            '\\' => {
                let next = chars
                    .next()
                    .ok_or_else(|| OptionsError::Quote { text: s.to_owned() })?;
                word.get_or_insert_with(String::new).push(next);
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(OptionsError::Quote { text: s.to_owned() }),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        // Inside double quotes a backslash escapes only `"` and `\`.
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(OptionsError::Quote { text: s.to_owned() }),
                        },
                        Some(c) => w.push(c),
                        None => return Err(OptionsError::Quote { text: s.to_owned() }),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> (String, Vec<(String, String)>) {
        let n = NameWithOptions::parse(s).unwrap();
        (n.name, n.options.into_iter().collect())
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    // Expected values are Python's (`fail2ban.helpers.extractOptions`).
    #[test]
    fn specs_read_back_as_written() {
        for spec in [
            "sshd",
            "dovecot[mode=normal]",
            "x[a=\"b,c\", d=e, f=\"q]\", g='say \"hi\"', h=]",
            "x[failregex=\"^fail <HOST> (?:\\S+)$\"]",
        ] {
            let parsed = NameWithOptions::parse(spec).unwrap();
            let written = parsed.to_spec().unwrap();
            assert_eq!(
                NameWithOptions::parse(&written).unwrap(),
                parsed,
                "{spec} -> {written}"
            );
        }
        assert_eq!(
            NameWithOptions::parse("x [a=\"b,c\"]")
                .unwrap()
                .to_spec()
                .as_deref(),
            Some("x [a=\"b,c\"]")
        );
        let mut both = NameWithOptions::parse("x").unwrap();
        both.options
            .insert("a".into(), "it's \"both\", and a comma".into());
        assert_eq!(both.to_spec(), None);
        both.options.insert("a".into(), " padded".into());
        assert_eq!(both.to_spec(), None);
    }

    #[test]
    fn extract_options_like_fail2ban() {
        assert_eq!(parsed("sshd"), ("sshd".into(), vec![]));
        assert_eq!(parsed("x[a=1]  "), ("x".into(), pairs(&[("a", "1")])));
        assert_eq!(
            parsed("x [a=\"b,c\", d=e]"),
            ("x ".into(), pairs(&[("a", "b,c"), ("d", "e")]))
        );
        assert_eq!(
            parsed("x[a=1][b=2]"),
            ("x".into(), pairs(&[("a", "1"), ("b", "2")]))
        );
        assert_eq!(parsed("x[a=1,]"), ("x".into(), pairs(&[("a", "1")])));
        assert_eq!(parsed("x[a=\"q]\"]"), ("x".into(), pairs(&[("a", "q]")])));
        assert_eq!(parsed("x\n"), ("x\n".into(), vec![]));
        assert_eq!(parsed("x[a=1\n]"), ("x".into(), pairs(&[("a", "1")])));
        assert_eq!(
            parsed("x[b=\"unterminated]"),
            ("x".into(), pairs(&[("b", "\"unterminated")]))
        );
        assert_eq!(
            parsed("x[a=1 ,b=2]"),
            ("x".into(), pairs(&[("a", "1"), ("b", "2")]))
        );
        assert_eq!(
            parsed("/etc/fail2ban/filter.d/dovecot.conf[mode=aggressive]"),
            (
                "/etc/fail2ban/filter.d/dovecot.conf".into(),
                pairs(&[("mode", "aggressive")])
            )
        );
        assert_eq!(parsed("x[]"), ("x".into(), vec![]));
    }

    #[test]
    fn extract_options_errors_like_fail2ban() {
        let e = NameWithOptions::parse("x[a = 1]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`x[a = 1]`: expected `opt=value` at character 0: `a = 1`"
        );
        let e = NameWithOptions::parse("x[a=\"b\"c]").unwrap_err();
        assert!(
            matches!(e, OptionsError::AfterValue { at: 5, ref found, .. } if found == "c"),
            "{e}"
        );
        assert!(NameWithOptions::parse("x[a=1]z").is_err());
        assert!(NameWithOptions::parse("[a=1]").is_err());
        assert!(NameWithOptions::parse("").is_err());
        assert!(NameWithOptions::parse("x[a=1]]x").is_err());
        let e = NameWithOptions::parse("x[a='it''s']").unwrap_err();
        assert!(matches!(e, OptionsError::AfterValue { at: 6, .. }), "{e}");
        let e = NameWithOptions::parse("x[ a=1 , b = 2]").unwrap_err();
        assert!(
            matches!(e, OptionsError::ExpectedOption { at: 6, .. }),
            "{e}"
        );
    }

    // Expected values are Python's (`fail2ban.helpers.splitWithOptions`).
    #[test]
    fn actions_split_like_fail2ban() {
        let v = "iptables-multiport[port=\"pop3,imap\", protocol=\"tcp\", chain=\"INPUT\"]\n\
                 sendmail-whois[sender=\"a b\", dest=\"root\"]";
        assert_eq!(
            split_actions(v),
            [
                "iptables-multiport[port=\"pop3,imap\", protocol=\"tcp\", chain=\"INPUT\"]",
                "sendmail-whois[sender=\"a b\", dest=\"root\"]"
            ]
        );
        assert_eq!(split_actions("a b  c"), ["a", "b", "c"]);
        assert_eq!(split_actions("a[x=1] [y]"), ["a[x=1]", "[y]"]);
        assert_eq!(split_actions("a [x=1]\nb"), ["a [x=1]", "b"]);
        assert_eq!(split_actions("a[x=\"1\"y]"), ["a[x=\"1\"y]"]);
        assert_eq!(
            split_actions("a[x=1][y=2] b[z=\n 3]"),
            ["a[x=1][y=2]", "b[z=\n 3]"]
        );
        assert_eq!(split_actions("a[x=oops b"), ["a[x=oops", "b"]);
        assert!(split_actions("  \n ").is_empty());
    }

    #[test]
    fn words_split_on_space_comma_newline() {
        assert_eq!(
            split_words("127.0.0.1/8 ::1,\n  host.example, ,"),
            ["127.0.0.1/8", "::1", "host.example"]
        );
        assert!(split_words("").is_empty());
    }

    #[test]
    fn shlex_like_python() {
        assert_eq!(
            shlex_split("_SYSTEMD_UNIT=sshd.service + _COMM=sshd").unwrap(),
            ["_SYSTEMD_UNIT=sshd.service", "+", "_COMM=sshd"]
        );
        assert_eq!(
            shlex_split(r#"a="b c" 'd e'f \g"#).unwrap(),
            ["a=b c", "d ef", "g"]
        );
        assert_eq!(shlex_split(r#""a\"b\n""#).unwrap(), ["a\"b\\n"]);
        assert_eq!(shlex_split("''").unwrap(), [""]);
        assert!(shlex_split("'open").is_err());
    }
}
