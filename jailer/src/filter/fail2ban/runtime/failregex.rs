//! One compiled fail2ban regex (`Regex`/`FailRegex` in server/failregex.py):
//! tags expanded, compiled by PCRE2, plus what fail2ban derives from its
//! groups (alternate and tuple names, `<SKIPLINES>` groups, failure ids).

use std::borrow::Cow;
use std::sync::Arc;

use pcre2::bytes::{CaptureLocations, Regex, RegexBuilder};

use crate::filter::fail2ban::runtime::error::{FilterError, RegexKind};
use crate::filter::fail2ban::runtime::tags::{self, UseDns};

/// Groups that identify a failure (`FAILURE_ID_PRESENTS`).
const FAILURE_ID_GROUPS: [&str; 5] = ["fid", "ip4", "ip6", "dns", "mlfid"];

/// PCRE2's JIT stack limit per match. The default (32 KiB) is small for
/// `<SKIPLINES>` over a full `maxlines` buffer; the memory is reserved, not
/// committed, until a match needs it.
const JIT_STACK_MAX: usize = 1 << 20;

/// Compile a regex the way every fail2ban regex is compiled here: PCRE2 with
/// UTF-8 and Unicode properties (Python's `str` patterns are Unicode-aware:
/// `\w`, `\d`, `\b`, case folding), JIT when available.
pub(crate) fn build(source: &str, multi_line: bool) -> Result<Regex, pcre2::Error> {
    RegexBuilder::new()
        .utf(true)
        .ucp(true)
        .multi_line(multi_line)
        .jit_if_available(true)
        .max_jit_stack_size(Some(JIT_STACK_MAX))
        .build(&tags::to_pcre2(source))
}

/// A compiled prefregex, failregex or ignoreregex.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// The regex as written in the filter (tags not expanded), for errors.
    original: String,
    /// The regex after tag expansion (fail2ban's `getRegex()`).
    source: String,
    re: Regex,
    /// Group names by group number (`None`: unnamed).
    names: Vec<Option<Arc<str>>>,
    /// `alt_NAME[_N]` groups and the name they fill when it is empty.
    alt: Vec<(usize, Arc<str>)>,
    /// `tuple_NAME[_N]` groups and the name they are combined into.
    tuple: Vec<(usize, Arc<str>)>,
    /// `skiplinesN` groups in order.
    skiplines: Vec<usize>,
    /// The `content` group (`<F-CONTENT>`).
    content: Option<usize>,
}

