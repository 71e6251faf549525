//! One file, as Python's `configparser.ConfigParser._read` parses it with the
//! settings fail2ban uses: delimiters `=` and `:`, full-line comments `#`
//! and `;`, inline comments `;` only at line start or after whitespace,
//! `strict=True` (no duplicate section or option within one file), empty
//! lines kept inside values, option names lower-cased, `[DEFAULT]` apart.

use std::{path::Path, sync::Arc};

use indexmap::IndexMap;

use super::super::{
    pystr::{is_space, lower, rstrip, strip},
    text::{Origin, Text},
};
use super::{Ini, IniError, Section};

/// Option being built: its lines (each already stripped) and their numbers.
type Lines = Vec<(String, usize)>;

struct RawSection {
    header_line: usize,
    options: IndexMap<String, Lines>,
}

/// Which section the parser is in.
#[derive(Clone, PartialEq)]
enum Current {
    Default,
    Named(String),
}

/// Parses `source` (the content of `path`) into an [`Ini`] of its own.
pub(crate) fn parse(path: &Arc<Path>, source: &str) -> Result<Ini, IniError> {
    let mut defaults: IndexMap<String, Lines> = IndexMap::new();
    let mut sections: IndexMap<String, RawSection> = IndexMap::new();
    // configparser's `elements_added`: sections and options seen in this file.
    let mut seen_options: std::collections::HashSet<(String, String)> = Default::default();
    let mut current: Option<Current> = None;
    // The option that continuation lines extend (None right after a header).
    let mut option: Option<String> = None;
    let mut indent_level = 0usize;
    // configparser reports bad lines only after reading the whole file.
    let mut first_bad_line: Option<IniError> = None;

    for (index, line) in universal_lines(source).enumerate() {
        let lineno = index + 1;
        let comment_start = comment_start(line);
        let value = strip(&line[..comment_start.unwrap_or(line.len())]);
        // The option that blank and more indented lines extend.
        let extended = match (&current, option.as_deref()) {
            (Some(cur), Some(name)) if !name.is_empty() => {
                options_mut(&mut defaults, &mut sections, cur).and_then(|o| o.get_mut(name))
            }
            _ => None,
        };
        if value.is_empty() {
            // A blank line (not a comment) inside a value is kept as an empty line.
            if comment_start.is_none()
                && let Some(lines) = extended
            {
                lines.push((String::new(), lineno));
            }
            continue;
        }
        let indent = line.chars().take_while(|&c| is_space(c)).count();
        if indent > indent_level
            && let Some(lines) = extended
        {
            lines.push((value.to_owned(), lineno));
            continue;
        }
        indent_level = indent;
        if let Some(header) = section_header(value) {
            if sections.contains_key(header) {
                return Err(IniError::DuplicateSection {
                    path: path.to_path_buf(),
                    line: lineno,
                    section: header.to_owned(),
                });
            }
            current = Some(if header == "DEFAULT" {
                Current::Default
            } else {
                sections.insert(
                    header.to_owned(),
                    RawSection {
                        header_line: lineno,
                        options: IndexMap::new(),
                    },
                );
                Current::Named(header.to_owned())
            });
            option = None;
            continue;
        }
        let Some(cur) = &current else {
            return Err(IniError::MissingSectionHeader {
                path: path.to_path_buf(),
                line: lineno,
                text: line.to_owned(),
            });
        };
        let Some(delimiter) = value.find(['=', ':']) else {
            first_bad_line.get_or_insert_with(|| bad_line(path, lineno, line));
            continue;
        };
        let name = lower(rstrip(&value[..delimiter]));
        if name.is_empty() {
            first_bad_line.get_or_insert_with(|| bad_line(path, lineno, line));
        }
        let section_name = match cur {
            Current::Default => "DEFAULT".to_owned(),
            Current::Named(n) => n.clone(),
        };
        if !seen_options.insert((section_name.clone(), name.clone())) {
            return Err(IniError::DuplicateOption {
                path: path.to_path_buf(),
                line: lineno,
                section: section_name,
                option: name,
            });
        }
        let text = strip(&value[delimiter + 1..]).to_owned();
        if let Some(options) = options_mut(&mut defaults, &mut sections, cur) {
            options.insert(name.clone(), vec![(text, lineno)]);
        }
        option = Some(name);
    }
    if let Some(error) = first_bad_line {
        return Err(error);
    }

    let join = |options: IndexMap<String, Lines>| -> IndexMap<String, Text> {
        options
            .into_iter()
            .map(|(name, mut lines)| {
                // `'\n'.join(lines).rstrip()`: lines are stripped, so only
                // trailing empty lines go.
                while lines.last().is_some_and(|(l, _)| l.is_empty()) {
                    lines.pop();
                }
                let text = Text::from_lines(
                    lines
                        .iter()
                        .map(|(l, n)| (l.as_str(), Origin::new(path.clone(), *n))),
                );
                (name, text)
            })
            .collect()
    };
    Ok(Ini {
        defaults: join(defaults),
        sections: sections
            .into_iter()
            .map(|(name, raw)| {
                let section = Section {
                    header: Origin::new(path.clone(), raw.header_line),
                    options: join(raw.options),
                };
                (name, section)
            })
            .collect(),
        files: vec![path.to_path_buf()],
    })
}

