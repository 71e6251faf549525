//! Filters: log lines in, failures (who, when) out.
//!
//! - [`Vpopmail`]: the built-in vchkpw matcher, hand-written: the address
//!   only ever comes from where vchkpw writes it.
//! - [`fail2ban`]: fail2ban's own filter files (`filter = "dovecot"`,
//!   `"dovecot[mode=aggressive]"`, or a path), read and matched as fail2ban
//!   does.
//!
//! A [`Filter`] is compiled once per jail; each log stream a jail reads gets
//! its own [`Matcher`] (fail2ban filters keep state across lines: the last
//! date, multi-line buffers).

pub mod fail2ban;
pub mod timestamp;
mod vpopmail;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

pub use self::{
    fail2ban::runtime::Host,
    vpopmail::{Services, Vpopmail, vchkpw_address},
};
use crate::ban::PortSet;

/// What a filter says of one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An authentication failure from this address.
    Failure(std::net::IpAddr),
    /// A failure line the filter deliberately does not count (a vchkpw line
    /// that may be truncated, whose address cannot be trusted).
    Ignored,
    /// Not a failure.
    Miss,
}

/// A filter that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// `vpopmail[...]` with an option it does not know or a bad value.
    #[error("filter `{spec}`: {problem}")]
    Builtin { spec: String, problem: String },
    /// No filter by that name anywhere.
    #[error(
        "`{spec}` is neither a built-in filter (vpopmail), a fail2ban filter in {}, nor a filter file in {}",
        filter_d.display(),
        base.display()
    )]
    NotFound {
        spec: String,
        filter_d: PathBuf,
        base: PathBuf,
    },
    /// A fail2ban filter that cannot be read (bad syntax, interpolation).
    #[error("filter `{spec}`")]
    Read {
        spec: String,
        #[source]
        source: Box<fail2ban::config::filter::FilterError>,
    },
    /// A fail2ban filter whose regexes do not compile; `origin` is the file
    /// and line of the regex.
    #[error("filter `{spec}`: {origin}")]
    Compile {
        spec: String,
        origin: String,
        #[source]
        source: Box<fail2ban::runtime::FilterError>,
    },
    /// A filter with no failregex: its jail would never ban.
    #[error("filter `{spec}` ({files}) has no failregex: its jail would never ban")]
    NoFailregex { spec: String, files: String },
    /// A `journalmatch` that does not split into words.
    #[error("filter `{spec}`: journalmatch")]
    Journalmatch {
        spec: String,
        #[source]
        source: Box<fail2ban::config::options::OptionsError>,
    },
}

/// Where a filter name is looked up.
#[derive(Debug, Clone)]
pub struct FilterContext<'a> {
    /// The directory of the file that names the filter (relative paths).
    pub base: &'a Path,
    /// fail2ban's configuration (`filter.d/`), for filter names.
    pub fail2ban_dir: &'a Path,
    /// The ports the jail closes: the built-in vpopmail filter counts the
    /// services of these ports only, unless told otherwise.
    pub ports: Option<&'a PortSet>,
    /// The jail reads the systemd journal (fail2ban's `logtype = journal`).
    pub journal: bool,
}

/// A compiled filter.
#[derive(Debug)]
pub enum Filter {
    /// The built-in vchkpw matcher.
    Vpopmail(Box<Vpopmail>),
    /// A fail2ban filter file.
    Fail2ban(Box<fail2ban::Fail2banFilter>),
}

impl Filter {
    /// `vpopmail` or `vpopmail[service=pop3,imap]` (built in), else a
    /// fail2ban filter by name (under `fail2ban_dir/filter.d`) or path.
    pub fn load(spec: &str, ctx: &FilterContext<'_>) -> Result<Self, FilterError> {
        if let Some(vpopmail) = Vpopmail::from_spec(spec, ctx.ports)? {
            return Ok(Self::Vpopmail(Box::new(vpopmail)));
        }
        fail2ban::load(spec, ctx.base, ctx.fail2ban_dir, ctx.journal)
            .map(|f| Self::Fail2ban(Box::new(f)))
    }

    /// Short name for logs and `check`.
    pub fn name(&self) -> String {
        match self {
            Self::Vpopmail(v) => v.spec(),
            Self::Fail2ban(f) => f.spec.clone(),
        }
    }

    /// The files it was read from (none for built-ins).
    pub fn files(&self) -> &[PathBuf] {
        match self {
            Self::Vpopmail(_) => &[],
            Self::Fail2ban(f) => &f.files,
        }
    }

    /// The filter's own `journalmatch` (fail2ban's default for a jail that
    /// reads the journal and names none).
    pub fn journalmatch(&self) -> &[Vec<String>] {
        match self {
            Self::Vpopmail(_) => &[],
            Self::Fail2ban(f) => &f.journalmatch,
        }
    }

