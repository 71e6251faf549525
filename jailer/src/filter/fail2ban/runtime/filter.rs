//! A fail2ban filter definition and its compiled form.

use std::sync::Arc;

use jiff::tz::TimeZone;

use crate::filter::fail2ban::runtime::date::{DateTemplates, zone_offset};
use crate::filter::fail2ban::runtime::error::{FilterError, RegexKind};
use crate::filter::fail2ban::runtime::failregex::Pattern;
use crate::filter::fail2ban::runtime::matcher::LineMatcher;
use crate::filter::fail2ban::runtime::tags::UseDns;

/// A filter as fail2ban's reader leaves it: regexes with their tags
/// (`<HOST>`, `<F-USER>`…) still in place, interpolation done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterDef {
    /// `prefregex`: must match before any failregex is tried; its
    /// `<F-CONTENT>` group, if any, is what the failregexes see.
    pub prefregex: Option<String>,
    /// `failregex`, one regex per entry.
    pub failregex: Vec<String>,
    /// `ignoreregex`, one regex per entry.
    pub ignoreregex: Vec<String>,
    /// `datepattern`: one template per line, as in the filter file.
    pub datepattern: Option<String>,
    /// `maxlines`: lines buffered for multi-line failregexes (default 1).
    pub maxlines: Option<usize>,
}

/// Jail options that change how a filter compiles or matches.
#[derive(Clone, Debug)]
pub struct FilterOptions {
    /// `usedns`: only whether `<HOST>` matches names (`No`: addresses only).
    pub use_dns: UseDns,
    /// Try every failregex on a line instead of stopping at the first match
    /// (fail2ban's `checkAllRegex`, used by `fail2ban-regex` and its tests).
    pub check_all_regex: bool,
    /// The zone of dates that name none (fail2ban: the local zone).
    pub time_zone: TimeZone,
    /// `logtimezone` (`UTC+0200`, `CET`…): a fixed offset for dates that
    /// name no zone, instead of `time_zone`.
    pub log_time_zone: Option<String>,
}

impl Default for FilterOptions {
    fn default() -> Self {
        Self {
            use_dns: UseDns::default(),
            check_all_regex: false,
            time_zone: TimeZone::system(),
            log_time_zone: None,
        }
    }
}

/// A filter ready to match: every regex compiled. Shared (in an `Arc`) by
/// the [`LineMatcher`] of each log stream it reads.
#[derive(Debug)]
pub struct CompiledFilter {
    pub(crate) prefregex: Option<Pattern>,
    pub(crate) failregex: Vec<Pattern>,
    pub(crate) ignoreregex: Vec<Pattern>,
    pub(crate) dates: Arc<DateTemplates>,
    pub(crate) maxlines: usize,
    pub(crate) check_all: bool,
}

impl CompiledFilter {
    /// Compile with fail2ban's defaults (`usedns = warn`, local time zone).
    pub fn new(def: &FilterDef) -> Result<Self, FilterError> {
        Self::with_options(def, &FilterOptions::default())
    }

    /// Compile as fail2ban's `Filter` does: prefregex first, then each
    /// failregex (multi-line if `maxlines` > 1; it needs a failure-id group
    /// unless the prefregex has one), then each ignoreregex, then the date
    /// templates.
    pub fn with_options(def: &FilterDef, opts: &FilterOptions) -> Result<Self, FilterError> {
        let maxlines = def.maxlines.unwrap_or(1);
        if maxlines == 0 {
            return Err(FilterError::MaxLines);
        }
        let prefregex = def
            .prefregex
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| Pattern::new(RegexKind::Prefregex, 0, p, false, opts.use_dns))
            .transpose()?;
        let pref_has_id = prefregex.as_ref().is_some_and(Pattern::has_failure_id);
        let failregex = def
            .failregex
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let p = Pattern::new(RegexKind::Failregex, i, r, maxlines > 1, opts.use_dns)?;
                if !p.has_failure_id() && !pref_has_id {
                    return Err(FilterError::NoFailureId {
                        index: i,
                        regex: r.clone(),
                    });
                }
                Ok(p)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // fail2ban compiles ignoreregexes without MULTILINE, whatever maxlines.
        let ignoreregex = def
            .ignoreregex
            .iter()
            .enumerate()
            .map(|(i, r)| Pattern::new(RegexKind::Ignoreregex, i, r, false, opts.use_dns))
            .collect::<Result<Vec<_>, _>>()?;
        let default_offset = match opts.log_time_zone.as_deref() {
            None => None,
            Some(tz) => Some(zone_offset(tz).ok_or_else(|| FilterError::LogTimeZone {
                value: tz.to_owned(),
            })?),
        };
        let dates = DateTemplates::new(def.datepattern.as_deref(), opts.time_zone.clone())?
            .with_default_offset(default_offset);
        Ok(Self {
            prefregex,
            failregex,
            ignoreregex,
            dates: Arc::new(dates),
            maxlines,
            check_all: opts.check_all_regex,
        })
    }

    /// A matcher for one log stream.
    pub fn matcher(self: &Arc<Self>) -> LineMatcher {
        LineMatcher::new(Arc::clone(self))
    }

    /// The failregexes as compiled (tags expanded), in order.
    pub fn failregex(&self) -> impl Iterator<Item = &str> {
        self.failregex.iter().map(Pattern::source)
    }

    /// The failregexes as written in the definition, in order.
    pub fn failregex_original(&self) -> impl Iterator<Item = &str> {
        self.failregex.iter().map(Pattern::original)
    }

    /// Lines buffered for multi-line matching.
    pub fn maxlines(&self) -> usize {
        self.maxlines
    }

    /// The date templates.
    pub fn dates(&self) -> &Arc<DateTemplates> {
        &self.dates
    }
}
