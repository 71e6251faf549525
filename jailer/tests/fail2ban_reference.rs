//! Compares jailer's reader of fail2ban's configuration
//! (`jailer::filter::fail2ban::config`) with fail2ban's own (Debian's
//! fail2ban 1.0.2): `tests/fail2ban/gen.py` recorded what the Python reader
//! makes of
//! - the stock configuration in /etc/fail2ban (filters.json), plus a test
//!   jail.local and fail2ban.local (jails.json): these fail, naming the
//!   package, where /etc/fail2ban is not installed (`cargo xtask setup`
//!   installs it);
//! - the hand-made `tests/fail2ban/crafted` configuration (crafted.json),
//!   which exercises the reader's corners.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use jailer::filter::fail2ban::config::{
    filter::{FilterDef, Sourced, load_filter},
    jail::{Jail, read_jails},
    options::NameWithOptions,
    server::read_server_config,
    time::TimeSpec,
};
use serde_json::Value;

const STOCK: &str = "/etc/fail2ban";

fn ref_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fail2ban")
}

fn reference(name: &str) -> Value {
    let text = fs::read_to_string(ref_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The stock comparisons fail, naming the package, without it.
fn require_stock() {
    assert!(
        Path::new(STOCK).join("filter.d").is_dir(),
        "{STOCK}/filter.d is missing: install Debian's fail2ban package \
         (`cargo xtask setup` does, or `apt-get install fail2ban`)"
    );
}

/// Mismatches are collected so one run shows all of them.
#[derive(Default)]
struct Diff {
    problems: Vec<String>,
    compared: usize,
}

impl Diff {
    fn check(&mut self, what: impl Fn() -> String, ours: Value, theirs: &Value) {
        self.compared += 1;
        if &ours != theirs {
            self.problems.push(format!(
                "{}:\n  ours:     {ours}\n  fail2ban: {theirs}",
                what()
            ));
        }
    }

    fn finish(self, summary: String) {
        eprintln!("{summary}");
        assert!(
            self.problems.is_empty(),
            "{} mismatches:\n{}",
            self.problems.len(),
            self.problems.join("\n")
        );
    }
}

fn strings(lines: &[Sourced]) -> Value {
    lines
        .iter()
        .map(|l| Value::from(l.value.as_str()))
        .collect()
}

fn opt(s: Option<&Sourced>) -> Value {
    s.map_or(Value::Null, |s| Value::from(s.value.as_str()))
}

/// The filter part of the server stream, shaped like gen.py's `stream_filter`.
fn filter_fields(def: &FilterDef) -> Vec<(&'static str, Value)> {
    let args = def.journalmatch_args().unwrap();
    vec![
        ("prefregex", opt(def.prefregex.as_ref())),
        ("failregex", strings(&def.failregex)),
        ("ignoreregex", strings(&def.ignoreregex)),
        ("datepattern", opt(def.datepattern.as_ref())),
        ("maxlines", def.maxlines.map_or(Value::Null, Value::from)),
        (
            "usedns",
            def.usedns.as_deref().map_or(Value::Null, Value::from),
        ),
        ("journalmatch", Value::from(args)),
    ]
}

fn count_regexes(case: &Value) -> usize {
    let list = |k: &str| case[k].as_array().map_or(0, Vec::len);
    list("failregex") + list("ignoreregex") + usize::from(case["prefregex"].is_string())
}

/// Python ints and floats are both numbers of seconds.
fn number(v: &Value) -> Value {
    v.as_f64().map_or(Value::Null, Value::from)
}

#[derive(Default)]
struct FilterCounts {
    cases: usize,
    loaded: usize,
    failed: usize,
    regexes: usize,
}

/// Loads every case of a filters reference from `dir`; returns the names.
fn compare_filters(
    dir: &Path,
    reference: &Value,
    diff: &mut Diff,
    counts: &mut FilterCounts,
) -> BTreeSet<String> {
    let base = dir.to_str().unwrap();
    let mut names = BTreeSet::new();
    for case in reference["cases"].as_array().unwrap() {
        counts.cases += 1;
        let spec = case["spec"].as_str().unwrap().replace("@BASEDIR@", base);
        let backend = case["backend"].as_str().unwrap();
        let what = || format!("{spec} (backend {backend})");
        names.insert(NameWithOptions::parse(&spec).unwrap().name);
        let result = load_filter(dir, &spec, backend);
        if case.get("error").is_some() {
            match result {
                Err(e) => {
                    counts.failed += 1;
                    eprintln!("as in fail2ban, {} fails: {e}", what());
                }
                Ok(_) => diff.problems.push(format!(
                    "{}: fail2ban fails ({}), we do not",
                    what(),
                    case["error"]
                )),
            }
            continue;
        }
        let def = match result {
            Ok(def) => def,
            Err(e) => {
                diff.problems.push(format!("{}: {e}", what()));
                continue;
            }
        };
        counts.loaded += 1;
        counts.regexes += count_regexes(case);
        for (key, ours) in filter_fields(&def) {
            diff.check(|| format!("{} {key}", what()), ours, &case[key]);
        }
        let lines = strings(&def.journalmatch);
        diff.check(
            || format!("{} journalmatch lines", what()),
            lines,
            &case["journalmatch_lines"],
        );
        // Every combined option (non-None), tags resolved.
        let theirs: serde_json::Map<String, Value> = case["combined"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                (k.clone(), Value::from(v.replace(base, "@BASEDIR@")))
            })
            .collect();
        let ours: serde_json::Map<String, Value> = def
            .options
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.replace(base, "@BASEDIR@"))))
            .collect();
        diff.check(
            || format!("{} combined options", what()),
            Value::Object(ours),
            &Value::Object(theirs),
        );
    }
    names
}