impl Pattern {
    /// `Regex.__init__`: expand tags, reject empty regexes, rewrite global
    /// flags, compile.
    pub(crate) fn new(
        kind: RegexKind,
        index: usize,
        regex: &str,
        multi_line: bool,
        use_dns: UseDns,
    ) -> Result<Self, FilterError> {
        let expanded = tags::expand(regex, use_dns);
        if expanded.trim_start().is_empty() {
            return Err(FilterError::EmptyRegex { kind, index });
        }
        let source = tags::global_to_local_flags(&expanded);
        let re = build(&source, multi_line).map_err(|source_err| FilterError::Compile {
            kind,
            index,
            regex: regex.to_owned(),
            expanded: source.clone(),
            source: source_err,
        })?;
        let names: Vec<Option<Arc<str>>> = re
            .capture_names()
            .iter()
            .map(|n| n.as_deref().map(Arc::from))
            .collect();
        let mut alt = Vec::new();
        let mut tuple = Vec::new();
        let mut skiplines = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let Some(name) = name else { continue };
            if let Some(target) = complex_name(name, "alt_") {
                alt.push((i, name.clone(), Arc::from(target)));
            } else if let Some(target) = complex_name(name, "tuple_") {
                tuple.push((i, name.clone(), Arc::from(target)));
            }
        }
        // fail2ban walks them sorted by group name.
        alt.sort_by(|a, b| a.1.cmp(&b.1));
        tuple.sort_by(|a, b| a.1.cmp(&b.1));
        // getSkippedLines stops at the first missing skiplinesN.
        while let Some(i) = position(&names, &format!("skiplines{}", skiplines.len())) {
            skiplines.push(i);
        }
        Ok(Self {
            original: regex.to_owned(),
            source,
            re,
            alt: alt.into_iter().map(|(i, _, t)| (i, t)).collect(),
            tuple: tuple.into_iter().map(|(i, _, t)| (i, t)).collect(),
            content: position(&names, "content"),
            names,
            skiplines,
        })
    }

    /// The regex as written in the filter definition.
    pub(crate) fn original(&self) -> &str {
        &self.original
    }

    /// The regex as compiled, tags expanded.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Whether the regex has a group that identifies a failure.
    pub(crate) fn has_failure_id(&self) -> bool {
        FAILURE_ID_GROUPS
            .iter()
            .any(|g| position(&self.names, g).is_some())
    }

    /// The text of the `content` group of the last match, if it took part.
    pub(crate) fn content<'b>(&self, caps: &CaptureLocations, buf: &'b str) -> Option<&'b str> {
        let (s, e) = caps.get(self.content?)?;
        buf.get(s..e)
    }

    pub(crate) fn capture_locations(&self) -> CaptureLocations {
        self.re.capture_locations()
    }

    /// `re.search`: the span of the first match. A PCRE2 matching error (a
    /// resource limit on a pathological line) counts as no match, where
    /// Python would keep backtracking.
    pub(crate) fn search(&self, caps: &mut CaptureLocations, buf: &str) -> Option<(usize, usize)> {
        match self.re.captures_read(caps, buf.as_bytes()) {
            Ok(Some(m)) => Some((m.start(), m.end())),
            Ok(None) | Err(_) => None,
        }
    }

    /// `groupdict()` plus fail2ban's alternate/tuple merging
    /// (`_getGroupsWithAlt`), as owned values.
    pub(crate) fn groups(&self, caps: &CaptureLocations, buf: &str) -> Groups {
        let mut groups = Groups::default();
        for (i, name) in self.names.iter().enumerate() {
            if let Some(name) = name {
                let value = caps.get(i).map(|(s, e)| slice(buf, s, e).into_owned());
                groups.set(name, value);
            }
        }
        for (i, target) in &self.alt {
            let value = caps.get(*i).map(|(s, e)| slice(buf, s, e));
            if let Some(v) = value.filter(|v| !v.is_empty())
                && groups.get(target).is_none_or(str::is_empty)
            {
                groups.set(target, Some(v.into_owned()));
            }
        }
        for (i, target) in &self.tuple {
            let value = caps.get(*i).map(|(s, e)| slice(buf, s, e));
            let combined = tuple_push(groups.get(target), value.as_deref());
            groups.set(target, Some(combined));
        }
        groups
    }

    /// `getSkippedLines`: the lines captured by `<SKIPLINES>` groups.
    pub(crate) fn skipped_lines(&self, caps: &CaptureLocations, buf: &str) -> Vec<String> {
        let mut joined = String::new();
        for &i in &self.skiplines {
            if let Some((s, e)) = caps.get(i) {
                joined.push_str(&slice(buf, s, e));
            }
        }
        split_lines(&joined)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}

/// `COMPLNAME_CRE` (`^(alt_|tuple_)(.*?)(?:_\d+)?$`) and `mapTag2Opt`: the
/// name an `alt_…`/`tuple_…` group stands for.
fn complex_name<'n>(name: &'n str, prefix: &str) -> Option<&'n str> {
    if name.len() <= "alt_".len() {
        return None;
    }
    let rest = name.strip_prefix(prefix)?;
    // The lazy `(.*?)` leaves a trailing `_<digits>` to the optional group.
    let base = match rest.rfind('_') {
        Some(u) if u + 1 < rest.len() && rest[u + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &rest[..u]
        }
        _ => rest,
    };
    Some(match base.to_lowercase().as_str() {
        "id" => "fid",
        "port" => "fport",
        _ => base,
    })
}

/// A capture's text. PCRE2 keeps captures on character boundaries unless a
/// regex uses `\C` (which Python does not have); then bytes are replaced.
fn slice(buf: &str, s: usize, e: usize) -> Cow<'_, str> {
    match buf.get(s..e) {
        Some(t) => Cow::Borrowed(t),
        None => String::from_utf8_lossy(buf.as_bytes().get(s..e).unwrap_or_default()),
    }
}

fn position(names: &[Option<Arc<str>>], name: &str) -> Option<usize> {
    names.iter().position(|n| n.as_deref() == Some(name))
}

/// Python's `str.splitlines()`: every Unicode line boundary, `\r\n` as one.
pub(crate) fn split_lines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if !is_break {
            continue;
        }
        out.push(&s[start..i]);
        let mut next = i + c.len_utf8();
        if c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n') {
            chars.next();
            next += 1;
        }
        start = next;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// fail2ban combines `tuple_` groups into a Python tuple; its `str()` is the
