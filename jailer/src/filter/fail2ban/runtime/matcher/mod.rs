//! Matching log lines against a compiled filter, per log stream: fail2ban's
//! `Filter.processLine` and `Filter.findFailure` (server/filter.py).

mod buffer;
mod report;

use std::sync::Arc;
use std::time::SystemTime;

use pcre2::bytes::CaptureLocations;

use self::buffer::{Current, MatchLines, TupleLine, fill_buf, match_lines};
use self::report::{Id, build_failure, failure_host};
use crate::filter::fail2ban::runtime::date::{DateDetector, unix_seconds as seconds};
use crate::filter::fail2ban::runtime::failregex::{Groups, Pattern};
use crate::filter::fail2ban::runtime::failure::{FailData, Failure};
use crate::filter::fail2ban::runtime::filter::CompiledFilter;
use crate::filter::fail2ban::runtime::mlfid::{Merged, MlfidCache};

/// A line without a date takes the last date seen if that is this recent
/// (seconds before now).
const LAST_DATE_MAX_AGE: f64 = 60.0;

/// The matching state of one log stream: the date detector, the multi-line
/// buffer, multi-line failures in progress, and scratch space so that lines
/// that match nothing cost no allocation.
#[derive(Debug)]
pub struct LineMatcher {
    filter: Arc<CompiledFilter>,
    dates: DateDetector,
    pref_caps: Option<CaptureLocations>,
    fail_caps: Vec<CaptureLocations>,
    ignore_caps: Vec<CaptureLocations>,
    /// `__lastTimeText`, `__lastDate`.
    last_time_text: String,
    last_date: Option<f64>,
    /// `__lineBuffer`: one line, or up to `maxlines`.
    lines: Vec<TupleLine>,
    /// Buffers of lines that left the buffer, for reuse.
    spare: Vec<TupleLine>,
    buf: String,
    alt_buf: String,
    content: String,
    ignore_buf: String,
    mlfid: MlfidCache,
}

impl LineMatcher {
    /// A matcher for one stream of `filter`.
    pub fn new(filter: Arc<CompiledFilter>) -> Self {
        let dates = DateDetector::new(Arc::clone(&filter.dates));
        Self {
            pref_caps: filter.prefregex.as_ref().map(Pattern::capture_locations),
            fail_caps: filter
                .failregex
                .iter()
                .map(Pattern::capture_locations)
                .collect(),
            ignore_caps: filter
                .ignoreregex
                .iter()
                .map(Pattern::capture_locations)
                .collect(),
            dates,
            filter,
            last_time_text: String::new(),
            last_date: None,
            lines: vec![TupleLine::default()],
            spare: Vec::new(),
            buf: String::new(),
            alt_buf: String::new(),
            content: String::new(),
            ignore_buf: String::new(),
            mlfid: MlfidCache::default(),
        }
    }

    /// The filter this matcher uses.
    pub fn filter(&self) -> &Arc<CompiledFilter> {
        &self.filter
    }

    /// Match one log line (without its line ending). `now` is the current
    /// time: it dates lines without a year or day, and bounds how long a
    /// date is reused for lines without one.
    ///
    /// Unlike fail2ban's jail, nothing here drops failures older than
    /// `findtime` or moves odd dates to now; that is the caller's policy.
    pub fn process_line(&mut self, line: &str, now: SystemTime) -> Vec<Failure> {
        let now_s = seconds(now);
        // (span cut out, time, whether the last date text stands in front)
        let (span, mut time, mut prefix_last) = match self.dates.detect_at(line, now, now_s) {
            Some(d) if !d.span.is_empty() => {
                if let Some(t) = d.seconds {
                    self.last_time_text.clear();
                    self.last_time_text
                        .push_str(line.get(d.span.clone()).unwrap_or(""));
                    self.last_date = Some(t);
                }
                (d.span, d.seconds, false)
            }
            // A template matched nothing (an optional date): the last date
            // if recent, else now.
            Some(_) => match self.recent_date(now_s) {
                Some(last) => (0..0, Some(last), true),
                None => (0..0, Some(now_s), false),
            },
            None => (0..0, None, false),
        };
        // No date, or one that does not parse: the last date, if recent.
        if time.is_none()
            && let Some(last) = self.recent_date(now_s)
        {
            prefix_last = true;
            time = Some(last);
        }
        let slot = self.next_slot();
        let tuple = &mut self.lines[slot];
        if prefix_last {
            tuple.set(&self.last_time_text, line, 0..self.last_time_text.len());
        } else {
            tuple.set("", line, span);
        }
        self.find_failure(time, now_s)
    }

