//! Filters: a log line in, the failing source address (if any) out — the
//! built-in vchkpw matcher and fail2ban-style filter files — plus the
//! timestamps of log lines.

mod regex_file;
pub mod timestamp;
mod vpopmail;

use std::{fs, io, net::IpAddr, path::Path, path::PathBuf};

pub use self::{
    regex_file::RegexFilter,
    vpopmail::{Vpopmail, vchkpw_address},
};

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

/// A filter (built-in name or fail2ban-style file) that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Neither a built-in filter nor a readable file.
    #[error("`{name}` is neither a built-in filter (vpopmail) nor a readable file")]
    NotFound {
        name: String,
        #[source]
        source: io::Error,
    },
    /// A problem at a given line of a filter file.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A failregex/ignoreregex that does not compile; `message` is the
    /// regex error's own last line (its full form spans several lines).
    #[error("{}:{line}: {key}: `{pattern}`: {message}", path.display())]
    Regex {
        path: PathBuf,
        line: usize,
        key: &'static str,
        pattern: String,
        message: String,
    },
}

/// A compiled filter.
#[derive(Debug)]
pub enum Filter {
    /// The built-in vchkpw matcher.
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
            Self::Regex(f) => f.path().display().to_string(),
        }
    }
}
