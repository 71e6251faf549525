//! Which template finds a line's date (server/datedetector.py): the
//! template list a `datepattern` builds, and the per-stream search that
//! prefers the template (and position) that matched last, reorders templates
//! by hits, and falls back to the closest match.

mod templates;
mod text;

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use jiff::Timestamp;
use pcre2::bytes::CaptureLocations;

pub use self::templates::{DateTemplates, TemplateInfo};
use self::text::Text;
use super::strptime::LocalNow;
use super::template::{LINE_BEGIN, LINE_END, Template};

/// `DateDetector.__unusedTime`: a template unused this long (seconds) may be
/// displaced by one that matches now.
const UNUSED_TIME: f64 = 300.0;

/// A date found in a line.
#[derive(Clone, Debug, PartialEq)]
pub struct DateMatch {
    /// The bytes of the line fail2ban cuts out before matching failregexes
    /// (the template's group 1; empty if the template matched nothing).
    pub span: Range<usize>,
    /// The time as fail2ban's float seconds.
    pub(crate) seconds: Option<f64>,
}

impl DateMatch {
    /// The time the date stands for; `None` if the span is empty or its text
    /// is no valid date (fail2ban logs "failed to parse timeText").
    pub fn time(&self) -> Option<SystemTime> {
        self.seconds.and_then(to_system_time)
    }
}

/// A template's per-stream statistics (`DateDetectorTemplate`).
#[derive(Clone, Debug)]
struct Slot {
    template: usize,
    /// Times it won (`DateDetectorTemplate.hits`).
    hits: u64,
    /// Times its regex matched (`DateTemplate.hits`; shared by every
    /// detector in fail2ban, per stream here).
    matches: u64,
    last_used: f64,
    distance: usize,
}

impl Slot {
    fn weight(&self, templates: &DateTemplates) -> f64 {
        let w = templates
            .templates
            .get(self.template)
            .map_or(1.0, |t| t.weight);
        self.hits as f64 * w / self.distance.max(1) as f64
    }
}

/// A character position and the characters around it, in characters as
/// Python counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Bound {
    pos: usize,
    before: Option<char>,
    at: Option<char>,
}

/// The date-finding state of one log stream (`DateDetector`).
#[derive(Debug)]
pub struct DateDetector {
    templates: Arc<DateTemplates>,
    order: Vec<Slot>,
    caps: Vec<CaptureLocations>,
    last_pos: Option<Bound>,
    last_end: Bound,
    last_index: Option<usize>,
    first_unused: usize,
    now_cache: Option<(SystemTime, LocalNow)>,
    last_parse: LastParse,
}

/// The last date text converted, and the result.
#[derive(Debug)]
struct LastParse {
    template: Option<usize>,
    now: SystemTime,
    text: String,
    seconds: Option<f64>,
}

/// A template match: template slot, byte span of the whole match, and the
/// search window it was found in.
struct Hit {
    slot: usize,
    start: usize,
    end: usize,
    pos: usize,
    endpos: usize,
}

impl DateDetector {
    /// A fresh detector over the given templates.
    pub fn new(templates: Arc<DateTemplates>) -> Self {
        let order = (0..templates.templates.len())
            .map(|template| Slot {
                template,
                hits: 0,
                matches: 0,
                last_used: 0.0,
                distance: 0x7fff_ffff,
            })
            .collect();
        let caps = templates
            .templates
            .iter()
            .map(Template::capture_locations)
            .collect();
        Self {
            templates,
            order,
            caps,
            last_pos: None,
            last_end: Bound::default(),
            last_index: None,
            first_unused: 0,
            now_cache: None,
            last_parse: LastParse {
                template: None,
                now: SystemTime::UNIX_EPOCH,
                text: String::new(),
                seconds: None,
            },
        }
    }

    /// `template.matchDate(line, pos, endpos)`, counting the match.
    fn search(&mut self, slot: usize, line: &str, pos: usize, endpos: usize) -> Option<Hit> {
        let s = &mut self.order[slot];
        let t = &self.templates.templates[s.template];
        let (start, end) = t.search(&mut self.caps[s.template], line, pos, endpos)?;
        s.matches += 1;
        Some(Hit {
            slot,
            start,
            end,
            pos,
            endpos,
        })
    }