fn time_seconds(t: &Option<TimeSpec>) -> Value {
    t.as_ref().map_or(Value::Null, |t| Value::from(t.seconds))
}

fn time_text(t: &Option<TimeSpec>) -> Value {
    t.as_ref()
        .map_or(Value::Null, |t| Value::from(t.text.as_str()))
}

/// Our jail's options, as fail2ban's `JailReader.options` (where typed).
fn jail_options(jail: &Jail) -> Vec<(&'static str, Value)> {
    let s = |v: &Option<String>| v.as_deref().map_or(Value::Null, Value::from);
    let b = |v: Option<bool>| v.map_or(Value::Null, Value::from);
    let i = |v: Option<i64>| v.map_or(Value::Null, Value::from);
    vec![
        ("backend", Value::from(jail.backend.as_str())),
        ("maxretry", i(jail.maxretry)),
        ("maxmatches", i(jail.maxmatches)),
        ("findtime", time_text(&jail.findtime)),
        ("bantime", time_text(&jail.bantime)),
        ("bantime.increment", b(jail.bantime_increment)),
        ("bantime.factor", s(&jail.bantime_factor)),
        ("bantime.formula", s(&jail.bantime_formula)),
        ("bantime.multipliers", s(&jail.bantime_multipliers)),
        ("bantime.overalljails", b(jail.bantime_overalljails)),
        ("ignorecommand", s(&jail.ignorecommand)),
        ("ignoreself", b(jail.ignoreself)),
        ("ignorecache", s(&jail.ignorecache)),
        ("logtimezone", s(&jail.logtimezone)),
        ("logencoding", s(&jail.logencoding)),
        ("action", Value::from(jail.action.as_str())),
    ]
}

/// Reads the jails of `dir` and compares them with a jails reference.
fn compare_jails(dir: &Path, reference: &Value, diff: &mut Diff) -> (usize, usize, usize) {
    let basedir = dir.to_str().unwrap().to_owned();
    let unbase = |v: &str| v.replace(&basedir, "@BASEDIR@");
    let jails = read_jails(dir).unwrap();
    let expected = reference["jails"].as_array().unwrap();
    let names = |error: bool| -> Vec<&str> {
        expected
            .iter()
            .filter(|j| j.get("error").is_some() == error)
            .map(|j| j["name"].as_str().unwrap())
            .collect()
    };
    let ours_ok: Vec<&str> = jails.jails.iter().map(|j| j.name.as_str()).collect();
    let ours_skipped: Vec<&str> = jails.skipped.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(ours_ok, names(false), "enabled jails");
    assert_eq!(ours_skipped, names(true), "skipped jails");
    for skip in &jails.skipped {
        eprintln!(
            "as in fail2ban, jail [{}] skipped: {}",
            skip.name, skip.reason
        );
    }
    let ok = expected.iter().filter(|j| j.get("error").is_none());
    let mut regexes = 0;
    for (jail, theirs) in jails.jails.iter().zip(ok) {
        let name = &jail.name;
        let options = &theirs["options"];
        for (key, ours) in jail_options(jail) {
            let ours = match ours {
                Value::String(s) => Value::from(unbase(&s)),
                v => v,
            };
            diff.check(|| format!("[{name}] {key}"), ours, &options[key]);
        }
        let filter = unbase(options["filter"].as_str().unwrap());
        let theirs_spec = (!filter.is_empty()).then(|| NameWithOptions::parse(&filter).unwrap());
        let ours_spec = jail.filter.clone().map(|mut f| {
            f.name = unbase(&f.name);
            f
        });
        assert_eq!(ours_spec, theirs_spec, "[{name}] filter");
        for (key, ours) in [
            ("findtime", time_seconds(&jail.findtime)),
            ("bantime", time_seconds(&jail.bantime)),
            ("bantime.maxtime", time_seconds(&jail.bantime_maxtime)),
            ("bantime.rndtime", time_seconds(&jail.bantime_rndtime)),
        ] {
            let want = number(&theirs["seconds"][key]);
            diff.check(|| format!("[{name}] {key} seconds"), ours, &want);
        }
        let ignoreip: Value = jail
            .ignoreip
            .iter()
            .map(|s| Value::from(s.as_str()))
            .collect();
        diff.check(
            || format!("[{name}] ignoreip"),
            ignoreip,
            &theirs["ignoreip"],
        );
        let logpath: Value = jail
            .logpath
            .iter()
            .map(|l| {
                let position = if l.tail { "tail" } else { "head" };
                Value::from(vec![l.pattern.clone(), position.to_owned()])
            })
            .collect();
        diff.check(|| format!("[{name}] logpath"), logpath, &theirs["logpath"]);
        for (key, ours) in [
            ("port", &jail.port),
            ("protocol", &jail.protocol),
            ("banaction", &jail.banaction),
            ("mta", &jail.mta),
        ] {
            let ours = ours.as_deref().map_or(Value::Null, Value::from);
            diff.check(|| format!("[{name}] {key}"), ours, &theirs["extras"][key]);
        }
        let actions: Value = jail
            .actions
            .iter()
            .filter(|a| !a.name.ends_with(".py"))
            .map(|a| Value::from(a.name.as_str()))
            .collect();
        diff.check(|| format!("[{name}] actions"), actions, &theirs["actions"]);
        regexes += count_regexes(&theirs["filter"]);
        for (key, ours) in filter_fields(&jail.filter_def) {
            diff.check(
                || format!("[{name}] effective {key}"),
                ours,
                &theirs["filter"][key],
            );
        }
    }
    (jails.jails.len(), jails.skipped.len(), regexes)
}

