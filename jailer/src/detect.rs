//! Matchers: a log line in, the failing source address (if any) out.
//!
//! Pure functions of the line. Attackers write part of every line we read
//! (user names, passwords), so the address is only ever taken from the place
//! the logging program writes it: for vchkpw, the very end of the line.

use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use memchr::memmem;
use regex::Regex;

use crate::error::FilterError;

/// What a filter says of one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An authentication failure from this address.
    Failure(IpAddr),
    /// A failure line the filter deliberately does not count (`ignoreregex`,
    /// or a vchkpw line that may be truncated, whose address cannot be trusted).
    Ignored,
    /// Not a failure.
    Miss,
}

/// A compiled filter.
#[derive(Debug)]
pub enum Filter {
    /// The built-in vchkpw matcher (hand-written: ~10x faster than regex and
    /// immune to greedy-match tricks).
    Vpopmail(Box<Vpopmail>),
    /// A fail2ban-style filter file.
    Regex(RegexFilter),
}

impl Filter {
    /// A built-in filter by name, or a fail2ban-style filter file (relative
    /// paths resolve against `base`, the config file's directory).
    pub fn load(name: &str, base: &Path) -> Result<Self, FilterError> {
        if name == "vpopmail" {
            return Ok(Self::Vpopmail(Box::default()));
        }
        let path = base.join(name);
        let text = fs::read_to_string(&path).map_err(|source| FilterError::NotFound {
            name: name.to_owned(),
            source,
        })?;
        RegexFilter::parse(&path, &text).map(Self::Regex)
    }

    /// Judges one line.
    pub fn check(&self, line: &str) -> Verdict {
        match self {
            Self::Vpopmail(f) => f.check(line),
            Self::Regex(f) => f.check(line),
        }
    }

    /// Short name for logs.
    pub fn name(&self) -> String {
        match self {
            Self::Vpopmail(_) => "vpopmail".to_owned(),
            Self::Regex(f) => f.path.display().to_string(),
        }
    }
}

/// vchkpw's failure messages (vpopmail `vchkpw.c`), each followed by
/// `NAME:IP` where vchkpw writes the remote address last. `true`: NAME went
/// through vpopmail's `parse_email` validation, so it holds no `:` and no
/// space (`is_username_valid`/`is_domain_valid`); `false`: NAME is raw input.
const VCHKPW_FAILURES: &[(&str, bool)] = &[
    ("vpopmail user not found ", true),
    ("password fail ", true),
    ("user has no password ", true),
    ("system user not found ", true),
    ("system user shadow entry not found ", true),
    ("system password fail ", true),
    ("null user name given ", false),
    ("null password given ", false),
    ("invalid user/domain characters ", false),
];

/// Service tags vchkpw puts after `vchkpw-` (besides a bare port number).
const VCHKPW_TAGS: &[&str] = &[
    "pop3",
    "pop3s",
    "imap",
    "imaps",
    "smtp",
    "smtps",
    "submission",
    "webmail",
];

/// vchkpw formats its message into a 500-byte buffer (`LOG_LINE_SIZE`): a
/// message this long may have been cut inside the address, and a cut address
/// is someone else's (`203.0.113.77` -> `203.0.113.7`).
const VCHKPW_MAX_MESSAGE: usize = 499;

/// The built-in `vpopmail` filter.
#[derive(Debug)]
pub struct Vpopmail {
    finder: memmem::Finder<'static>,
}

impl Default for Vpopmail {
    fn default() -> Self {
        Self::new()
    }
}

impl Vpopmail {
    pub fn new() -> Self {
        Self {
            finder: memmem::Finder::new(": vchkpw"),
        }
    }