    /// Match one line whose time is known (a journal entry): no date is
    /// looked for or cut (fail2ban's `processLine(line, date)`).
    /// Multi-line state ages by entry time.
    pub fn process_entry(&mut self, line: &str, time: SystemTime) -> Vec<Failure> {
        let t = seconds(time);
        self.last_time_text.clear();
        self.last_date = Some(t);
        let slot = self.next_slot();
        self.lines[slot].set("", line, 0..0);
        self.find_failure(Some(t), t)
    }

    fn recent_date(&self, now: f64) -> Option<f64> {
        self.last_date
            .filter(|&d| d != 0.0 && d > now - LAST_DATE_MAX_AGE)
    }

    /// The buffer slot for a new line: the only one in single-line mode, a
    /// new last one (oldest dropped past `maxlines`) otherwise.
    fn next_slot(&mut self) -> usize {
        let max = self.filter.maxlines;
        if max <= 1 {
            self.lines.truncate(1);
            if self.lines.is_empty() {
                self.lines.push(TupleLine::default());
            }
        } else {
            let slot = self.spare.pop().unwrap_or_default();
            self.lines.push(slot);
            while self.lines.len() > max {
                let old = self.lines.remove(0);
                self.spare.push(old);
            }
        }
        self.lines.len() - 1
    }

    /// `findFailure` on the current buffer; `time` is the line's.
    fn find_failure(&mut self, time: Option<f64>, now: f64) -> Vec<Failure> {
        let mut cur = Current::Org;
        let failures = self.find(time, now, &mut cur);
        if self.filter.maxlines > 1 {
            self.keep(cur);
        }
        failures
    }

    /// Make `__lineBuffer` what matching left it as.
    fn keep(&mut self, cur: Current) {
        match cur {
            Current::Org => {}
            Current::Content => {
                self.spare.append(&mut self.lines);
                let mut slot = self.spare.pop().unwrap_or_default();
                slot.set("", &self.content, 0..0);
                self.lines.push(slot);
            }
            Current::Lines(idx) => {
                let mut old: Vec<Option<TupleLine>> = self.lines.drain(..).map(Some).collect();
                for i in idx {
                    if let Some(line) = old.get_mut(i).and_then(Option::take) {
                        self.lines.push(line);
                    }
                }
                self.spare.extend(old.into_iter().flatten());
            }
        }
    }

