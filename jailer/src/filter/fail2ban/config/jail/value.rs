//! A jail's options as fail2ban's `JailReader` types them (`JAIL_OPTS`:
//! strings, booleans, integers with their defaults), and the [`Jail`] made of
//! them. Apart from the two reading passes in `super`, which only pass the
//! typed options along.

use indexmap::IndexMap;

use super::super::{
    filter::{FilterDef, Given},
    ini::{Ini, IniError},
    options::{NameWithOptions, split_words},
    pystr::{as_bool, parse_int},
    text::{Origin, Text},
    time::{TimeSpec, str2seconds},
};
use super::{Jail, LogPath, SkipReason};

/// A jail option after fail2ban's type conversion.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Text(Text),
    Bool(bool, Option<Origin>),
    Int(i64, Option<Origin>),
    /// Conversion failed: fail2ban stores `None`.
    Invalid,
}

impl Value {
    /// `str(value)`, as fail2ban passes jail options to filters.
    pub(super) fn to_text(&self) -> Option<Text> {
        let (s, origin) = match self {
            Value::Text(t) => return Some(t.clone()),
            Value::Bool(b, o) => (if *b { "True" } else { "False" }.to_owned(), o),
            Value::Int(n, o) => (n.to_string(), o),
            Value::Invalid => return None,
        };
        Some(match origin {
            Some(o) => Text::new(s, o.clone()),
            None => Text::plain(s),
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Str,
    Bool,
    Int,
}

/// `JailReader._configOpts` (with the filter's options appended), in order,
/// with types and defaults.
pub(super) const JAIL_OPTS: [(&str, Kind, Option<&str>); 29] = [
    ("enabled", Kind::Bool, Some("false")),
    ("backend", Kind::Str, Some("auto")),
    ("maxretry", Kind::Int, None),
    ("maxmatches", Kind::Int, None),
    ("findtime", Kind::Str, None),
    ("bantime", Kind::Str, None),
    ("bantime.increment", Kind::Bool, None),
    ("bantime.factor", Kind::Str, None),
    ("bantime.formula", Kind::Str, None),
    ("bantime.multipliers", Kind::Str, None),
    ("bantime.maxtime", Kind::Str, None),
    ("bantime.rndtime", Kind::Str, None),
    ("bantime.overalljails", Kind::Bool, None),
    ("ignorecommand", Kind::Str, None),
    ("ignoreself", Kind::Bool, None),
    ("ignoreip", Kind::Str, None),
    ("ignorecache", Kind::Str, None),
    ("filter", Kind::Str, Some("")),
    ("logtimezone", Kind::Str, None),
    ("logencoding", Kind::Str, None),
    ("logpath", Kind::Str, None),
    ("action", Kind::Str, Some("")),
    ("usedns", Kind::Str, None),
    ("prefregex", Kind::Str, None),
    ("ignoreregex", Kind::Str, None),
    ("failregex", Kind::Str, None),
    ("maxlines", Kind::Int, None),
    ("datepattern", Kind::Str, None),
    ("journalmatch", Kind::Str, None),
];

pub(super) type Options = IndexMap<&'static str, Option<Value>>;

pub(super) fn text_of(opts: &Options, key: &str) -> Option<Text> {
    opts.get(key).cloned().flatten().and_then(|v| v.to_text())
}

/// Jail options as variables for the filter (`str()` of each; options
/// whose conversion failed are present but hold nothing).
pub(super) fn to_vars(opts: &Options) -> Given {
    opts.iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.as_ref()?.to_text())))
        .collect()
}

