//! fail2ban's client-to-server command stream for a filter: the order its
//! settings are sent in decides who wins when a jail and its filter both set one.

use super::{FilterDef, FilterError, Sourced};
use crate::filter::fail2ban::config::{
    pystr::parse_int,
    text::{Origin, Text},
};

/// A value in fail2ban's option dicts after type conversion.
#[derive(Debug, Clone)]
pub(crate) enum StreamValue {
    Text(Text),
    Int(i64, Option<Origin>),
}

/// A single-valued filter setting (fail2ban's `set <jail> <opt> <value>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    UseDns,
    PrefRegex,
    MaxLines,
    DatePattern,
}

/// A list-valued filter setting (`addfailregex`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum List {
    FailRegex,
    IgnoreRegex,
    JournalMatch,
}

/// One command of fail2ban's client-to-server stream for a filter.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    Set(Setting, StreamValue),
    Add(List, Vec<Sourced>),
}

/// `FilterReader._fillStream`: appends the commands `opts` produce, with
/// `usedns`, `prefregex` and `maxlines` moved to the front in fail2ban's
/// peculiar order (which decides who wins when a jail and its filter both
/// set them).
pub(crate) fn fill_stream<'a>(
    stream: &mut Vec<Command>,
    opts: impl IntoIterator<Item = (&'a str, &'a Option<StreamValue>)>,
) {
    let mut front = 0;
    for (name, value) in opts {
        let Some(value) = value else { continue };
        let list = match name {
            "failregex" => Some(List::FailRegex),
            "ignoreregex" => Some(List::IgnoreRegex),
            "journalmatch" => Some(List::JournalMatch),
            _ => None,
        };
        if let Some(list) = list {
            // Each non-empty line is one regex (or one match).
            if let StreamValue::Text(text) = value {
                let lines: Vec<Sourced> = text
                    .lines()
                    .filter(|(l, _)| !l.is_empty())
                    .map(|(l, o)| Sourced::new(l, o))
                    .collect();
                if !lines.is_empty() {
                    stream.push(Command::Add(list, lines));
                }
            }
            continue;
        }
        match name {
            "usedns" => {
                stream.insert(0, Command::Set(Setting::UseDns, value.clone()));
                front += 1;
            }
            "maxlines" | "prefregex" => {
                let setting = if name == "maxlines" {
                    Setting::MaxLines
                } else {
                    Setting::PrefRegex
                };
                stream.insert(
                    front.min(stream.len()),
                    Command::Set(setting, value.clone()),
                );
                front += 1;
            }
            "datepattern" => stream.push(Command::Set(Setting::DatePattern, value.clone())),
            _ => {}
        }
    }
}

/// What the server ends up with after applying `stream` in order.
pub(crate) fn apply_stream(def: &mut FilterDef, stream: Vec<Command>) -> Result<(), FilterError> {
    for command in stream {
        match command {
            Command::Add(List::FailRegex, lines) => def.failregex.extend(lines),
            Command::Add(List::IgnoreRegex, lines) => def.ignoreregex.extend(lines),
            Command::Add(List::JournalMatch, lines) => def.journalmatch.extend(lines),
            Command::Set(Setting::MaxLines, value) => {
                let (number, origin, text) = match &value {
                    StreamValue::Int(n, origin) => (Some(*n), origin.clone(), n.to_string()),
                    StreamValue::Text(t) => {
                        (parse_int(t.as_str()), t.origin().cloned(), t.to_string())
                    }
                };
                // fail2ban's server refuses anything but a positive integer.
                let positive = number
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n > 0);
                def.maxlines = Some(positive.ok_or(FilterError::MaxLines {
                    origin,
                    value: text,
                })?);
            }
            Command::Set(setting, value) => {
                let value = match value {
                    StreamValue::Text(t) => Sourced::from_text(&t),
                    StreamValue::Int(n, origin) => Sourced {
                        value: n.to_string(),
                        origin,
                    },
                };
                match setting {
                    Setting::UseDns => def.usedns = Some(value.value),
                    Setting::PrefRegex => def.prefregex = Some(value),
                    Setting::DatePattern | Setting::MaxLines => def.datepattern = Some(value),
                }
            }
        }
    }
    Ok(())
}