    fn find(&mut self, time: Option<f64>, now: f64, cur: &mut Current) -> Vec<Failure> {
        let Self {
            filter,
            pref_caps,
            fail_caps,
            ignore_caps,
            lines,
            buf,
            alt_buf,
            content,
            ignore_buf,
            mlfid,
            ..
        } = self;
        let f = &**filter;
        let org: &[TupleLine] = lines;
        let multi = f.maxlines > 1;
        let mut failures = Vec::new();
        // `buf` keeps the whole buffer (the prefregex's captures point into
        // it); `alt_buf` holds what the buffer became (content, leftovers).
        fill_buf(buf, org, &Current::Org, "");
        let mut alt_ok = false;

        // A cheap ignore first when there are far fewer ignoreregexes.
        if !f.ignoreregex.is_empty()
            && f.ignoreregex.len() + 2 < f.failregex.len()
            && ignored(f, ignore_caps, buf, None, org, ignore_buf, cur).is_some()
        {
            return failures;
        }

        if let (Some(pref), Some(caps)) = (&f.prefregex, pref_caps.as_mut()) {
            if pref.search(caps, buf).is_none() {
                return failures;
            }
            if let Some(repl) = pref.content(caps, buf).filter(|r| !r.is_empty()) {
                content.clear();
                content.push_str(repl);
                *cur = Current::Content;
            }
        }
        // The prefregex's groups, taken only once a failregex matches.
        let mut pref_groups: Option<Groups> = None;

        for (index, (fr, caps)) in f.failregex.iter().zip(fail_caps.iter_mut()).enumerate() {
            let subject: &str = if *cur == Current::Org {
                buf
            } else {
                if !alt_ok {
                    fill_buf(alt_buf, org, cur, content);
                    alt_ok = true;
                }
                alt_buf
            };
            let Some(span) = fr.search(caps, subject) else {
                continue;
            };
            let groups = fr.groups(caps, subject);
            let ml = match_lines(fr, caps, subject, span, org);
            if !f.ignoreregex.is_empty()
                && ignored(f, ignore_caps, subject, Some(&ml), org, ignore_buf, cur).is_some()
            {
                alt_ok = false;
                if !f.check_all {
                    break;
                }
                continue;
            }
            if !f.check_all || multi {
                *cur = Current::Lines(ml.unmatched.clone());
                alt_ok = false;
            }
            let pref_groups = match (&f.prefregex, pref_caps.as_ref()) {
                (Some(pref), Some(pc)) => pref_groups.get_or_insert_with(|| {
                    let mut g = pref.groups(pc, buf);
                    g.pop("content");
                    g
                }),
                _ => &Groups::default(),
            };
            let mut fail = if pref_groups.is_empty() {
                groups
            } else {
                let mut merged = pref_groups.clone();
                merged.update(groups);
                merged
            };
            let matched: Vec<String> = ml.matched.iter().map(|&i| org[i].full()).collect();
            let mlfid_key = fail.get("mlfid").map(str::to_owned);
            let mut merged = match &mlfid_key {
                Some(key) => {
                    mlfid.merge(key, FailData::new(std::mem::take(&mut fail)), &matched, now)
                }
                None => {
                    let mut data = FailData::new(std::mem::take(&mut fail));
                    data.matches = matched;
                    Merged::Owned(data)
                }
            };
            let Some(data) = mlfid.data_mut(&mut merged) else {
                continue;
            };
            let nofail = data.groups.truthy("nofail");
            if nofail && !f.check_all {
                return failures;
            }
            let host = match failure_host(data, mlfid_key.is_some()) {
                Id::Host(host) => host,
                Id::Pending => {
                    data.mlfpending = true;
                    if !f.check_all {
                        return failures;
                    }
                    continue;
                }
                Id::Missing => continue,
            };
            if !nofail {
                failures.push(build_failure(data, host, time, index));
            }
            if !f.check_all {
                break;
            }
        }
        failures
    }
}

/// `_ignoreLine`: the index of the ignoreregex that matches the line (the
/// first; the last with `check_all`), looking only at the lines the
/// failregex matched in multi-line mode.
fn ignored(
    f: &CompiledFilter,
    caps: &mut [CaptureLocations],
    buf: &str,
    failregex: Option<&MatchLines>,
    org: &[TupleLine],
    ignore_buf: &mut String,
    cur: &mut Current,
) -> Option<usize> {
    let multi = f.maxlines > 1;
    let subject = match failregex {
        Some(ml) if multi => {
            fill_buf(ignore_buf, org, &Current::Lines(ml.matched.clone()), "");
            ignore_buf.as_str()
        }
        _ => buf,
    };
    let mut found = None;
    for (i, (re, c)) in f.ignoreregex.iter().zip(caps.iter_mut()).enumerate() {
        if re.search(c, subject).is_none() {
            continue;
        }
        found = Some(i);
        if (!f.check_all || multi)
            && let Some(ml) = failregex
        {
            *cur = Current::Lines(ml.unmatched.clone());
        }
        if !f.check_all {
            break;
        }
    }
    found
}
