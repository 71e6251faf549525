//! A jail's settings converted one by one (logs, `maxretry`, times,
//! `bantime.increment`, `ignoreip`), each with notes on what does not carry
//! over; the options jailer has no use for are noted here too. `super`
//! assembles them into an [`super::ImportedJail`] and renders it.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use super::toml_str;
use crate::{
    ban::Target,
    config::expand_logpaths,
    filter::fail2ban::config::{
        jail::Jail as Fail2banJail,
        time::{TimeSpec, str2seconds},
    },
    time::{MAX_DURATION, format_duration},
};

/// Notes on logs that are not there now (`check` refuses a glob that
/// matches nothing; a missing file is waited for).
pub(super) fn log_notes(patterns: &[PathBuf], notes: &mut Vec<String>) {
    let (files, unmatched) = expand_logpaths(patterns);
    for glob in unmatched {
        notes.push(format!(
            "logpath: `{}` matches no file now: `jailer check` refuses that (fail2ban finds no log either)",
            glob.display()
        ));
    }
    for file in files.iter().filter(|f| !f.exists()) {
        notes.push(format!(
            "logpath: `{}` does not exist yet: jailer waits for it (if no syslog daemon writes it, read the journal: backend = \"systemd\")",
            file.display()
        ));
    }
}

/// fail2ban's server bans on the `maxretry`-th failure; at least 1.
pub(super) fn maxretry(value: Option<i64>, notes: &mut Vec<String>) -> u32 {
    match value {
        Some(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
        Some(n) => {
            notes.push(format!(
                "maxretry: {n} bans on the first failure in fail2ban: 1"
            ));
            1
        }
        None => {
            notes.push("maxretry: not a number in fail2ban, whose server then uses 3".into());
            3
        }
    }
}

/// Whole seconds as jailer's duration text (`"10m"`, `"1d 12h"`).
fn duration(seconds: u64) -> String {
    toml_str(&format_duration(Duration::from_secs(seconds)))
}

/// `seconds` rounded to whole seconds, at least 1; notes a fraction.
fn whole_seconds(option: &str, spec: &TimeSpec, notes: &mut Vec<String>) -> u64 {
    let whole = spec.seconds.round().max(1.0);
    if whole != spec.seconds {
        notes.push(format!(
            "{option}: `{}` is {} seconds: {whole}",
            spec.text, spec.seconds
        ));
    }
    // Bounded by MAX_DURATION by the callers: no truncation.
    whole as u64
}

pub(super) fn findtime(value: Option<&TimeSpec>, notes: &mut Vec<String>) -> String {
    // fail2ban's server default, and jailer's.
    let default = 600;
    match value {
        None => duration(default),
        Some(t) if t.seconds > 0.0 && t.seconds <= MAX_DURATION.as_secs_f64() => {
            duration(whole_seconds("findtime", t, notes))
        }
        Some(t) => {
            notes.push(format!(
                "findtime: `{}` is not a time jailer counts in (1s to 10 years): {}",
                t.text,
                format_duration(Duration::from_secs(default))
            ));
            duration(default)
        }
    }
}

/// fail2ban's negative bantime is for ever; longer than jailer's bound too.
pub(super) fn bantime(value: Option<&TimeSpec>, option: &str, notes: &mut Vec<String>) -> String {
    match value {
        None => duration(600),
        Some(t) if t.seconds < 0.0 => toml_str("permanent"),
        Some(t) if t.seconds > MAX_DURATION.as_secs_f64() => {
            notes.push(format!(
                "{option}: `{}` is longer than 10 years: permanent",
                t.text
            ));
            toml_str("permanent")
        }
        Some(t) => duration(whole_seconds(option, t, notes)),
    }
}

/// `bantime.increment` and its family.
pub(super) fn increment(
    jail: &Fail2banJail,
    settings: &mut Vec<(&'static str, String)>,
    notes: &mut Vec<String>,
) {
    if jail.bantime_increment == Some(true) {
        settings.push(("bantime_increment", "true".into()));
    }
    if let Some(text) = jail
        .bantime_factor
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    {
        match str2seconds(text) {
            Ok(f) if f.is_finite() && f > 0.0 => {
                if f != 1.0 {
                    settings.push(("bantime_factor", toml::Value::Float(f).to_string()));
                }
            }
            _ => notes.push(format!(
                "bantime.factor: `{text}` is not a positive number: not carried over"
            )),
        }
    }
    if let Some(max) = &jail.bantime_maxtime {
        settings.push(("bantime_max", bantime(Some(max), "bantime.maxtime", notes)));
    }
    let why = [
        (
            "bantime.formula",
            jail.bantime_formula.as_deref(),
            "jailer's increment is bantime * bantime_factor * 2^(previous bans), fail2ban's default formula",
        ),
        (
            "bantime.multipliers",
            jail.bantime_multipliers.as_deref(),
            "jailer doubles the bantime with each previous ban",
        ),
    ];
    for (option, value, why) in why {
        if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
            notes.push(format!("{option} = {value}: not carried over: {why}"));
        }
    }
    if let Some(rnd) = &jail.bantime_rndtime {
        notes.push(format!(
            "bantime.rndtime = {}: not carried over: jailer adds no random time",
            rnd.text
        ));
    }
    if jail.bantime_overalljails == Some(true) {
        notes.push(
            "bantime.overalljails = true: not carried over: jailer counts a host's previous bans per jail"
                .into(),
        );
    }
}

/// Addresses and networks; host names (fail2ban resolves them) are noted,
/// never resolved here.
pub(super) fn ignoreip(words: &[String], notes: &mut Vec<String>) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for word in words {
        match ignore_target(word) {
            Some(target) if !out.contains(&target) => out.push(target),
            Some(_) => {}
            None => notes.push(format!(
                "ignoreip: `{word}` is not an address or network; fail2ban would look it up as a host name, jailer never resolves names: add its addresses"
            )),
        }
    }
    out
}

