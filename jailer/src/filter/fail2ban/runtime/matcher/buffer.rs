//! fail2ban's line buffer: lines split around their dates, the text the
//! regexes search, and which buffered lines a match covers.

use std::ops::Range;

use pcre2::bytes::CaptureLocations;

use crate::filter::fail2ban::runtime::failregex::Pattern;

/// A buffered line split around its date (fail2ban's `tupleLine`): the
/// failregexes see it without the date.
#[derive(Clone, Debug, Default)]
pub(super) struct TupleLine {
    text: String,
    date: Range<usize>,
}

impl TupleLine {
    pub(super) fn set(&mut self, prefix: &str, line: &str, date: Range<usize>) {
        self.text.clear();
        self.text.push_str(prefix);
        self.text.push_str(line);
        self.date = date;
    }

    fn pre(&self) -> &str {
        self.text.get(..self.date.start).unwrap_or("")
    }

    fn post(&self) -> &str {
        self.text.get(self.date.end..).unwrap_or("")
    }

    /// The line as fail2ban shows it (`"".join(tupleLine)`).
    pub(super) fn full(&self) -> String {
        self.text.clone()
    }

    /// Whether the line without its date is `s`.
    fn stripped_eq(&self, s: &str) -> bool {
        let (pre, post) = (self.pre(), self.post());
        s.len() == pre.len() + post.len() && s.starts_with(pre) && s.ends_with(post)
    }
}

/// What fail2ban's `__lineBuffer` holds while a line is matched: still the
/// original buffer, the prefregex's `<F-CONTENT>`, or the lines a failregex
/// left unmatched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Current {
    Org,
    Content,
    Lines(Vec<usize>),
}

/// `Regex._tupleLinesBuf`: lines without dates, each ended by `\n`.
pub(super) fn fill_buf(buf: &mut String, org: &[TupleLine], cur: &Current, content: &str) {
    buf.clear();
    let mut push = |l: &TupleLine| {
        buf.push_str(l.pre());
        buf.push_str(l.post());
        buf.push('\n');
    };
    match cur {
        Current::Org => org.iter().for_each(&mut push),
        Current::Lines(idx) => idx.iter().filter_map(|&i| org.get(i)).for_each(&mut push),
        Current::Content => {
            buf.push_str(content);
            buf.push('\n');
        }
    }
}

/// Which buffered lines a match covers (`getMatchedTupleLines`) and which
/// it leaves (`getUnmatchedTupleLines`), as indices into the buffer.
pub(super) struct MatchLines {
    pub(super) matched: Vec<usize>,
    pub(super) unmatched: Vec<usize>,
}

/// `Regex.search`'s bookkeeping after a match at `span` of `buf`.
pub(super) fn match_lines(
    pattern: &Pattern,
    caps: &CaptureLocations,
    buf: &str,
    span: (usize, usize),
    org: &[TupleLine],
) -> MatchLines {
    if org.len() <= 1 {
        return MatchLines {
            matched: (0..org.len()).collect(),
            unmatched: Vec::new(),
        };
    }
    let b = buf.as_bytes();
    let (start, end) = span;
    let line_start = b[..(start + 1).min(b.len())]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    // Python's index("\n", end - 1): -1 counts from the end.
    let from = if end == 0 {
        b.len().saturating_sub(1)
    } else {
        end - 1
    };
    let line_end = b[from.min(b.len())..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |i| from + i + 1);
    let count = |upto: usize| b[..upto].iter().filter(|&&c| c == b'\n').count();
    let (l1, l2) = (count(line_start), count(line_end));
    let mut matched: Vec<usize> = (l1..l2.min(org.len())).collect();
    let mut unmatched: Vec<usize> = (0..l1.min(org.len())).collect();
    // Lines eaten by <SKIPLINES> are not part of the failure.
    let mut n = 0;
    for skipped in pattern.skipped_lines(caps, buf) {
        if let Some(m) = matched
            .get(n..)
            .and_then(|rest| rest.iter().position(|&i| org[i].stripped_eq(&skipped)))
        {
            unmatched.push(matched.remove(n + m));
            n += m;
        }
    }
    unmatched.extend(l2..org.len());
    MatchLines { matched, unmatched }
}