/// `ConfigReader.getOptions` for one option: `None` when absent without a
/// default; conversion failures become `Value::Invalid` with a warning.
pub(super) fn typed(
    ini: &Ini,
    jail: &str,
    option: &str,
    kind: Kind,
    default: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Option<Value>, IniError> {
    let text = match ini.get(jail, option, None)? {
        Some(text) => text,
        None => match default {
            Some(d) => Text::plain(d),
            None => return Ok(None),
        },
    };
    let origin = text.origin().cloned();
    Ok(Some(match kind {
        Kind::Str => Value::Text(text),
        Kind::Bool => Value::Bool(as_bool(text.as_str()), origin),
        Kind::Int => match parse_int(text.as_str()) {
            Some(n) => Value::Int(n, origin),
            None => {
                let at = origin.map_or_else(String::new, |o| format!("{o}: "));
                warnings.push(format!(
                    "{at}[{jail}] {option}: `{text}` is not an integer; ignored"
                ));
                Value::Invalid
            }
        },
    }))
}

pub(super) fn build(
    ini: &Ini,
    name: &str,
    origin: Origin,
    opts: &Options,
    filter: Option<NameWithOptions>,
    filter_def: FilterDef,
    mut warnings: Vec<String>,
) -> Result<Jail, SkipReason> {
    let text = |key: &str| match opts.get(key) {
        Some(Some(Value::Text(t))) => Some(t.clone()),
        _ => None,
    };
    let string = |key: &str| text(key).map(Text::into_string);
    let boolean = |key: &str| match opts.get(key) {
        Some(Some(Value::Bool(b, _))) => Some(*b),
        _ => None,
    };
    let int = |key: &str| match opts.get(key) {
        Some(Some(Value::Int(n, _))) => Some(*n),
        _ => None,
    };
    // The server evaluates these; bantime.maxtime/rndtime treat '' as unset.
    let time = |key: &'static str, empty_is_unset: bool| -> Result<Option<TimeSpec>, SkipReason> {
        let Some(t) = text(key) else { return Ok(None) };
        if empty_is_unset && t.as_str().is_empty() {
            return Ok(None);
        }
        let seconds = str2seconds(t.as_str()).map_err(|source| SkipReason::Time {
            origin: t.origin().cloned(),
            jail: name.to_owned(),
            option: key,
            source: Box::new(source),
        })?;
        Ok(Some(TimeSpec {
            text: t.to_string(),
            seconds,
            origin: t.origin().cloned(),
        }))
    };
    let backend = string("backend").unwrap_or_default();
    let logpath = match text("logpath") {
        Some(t) if !backend.starts_with("systemd") => log_paths(name, &t)?,
        _ => Vec::new(),
    };
    // Options only actions use; a broken one would only break its action.
    let mut extra = |key: &str| match ini.get(name, key, None) {
        Ok(v) => v.map(Text::into_string),
        Err(e) => {
            warnings.push(e.to_string());
            None
        }
    };
    let (port, protocol, banaction, mta) = (
        extra("port"),
        extra("protocol"),
        extra("banaction"),
        extra("mta"),
    );
    Ok(Jail {
        name: name.to_owned(),
        origin,
        backend,
        filter,
        filter_def,
        logpath,
        logencoding: string("logencoding"),
        logtimezone: string("logtimezone"),
        maxretry: int("maxretry"),
        maxmatches: int("maxmatches"),
        findtime: time("findtime", false)?,
        bantime: time("bantime", false)?,
        bantime_increment: boolean("bantime.increment"),
        bantime_factor: string("bantime.factor"),
        bantime_formula: string("bantime.formula"),
        bantime_multipliers: string("bantime.multipliers"),
        bantime_maxtime: time("bantime.maxtime", true)?,
        bantime_rndtime: time("bantime.rndtime", true)?,
        bantime_overalljails: boolean("bantime.overalljails"),
        ignoreip: string("ignoreip")
            .map(|s| split_words(&s))
            .unwrap_or_default(),
        ignoreself: boolean("ignoreself"),
        ignorecommand: string("ignorecommand"),
        ignorecache: string("ignorecache"),
        action: string("action").unwrap_or_default(),
        actions: Vec::new(),
        port,
        protocol,
        banaction,
        mta,
        warnings,
    })
}

/// `logpath` lines: `PATH` or `PATH head|tail` (split at the last space, as
/// fail2ban does).
fn log_paths(jail: &str, value: &Text) -> Result<Vec<LogPath>, SkipReason> {
    let mut out = Vec::new();
    for (line, origin) in value.lines() {
        if line.is_empty() {
            continue;
        }
        let (pattern, tail) = match line.rsplit_once(' ') {
            None => (line, false),
            Some((pattern, word)) => match word.to_lowercase().as_str() {
                "head" => (pattern, false),
                "tail" => (pattern, true),
                _ => {
                    return Err(SkipReason::LogPath {
                        origin: origin.cloned(),
                        jail: jail.to_owned(),
                        line: line.to_owned(),
                    });
                }
            },
        };
        out.push(LogPath {
            pattern: pattern.to_owned(),
            tail,
            origin: origin.cloned(),
        });
    }
    Ok(out)
}
