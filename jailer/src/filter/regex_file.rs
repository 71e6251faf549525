//! A fail2ban-style filter file in its simplest form: one `[Definition]`
//! with `failregex`/`ignoreregex` and `%(name)s` from the same file.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use regex::Regex;

use super::{FilterError, Verdict};
use crate::ban::canonical_ip;

/// Regex for `<IP4>`: dotted quad (validated by the address parser after).
const IP4: &str = r"(?:\d{1,3}\.){3}\d{1,3}";
/// Regex for `<IP6>`: hex groups and colons, optionally a trailing dotted quad.
const IP6: &str = r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\d{1,3}\.){3}\d{1,3})?";

/// A fail2ban filter file: `[Definition]` with `failregex` / `ignoreregex`.
#[derive(Debug)]
pub struct RegexFilter {
    path: PathBuf,
    fail: Vec<Regex>,
    ignore: Vec<Regex>,
}

impl RegexFilter {
    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Parses the INI text of a filter file.
    pub fn parse(path: &Path, text: &str) -> Result<Self, FilterError> {
        let syntax = |line: usize, message: String| FilterError::Syntax {
            path: path.to_owned(),
            line,
            message,
        };
        // (key -> (line, value)) of the [Definition] section; continuation
        // lines (indented) append to the previous key, one regex per line.
        let mut defs: HashMap<String, (usize, Vec<String>)> = HashMap::new();
        let mut section = String::new();
        let mut last_key: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if raw.starts_with([' ', '\t']) {
                match (&last_key, section.as_str()) {
                    (Some(key), "Definition") => {
                        if let Some(entry) = defs.get_mut(key) {
                            entry.1.push(trimmed.to_owned());
                        }
                    }
                    (None, "Definition") => {
                        return Err(syntax(n, "continuation line without a key".into()));
                    }
                    _ => {}
                }
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = name.trim().to_owned();
                last_key = None;
                continue;
            }
            let Some((key, value)) = trimmed.split_once(['=', ':']) else {
                return Err(syntax(
                    n,
                    format!("expected `key = value`, found `{trimmed}`"),
                ));
            };
            let key = key.trim().to_owned();
            if section == "INCLUDES" {
                return Err(syntax(
                    n,
                    format!(
                        "[INCLUDES] `{key}` is not supported: copy the definitions you need into this file"
                    ),
                ));
            }
            if section != "Definition" {
                last_key = None;
                continue;
            }
            let value = value.trim();
            let values = if value.is_empty() {
                Vec::new()
            } else {
                vec![value.to_owned()]
            };
            defs.insert(key.clone(), (n, values));
            last_key = Some(key);
        }
        let Some((fail_line, fail_src)) = defs.get("failregex").cloned() else {
            return Err(syntax(0, "no `failregex` in a [Definition] section".into()));
        };
        if fail_src.is_empty() {
            return Err(syntax(fail_line, "failregex is empty".into()));
        }
        let compile = |key: &'static str, line: usize, sources: &[String], need_host: bool| {
            sources
                .iter()
                .map(|src| {
                    let expanded = interpolate(src, &defs, 0)
                        .map_err(|m| syntax(line, format!("{key}: {m}")))?;
                    let (pattern, hosts) = expand_tags(&expanded);
                    if need_host && hosts == 0 {
                        return Err(syntax(
                            line,
                            format!("{key}: `{src}` has no <HOST>, <ADDR>, <IP4> or <IP6> tag"),
                        ));
                    }
                    Regex::new(&pattern).map_err(|e| FilterError::Regex {
                        path: path.to_owned(),
                        line,
                        key,
                        pattern: src.clone(),
                        message: e
                            .to_string()
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("invalid regex")
                            .trim()
                            .trim_start_matches("error: ")
                            .to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let fail = compile("failregex", fail_line, &fail_src, true)?;
        let ignore = match defs.get("ignoreregex") {
            Some((line, src)) => compile("ignoreregex", *line, src, false)?,
            None => Vec::new(),
        };
        Ok(Self {
            path: path.to_owned(),
            fail,
            ignore,
        })
    }

    pub fn check(&self, line: &str) -> Verdict {
        for re in &self.fail {
            let Some(caps) = re.captures(line) else {
                continue;
            };
            let ip = caps
                .iter()
                .skip(1)
                .flatten()
                .zip(re.capture_names().skip(1))
                .filter(|(_, name)| name.is_some_and(|n| n.starts_with("jailer_host")))
                .find_map(|(m, _)| m.as_str().parse::<IpAddr>().ok());
            let Some(ip) = ip else { continue };
            if self.ignore.iter().any(|re| re.is_match(line)) {
                return Verdict::Ignored;
            }
            return Verdict::Failure(canonical_ip(ip));
        }
        Verdict::Miss
    }
}

/// Replaces `%(name)s` with the file's own definitions (recursively, bounded).
fn interpolate(
    src: &str,
    defs: &HashMap<String, (usize, Vec<String>)>,
    depth: usize,
) -> Result<String, String> {
    if depth > 8 {
        return Err("%(...)s nests too deep (a definition refers to itself?)".into());
    }
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = rest.find("%(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find(")s") else {
            return Err(format!("unterminated `%(` in `{src}`"));
        };
        let name = &after[..end];
        let value = defs
            .get(name)
            .map(|(_, v)| v.join("\n"))
            .ok_or_else(|| format!("`%({name})s` is not defined in this file"))?;
        out.push_str(&interpolate(&value, defs, depth + 1)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Turns fail2ban's address tags into named groups; returns how many.
fn expand_tags(src: &str) -> (String, usize) {
    let mut out = String::with_capacity(src.len() + 64);
    let mut count = 0;
    let mut rest = src;
    loop {
        let next = ["<HOST>", "<ADDR>", "<IP4>", "<IP6>"]
            .iter()
            .filter_map(|tag| rest.find(tag).map(|at| (at, *tag)))
            .min();
        let Some((at, tag)) = next else { break };
        out.push_str(&rest[..at]);
        let body = match tag {
            "<IP4>" => IP4.to_owned(),
            "<IP6>" => IP6.to_owned(),
            // fail2ban's <HOST> also takes `::ffff:` before an IPv4 address.
            _ => format!("(?:::f{{4,6}}:)?(?:{IP4}|{IP6})"),
        };
        out.push_str(&format!("(?P<jailer_host{count}>{body})"));
        count += 1;
        rest = &rest[at + tag.len()..];
    }
    out.push_str(rest);
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(ip: &str) -> Verdict {
        Verdict::Failure(ip.parse().unwrap())
    }

    fn filter(text: &str) -> Result<RegexFilter, FilterError> {
        RegexFilter::parse(Path::new("/etc/jailer/filter.d/test.conf"), text)
    }

    #[test]
    fn seed_filter_file_loads_and_matches() {
        let f =
            filter("[Definition]\nfailregex = vchkpw-pop3: vpopmail user not found .*@:<HOST>$\n")
                .unwrap();
        assert_eq!(
            f.check("Sep 28 13:01:03 www vpopmail[20410]: vchkpw-pop3: vpopmail user not found www@:203.0.113.7"),
            fail("203.0.113.7")
        );
        assert_eq!(
            f.check("vchkpw-pop3: login success www@:203.0.113.7"),
            Verdict::Miss
        );
    }

    #[test]
    fn multiline_failregex_ignoreregex_and_interpolation() {
        let text = concat!(
            "[INCLUDES]\n",
            "\n",
            "[Definition]\n",
            "_daemon = vpopmail\n",
            "_prefix = %(_daemon)s\\[\\d+\\]: vchkpw-\\w+:\n",
            "failregex = %(_prefix)s password fail .*:<HOST>$\n",
            "            %(_prefix)s vpopmail user not found [^:]*:<ADDR>$\n",
            "            ^v6 <IP6>$\n",
            "ignoreregex = @trusted\\.example:\n",
        );
        let f = filter(text).unwrap();
        assert_eq!(
            f.check("x vpopmail[1]: vchkpw-pop3: password fail a@b:203.0.113.7"),
            fail("203.0.113.7")
        );
        assert_eq!(
            f.check("x vpopmail[1]: vchkpw-imap: vpopmail user not found a@b:2001:db8::1"),
            fail("2001:db8::1")
        );
        assert_eq!(f.check("v6 2001:db8::2"), fail("2001:db8::2"));
        assert_eq!(
            f.check("x vpopmail[1]: vchkpw-pop3: password fail a@trusted.example:203.0.113.7"),
            Verdict::Ignored
        );
        assert_eq!(
            f.check("x vpopmail[1]: vchkpw-pop3: password fail a@b:::ffff:203.0.113.8"),
            fail("203.0.113.8")
        );
    }

    #[test]
    fn filter_file_errors_name_file_and_line() {
        let e = filter("[Definition]\nfailregex = (unclosed <HOST>\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/jailer/filter.d/test.conf:2: failregex:"),
            "{e}"
        );
        let e = filter("[Definition]\nfailregex = no tag here\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2: failregex: `no tag here` has no <HOST>"),
            "{e}"
        );
        let e = filter("[Definition]\nfailregex = %(nope)s <HOST>\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`%(nope)s` is not defined"), "{e}");
        let e = filter("[Definition]\nignoreregex = x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `failregex`"), "{e}");
        let e = filter("[INCLUDES]\nbefore = common.conf\n[Definition]\nfailregex = <HOST>\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2: [INCLUDES] `before` is not supported"),
            "{e}"
        );
        let e = filter("[Definition]\na = %(a)s\nfailregex = %(a)s<HOST>\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nests too deep"), "{e}");
    }
}