/// failure id that results.
fn tuple_push(current: Option<&str>, value: Option<&str>) -> String {
    fn repr(v: Option<&str>) -> String {
        match v {
            None => "None".to_owned(),
            Some(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        }
    }
    match current {
        Some(t) if t.starts_with('(') && t.ends_with(')') => {
            format!("{}, {})", &t[..t.len() - 1], repr(value))
        }
        _ => format!("({}, {})", repr(current), repr(value)),
    }
}

/// A match's named groups, in group order (a Python `dict` with string
/// values: a key may be present with value `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Groups(Vec<(Arc<str>, Option<String>)>);

impl Groups {
    /// The value of `name`; `None` if absent or the group did not take part.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| &**k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Python truthiness of `d.get(name)`: present and non-empty.
    pub(crate) fn truthy(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| !v.is_empty())
    }

    pub(crate) fn set(&mut self, name: &Arc<str>, value: Option<String>) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((Arc::clone(name), value)),
        }
    }

    pub(crate) fn pop(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| &**k == name)?;
        self.0.remove(i).1
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `dict.update(other)`: every key of `other` overwrites, `None` too.
    pub(crate) fn update(&mut self, other: Groups) {
        for (k, v) in other.0 {
            self.set(&k, v);
        }
    }

    /// `dict.update((k, v) for k, v in other.items() if v is not None)`.
    pub(crate) fn update_present(&mut self, other: &Groups) {
        for (k, v) in &other.0 {
            if v.is_some() {
                self.set(k, v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(re: &str) -> Pattern {
        match Pattern::new(RegexKind::Failregex, 0, re, false, UseDns::Warn) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn complex_names() {
        assert_eq!(complex_name("alt_user", "alt_"), Some("user"));
        assert_eq!(complex_name("alt_user_2", "alt_"), Some("user"));
        assert_eq!(complex_name("alt_user1", "alt_"), Some("user1"));
        assert_eq!(complex_name("tuple_id_1", "tuple_"), Some("fid"));
        assert_eq!(complex_name("alt_", "alt_"), None);
    }

    #[test]
    fn alt_user_fills_empty_user() {
        let p = pattern(r"user=<F-USER>\S*</F-USER> alt=<F-ALT_USER>\S*</F-ALT_USER> <HOST>$");
        let mut caps = p.capture_locations();
        let buf = "user= alt=bob 192.0.2.1\n";
        assert!(p.search(&mut caps, buf).is_some());
        let g = p.groups(&caps, buf);
        assert_eq!(g.get("user"), Some("bob"));
        assert_eq!(g.get("ip4"), Some("192.0.2.1"));
        assert_eq!(g.get("ip6"), None);
    }

    #[test]
    fn python_syntax_compiles() {
        // Conditionals, look-behind, `{,n}`, `[^[]`, scoped flags.
        for re in [
            r"(?P<a>x)?(?(a)y|z) <HOST>",
            r"\d{,3} [^[]+ (?i:expn|vrfy) <HOST>",
            r"(?:(?i)expn|vrfy) <HOST>",
        ] {
            pattern(re);
        }
        let p = pattern(r"^\d{,3}x <HOST>$");
        let mut caps = p.capture_locations();
        assert!(p.search(&mut caps, "12x 192.0.2.1\n").is_some());
        assert!(p.search(&mut caps, "1234x 192.0.2.1\n").is_none());
    }

    #[test]
    fn python_unicode_flag_is_accepted() {
        let p = pattern(r"(?u)^x <HOST>$");
        let mut caps = p.capture_locations();
        assert!(p.search(&mut caps, "x 192.0.2.1\n").is_some());
        pattern(r"(?iu)^X <HOST>$");
    }

    #[test]
    fn no_failure_id() {
        assert!(!pattern("abc").has_failure_id());
        assert!(pattern("<F-MLFID>x</F-MLFID>").has_failure_id());
    }

    #[test]
    fn splitlines_like_python() {
        assert_eq!(split_lines("a\nb\r\nc\rd\n"), ["a", "b", "c", "d"]);
        assert_eq!(split_lines("a\n\nb"), ["a", "", "b"]);
    }

    #[test]
    fn tuples() {
        assert_eq!(tuple_push(Some("a"), Some("b")), "('a', 'b')");
        assert_eq!(tuple_push(Some("('a', 'b')"), None), "('a', 'b', None)");
    }
}
