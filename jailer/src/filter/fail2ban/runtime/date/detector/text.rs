//! Character positions as Python counts them, cheap on ASCII lines: the
//! detector remembers where dates were in characters, as fail2ban does.

/// A line and whether it is ASCII, for the character positions Python
/// counts (byte offsets are the same on ASCII lines, the usual case).
#[derive(Clone, Copy)]
pub(super) struct Text<'a> {
    line: &'a str,
    ascii: bool,
}

impl<'a> Text<'a> {
    pub(super) fn new(line: &'a str) -> Self {
        Self {
            line,
            ascii: line.is_ascii(),
        }
    }

    /// Byte offset of character `n` (the end of the line if it is shorter).
    pub(super) fn byte(self, n: usize) -> usize {
        if self.ascii {
            return n.min(self.line.len());
        }
        self.line
            .char_indices()
            .nth(n)
            .map_or(self.line.len(), |(b, _)| b)
    }

    /// Character count of `line[..b]`.
    pub(super) fn chars(self, b: usize) -> usize {
        if self.ascii {
            return b.min(self.line.len());
        }
        self.line.get(..b).unwrap_or(self.line).chars().count()
    }

    /// Python's `line[n:n+1]` as a character (`None`: empty).
    pub(super) fn at(self, n: usize) -> Option<char> {
        if self.ascii {
            return self.line.as_bytes().get(n).map(|&b| char::from(b));
        }
        self.line.chars().nth(n)
    }

    /// Python's `line[n-1:n]` as a character.
    pub(super) fn before(self, n: usize) -> Option<char> {
        n.checked_sub(1).and_then(|p| self.at(p))
    }

    pub(super) fn last(self) -> Option<char> {
        self.line.chars().next_back()
    }
}
