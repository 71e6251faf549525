//! fail2ban's `journalmatch`: parsed and checked here, so a bad one is
//! reported when the configuration loads, not when libsystemd refuses it.

use std::fmt;

/// A fail2ban `journalmatch` expression.
///
/// Each line is split into words as Python's `shlex.split` does (quotes and
/// backslashes); the words are `FIELD=value` terms ANDed together, a `+` word
/// separates alternatives, and lines are alternatives too. As in libsystemd,
/// terms on the *same* field within one alternative are ORed with each other
/// (`_SYSTEMD_UNIT=a.service _SYSTEMD_UNIT=b.service` matches either unit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalMatch {
    groups: Vec<Vec<String>>,
}

impl JournalMatch {
    /// Parses a `journalmatch` value (possibly several lines).
    pub fn parse(expr: &str) -> Result<Self, MatchError> {
        let mut groups = Vec::new();
        for line in expr.split('\n') {
            let mut group = Vec::new();
            for word in shlex_split(line).map_err(|reason| MatchError::Syntax {
                line: line.to_owned(),
                reason,
            })? {
                if word == "+" {
                    groups.push(std::mem::take(&mut group));
                } else {
                    check_term(&word)?;
                    group.push(word);
                }
            }
            groups.push(group);
        }
        // An empty alternative ("A=1 + + B=2", a trailing "+", a blank line)
        // adds nothing in libsystemd either.
        groups.retain(|group| !group.is_empty());
        Ok(Self { groups })
    }

    /// The alternatives, each a list of `FIELD=value` terms.
    pub fn groups(&self) -> &[Vec<String>] {
        &self.groups
    }

    /// No terms at all: every entry matches.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Shown as fail2ban's `status` shows it: alternatives joined by ` + `.
impl fmt::Display for JournalMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            f.write_str(&group.join(" "))?;
        }
        Ok(())
    }
}

/// A `journalmatch` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// Unbalanced quotes or a trailing backslash.
    #[error("journalmatch `{line}`: {reason}")]
    Syntax { line: String, reason: &'static str },
    /// A word that libsystemd would reject as a match.
    #[error(
        "journalmatch term `{term}` is not FIELD=value with FIELD made of A-Z, 0-9 and _ (not starting with __)"
    )]
    Term { term: String },
}

/// libsystemd's match_is_valid(): `FIELD=value`, FIELD non-empty, of
/// `A-Z0-9_`, not an address field (`__...`).
fn check_term(term: &str) -> Result<(), MatchError> {
    let bad = || MatchError::Term {
        term: term.to_owned(),
    };
    let (field, _value) = term.split_once('=').ok_or_else(bad)?;
    if field.is_empty()
        || field.starts_with("__")
        || !field
            .bytes()
            .all(|b| b == b'_' || b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(bad());
    }
    Ok(())
}

/// Python's `shlex.split(line)` (POSIX mode, no comments): whitespace
/// separates words; '...' is literal; in "..." a backslash escapes only `"`
/// and `\`; elsewhere a backslash escapes any character.
fn shlex_split(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word has started (so `''` yields an empty word).
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                word.push(chars.next().ok_or("no escaped character")?);
                in_word = true;
            }
            '\'' => {
                loop {
                    match chars.next().ok_or("no closing quotation")? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
                in_word = true;
            }
            '"' => {
                loop {
                    match chars.next().ok_or("no closing quotation")? {
                        '"' => break,
                        '\\' => match chars.next().ok_or("no escaped character")? {
                            c @ ('"' | '\\') => word.push(c),
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        c => word.push(c),
                    }
                }
                in_word = true;
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(expr: &str) -> Vec<Vec<String>> {
        JournalMatch::parse(expr).unwrap().groups().to_vec()
    }

    #[test]
    fn journalmatch_groups_like_fail2ban() {
        assert_eq!(
            groups("_SYSTEMD_UNIT=dovecot.service"),
            [["_SYSTEMD_UNIT=dovecot.service"]]
        );
        assert_eq!(
            groups("_SYSTEMD_UNIT=sshd.service + _COMM=sshd"),
            [["_SYSTEMD_UNIT=sshd.service"], ["_COMM=sshd"]]
        );
        assert_eq!(
            groups("A=1 B=2 + C=3\nD=4"),
            [vec!["A=1", "B=2"], vec!["C=3"], vec!["D=4"]]
        );
        // Empty alternatives vanish, as in libsystemd.
        assert_eq!(groups("+ A=1 + + B=2 +\n\n"), [["A=1"], ["B=2"]]);
        assert!(JournalMatch::parse("").unwrap().is_empty());
        // `+` only as a word of its own.
        assert_eq!(groups("MESSAGE=a+b"), [["MESSAGE=a+b"]]);
    }

    #[test]
    fn journalmatch_display_is_fail2ban_status() {
        let m = JournalMatch::parse("A=1 B=2 + C=3").unwrap();
        assert_eq!(m.to_string(), "A=1 B=2 + C=3");
    }

    #[test]
    fn shlex_like_python() {
        // Expected values from Python 3.11's shlex.split.
        assert_eq!(
            shlex_split(r#"A="x y" B='p q'"#).unwrap(),
            ["A=x y", "B=p q"]
        );
        assert_eq!(shlex_split(r#"A=x\ y"#).unwrap(), ["A=x y"]);
        assert_eq!(shlex_split(r#""a\"b\\c\d""#).unwrap(), [r#"a"b\c\d"#]);
        assert_eq!(shlex_split(r#"'a\b'"#).unwrap(), [r"a\b"]);
        assert_eq!(shlex_split("a '' b").unwrap(), ["a", "", "b"]);
        assert_eq!(shlex_split("A=#x").unwrap(), ["A=#x"]);
        assert_eq!(shlex_split("  \t ").unwrap(), Vec::<String>::new());
        assert_eq!(shlex_split("'a"), Err("no closing quotation"));
        assert_eq!(shlex_split("a\\"), Err("no escaped character"));
    }

    #[test]
    fn bad_terms_are_rejected() {
        for term in ["noequals", "=x", "lower=x", "__CURSOR=x", "A-B=x", "Ä=x"] {
            assert!(
                matches!(JournalMatch::parse(term), Err(MatchError::Term { .. })),
                "{term}"
            );
        }
        for term in ["A=", "_PID=1", "1A=x", "_=x", "A=x=y"] {
            assert!(JournalMatch::parse(term).is_ok(), "{term}");
        }
        assert!(matches!(
            JournalMatch::parse("A='x"),
            Err(MatchError::Syntax { .. })
        ));
    }
}
