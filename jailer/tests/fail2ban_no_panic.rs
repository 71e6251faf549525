//! Property tests: no input makes jailer's reader of fail2ban's
//! configuration panic (errors are fine).

use std::{fs, path::Path};

use jailer::filter::fail2ban::config::{
    Ini,
    filter::load_filter,
    jail::read_jails,
    options::{NameWithOptions, shlex_split, split_words},
    time::str2seconds,
};
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "a",
    "B",
    "failregex",
    "prefregex",
    "ignoreregex",
    "maxlines",
    "datepattern",
    "journalmatch",
    "mode",
    "logtype",
    "mdre-normal",
    "mdre-x",
    "known/a",
    "before",
    "after",
    "__name__",
    "enabled",
    "filter",
    "backend",
    "logpath",
    "bantime",
    "findtime",
    "maxretry",
    "usedns",
    "a?family=inet6",
    "",
];

const SECTIONS: &[&str] = &[
    "DEFAULT",
    "INCLUDES",
    "Definition",
    "Init",
    "Init?family=inet6",
    "KNOWN/Definition",
    "lt_file",
    "j",
    "Init?",
    "a]b",
    "",
];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_owned)
}

/// Value fragments that hit interpolation, tags and comments.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        key().prop_map(|k| format!("%({k})s")),
        key().prop_map(|k| format!("%(known/{k})s")),
        key().prop_map(|k| format!("%(default/{k})s")),
        key().prop_map(|k| format!("%(lt_file/{k})s")),
        key().prop_map(|k| format!("<{k}>")),
        Just("<lt_<logtype>/a>".to_owned()),
        Just("<mdre-<mode>>".to_owned()),
        Just("%%".to_owned()),
        Just("%".to_owned()),
        Just("%(".to_owned()),
        Just(" ;c".to_owned()),
        Just(";".to_owned()),
        Just("f.conf".to_owned()),
        Just("sub/g".to_owned()),
        Just("x[mode=y]".to_owned()),
        Just("1h 2m".to_owned()),
        "[ -~]{0,6}",
        "\\PC{0,3}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..4).prop_map(|v| v.concat())
}

fn header() -> impl Strategy<Value = String> {
    prop::sample::select(SECTIONS).prop_map(|s| format!("[{s}]"))
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => header(),
        8 => (key(), prop::sample::select(&["=", ":", " = "][..]), value()).prop_map(|(k, d, v)| format!("{k}{d}{v}")),
        4 => value().prop_map(|v| format!("   {v}")),
        1 => Just(String::new()),
        1 => Just("# comment".to_owned()),
        1 => Just("; comment".to_owned()),
        1 => "\\PC{0,12}",
    ]
}

/// Files that often parse (so that interpolation and substitution run),
/// some not.
fn ini_text() -> impl Strategy<Value = String> {
    let first = prop::sample::select(&["[Definition]", "[DEFAULT]", "[Init]", "[j]"][..])
        .prop_map(str::to_owned);
    (
        first,
        prop::collection::vec(line(), 0..14),
        prop::sample::select(&["\n", "\r\n", "\r"][..]),
    )
        .prop_map(|(first, lines, nl)| {
            [first]
                .into_iter()
                .chain(lines)
                .collect::<Vec<_>>()
                .join(nl)
        })
}

/// Reads every option of every section, interpolated.
fn read_everything(ini: &Ini) {
    let sections: Vec<String> = ini
        .sections()
        .map(str::to_owned)
        .chain(["DEFAULT".to_owned()])
        .collect();
    for section in &sections {
        let names: Vec<String> = match ini.section(section) {
            Some(s) => s.options.keys().cloned().collect(),
            None => ini.defaults().keys().cloned().collect(),
        };
        for name in names {
            let _ = ini.get(section, &name, None);
        }
    }
}

proptest! {
    #[test]
    fn parsing_and_interpolating_never_panics(text in ini_text()) {
        if let Ok(ini) = Ini::parse(Path::new("p.conf"), &text) {
            read_everything(&ini);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Ok(ini) = Ini::parse(Path::new("p.conf"), &text) {
            read_everything(&ini);
        }
        let _ = NameWithOptions::parse(&text);
        let _ = str2seconds(&text);
        let _ = shlex_split(&text);
        let _ = split_words(&text);
    }

    #[test]
    fn time_like_text_never_panics(text in "[0-9dhmswy .()*/%+-]{0,30}") {
        let _ = str2seconds(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn loading_filters_and_jails_never_panics(
        filter in ini_text(),
        local in ini_text(),
        jail in ini_text(),
        spec in prop::sample::select(&["f", "f[mode=x]", "f[logtype=journal, a=<b>]", "f[a=%(b)s]"][..]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("filter.d/sub")).unwrap();
        fs::write(d.join("filter.d/f.conf"), &filter).unwrap();
        fs::write(d.join("filter.d/f.local"), &local).unwrap();
        fs::write(d.join("filter.d/sub/g.conf"), &local).unwrap();
        fs::write(d.join("jail.conf"), &jail).unwrap();
        fs::write(d.join("jail.local"), format!("[j]\nenabled = true\nfilter = {spec}\n")).unwrap();
        let _ = load_filter(d, spec, "auto");
        let _ = load_filter(d, spec, "systemd");
        let _ = read_jails(d);
    }
}

/// Not a property: shows the generator reaches the interesting code.
#[test]
fn generator_reaches_interpolation() {
    use proptest::{strategy::ValueTree, test_runner::TestRunner};
    let mut runner = TestRunner::deterministic();
    let (mut parsed, mut resolved) = (0, 0);
    for _ in 0..500 {
        let text = ini_text().new_tree(&mut runner).unwrap().current();
        if let Ok(ini) = Ini::parse(Path::new("p.conf"), &text) {
            parsed += 1;
            let ok = ini.sections().any(|s| {
                ini.section(s).is_some_and(|sec| {
                    sec.options
                        .keys()
                        .any(|k| ini.get(s, k, None).is_ok_and(|v| v.is_some()))
                })
            });
            resolved += usize::from(ok);
        }
    }
    eprintln!("{parsed}/500 generated files parse, {resolved} have an interpolated value");
    assert!(parsed > 150 && resolved > 60, "{parsed} {resolved}");
}
