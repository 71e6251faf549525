//! The date templates jailer builds for a fail2ban `datepattern` are the ones
//! fail2ban builds: compared with tests/fail2ban/date_templates.json (written
//! by tests/fail2ban/dump_dates.py from fail2ban's own DateDetector) for the
//! default templates and every stock filter's `datepattern`.

use std::path::Path;

use jailer::filter::fail2ban::runtime::DateTemplates;
use jiff::tz::TimeZone;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    datepattern: Option<String>,
    templates: Vec<Expected>,
}

#[derive(Deserialize)]
struct Expected {
    name: String,
    regex: String,
    flags: u8,
    weight: f64,
}

/// The year dump_dates.py ran in: fail2ban builds `%ExY` (years up to now
/// + 3) from the real clock.
const REFERENCE_YEAR: i16 = 2026;

/// fail2ban names `%Exk`-style directives in hash order (`Ex%k` or `%Exk`).
fn same_name(ours: &str, theirs: &str) -> bool {
    ours == theirs || ours.replace("%Exk", "Ex%k").replace("%Exl", "Ex%l") == theirs
}

#[test]
fn templates_match_fail2ban() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fail2ban/date_templates.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cases.len() > 40,
        "{} cases: a truncated reference?",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let dp = case.datepattern.as_deref();
        let ours = match DateTemplates::with_year(dp, TimeZone::UTC, REFERENCE_YEAR) {
            Ok(t) => t
                .describe()
                .map(|i| (i.name.to_owned(), i.regex.to_owned(), i.flags, i.weight))
                .collect::<Vec<_>>(),
            Err(e) => {
                failures.push(format!("{dp:?}: {e}"));
                continue;
            }
        };
        // fail2ban's empty list ({DEFAULT}) means the defaults at first use.
        let expected: Vec<&Expected> = if case.templates.is_empty() {
            cases[0].templates.iter().collect()
        } else {
            case.templates.iter().collect()
        };
        if ours.len() != expected.len() {
            failures.push(format!(
                "{dp:?}: {} templates, fail2ban has {}",
                ours.len(),
                expected.len()
            ));
        }
        for (i, ((name, regex, flags, weight), e)) in ours.iter().zip(&expected).enumerate() {
            if !same_name(name, &e.name)
                || *regex != e.regex
                || *flags != e.flags
                || *weight != e.weight
            {
                failures.push(format!(
                    "{dp:?} #{i}:\n  ours   {name} | {regex} | {flags} | {weight}\n  theirs {} | {} | {} | {}",
                    e.name, e.regex, e.flags, e.weight
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