    pub fn check(&self, line: &str) -> Verdict {
        // vchkpw's tag opens the message of a syslog line whose program is
        // vpopmail (or vchkpw). The header before it is not attacker-controlled;
        // everything after may be, and so may the end of other daemons' lines
        // ("sshd: Invalid user x: vchkpw-pop3: password fail a@b:VICTIM").
        let Some(colon) = self.finder.find(line.as_bytes()) else {
            return Verdict::Miss;
        };
        if !logged_by_vpopmail(&line[..colon]) {
            return Verdict::Miss;
        }
        let message = line[colon + 2..].trim_end();
        let Some(body) = strip_tag(&message["vchkpw".len()..]) else {
            return Verdict::Miss;
        };
        let Some(&(_, validated)) = VCHKPW_FAILURES
            .iter()
            .find(|(kind, _)| body.starts_with(kind))
        else {
            return Verdict::Miss;
        };
        if message.len() >= VCHKPW_MAX_MESSAGE {
            return Verdict::Ignored;
        }
        vchkpw_address(body, validated)
    }
}

/// Whether a syslog header (`... host vpopmail[123]`) names vpopmail or
/// vchkpw as the program.
fn logged_by_vpopmail(header: &str) -> bool {
    let program = header.rsplit(' ').next().unwrap_or(header);
    let name = program.split_once('[').map_or(program, |(name, pid)| {
        if pid
            .strip_suffix(']')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            name
        } else {
            ""
        }
    });
    name == "vpopmail" || name == "vchkpw"
}

/// `-pop3: rest` / `-2110: rest` / `: rest` (old vchkpw) -> `rest`.
fn strip_tag(after: &str) -> Option<&str> {
    let rest = match after.strip_prefix('-') {
        Some(tagged) => {
            let colon = tagged.find(':')?;
            let tag = &tagged[..colon];
            let numeric =
                !tag.is_empty() && tag.len() <= 5 && tag.bytes().all(|b| b.is_ascii_digit());
            if !numeric && !VCHKPW_TAGS.contains(&tag) {
                return None;
            }
            &tagged[colon..]
        }
        None => after,
    };
    rest.strip_prefix(": ")
}

/// The address vchkpw appended after `NAME:`. IPv4 as is; IPv6 either as
/// vchkpw mangles it (`2001_db8__25`) or raw; `::ffff:a.b.c.d` is IPv4.
///
/// IPv4 and mangled IPv6 hold no `:`, so the last `:` is the separator
/// whatever NAME holds. Raw IPv6 has colons of its own: it is only trusted
/// after a validated NAME (no `:`, no space), where the separator is the
/// first `:` of the last word. After raw NAMEs (`null password given`,
/// `invalid user/domain characters`) it is ambiguous (`a:2001:2001:db8::25`)
/// and the line is ignored rather than risk banning a chosen address.
pub fn vchkpw_address(body: &str, validated: bool) -> Verdict {
    let Some(colon) = body.rfind(':') else {
        return Verdict::Miss;
    };
    let tail = &body[colon + 1..];
    if tail.is_empty() {
        // `www@:` (no TCPREMOTEIP): nothing to ban.
        return Verdict::Miss;
    }
    if tail.contains('_') {
        return match tail.replace('_', ":").parse::<Ipv6Addr>() {
            Ok(ip) => Verdict::Failure(canonical(ip)),
            Err(_) => Verdict::Miss,
        };
    }
    if let Ok(v4) = tail.parse::<Ipv4Addr>() {
        // Also the end of `::ffff:a.b.c.d`, which means the same host.
        return Verdict::Failure(IpAddr::V4(v4));
    }
    if !validated {
        return Verdict::Ignored;
    }
    let word = &body[body.rfind(' ').map_or(0, |i| i + 1)..];
    let Some((_, addr)) = word.split_once(':') else {
        return Verdict::Miss;
    };
    match addr.parse::<Ipv6Addr>() {
        Ok(ip) => Verdict::Failure(canonical(ip)),
        Err(_) => Verdict::Miss,
    }
}