fn bad_line(path: &Arc<Path>, line: usize, text: &str) -> IniError {
    IniError::Syntax {
        path: path.to_path_buf(),
        line,
        text: text.to_owned(),
    }
}

fn options_mut<'a>(
    defaults: &'a mut IndexMap<String, Lines>,
    sections: &'a mut IndexMap<String, RawSection>,
    current: &Current,
) -> Option<&'a mut IndexMap<String, Lines>> {
    match current {
        Current::Default => Some(defaults),
        Current::Named(name) => sections.get_mut(name).map(|s| &mut s.options),
    }
}

/// Lines as Python's text mode yields them: `\r\n`, `\r` and `\n` all end a
/// line (other Unicode separators do not).
fn universal_lines(source: &str) -> impl Iterator<Item = &str> {
    let mut rest = source;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            usize::from(end < rest.len())
        };
        rest = &rest[end + skip..];
        Some(line)
    })
}

/// Where a comment starts: the whole line for `#`/`;` lines, else the first
/// `;` at the start or after whitespace (`inline_comment_prefixes=";"`).
fn comment_start(line: &str) -> Option<usize> {
    let trimmed = strip(line);
    if trimmed.starts_with('#') || trimmed.starts_with(';') {
        return Some(0);
    }
    let mut previous: Option<char> = None;
    for (i, c) in line.char_indices() {
        if c == ';' && previous.is_none_or(is_space) {
            return Some(i);
        }
        previous = Some(c);
    }
    None
}

