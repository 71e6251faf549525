//! fail2ban's filter runtime on PCRE2.
//!
//! A fail2ban filter definition ([`FilterDef`]: `prefregex`, `failregex`,
//! `ignoreregex`, `datepattern`, `maxlines`, tags such as `<HOST>` still in
//! place) compiles into a [`CompiledFilter`]; a [`LineMatcher`] per log
//! stream finds and cuts each line's date and reports the [`Failure`]s the
//! line completes, as fail2ban's `Filter.processLine` does. Host names are
//! reported as names, never resolved.
//!
//! fail2ban's regexes are Python `re` syntax (look-behind, `(?P<name>…)`,
//! `(?(name)…|…)`); PCRE2 reads them as they are. See the crate README for
//! every known difference from fail2ban.
//!
//! ```text
//! use std::sync::Arc;
//! use std::time::SystemTime;
//! use jailer::filter::fail2ban::runtime::{CompiledFilter, FilterDef, FilterOptions, Host};
//!
//! let def = FilterDef {
//!     failregex: vec![r"^\s*\S+ sshd\[\d+\]: Failed password for <F-USER>\S+</F-USER> from <HOST>".into()],
//!     ..FilterDef::default()
//! };
//! let opts = FilterOptions { time_zone: jiff::tz::TimeZone::UTC, ..FilterOptions::default() };
//! let filter = Arc::new(CompiledFilter::with_options(&def, &opts)?);
//! let mut stream = filter.matcher();
//! // The date is cut out first: the failregex sees " host sshd[42]: ...".
//! let line = "2026-11-28 10:11:12 host sshd[42]: Failed password for root from 2001:db8::7 port 22";
//! let failures = stream.process_line(line, SystemTime::now());
//! assert_eq!(failures[0].host, Host::Ip("2001:db8::7".parse()?));
//! assert_eq!(failures[0].user.as_deref(), Some("root"));
//! assert_eq!(failures[0].time, Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_860_672)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod date;
mod error;
mod failregex;
mod failure;
mod filter;
mod matcher;
mod mlfid;
mod tags;

pub use date::{DateDetector, DateMatch, DateTemplates, TemplateInfo};
pub use error::{FilterError, RegexKind};
pub use failure::{Failure, Host};
pub use filter::{CompiledFilter, FilterDef, FilterOptions};
pub use matcher::LineMatcher;
pub use tags::UseDns;
