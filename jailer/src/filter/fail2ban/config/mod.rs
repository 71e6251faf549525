//! A reader of fail2ban's configuration (`fail2ban.conf`, `jail.conf`,
//! `filter.d/*.conf` and their `.local`/`.d` overrides) with the semantics of
//! fail2ban 1.0.2's Python client, checked against it on Debian's stock
//! configuration and on a hand-made one (tests/fail2ban_reference.rs).
//!
//! - [`ini`]: the configparser dialect, includes, `.local` files,
//!   `%(..)s` interpolation with `known/` and `default/`.
//! - [`filter`]: a `filter.d` filter with options (`sshd[mode=aggressive]`),
//!   `<tag>` substitution, one regex per line with its file and line.
//! - [`jail`]: the enabled jails with their resolved options.
//! - [`server`]: `fail2ban.conf` (database file and purge age).
//! - [`options`], [`time`]: fail2ban's small syntaxes (`name[opt=value]`,
//!   word lists, action lists, `10m`/`1h 30m` times).
//!
//! Every value keeps where it was written ([`Origin`]), so errors and
//! regexes can be reported as `file:line`.
//!
//! Where this reader knowingly differs from fail2ban:
//! - it reports what fail2ban only logs and skips: unreadable files, files
//!   that are not UTF-8 (and files over 16 MiB, more than 1000 includes);
//! - it also reports, as a skipped jail, values fail2ban's server would
//!   reject (`bantime`/`findtime` that are no time, `maxlines` below 1, a
//!   `logpath` suffix other than `head`/`tail`);
//! - time values are evaluated as arithmetic (fail2ban `eval`s any Python
//!   expression); integers are `i64` (`i128` inside times);
//! - actions are checked for existence only, their files not interpreted;
//! - jail options fail2ban holds as `None` (a non-numeric `maxretry`) are not
//!   offered to `%(..)s` in filters (fail2ban would crash on them);
//! - options named like a part of `datepattern` (`date`, `pattern`), which
//!   fail2ban forwards to its server by accident, are ignored;
//! - `\w` and lower-casing follow Rust's Unicode tables, equal to Python's
//!   for ASCII.

pub mod filter;
pub mod ini;
pub mod jail;
pub mod options;
mod pystr;
pub mod server;
mod tags;
pub mod text;
pub mod time;

pub use ini::{Ini, IniError};
pub use tags::TagError;
pub use text::{Origin, Text};