/// `203.0.113.7`, `192.0.2.0/24`, `2001:db8::/32`, or fail2ban's
/// `192.0.2.0/255.255.255.0`.
fn ignore_target(word: &str) -> Option<Target> {
    if let Ok(target) = word.parse() {
        return Some(target);
    }
    let (addr, mask) = word.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let mask = u32::from(mask.parse::<Ipv4Addr>().ok()?);
    let prefix = mask.leading_ones();
    // Only a contiguous mask is a network.
    (mask.checked_shl(prefix).unwrap_or(0) == 0)
        .then(|| ipnet::IpNet::new(IpAddr::V4(addr), prefix as u8).ok())
        .flatten()
        .map(Target::network)
}

/// Options with no jailer equivalent.
pub(super) fn not_carried(jail: &Fail2banJail, notes: &mut Vec<String>) {
    if let Some(command) = jail.ignorecommand.as_deref().filter(|c| !c.is_empty()) {
        notes.push(format!(
            "ignorecommand = {command}: not carried over: jailer runs no commands"
        ));
    }
    if let Some(encoding) = jail
        .logencoding
        .as_deref()
        .filter(|e| !matches!(e.to_lowercase().as_str(), "auto" | "utf-8" | "utf8"))
    {
        notes.push(format!(
            "logencoding = {encoding}: not carried over: jailer reads logs as UTF-8"
        ));
    }
    if let Some(zone) = &jail.logtimezone {
        notes.push(format!(
            "logtimezone = {zone}: not carried over: jailer reads dates in the local time zone"
        ));
    }
    // One note for the actions: the header says why once.
    let mut actions: Vec<String> = jail
        .action
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("action = {l}"))
        .collect();
    actions.extend(jail.banaction.as_ref().map(|b| format!("banaction = {b}")));
    actions.extend(jail.mta.as_ref().map(|m| format!("mta = {m}")));
    if !actions.is_empty() {
        notes.push(format!(
            "Not carried over (jailer bans in XDP: no action scripts, no mail):\n{}",
            actions.join("\n")
        ));
    }
    for warning in jail.warnings.iter().chain(&jail.filter_def.warnings) {
        notes.push(format!("fail2ban warns: {warning}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str, seconds: f64) -> TimeSpec {
        TimeSpec {
            text: text.into(),
            seconds,
            origin: None,
        }
    }

    #[test]
    fn times_as_jailer_writes_them() {
        let mut notes = Vec::new();
        assert_eq!(
            bantime(Some(&spec("-1", -1.0)), "bantime", &mut notes),
            "\"permanent\""
        );
        assert_eq!(
            bantime(Some(&spec("1h 30m", 5400.0)), "bantime", &mut notes),
            "\"1h 30m\""
        );
        assert_eq!(
            bantime(None, "bantime", &mut notes),
            "\"10m\"",
            "fail2ban's default"
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            bantime(Some(&spec("20y", 6.3e8)), "bantime", &mut notes),
            "\"permanent\""
        );
        assert!(notes[0].contains("longer than 10 years"), "{notes:?}");
        assert_eq!(
            bantime(Some(&spec("1.4", 1.4)), "bantime", &mut notes),
            "\"1s\""
        );
        assert!(notes[1].contains("`1.4` is 1.4 seconds: 1"), "{notes:?}");
        assert_eq!(findtime(Some(&spec("1d", 86400.0)), &mut notes), "\"1d\"");
        assert_eq!(findtime(Some(&spec("0", 0.0)), &mut notes), "\"10m\"");
        assert!(
            notes[2].contains("findtime: `0` is not a time"),
            "{notes:?}"
        );
        assert_eq!(maxretry(Some(3), &mut notes), 3);
        assert_eq!(maxretry(Some(0), &mut notes), 1);
        assert_eq!(maxretry(None, &mut notes), 3, "fail2ban's server default");
        assert_eq!(notes.len(), 5, "{notes:?}");
        for text in ["\"1h 30m\"", "\"1d\"", "\"7d\"", "\"1s\""] {
            let d: String = toml::from_str::<toml::Value>(&format!("x = {text}")).unwrap()["x"]
                .as_str()
                .unwrap()
                .into();
            crate::time::parse_duration(&d).unwrap();
        }
    }

    #[test]
    fn ignoreip_keeps_addresses_and_networks_never_names() {
        let words: Vec<String> = [
            "127.0.0.1/8",
            "::1",
            "192.0.2.0/255.255.255.0",
            "2001:db8::/32",
            "203.0.113.7",
            "127.0.0.0/8",
            "mx.example.org",
            "10.0.0.0/255.0.255.0",
            "300.1.1.1",
        ]
        .map(String::from)
        .into();
        let mut notes = Vec::new();
        let kept: Vec<String> = ignoreip(&words, &mut notes)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            kept,
            [
                "127.0.0.0/8",
                "::1",
                "192.0.2.0/24",
                "2001:db8::/32",
                "203.0.113.7"
            ]
        );
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].contains("`mx.example.org`") && notes[0].contains("never resolves"));
        assert!(
            notes[1].contains("`10.0.0.0/255.0.255.0`"),
            "a mask with a hole"
        );
    }
}
