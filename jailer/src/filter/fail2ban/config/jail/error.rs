//! Why fail2ban refuses the jail configuration ([`JailError`]) or leaves one
//! enabled jail out ([`SkipReason`]): the two outcomes of reading a jail
//! besides the jail itself, kept apart from the reading.

use std::path::PathBuf;

use super::super::{
    filter::FilterError,
    ini::IniError,
    options::OptionsError,
    text::{self, Origin},
    time::TimeError,
};

/// A problem that makes fail2ban refuse the whole jail configuration.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// None of `jail.conf`, `jail.d/*.conf`, `jail.local`, `jail.d/*.local` exists.
    #[error("{}: no jail.conf, jail.local or jail.d/", dir.display())]
    NotFound {
        /// The configuration directory.
        dir: PathBuf,
    },
    /// A file is unreadable or malformed, or an option of a jail cannot be
    /// interpolated (fail2ban stops on these even for disabled jails).
    #[error(transparent)]
    Ini(#[from] IniError),
    /// A jail's filter is malformed beyond what fail2ban tolerates.
    #[error("{origin}: jail [{jail}]")]
    Filter {
        /// The jail's section header.
        origin: Origin,
        /// The jail.
        jail: String,
        /// What is wrong.
        #[source]
        source: Box<FilterError>,
    },
}

/// Why an enabled jail is left out (fail2ban logs "Errors in jail" and
/// starts the others, or its server rejects the value).
#[derive(Debug, thiserror::Error)]
pub enum SkipReason {
    /// `filter = name[opt=...]` is malformed.
    #[error("{}: jail [{jail}]: bad filter", text::describe(.origin))]
    FilterSpec {
        /// Where `filter` is set.
        origin: Option<Origin>,
        /// The jail.
        jail: String,
        /// What is wrong.
        #[source]
        source: Box<OptionsError>,
    },
    /// The filter cannot be loaded (no such file, or a bad `maxlines`).
    #[error("{}: jail [{jail}]", text::describe(.origin))]
    Filter {
        /// Where `filter` is set.
        origin: Option<Origin>,
        /// The jail.
        jail: String,
        /// What is wrong.
        #[source]
        source: Box<FilterError>,
    },
    /// A time option (`bantime`, `findtime`, ...) is not a time.
    #[error("{}: jail [{jail}]: {option}", text::describe(.origin))]
    Time {
        /// Where the option is set.
        origin: Option<Origin>,
        /// The jail.
        jail: String,
        /// The option.
        option: &'static str,
        /// What is wrong.
        #[source]
        source: Box<TimeError>,
    },
    /// An action in `action` is malformed.
    #[error("{}: jail [{jail}]: bad action", text::describe(.origin))]
    ActionSpec {
        /// Where `action` is set.
        origin: Option<Origin>,
        /// The jail.
        jail: String,
        /// What is wrong.
        #[source]
        source: Box<OptionsError>,
    },
    /// An action names no `action.d` file.
    #[error("{}: jail [{jail}]: action `{action}`: no {} (nor .local, .d/)", text::describe(.origin), tried.display())]
    ActionNotFound {
        /// Where `action` is set.
        origin: Option<Origin>,
        /// The jail.
        jail: String,
        /// The action name.
        action: String,
        /// The first file looked for.
        tried: PathBuf,
    },
    /// A `logpath` line ends in a word other than `head` or `tail`.
    #[error("{}: jail [{jail}]: logpath `{line}`: a path may only be followed by `head` or `tail`", text::describe(.origin))]
    LogPath {
        /// Where the line is written.
        origin: Option<Origin>,
        /// The jail.
        jail: String,
        /// The line.
        line: String,
    },
}