    /// A matcher for one log stream.
    pub fn matcher(self: &Arc<Self>) -> Matcher {
        match &**self {
            Self::Vpopmail(_) => Matcher::Vpopmail(self.clone()),
            Self::Fail2ban(f) => Matcher::Fail2ban(Box::new(f.compiled.matcher())),
        }
    }
}

/// One failure a line completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// An address, a network, or a host name (never resolved).
    pub host: Host,
    /// The line's own time, when it says.
    pub time: Option<SystemTime>,
}

/// What a line yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Failures this line completes (one line may complete a multi-line one).
    Failures(Vec<Found>),
    /// A failure line deliberately not counted.
    Ignored,
    /// Nothing.
    Miss,
}

/// A filter's state for one log stream.
#[derive(Debug)]
pub enum Matcher {
    Vpopmail(Arc<Filter>),
    Fail2ban(Box<fail2ban::runtime::LineMatcher>),
}

impl Matcher {
    /// Judges one line. `time` is the line's time when the source knows it
    /// (journal entries); `now` dates lines that say no year.
    pub fn process(&mut self, line: &str, time: Option<SystemTime>, now: SystemTime) -> Outcome {
        match self {
            Self::Vpopmail(filter) => {
                let Filter::Vpopmail(v) = &**filter else {
                    return Outcome::Miss;
                };
                match v.check(line) {
                    Verdict::Failure(ip) => Outcome::Failures(vec![Found {
                        host: Host::Ip(ip),
                        time: time.or_else(|| timestamp::parse_timestamp(line, now)),
                    }]),
                    Verdict::Ignored => Outcome::Ignored,
                    Verdict::Miss => Outcome::Miss,
                }
            }
            Self::Fail2ban(m) => {
                let failures = match time {
                    Some(t) => m.process_entry(line, t),
                    None => m.process_line(line, now),
                };
                if failures.is_empty() {
                    return Outcome::Miss;
                }
                Outcome::Failures(
                    failures
                        .into_iter()
                        .map(|f| Found {
                            host: f.host,
                            time: f.time,
                        })
                        .collect(),
                )
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::config::DEFAULT_FAIL2BAN_DIR;

    /// What a real dovecot 2.3.19 (Debian 12) wrote to its `log_path` for an
    /// unknown user, a login, a wrong password and a connection closed
    /// before any attempt, with `auth_verbose = yes`.
    pub(crate) const DOVECOT_LOG: &str = include_str!("../../tests/fixtures/dovecot.log");

    /// fail2ban's own dovecot filter, as a jail reading files or the journal
    /// loads it; `None` (and a SKIP line) where fail2ban is not installed.
    pub(crate) fn dovecot_filter(journal: bool) -> Option<Arc<Filter>> {
        let dir = Path::new(DEFAULT_FAIL2BAN_DIR);
        if !dir.join("filter.d/dovecot.conf").exists() {
            eprintln!(
                "SKIP: no fail2ban in {DEFAULT_FAIL2BAN_DIR}; `cargo xtask setup` installs it"
            );
            return None;
        }
        let ctx = FilterContext {
            base: Path::new("."),
            fail2ban_dir: dir,
            ports: None,
            journal,
        };
        Some(Arc::new(Filter::load("dovecot", &ctx).unwrap()))
    }

    /// The address each line counts a failure for, if any.
    pub(crate) fn failures(
        filter: &Arc<Filter>,
        lines: impl IntoIterator<Item = (String, Option<SystemTime>)>,
    ) -> Vec<Option<IpAddr>> {
        let mut matcher = filter.matcher();
        lines
            .into_iter()
            .map(
                |(line, time)| match matcher.process(&line, time, SystemTime::now()) {
                    Outcome::Failures(found) => match found.as_slice() {
                        [
                            Found {
                                host: Host::Ip(ip), ..
                            },
                        ] => Some(*ip),
                        other => panic!("{line}: {other:?}"),
                    },
                    Outcome::Ignored | Outcome::Miss => None,
                },
            )
            .collect()
    }

    #[test]
    fn real_dovecot_log_lines_count_as_fail2ban_counts_them() {
        let Some(filter) = dovecot_filter(false) else {
            return;
        };
        let lines = DOVECOT_LOG.lines().map(|l| (l.to_owned(), None));
        let attacker = Some("10.251.0.2".parse().unwrap());
        // fail2ban-regex 1.0.2 on the same file: 4 matched. A failed login is
        // two failures with auth_verbose (the auth process's line too); the
        // login and the connection closed without an attempt are none.
        assert_eq!(
            failures(&filter, lines),
            [
                None, attacker, attacker, None, None, attacker, attacker, None
            ]
        );
    }
}
