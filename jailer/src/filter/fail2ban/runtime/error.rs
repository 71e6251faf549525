//! Errors from compiling a filter definition.

use std::fmt;

/// Which list of a filter definition a regex comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegexKind {
    /// `prefregex`.
    Prefregex,
    /// One of `failregex`.
    Failregex,
    /// One of `ignoreregex`.
    Ignoreregex,
    /// One line of `datepattern`.
    Datepattern,
}

impl fmt::Display for RegexKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prefregex => "prefregex",
            Self::Failregex => "failregex",
            Self::Ignoreregex => "ignoreregex",
            Self::Datepattern => "datepattern",
        })
    }
}

/// A filter definition that cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A regex is empty once its tags are expanded (fail2ban: "Cannot add
    /// empty regex").
    #[error("{kind} #{index} is empty")]
    EmptyRegex {
        /// The list it is in.
        kind: RegexKind,
        /// Its position in that list (0-based).
        index: usize,
    },
    /// PCRE2 rejected a regex.
    #[error("{kind} #{index} `{regex}` does not compile")]
    Compile {
        /// The list it is in.
        kind: RegexKind,
        /// Its position in that list (0-based).
        index: usize,
        /// The regex as written in the filter.
        regex: String,
        /// The regex PCRE2 was given (tags expanded); PCRE2's offset points
        /// into this one.
        expanded: String,
        /// PCRE2's message and offset.
        #[source]
        source: pcre2::Error,
    },
    /// Neither a failregex nor the prefregex has a group that identifies the
    /// failure (`<HOST>`, `<ADDR>`, `<IP4>`, `<IP6>`, `<DNS>`, `<F-ID>`,
    /// `<F-MLFID>`).
    #[error("failregex #{index} `{regex}` has no failure-id group (<HOST>, <ADDR>, <F-ID>, ...)")]
    NoFailureId {
        /// Its position in `failregex` (0-based).
        index: usize,
        /// The regex as written in the filter.
        regex: String,
    },
    /// A `datepattern` line that fail2ban cannot turn into a regex (unknown
    /// `%` directive, stray `%`).
    #[error("datepattern `{pattern}`: {reason}")]
    DatePattern {
        /// The datepattern line.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `logtimezone` is not `[ABBR][+-]hh[[:]mm]` with a known abbreviation.
    #[error("logtimezone `{value}` is not a known zone or fixed offset")]
    LogTimeZone {
        /// The value given.
        value: String,
    },
    /// `maxlines` is zero.
    #[error("maxlines must be greater than zero")]
    MaxLines,
}
