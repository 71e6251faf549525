//! Strings that remember where each part was written.
//!
//! A fail2ban regex is assembled from many places: `%(x)s` interpolation and
//! `<tag>` substitution splice values from other options, sections and files
//! into one another. To say "the failregex at dovecot.conf:17 does not
//! compile", every byte keeps the file line it came from.

use std::{fmt, ops::Range, path::Path, sync::Arc};

/// A line of a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The file, as fail2ban names it (base directory joined with the
    /// relative name, or an include path as written).
    pub path: Arc<Path>,
    /// 1-based line number.
    pub line: usize,
}

impl Origin {
    /// `path:line`.
    pub fn new(path: Arc<Path>, line: usize) -> Self {
        Self { path, line }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// `path:line`, or `<given>` for a value not read from a file (options
/// passed with a filter name by the caller, computed defaults).
pub(crate) fn describe(origin: &Option<Origin>) -> String {
    origin
        .as_ref()
        .map_or_else(|| "<given>".to_owned(), Origin::to_string)
}

/// A string plus, for each byte, the [`Origin`] it was written at.
///
/// Stored as the offsets at which the origin changes; equality and display
/// look at the text only.
#[derive(Clone, Debug, Default)]
pub struct Text {
    text: String,
    /// Strictly increasing byte offsets, each `< text.len()`.
    marks: Vec<(usize, Origin)>,
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Text {}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Text {
    /// `text`, all of it written at `origin`.
    pub fn new(text: impl Into<String>, origin: Origin) -> Self {
        let text = text.into();
        let marks = if text.is_empty() {
            Vec::new()
        } else {
            vec![(0, origin)]
        };
        Self { text, marks }
    }

    /// `text` of unknown origin (computed defaults such as `logtype`).
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            marks: Vec::new(),
        }
    }

    /// Lines joined with `\n`, each with its own origin (a `\n` belongs to
    /// the line it ends).
    pub(crate) fn from_lines<'a>(lines: impl IntoIterator<Item = (&'a str, Origin)>) -> Self {
        let mut out = Self::default();
        let mut previous: Option<Origin> = None;
        for (line, origin) in lines {
            if let Some(previous) = &previous {
                out.push_raw("\n", previous);
            }
            out.push_raw(line, &origin);
            previous = Some(origin);
        }
        out
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text, owned.
    pub fn into_string(self) -> String {
        self.text
    }

    /// Where the byte at `offset` (or the last byte before it) was written.
    pub fn origin_at(&self, offset: usize) -> Option<&Origin> {
        let i = self.marks.partition_point(|(at, _)| *at <= offset);
        self.marks[..i]
            .last()
            .or(self.marks.first())
            .map(|(_, o)| o)
    }

    /// Where the text starts.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin_at(0)
    }

    fn mark(&mut self, at: usize, origin: &Origin) {
        if self.marks.last().is_none_or(|(_, o)| o != origin) {
            self.marks.push((at, origin.clone()));
        }
    }

    fn push_raw(&mut self, s: &str, origin: &Origin) {
        if !s.is_empty() {
            self.mark(self.text.len(), origin);
            self.text.push_str(s);
        }
    }

    /// Appends `other[range]` with its origins. `range` must lie on char
    /// boundaries (callers take it from `find` results).
    pub(crate) fn push_slice(&mut self, other: &Text, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        let base = self.text.len();
        if let Some(first) = other.origin_at(range.start) {
            self.mark(base, first);
        }
        for (at, origin) in &other.marks {
            if *at > range.start && *at < range.end {
                self.mark(base + (at - range.start), origin);
            }
        }
        self.text.push_str(&other.text[range]);
    }

    /// Appends all of `other`.
    pub(crate) fn push_text(&mut self, other: &Text) {
        self.push_slice(other, 0..other.text.len());
    }

    /// Python's `str.replace(needle, repl)`: every non-overlapping
    /// occurrence, left to right.
    pub(crate) fn replace_all(&self, needle: &str, repl: &Text) -> Text {
        let mut out = Text::default();
        let mut pos = 0;
        for (at, _) in self.text.match_indices(needle) {
            out.push_slice(self, pos..at);
            out.push_text(repl);
            pos = at + needle.len();
        }
        out.push_slice(self, pos..self.text.len());
        out
    }

    /// The `\n`-separated lines with the origin of each line's first byte.
    pub fn lines(&self) -> impl Iterator<Item = (&str, Option<&Origin>)> {
        let mut start = 0;
        self.text.split('\n').map(move |line| {
            let origin = self.origin_at(start);
            start += line.len() + 1;
            (line, origin)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize) -> Origin {
        Origin::new(Arc::from(Path::new("f.conf")), line)
    }

    #[test]
    fn lines_keep_their_origins_through_replacement() {
        let value = Text::from_lines([("a <x> b", at(1)), ("c", at(3))]);
        let repl = Text::from_lines([("X1", at(10)), ("X2", at(11))]);
        let out = value.replace_all("<x>", &repl);
        assert_eq!(out.as_str(), "a X1\nX2 b\nc");
        let lines: Vec<_> = out.lines().map(|(l, o)| (l, o.map(|o| o.line))).collect();
        assert_eq!(
            lines,
            [("a X1", Some(1)), ("X2 b", Some(11)), ("c", Some(3))]
        );
        assert_eq!(out.origin_at(2).map(|o| o.line), Some(10));
    }

    #[test]
    fn slices_start_with_the_origin_of_their_first_byte() {
        let value = Text::from_lines([("ab", at(1)), ("cd", at(2))]);
        let mut s = Text::default();
        s.push_slice(&value, 4..5);
        assert_eq!(s.as_str(), "d");
        assert_eq!(s.origin().map(|o| o.line), Some(2));
        assert!(Text::default().origin().is_none());
    }
}