/// `\[(?P<header>.+)\]` matched at the start: up to the last `]`.
fn section_header(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('[')?;
    let close = rest.rfind(']')?;
    (close > 0).then(|| &rest[..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(source: &str) -> Result<Ini, IniError> {
        parse(&Arc::from(Path::new("t.conf")), source)
    }

    fn raw(ini: &Ini, section: &str, option: &str) -> Option<String> {
        ini.get_raw(section, option).map(|t| t.as_str().to_owned())
    }

    #[test]
    fn continuation_lines_join_with_newlines_and_keep_blank_lines() {
        let ini = parse_str("[s]\nfailregex = a\n   b\n\n   c\n# comment\n   d\n\nnext: 1\n\n\n")
            .unwrap();
        assert_eq!(raw(&ini, "s", "failregex").unwrap(), "a\nb\n\nc\nd");
        assert_eq!(raw(&ini, "s", "next").unwrap(), "1");
        let value = ini.get_raw("s", "failregex").unwrap();
        let lines: Vec<_> = value.lines().map(|(l, o)| (l, o.map(|o| o.line))).collect();
        assert_eq!(lines[3], ("c", Some(5)));
        assert_eq!(lines[4], ("d", Some(7)));
    }

    #[test]
    fn empty_first_line_is_kept() {
        let ini = parse_str("[s]\nlogpath =\n  /a\n  /b\n").unwrap();
        assert_eq!(raw(&ini, "s", "logpath").unwrap(), "\n/a\n/b");
    }

    #[test]
    fn inline_comments_need_whitespace_before_the_semicolon() {
        let ini = parse_str(
            "[s]\na = failure; logname=x ; comment\nb = x;y\nc = v\t;tab\nd = %%# not a comment\n",
        )
        .unwrap();
        assert_eq!(raw(&ini, "s", "a").unwrap(), "failure; logname=x");
        assert_eq!(raw(&ini, "s", "b").unwrap(), "x;y");
        assert_eq!(raw(&ini, "s", "c").unwrap(), "v");
        assert_eq!(raw(&ini, "s", "d").unwrap(), "%%# not a comment");
    }

    #[test]
    fn comment_lines_inside_values_are_dropped_but_indented_semicolon_lines_too() {
        let ini = parse_str("[s]\na = 1\n  ; gone\n  # gone\n  2\n").unwrap();
        assert_eq!(raw(&ini, "s", "a").unwrap(), "1\n2");
    }

    #[test]
    fn option_names_are_lowercased_and_split_at_the_first_delimiter() {
        let ini = parse_str("[S]\nFooBar = 1\nurl: http://x=y\nkey  =  v  \n  more = x\n").unwrap();
        assert_eq!(raw(&ini, "S", "foobar").unwrap(), "1");
        assert_eq!(raw(&ini, "S", "url").unwrap(), "http://x=y");
        // An indented line continues the value even if it looks like an option.
        assert_eq!(raw(&ini, "S", "key").unwrap(), "v\nmore = x");
        assert!(
            ini.get_raw("s", "foobar").is_none(),
            "section names are case-sensitive"
        );
    }

    #[test]
    fn default_section_is_apart_and_may_reopen() {
        let ini = parse_str("[DEFAULT]\na = 1\n[x]\nb = 2\n[DEFAULT]\nc = 3\n").unwrap();
        assert_eq!(raw(&ini, "x", "a").unwrap(), "1");
        assert_eq!(raw(&ini, "x", "c").unwrap(), "3");
        assert_eq!(ini.sections().collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn section_header_takes_up_to_the_last_bracket() {
        let ini = parse_str("[a]b] trailing\nx = 1\n[Init?family=inet6]\ny = 2\n").unwrap();
        assert_eq!(
            ini.sections().collect::<Vec<_>>(),
            ["a]b", "Init?family=inet6"]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_str("x = 1\n").unwrap_err();
        assert!(
            matches!(e, IniError::MissingSectionHeader { line: 1, .. }),
            "{e}"
        );
        let e = parse_str("[s]\na = 1\njunk\nb = 2\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:3: not a section header, option or comment: `junk`"
        );
        let e = parse_str("[s]\n= 1\n").unwrap_err();
        assert!(matches!(e, IniError::Syntax { line: 2, .. }), "{e}");
        let e = parse_str("[s]\na = 1\n[t]\n[s]\n").unwrap_err();
        assert!(
            matches!(e, IniError::DuplicateSection { line: 4, .. }),
            "{e}"
        );
        let e = parse_str("[s]\na = 1\nA = 2\n").unwrap_err();
        assert!(
            matches!(e, IniError::DuplicateOption { line: 3, .. }),
            "{e}"
        );
        // A duplicate is reported at once, bad lines only at the end.
        let e = parse_str("[s]\njunk\na = 1\na = 2\n").unwrap_err();
        assert!(
            matches!(e, IniError::DuplicateOption { line: 4, .. }),
            "{e}"
        );
        assert!(parse_str("[]\n").is_err());
    }

    #[test]
    fn universal_newlines() {
        let ini = parse_str("[s]\r\na = 1\r  2\rb = 3").unwrap();
        assert_eq!(raw(&ini, "s", "a").unwrap(), "1\n2");
        assert_eq!(raw(&ini, "s", "b").unwrap(), "3");
    }

    #[test]
    fn indented_option_after_header_is_an_option() {
        let ini = parse_str("[s]\n  a = 1\n  b = 2\n    c\n").unwrap();
        assert_eq!(raw(&ini, "s", "a").unwrap(), "1");
        assert_eq!(raw(&ini, "s", "b").unwrap(), "2\nc");
    }
}
