//! fail2ban's regex tags (`<HOST>`, `<F-USER>…</F-USER>`, `<SKIPLINES>`…)
//! expanded into named groups, as `Regex._resolveHostTag` in
//! server/failregex.py does, plus the two small rewrites fail2ban (or PCRE2)
//! needs before compiling.

use std::borrow::Cow;

/// `IPAddr.IP_4_RE` (server/ipdns.py).
macro_rules! ip4 {
    () => {
        r"(?:\d{1,3}\.){3}\d{1,3}"
    };
}
/// `IPAddr.IP_6_RE` (server/ipdns.py); its `(?<=:)` is why the `regex` crate
/// cannot be used.
macro_rules! ip6 {
    () => {
        r"(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):)"
    };
}
macro_rules! r_ip4 {
    () => {
        concat!(r"(?:::f{4,6}:)?(?P<ip4>", ip4!(), ")")
    };
}
macro_rules! r_ip6 {
    () => {
        concat!("(?P<ip6>", ip6!(), ")")
    };
}
macro_rules! r_dns {
    () => {
        r"(?P<dns>[\w\-.^_]*\w)"
    };
}
macro_rules! r_addr {
    () => {
        concat!(r"\[?(?:", r_ip4!(), "|", r_ip6!(), r")\]?")
    };
}
macro_rules! r_cidr {
    () => {
        r"(?P<cidr>\d+)"
    };
}

/// `R_HOST[RI_ADDR]`: an IPv4 or IPv6 address, optionally in brackets.
const R_ADDR: &str = r_addr!();
/// `R_HOST[RI_HOST]`: an address or a host name.
const R_HOST: &str = concat!("(?:", r_addr!(), "|", r_dns!(), ")");
/// `R_HOST[RI_SUBNET]`: an address with an optional `/prefix`.
const R_SUBNET: &str = concat!(
    r"\[?(?:",
    r_ip4!(),
    "|",
    r_ip6!(),
    ")(?:/",
    r_cidr!(),
    r")?\]?"
);

/// The regex behind a tag that expands to a fixed string (`RH4TAG`).
fn static_tag(name: &str) -> Option<&'static str> {
    Some(match name {
        "IP4" | "F-IP4/" => r_ip4!(),
        "IP6" | "F-IP6/" => r_ip6!(),
        "ADDR" | "F-ADDR/" => R_ADDR,
        "CIDR" | "F-CIDR/" => r_cidr!(),
        "SUBNET" | "F-SUBNET/" => R_SUBNET,
        "DNS" | "F-DNS/" => r_dns!(),
        "F-ID/" => r"(?P<fid>\S+)",
        "F-PORT/" => r"(?P<fport>\w+)",
        _ => return None,
    })
}

/// fail2ban's `usedns` jail option. It only changes what `<HOST>` expands to:
/// with `No` it matches addresses only. Nothing here ever resolves a name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UseDns {
    /// `usedns = yes`: `<HOST>` also matches host names.
    Yes,
    /// `usedns = warn`, fail2ban's default: as `Yes`.
    #[default]
    Warn,
    /// `usedns = no`: `<HOST>` matches addresses only (as `<ADDR>`).
    No,
    /// `usedns = raw`: as `Yes`.
    Raw,
}

/// `mapTag2Opt`: the group name of a custom `<F-NAME>` tag.
fn group_name(tag: &str) -> String {
    match tag.to_lowercase().as_str() {
        "id" => "fid".to_owned(),
        "port" => "fport".to_owned(),
        other => other.to_owned(),
    }
}

/// Python's `\w` on `str`.
pub(crate) fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// End (exclusive) of a tag `</?[\w\-]+/?>` starting at `start` (a `<`).
fn tag_end(s: &str, start: usize) -> Option<usize> {
    let rest = &s[start + 1..];
    let mut pos = usize::from(rest.starts_with('/'));
    let name_len: usize = rest[pos..]
        .chars()
        .take_while(|&c| is_word(c) || c == '-')
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    pos += name_len;
    if rest[pos..].starts_with('/') {
        pos += 1;
    }
    rest[pos..].starts_with('>').then_some(start + 1 + pos + 1)
}

/// `FCUSTNAME_CRE` (`^(/?)F-([A-Z0-9_\-]+)$`): `(closing, NAME)`.
fn custom_tag(tn: &str) -> Option<(bool, &str)> {
    let (closing, rest) = match tn.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, tn),
    };
    let name = rest.strip_prefix("F-")?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    valid.then_some((closing, name))
}

/// `Regex._resolveHostTag`: replace every fail2ban tag by its regex.
pub(crate) fn expand(regex: &str, use_dns: UseDns) -> String {
    let mut out = String::with_capacity(regex.len() + 256);
    let mut open: Vec<&str> = Vec::new();
    let mut skiplines = 0usize;
    let mut pos = 0;
    while let Some(off) = regex[pos..].find('<') {
        let start = pos + off;
        let Some(end) = tag_end(regex, start) else {
            out.push_str(&regex[pos..=start]);
            pos = start + 1;
            continue;
        };
        out.push_str(&regex[pos..start]);
        let tag = &regex[start..end];
        let tn = &tag[1..tag.len() - 1];
        if tn == "HOST" {
            out.push_str(if use_dns == UseDns::No {
                R_ADDR
            } else {
                R_HOST
            });
        } else if tn == "SKIPLINES" {
            // One more buffered line plus any lines in between (maxlines).
            out.push_str(&format!(r"\n(?P<skiplines{skiplines}>(?:(?:.*\n)*?))"));
            skiplines += 1;
        } else if let Some(re) = static_tag(tn) {
            out.push_str(re);
        } else if let Some((closing, name)) = custom_tag(tn) {
            if !closing {
                open.push(name);
                out.push_str("(?P<");
                out.push_str(&group_name(name));
                out.push('>');
            } else if open.contains(&name) {
                out.push(')');
            } else {
                // A closing tag that was never opened stays as written.
                out.push_str(tag);
            }
        } else {
            out.push_str(tag);
        }
        pos = end;
    }
    out.push_str(&regex[pos..]);
    out
}