/// `::ffff:a.b.c.d` is the IPv4 host; everything else stays as is.
fn canonical(ip: Ipv6Addr) -> IpAddr {
    match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    }
}

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
            return Verdict::Failure(match ip {
                IpAddr::V6(v6) => canonical(v6),
                v4 => v4,
            });
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

    fn vp(line: &str) -> Verdict {
        Vpopmail::new().check(line)
    }

    fn fail(ip: &str) -> Verdict {
        Verdict::Failure(ip.parse().unwrap())
    }

    const HDR: &str = "Sep 28 13:01:03 www vpopmail[20410]: ";

    #[test]
    fn every_failure_message_and_tag() {
        let bodies = [
            "vpopmail user not found www@example.com:203.0.113.7",
            "password fail bob@example.com:203.0.113.7",
            "password fail (pass: 'hunter2') bob@example.com:203.0.113.7",
            "null user name given :203.0.113.7",
            "null password given bob:203.0.113.7",
            "invalid user/domain characters b|b:203.0.113.7",
            "user has no password bob@example.com:203.0.113.7",
            "system user not found bob:203.0.113.7",
            "system user shadow entry not found bob:203.0.113.7",
            "system password fail bob:203.0.113.7",
        ];
        let tags = [
            "pop3",
            "pop3s",
            "imap",
            "imaps",
            "smtp",
            "smtps",
            "submission",
            "webmail",
            "2110",
        ];
        for body in bodies {
            for tag in tags {
                let line = format!("{HDR}vchkpw-{tag}: {body}");
                assert_eq!(vp(&line), fail("203.0.113.7"), "{line}");
            }
            assert_eq!(
                vp(&format!("{HDR}vchkpw: {body}")),
                fail("203.0.113.7"),
                "untagged {body}"
            );
        }
    }

    #[test]
    fn the_seed_line() {
        assert_eq!(
            vp(
                "Sep 28 13:01:03 www vpopmail[20410]: vchkpw-pop3: vpopmail user not found www@:203.0.113.7"
            ),
            fail("203.0.113.7")
        );
    }

    #[test]
    fn non_failures_are_misses() {
        for body in [
            "login success bob@example.com:203.0.113.7",
            "pop access denied bob@example.com:203.0.113.7",
            "smtp access denied bob@example.com:203.0.113.7",
            "setgid 89 failed errno 1 bob@example.com:203.0.113.7",
            "chdir failed errno 2 /home/vpopmail bob@example.com:203.0.113.7",
            "vpopmail user not found www@:",
        ] {
            assert_eq!(
                vp(&format!("{HDR}vchkpw-pop3: {body}")),
                Verdict::Miss,
                "{body}"
            );
        }
        assert_eq!(
            vp("Sep 28 13:01:03 www postfix/smtpd[1]: connect from x[203.0.113.7]"),
            Verdict::Miss
        );
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-gopher: password fail a@b:203.0.113.7"
            )),
            Verdict::Miss
        );
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-123456: password fail a@b:203.0.113.7"
            )),
            Verdict::Miss
        );
    }

    #[test]
    fn ipv6_mangled_raw_and_mapped() {
        let cases = [
            ("bob@example.com:2001_db8__25", "2001:db8::25"),
            ("bob@example.com:2001:db8::25", "2001:db8::25"),
            ("bob@example.com:::1", "::1"),
            ("bob@example.com:__1", "::1"),
            ("bob@example.com:::ffff:198.51.100.4", "198.51.100.4"),
            ("bob@example.com:__ffff_198.51.100.4", "198.51.100.4"),
            ("bob@example.com:2001_DB8_0_0_0_0_0_1", "2001:db8::1"),
        ];
        for (tail, want) in cases {
            assert_eq!(
                vp(&format!("{HDR}vchkpw-pop3: password fail {tail}")),
                fail(want),
                "{tail}"
            );
        }
    }

    #[test]
    fn attacker_text_never_supplies_the_address() {
        let cases = [
            // fake `:IP` inside the user name
            (
                "vpopmail user not found x:198.51.100.9@example.com:203.0.113.7",
                "203.0.113.7",
            ),
            (
                "invalid user/domain characters a:198.51.100.9 :203.0.113.7",
                "203.0.113.7",
            ),
            // a password that looks like the end of a line
            (
                "password fail (pass: 'x:198.51.100.9') bob@example.com:203.0.113.7",
                "203.0.113.7",
            ),
            (
                "password fail (pass: '') bob@x:198.51.100.9') bob@example.com:2001_db8__25",
                "2001:db8::25",
            ),
            // syslog-escaped newline carrying a fake line
            (
                "null password given x#012Sep 28 13:01:03 www vpopmail[1]: vchkpw-pop3: password fail a@b:198.51.100.9:203.0.113.7",
                "203.0.113.7",
            ),
            // another tag embedded in the name
            (
                "system user not found vchkpw-pop3: password fail a:198.51.100.9:203.0.113.7",
                "203.0.113.7",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                vp(&format!("{HDR}vchkpw-pop3: {body}")),
                fail(want),
                "{body}"
            );
        }
        // Another daemon's line ending in attacker text shaped like vchkpw's.
        for line in [
            "Sep 28 13:01:03 www sshd[9]: Invalid user x: vchkpw-pop3: password fail a@b:198.51.100.9",
            "Sep 28 13:01:03 www postfix/smtpd[9]: NOQUEUE: reject: vchkpw-pop3: password fail a@b:198.51.100.9",
            "Sep 28 13:01:03 www evilvpopmail[9]: vchkpw-pop3: password fail a@b:198.51.100.9",
            "Sep 28 13:01:03 www vpopmail[9x]: vchkpw-pop3: password fail a@b:198.51.100.9",
        ] {
            assert_eq!(vp(line), Verdict::Miss, "{line}");
        }
        assert_eq!(
            vp(
                "2025-09-15T09:10:01.262668+02:00 www vchkpw[7]: vchkpw-imap: password fail a@b:203.0.113.7"
            ),
            fail("203.0.113.7")
        );
        // A failure phrase inside a non-failure message does not count.
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-pop3: login success password fail x@y:198.51.100.9"
            )),
            Verdict::Miss
        );
    }

    #[test]
    fn raw_ipv6_after_raw_names_is_refused() {
        // NAME is raw input here: `a:2001:2001:db8::25` reads as two addresses.
        for body in [
            "invalid user/domain characters a:2001:2001:db8::25",
            "null password given bob:2001:db8::25",
            "null password given :::1",
        ] {
            assert_eq!(
                vp(&format!("{HDR}vchkpw-pop3: {body}")),
                Verdict::Ignored,
                "{body}"
            );
        }
        // After a validated NAME (no `:` possible) the first `:` of the last word separates.
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-pop3: password fail bob@example.ad:2001:db8::25"
            )),
            fail("2001:db8::25")
        );
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-pop3: password fail (pass: 'x a@b:2001:db8::66') bob@example.com:2001:db8::25"
            )),
            fail("2001:db8::25")
        );
    }

    #[test]
    fn possibly_truncated_lines_are_not_trusted() {
        let pass = "p".repeat(155);
        let user = "u".repeat(155);
        let dom = "d".repeat(150);
        let line =
            format!("{HDR}vchkpw-pop3: password fail (pass: '{pass}') {user}@{dom}:203.0.113.7");
        assert_eq!(vp(&line), Verdict::Ignored);
    }

    #[test]
    fn odd_bytes_do_not_break_it() {
        assert_eq!(vp(""), Verdict::Miss);
        assert_eq!(vp("vchkpw"), Verdict::Miss);
        assert_eq!(vp("vchkpw-"), Verdict::Miss);
        assert_eq!(vp("vchkpw-pop3:"), Verdict::Miss);
        assert_eq!(
            vp(&format!(
                "{HDR}vchkpw-pop3: password fail \u{1b}[31mred\u{0}:203.0.113.7  \r"
            )),
            fail("203.0.113.7")
        );
        assert_eq!(
            vp(&format!("{HDR}vchkpw-pop3: password fail bob:203.0.113.7:")),
            Verdict::Miss
        );
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
