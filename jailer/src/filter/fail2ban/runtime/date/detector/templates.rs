//! The template list a filter's `datepattern` builds, in fail2ban's order
//! and with its weights; built once per filter and shared by every stream.

use std::time::SystemTime;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::filter::fail2ban::runtime::date::strptime::TimeRe;
use crate::filter::fail2ban::runtime::date::template::{
    DEFAULT_PATTERNS, Draft, LINE_BEGIN, Meta, Spec, Template, cache_key,
};
use crate::filter::fail2ban::runtime::error::FilterError;

/// A template with the name fail2ban gives its line-start-anchored copy.
const ANCHORED_WEIGHT: f64 = 100.0;

/// The compiled date templates of one filter, in fail2ban's order. Shared by
/// every stream the filter reads; [`DateDetector`](super::DateDetector)
/// holds a stream's state.
#[derive(Debug)]
pub struct DateTemplates {
    pub(super) templates: Vec<Template>,
    pub(super) tz: TimeZone,
    /// `logtimezone`: minutes east of UTC for dates without a zone.
    pub(super) default_tz: Option<i32>,
}

impl DateTemplates {
    /// The templates for a filter's `datepattern` (`None`: fail2ban's
    /// default list). Dates without a zone are read in `tz`.
    pub fn new(datepattern: Option<&str>, tz: TimeZone) -> Result<Self, FilterError> {
        // A clock outside jiff's range (years -9999..9999) is no clock.
        let now_year = Timestamp::try_from(SystemTime::now())
            .map(|ts| tz.to_datetime(ts).year())
            .unwrap_or(2026);
        Self::with_year(datepattern, tz, now_year)
    }

    /// As [`DateTemplates::new`], with `%ExY` built for `now_year` (fail2ban
    /// builds it from the clock at start-up).
    pub fn with_year(
        datepattern: Option<&str>,
        tz: TimeZone,
        now_year: i16,
    ) -> Result<Self, FilterError> {
        let meta = Meta::new()?;
        let time_re = TimeRe::new(now_year);
        let mut list = Builder {
            meta: &meta,
            time_re: &time_re,
            defaults: None,
            templates: Vec::new(),
        };
        // Filter.setDatePattern: one template (or template set) per line.
        for line in datepattern.into_iter().flat_map(str::lines) {
            let line = line.trim();
            if !line.is_empty() {
                list.append(line)?;
            }
        }
        if list.templates.is_empty() {
            // An empty detector falls back to the defaults at first use.
            list.add_defaults(|_| true, None, true)?;
        }
        let anchored_keys: Vec<String> = list
            .defaults()?
            .anchored
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        let templates = list
            .templates
            .into_iter()
            .map(|(key, draft)| {
                // fail2ban caches templates by pattern and raises the weight
                // of the line-start copies of its defaults; a filter's own
                // template under the same key is the same cached object.
                let weight = if anchored_keys.contains(&key) {
                    ANCHORED_WEIGHT
                } else {
                    1.0
                };
                draft.compile(weight)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            templates,
            tz,
            default_tz: None,
        })
    }

    /// `logtimezone`: read dates that name no zone at this fixed offset
    /// (minutes east of UTC) instead of the local zone.
    #[must_use]
    pub fn with_default_offset(mut self, minutes: Option<i32>) -> Self {
        self.default_tz = minutes;
        self
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Whether there are no templates (never: an empty list gets the defaults).
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The templates in order, as fail2ban would show them.
    pub fn describe(&self) -> impl Iterator<Item = TemplateInfo<'_>> {
        self.templates.iter().map(|t| TemplateInfo {
            name: &t.name,
            regex: &t.regex,
            flags: t.flags,
            weight: t.weight,
        })
    }

    /// The zone dates without one are read in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }
}

/// A date template as fail2ban describes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TemplateInfo<'a> {
    /// fail2ban's name for it (`{^LN-BEG}MON Day 24hour:Minute:Second`).
    pub name: &'a str,
    /// The regex as fail2ban writes it (with Python's `(?iu)`).
    pub regex: &'a str,
    /// `DateTemplate.flags`: 8 line start, 4 line end, 2 word start, 1 word end.
    pub flags: u8,
    /// The weight fail2ban reorders templates by.
    pub weight: f64,
}

/// fail2ban's default templates (`DateDetectorCache`): the defaults, and
/// the line-start-anchored copies that go in front of them; each with the key
/// fail2ban caches it under.
struct Defaults {
    plain: Vec<(String, Draft)>,
    anchored: Vec<(String, Draft)>,
}