/// `R_GLOB2LOCFLAGS`: `((?i)X` and `(?:(?i)X` become `(?i:X`, because Python
/// 3.11 rejects global flags that are not at the start of the expression.
pub(crate) fn global_to_local_flags(regex: &str) -> String {
    let b = regex.as_bytes();
    let mut out = String::with_capacity(regex.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'(' && (i == 0 || b[i - 1] != b'\\') {
            let mut j = i + 1;
            if b[j..].starts_with(b"?:") {
                j += 2;
            }
            if b[j..].starts_with(b"(?") {
                let letters = b[j + 2..]
                    .iter()
                    .take_while(|c| c.is_ascii_lowercase())
                    .count();
                let close = j + 2 + letters;
                if letters > 0 && b.get(close) == Some(&b')') {
                    out.push_str(&regex[copied..i]);
                    out.push_str(&regex[j..close]);
                    out.push(':');
                    i = close + 1;
                    copied = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    out.push_str(&regex[copied..]);
    out
}

/// The two spots where PCRE2 reads Python's syntax differently, fixed:
/// `u` (Unicode) in inline flag groups such as `(?iu)` is dropped (PCRE2
/// rejects it, and Unicode matching is always on here, `PCRE2_UCP`), and
/// `\Z` becomes `\z` (Python's `\Z` is the very end; PCRE2's also matches
/// before a final newline, and fail2ban's buffers end with one). Escapes and
/// character classes are skipped so only real groups and anchors change.
pub(crate) fn to_pcre2(regex: &str) -> Cow<'_, str> {
    let b = regex.as_bytes();
    // (byte offset, replacement of that one byte)
    let mut edits: Vec<(usize, &str)> = Vec::new();
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if !in_class && b.get(i + 1) == Some(&b'Z') {
                    edits.push((i + 1, "z"));
                }
                i += 1;
            }
            b'[' if !in_class => {
                in_class = true;
                // `[]…]` and `[^]…]`: a leading `]` is a literal.
                if b.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if in_class => in_class = false,
            b'(' if !in_class && b.get(i + 1) == Some(&b'?') => {
                let flags = b[i + 2..]
                    .iter()
                    .take_while(|c| {
                        matches!(c, b'a' | b'i' | b'L' | b'm' | b's' | b'u' | b'x' | b'-')
                    })
                    .count();
                let end = i + 2 + flags;
                if flags > 0 && matches!(b.get(end), Some(b')' | b':')) {
                    // `(?u)` alone leaves `(?)`: an empty option setting.
                    edits.extend((i + 2..end).filter(|&k| b[k] == b'u').map(|k| (k, "")));
                }
            }
            _ => {}
        }
        i += 1;
    }
    if edits.is_empty() {
        return Cow::Borrowed(regex);
    }
    let mut out = String::with_capacity(regex.len());
    let mut copied = 0;
    for (k, with) in edits {
        out.push_str(&regex[copied..k]);
        out.push_str(with);
        copied = k + 1;
    }
    out.push_str(&regex[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_tags() {
        assert_eq!(
            expand("from <HOST>$", UseDns::Warn),
            format!("from {R_HOST}$")
        );
        assert_eq!(
            expand("from <HOST>$", UseDns::No),
            format!("from {R_ADDR}$")
        );
        assert_eq!(
            expand("<ADDR>/<CIDR>", UseDns::Warn),
            format!("{R_ADDR}/(?P<cidr>\\d+)")
        );
        assert_eq!(expand("id <F-ID/>", UseDns::Warn), r"id (?P<fid>\S+)");
    }

    #[test]
    fn custom_tags() {
        assert_eq!(
            expand(
                "user <F-USER>\\S+</F-USER> <F-ALT_USER1>x</F-ALT_USER1>",
                UseDns::Warn
            ),
            r"user (?P<user>\S+) (?P<alt_user1>x)"
        );
        assert_eq!(
            expand("</F-USER> <F-ID>x</F-ID>", UseDns::Warn),
            "</F-USER> (?P<fid>x)"
        );
        assert_eq!(expand("<b> a<c <F-user>", UseDns::Warn), "<b> a<c <F-user>");
    }

    #[test]
    fn skiplines_are_numbered() {
        let r = expand("a<SKIPLINES>b<SKIPLINES>c", UseDns::Warn);
        assert!(r.contains("(?P<skiplines0>") && r.contains("(?P<skiplines1>"));
    }

    #[test]
    fn global_flags_become_local() {
        assert_eq!(global_to_local_flags("(?:(?i)expn|vrfy)"), "(?i:expn|vrfy)");
        assert_eq!(global_to_local_flags("a((?i)b)"), "a(?i:b)");
        assert_eq!(global_to_local_flags("(?i)^a"), "(?i)^a");
        assert_eq!(global_to_local_flags(r"\((?i)b)"), r"\((?i)b)");
    }

    #[test]
    fn python_dialect() {
        assert_eq!(to_pcre2("(?iu)a"), "(?i)a");
        assert_eq!(to_pcre2("(?u:a)[(?u)]"), "(?:a)[(?u)]");
        assert_eq!(to_pcre2(r"\(?u)"), r"\(?u)");
        assert_eq!(to_pcre2(r"a\Z|\\Z|[\Z]"), r"a\z|\\Z|[\Z]");
    }
}