    /// `matchTime` then `getTime`: find the date in `line`. `now` is the
    /// current time: it dates year-less and day-less dates and ages unused
    /// templates.
    pub fn detect(&mut self, line: &str, now: SystemTime) -> Option<DateMatch> {
        self.detect_at(line, now, unix_seconds(now))
    }

    /// [`DateDetector::detect`] with `now` also as float seconds.
    pub(crate) fn detect_at(
        &mut self,
        line: &str,
        now: SystemTime,
        now_secs: f64,
    ) -> Option<DateMatch> {
        let hit = self.match_time(line, now_secs)?;
        let tid = self.order[hit.slot].template;
        let local = self.local_now(now);
        let caps = &self.caps[tid];
        // The date is the template's group 1 (empty if it did not take part).
        let span = caps
            .get(1)
            .filter(|&(s, e)| line.is_char_boundary(s) && line.is_char_boundary(e))
            .map_or(0..0, |(s, e)| s..e);
        if span.is_empty() {
            return Some(DateMatch {
                span,
                seconds: None,
            });
        }
        // Consecutive lines often carry the same date: the conversion is a
        // function of template, matched text and now, so reuse it.
        let text = line.get(hit.start..hit.end).unwrap_or("");
        let last = &mut self.last_parse;
        if last.template == Some(tid) && last.now == now && last.text == text {
            return Some(DateMatch {
                span,
                seconds: last.seconds,
            });
        }
        let templates = &self.templates;
        let seconds =
            templates.templates[tid].time(caps, line, local, &templates.tz, templates.default_tz);
        last.template = Some(tid);
        last.now = now;
        last.text.clear();
        last.text.push_str(text);
        last.seconds = seconds;
        Some(DateMatch { span, seconds })
    }

    fn local_now(&mut self, now: SystemTime) -> LocalNow {
        if let Some((t, local)) = self.now_cache
            && t == now
        {
            return local;
        }
        let local = LocalNow::new(
            Timestamp::try_from(now)
                .map(|ts| self.templates.tz.to_datetime(ts))
                .unwrap_or_default(),
        );
        self.now_cache = Some((now, local));
        local
    }

    fn flags(&self, slot: usize) -> u8 {
        self.templates.templates[self.order[slot].template].flags
    }