struct Builder<'m> {
    meta: &'m Meta,
    time_re: &'m TimeRe,
    defaults: Option<Defaults>,
    /// Cache key and template, in order.
    templates: Vec<(String, Draft)>,
}

impl Builder<'_> {
    fn draft(&self, spec: &Spec) -> Result<Draft, FilterError> {
        Draft::new(self.meta, self.time_re, spec)
    }

    fn defaults(&mut self) -> Result<&Defaults, FilterError> {
        let d = match self.defaults.take() {
            Some(d) => d,
            None => self.build_defaults()?,
        };
        Ok(self.defaults.insert(d))
    }

    /// `DateDetectorCache._addDefaultTemplate`.
    fn build_defaults(&self) -> Result<Defaults, FilterError> {
        let mut d = Defaults {
            plain: Vec::new(),
            anchored: Vec::new(),
        };
        for p in DEFAULT_PATTERNS {
            let t = self.draft(&Spec::of(self.meta, p, None))?;
            if !t.name.starts_with("{^LN-BEG}") && !t.name.starts_with('^') {
                let (key, spec) = self.anchored_spec(&t, |s| format!("{{^LN-BEG}}{s}"));
                let a = self.draft(&spec)?;
                if a.name != t.name {
                    d.anchored.push((key, a));
                }
            }
            d.plain.push((cache_key(p), t));
        }
        Ok(d)
    }

    /// `_getAnchoredTemplate`: the template with its pattern (or, for EPOCH
    /// and TAI64N, its name) wrapped, and its cache key.
    fn anchored_spec(&self, t: &Draft, wrap: impl Fn(&str) -> String) -> (String, Spec) {
        let wrapped = wrap(t.pattern().unwrap_or(&t.name));
        (cache_key(&wrapped), Spec::of(self.meta, &wrapped, None))
    }

    /// `_appendTemplate`.
    fn push(&mut self, key: String, t: Draft, ignore_dup: bool) -> Result<(), FilterError> {
        if self.templates.iter().any(|(_, x)| x.name == t.name) {
            if ignore_dup {
                return Ok(());
            }
            return Err(FilterError::DatePattern {
                pattern: t.pattern().unwrap_or(&t.name).to_owned(),
                reason: format!("there is already a template with name {}", t.name),
            });
        }
        self.templates.push((key, t));
        Ok(())
    }

    /// `DateDetector.appendTemplate(str)`.
    fn append(&mut self, pattern: &str) -> Result<(), FilterError> {
        let key = cache_key(pattern);
        match key.as_str() {
            "{^LN-BEG}" => self.add_defaults(|t| t.flags & LINE_BEGIN != 0, None, true),
            // fail2ban's filter for {DEFAULT} rejects every template (its
            // lambda returns None), so it adds nothing.
            "{DEFAULT}" => Ok(()),
            _ if key.contains("{DATE}") => self.add_defaults(|_| true, Some(pattern), false),
            "{NONE}" => {
                let t = self.draft(&Spec::of(self.meta, "{UNB}^", Some(&key)))?;
                self.push(key, t, false)
            }
            _ => {
                let t = self.draft(&Spec::of(self.meta, pattern, Some(&key)))?;
                self.push(key, t, false)
            }
        }
    }

    /// `addDefaultTemplate(filterTemplate, preMatch, allDefaults)`: all
    /// defaults (anchored copies first) or only the plain ones, those `keep`
    /// accepts, with `{DATE}` of `prematch` replaced by each.
    fn add_defaults(
        &mut self,
        keep: impl Fn(&Draft) -> bool,
        prematch: Option<&str>,
        all: bool,
    ) -> Result<(), FilterError> {
        let ignore_dup = !self.templates.is_empty();
        let d = self.defaults()?;
        let list: Vec<(String, Draft)> = if all {
            d.anchored.iter().chain(&d.plain).cloned().collect()
        } else {
            d.plain.clone()
        };
        for (key, t) in list {
            if !keep(&t) {
                continue;
            }
            let (key, t) = match prematch {
                Some(pre) => {
                    let meta = self.meta;
                    let (key, spec) = self.anchored_spec(&t, |s| meta.wrap_prematch(pre, s));
                    (key, self.draft(&spec)?)
                }
                None => (key, t),
            };
            self.push(key, t, ignore_dup)?;
        }
        Ok(())
    }
}
