//! Stock filter definitions as fail2ban's own reader leaves them
//! (`filters.json`, written by gen.py), for tests of the matcher that do not
//! need /etc/fail2ban installed.

use std::{path::Path, sync::OnceLock};

use jailer::filter::fail2ban::runtime::{CompiledFilter, FilterDef, FilterOptions};
use serde_json::Value;

/// The filter `spec` (`dovecot`, `postfix[mode=aggressive]`; a file
/// backend) compiled in UTC.
pub fn stock_filter(spec: &str) -> CompiledFilter {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    let reference = REFERENCE.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fail2ban/filters.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    });
    let case = reference["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["spec"] == spec && c["backend"] == "auto")
        .unwrap_or_else(|| panic!("{spec}: not in filters.json"));
    let text = |key: &str| case[key].as_str().map(str::to_owned);
    let list = |key: &str| -> Vec<String> {
        case[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let def = FilterDef {
        prefregex: text("prefregex"),
        failregex: list("failregex"),
        ignoreregex: list("ignoreregex"),
        datepattern: text("datepattern"),
        maxlines: case["maxlines"]
            .as_u64()
            .map(|n| usize::try_from(n).expect("maxlines")),
    };
    let opts = FilterOptions {
        time_zone: jiff::tz::TimeZone::UTC,
        ..FilterOptions::default()
    };
    CompiledFilter::with_options(&def, &opts).unwrap_or_else(|e| panic!("{spec}: {e}"))
}