    /// `DateDetector.matchTime`.
    fn match_time(&mut self, line: &str, now: f64) -> Option<Hit> {
        let text = Text::new(line);
        let n = self.order.len();
        let mut found: Option<Hit> = None;
        let mut hit: Option<Hit> = None;
        let mut skip = None;
        if let Some(i) = self.last_index.filter(|&i| i < n) {
            let anchored = self.flags(i) & (LINE_BEGIN | LINE_END) != 0;
            if anchored {
                hit = self.search(i, line, 0, line.len());
                skip = Some(i);
            } else if let Some(last) = self.last_pos {
                let (d, e) = (last.pos, self.last_end.pos);
                let (db, eb) = (text.byte(d), text.byte(e));
                // Same boundaries as last time: outside equal, or inside
                // equal where it is not alphanumeric.
                let same_start = text.before(d) == last.before
                    || (text.at(d) == last.at && !last.at.is_some_and(char::is_alphanumeric));
                let same_end = text.at(e) == self.last_end.at
                    || (text.before(e) == self.last_end.before
                        && !self.last_end.before.is_some_and(char::is_alphanumeric));
                if same_start && same_end {
                    hit = self.search(i, line, db, eb);
                } else {
                    hit = self.search(i, line, 0, line.len());
                    skip = Some(i);
                }
            }
            if let Some(h) = hit.take() {
                let (d, e) = (text.chars(h.start), text.chars(h.end));
                let same_place =
                    self.last_pos.is_some_and(|p| p.pos == d) && self.last_end.pos == e;
                if n == 1 || anchored || same_place {
                    hit = Some(h);
                } else {
                    // Collision: keep it as a candidate and search again.
                    found = Some(h);
                }
            }
        }
        if hit.is_none() {
            let mut i = 0;
            while i < n {
                if skip == Some(i) {
                    i += 1;
                    continue;
                }
                if let Some(h) = self.search(i, line, 0, line.len()) {
                    let distance = text.chars(h.start);
                    if i + 1 >= n || self.flags(i) & (LINE_BEGIN | LINE_END) != 0 {
                        hit = Some(h);
                        break;
                    }
                    if distance == 0 && self.order[i].hits > 0 && self.order[i + 1].matches == 0 {
                        hit = Some(h);
                        break;
                    }
                    let last = self.last_pos.map_or(1, |p| p.pos);
                    if distance > self.order[i].distance || distance > last {
                        // Maybe a date inside the message: remember the
                        // closest and go on.
                        let closer = found
                            .as_ref()
                            .is_none_or(|f| distance < text.chars(f.start));
                        if closer {
                            found = Some(h);
                        }
                        i += 1;
                        continue;
                    }
                    hit = Some(h);
                    break;
                }
                i += 1;
            }
            if hit.is_none()
                && let Some(f) = found
            {
                // Its template may have been searched again since (the last
                // template is, when its window matched): redo that search so
                // the captures are this match's.
                let tid = self.order[f.slot].template;
                self.templates.templates[tid].search(&mut self.caps[tid], line, f.pos, f.endpos);
                hit = Some(f);
            }
        }
        let h = hit?;
        self.won(&h, text, now);
        let slot = self.settle(h.slot);
        Some(Hit { slot, ..h })
    }

    /// A template won: count it and remember where the date was.
    fn won(&mut self, h: &Hit, text: Text<'_>, now: f64) {
        let distance = text.chars(h.start);
        let endpos = text.chars(h.end);
        let s = &mut self.order[h.slot];
        s.hits += 1;
        s.last_used = now;
        s.distance = distance;
        if self.first_unused == h.slot {
            self.first_unused += 1;
        }
        self.last_pos = Some(Bound {
            pos: distance,
            before: text.before(distance),
            at: text.at(distance),
        });
        // Python's line[endpos-1] wraps to the last character at 0.
        let before_end = if endpos == 0 {
            text.last()
        } else {
            text.before(endpos)
        };
        self.last_end = Bound {
            pos: endpos,
            before: before_end,
            at: text.at(endpos),
        };
    }

    /// Reorder after a win and remember the winner (`lastTemplIdx`).
    fn settle(&mut self, slot: usize) -> usize {
        let i = if slot != 0 && Some(slot) != self.last_index {
            self.reorder(slot)
        } else {
            slot
        };
        self.last_index = Some(i);
        i
    }

    /// `_reorderTemplate`: move a template that wins up the list, fast to
    /// the first unused place or half-way, else by one, else not at all.
    fn reorder(&mut self, num: usize) -> usize {
        let weight = self.order[num].weight(&self.templates);
        let untime = self.order[num].last_used - UNUSED_TIME;
        let movable = |this: &Self, pos: usize| {
            let p = &this.order[pos];
            weight > p.weight(&this.templates) || untime > p.last_used
        };
        let mut pos = if self.first_unused < num {
            self.first_unused
        } else {
            num / 2
        };
        if !movable(self, pos) {
            if pos == num - 1 {
                return num;
            }
            pos = num - 1;
            if !movable(self, pos) {
                return num;
            }
        }
        let slot = self.order.remove(num);
        self.order.insert(pos, slot);
        while self.first_unused < self.order.len() && self.order[self.first_unused].hits > 0 {
            self.first_unused += 1;
        }
        pos
    }
}

/// A `SystemTime` as fail2ban's float seconds.
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// fail2ban's float seconds as a `SystemTime`.
pub(crate) fn to_system_time(secs: f64) -> Option<SystemTime> {
    if !secs.is_finite() {
        return None;
    }
    let d = std::time::Duration::try_from_secs_f64(secs.abs()).ok()?;
    if secs >= 0.0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    }
}