#[test]
fn every_stock_filter_reads_as_fail2ban_reads_it() {
    require_stock();
    let mut diff = Diff::default();
    let mut counts = FilterCounts::default();
    let names = compare_filters(
        Path::new(STOCK),
        &reference("filters.json"),
        &mut diff,
        &mut counts,
    );
    // The reference covers every filter file now installed.
    let installed: BTreeSet<String> = fs::read_dir(Path::new(STOCK).join("filter.d"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".conf").map(str::to_owned)
        })
        .collect();
    let missing: Vec<_> = installed.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "filters without reference (rerun tests/fail2ban/gen.py): {missing:?}"
    );
    let summary = format!(
        "stock filters: {} files, {} cases ({} loaded and compared, {} failing as in fail2ban), \
         {} regex strings, {} fields compared",
        installed.len(),
        counts.cases,
        counts.loaded,
        counts.failed,
        counts.regexes,
        diff.compared
    );
    diff.finish(summary);
}

/// Copies a directory tree (symlinks as their targets).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn stock_jails_plus_a_test_jail_local_read_as_fail2ban_reads_them() {
    require_stock();
    let reference = reference("jails.json");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("etc");
    copy_tree(Path::new(STOCK), &dir);
    for name in ["jail.local", "fail2ban.local"] {
        fs::copy(ref_dir().join(name), dir.join(name)).unwrap();
    }
    let mut diff = Diff::default();

    let server = read_server_config(&dir).unwrap();
    let theirs = &reference["server"];
    for (key, ours) in [
        ("loglevel", Value::from(server.loglevel.as_str())),
        ("logtarget", Value::from(server.logtarget.as_str())),
        ("syslogsocket", Value::from(server.syslogsocket.as_str())),
        ("allowipv6", Value::from(server.allowipv6.as_str())),
        ("socket", Value::from(server.socket.as_str())),
        ("pidfile", Value::from(server.pidfile.as_str())),
        ("dbfile", Value::from(server.dbfile.as_str())),
        (
            "dbmaxmatches",
            server.dbmaxmatches.map_or(Value::Null, Value::from),
        ),
        ("dbpurgeage", Value::from(server.dbpurgeage.text.as_str())),
    ] {
        diff.check(|| format!("fail2ban.conf {key}"), ours, &theirs[key]);
    }
    diff.check(
        || "fail2ban.conf dbpurgeage seconds".to_owned(),
        Value::from(server.dbpurgeage.seconds),
        &number(&theirs["dbpurgeage_seconds"]),
    );

    let (enabled, skipped, regexes) = compare_jails(&dir, &reference, &mut diff);
    let summary = format!(
        "stock jails: {enabled} enabled compared, {skipped} skipped as in fail2ban, \
         {regexes} effective regex strings, {} fields compared",
        diff.compared
    );
    diff.finish(summary);
}

#[test]
fn crafted_configuration_reads_as_fail2ban_reads_it() {
    let reference = reference("crafted.json");
    let dir = ref_dir().join("crafted");
    let mut diff = Diff::default();
    let mut counts = FilterCounts::default();
    compare_filters(&dir, &reference["filters"], &mut diff, &mut counts);
    let (enabled, skipped, regexes) = compare_jails(&dir, &reference["jails"], &mut diff);
    let summary = format!(
        "crafted: {} filter cases ({} compared, {} failing as in fail2ban, {} regex strings), \
         {enabled} jails compared, {skipped} skipped as in fail2ban ({regexes} regex strings), \
         {} fields compared",
        counts.cases, counts.loaded, counts.failed, counts.regexes, diff.compared
    );
    diff.finish(summary);
}
