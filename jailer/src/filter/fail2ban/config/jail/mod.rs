//! fail2ban's `JailsReader`/`JailReader`: `jail.conf`, `jail.d/*.conf`,
//! `jail.local`, `jail.d/*.local` (with `paths-*.conf` includes) turned into
//! the enabled jails and their settings, as `fail2ban-client` would send
//! them to the server.
//!
//! Each jail is read in fail2ban's two passes: `enabled`, `backend` and
//! `filter` first; then the filter is loaded and its resolved options are
//! copied into the jail's section as `known/<option>`; then every jail
//! option is read again, so jail values may use `%(known/failregex)s`.
//! Actions are only checked for existence, as fail2ban does before
//! starting a jail; their files are not interpreted.

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

mod error;
mod value;

pub use self::error::{JailError, SkipReason};
use self::value::{JAIL_OPTS, Options, Value, build, text_of, to_vars, typed};
use super::{
    filter::{FilterDef, FilterError, FilterReader, StreamValue, apply_stream, fill_stream},
    ini::{Ini, IniError},
    options::{NameWithOptions, split_actions},
    text::{Origin, Text},
    time::TimeSpec,
};

/// The fail2ban version whose reader this reproduces (`%(fail2ban_version)s`).
pub const FAIL2BAN_VERSION: &str = "1.0.2";

/// One `logpath` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPath {
    /// The path or glob, as written.
    pub pattern: String,
    /// `tail`: start at the end of existing files (else `head`).
    pub tail: bool,
    /// Where it is written.
    pub origin: Option<Origin>,
}

/// An enabled jail with its options resolved.
#[derive(Debug, Clone)]
pub struct Jail {
    /// Section name.
    pub name: String,
    /// Its header (first declaration).
    pub origin: Origin,
    /// `auto`, `pyinotify`, `polling`, `systemd[...]`, ...
    pub backend: String,
    /// `filter` as named (`None` for `filter =`).
    pub filter: Option<NameWithOptions>,
    /// The filter as the server ends up with it: the filter's regexes and
    /// settings combined with the jail's own `failregex`, `maxlines`, ...
    pub filter_def: FilterDef,
    /// Log files (empty for `systemd` backends, which fail2ban gives none).
    pub logpath: Vec<LogPath>,
    /// `logencoding`.
    pub logencoding: Option<String>,
    /// `logtimezone`.
    pub logtimezone: Option<String>,
    /// `maxretry` (`None` also when not an integer, as in fail2ban).
    pub maxretry: Option<i64>,
    /// `maxmatches`.
    pub maxmatches: Option<i64>,
    /// `findtime`.
    pub findtime: Option<TimeSpec>,
    /// `bantime` (negative: for ever).
    pub bantime: Option<TimeSpec>,
    /// `bantime.increment`.
    pub bantime_increment: Option<bool>,
    /// `bantime.factor` (a Python expression).
    pub bantime_factor: Option<String>,
    /// `bantime.formula` (a Python expression).
    pub bantime_formula: Option<String>,
    /// `bantime.multipliers` (space-separated integers).
    pub bantime_multipliers: Option<String>,
    /// `bantime.maxtime` (`None` when empty).
    pub bantime_maxtime: Option<TimeSpec>,
    /// `bantime.rndtime` (`None` when empty).
    pub bantime_rndtime: Option<TimeSpec>,
    /// `bantime.overalljails`.
    pub bantime_overalljails: Option<bool>,
    /// `ignoreip` words: addresses, networks, host names.
    pub ignoreip: Vec<String>,
    /// `ignoreself`.
    pub ignoreself: Option<bool>,
    /// `ignorecommand`.
    pub ignorecommand: Option<String>,
    /// `ignorecache`.
    pub ignorecache: Option<String>,
    /// `action`, resolved (action names with their options, one per line).
    pub action: String,
    /// The actions in `action` (their files exist; their contents are not
    /// interpreted).
    pub actions: Vec<NameWithOptions>,
    /// `port` (e.g. `pop3,pop3s,imap,imaps,submission,465,sieve` or `1:1024`).
    pub port: Option<String>,
    /// `protocol`.
    pub protocol: Option<String>,
    /// `banaction`.
    pub banaction: Option<String>,
    /// `mta`.
    pub mta: Option<String>,
    /// Problems fail2ban only logs.
    pub warnings: Vec<String>,
}

/// An enabled jail fail2ban would not start.
#[derive(Debug)]
pub struct SkippedJail {
    /// Section name.
    pub name: String,
    /// Why.
    pub reason: SkipReason,
}

/// The jails of a configuration directory.
#[derive(Debug, Default)]
pub struct Jails {
    /// Enabled jails fail2ban would start, in configuration order.
    pub jails: Vec<Jail>,
    /// Enabled jails fail2ban would skip.
    pub skipped: Vec<SkippedJail>,
    /// The files read, in merge order.
    pub files: Vec<PathBuf>,
}

/// Reads every jail of `fail2ban_dir` as `fail2ban-client` does and returns
/// the enabled ones.
pub fn read_jails(fail2ban_dir: &Path) -> Result<Jails, JailError> {
    let mut ini = Ini::read_config(fail2ban_dir, "jail")?.ok_or_else(|| JailError::NotFound {
        dir: fail2ban_dir.to_path_buf(),
    })?;
    let basedir = trim_slashes(fail2ban_dir);
    ini.merge_defaults([
        ("fail2ban_version".to_owned(), Text::plain(FAIL2BAN_VERSION)),
        (
            "fail2ban_confpath".to_owned(),
            Text::plain(basedir.to_string_lossy()),
        ),
    ]);
    let names: Vec<String> = ini
        .user_sections()
        .filter(|s| *s != "INCLUDES")
        .map(str::to_owned)
        .collect();
    let mut jails = Jails {
        files: ini.files().to_vec(),
        ..Jails::default()
    };
    for name in names {
        match read_jail(&mut ini, &basedir, &name) {
            Ok(None) => {}
            Ok(Some(jail)) => jails.jails.push(jail),
            Err(Problem::Skip(reason)) => jails.skipped.push(SkippedJail { name, reason }),
            Err(Problem::Fatal(e)) => return Err(e),
        }
    }
    Ok(jails)
}

/// `basedir.rstrip('/')`.
fn trim_slashes(dir: &Path) -> PathBuf {
    let bytes = dir.as_os_str().as_bytes();
    let end = bytes.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    PathBuf::from(OsStr::from_bytes(&bytes[..end]))
}

/// Why a section yields no jail: fail2ban stops, or skips the jail.
enum Problem {
    Fatal(JailError),
    Skip(SkipReason),
}

impl From<IniError> for Problem {
    fn from(e: IniError) -> Self {
        Problem::Fatal(JailError::Ini(e))
    }
}

impl From<SkipReason> for Problem {
    fn from(reason: SkipReason) -> Self {
        Problem::Skip(reason)
    }
}

/// One section: `None` when disabled.
fn read_jail(ini: &mut Ini, basedir: &Path, name: &str) -> Result<Option<Jail>, Problem> {
    let Some(header) = ini.section(name).map(|s| s.header.clone()) else {
        return Ok(None);
    };
    // First pass: what is needed to load the filter.
    let mut first = Options::new();
    for (option, kind, default) in &JAIL_OPTS {
        if matches!(*option, "enabled" | "backend" | "filter") {
            let value = typed(ini, name, option, *kind, *default, &mut Vec::new())?;
            first.insert(*option, value);
        }
    }
    if !matches!(first.get("enabled"), Some(Some(Value::Bool(true, _)))) {
        return Ok(None);
    }
    let filter_text = text_of(&first, "filter").unwrap_or_default();
    let filter_origin = filter_text.origin().cloned();
    let mut filter = load_jail_filter(ini, basedir, name, &header, &first, &filter_text)?;

    // Second pass: every option, `known/...` now resolvable.
    let mut warnings = Vec::new();
    let mut opts = Options::new();
    for (option, kind, default) in &JAIL_OPTS {
        let value = typed(ini, name, option, *kind, *default, &mut warnings)?;
        opts.insert(*option, value);
    }
    let mut stream = Vec::new();
    let mut filter_def = FilterDef::default();
    if let Some((reader, spec)) = &mut filter {
        let fatal = |e| Problem::Fatal(filter_error(&header, name, e));
        reader
            .get_options(Some(&to_vars(&opts)), false)
            .map_err(fatal)?;
        let combined = reader.combined().map_err(fatal)?;
        fill_stream(
            &mut stream,
            combined.values.iter().map(|(k, v)| (k.as_str(), v)),
        );
        filter_def.name = spec.name.clone();
        filter_def.files = reader.ini.files().to_vec();
        filter_def.options = combined.options();
        filter_def.warnings = combined.warnings;
    }
    let actions = check_actions(basedir, name, &opts)?;
    // The jail's own failregex, maxlines, ... go to the server after the
    // filter's.
    let jail_stream: Vec<(&str, Option<StreamValue>)> = opts
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Some(Value::Int(n, o)) => Some(StreamValue::Int(*n, o.clone())),
                Some(v) => v.to_text().map(StreamValue::Text),
                None => None,
            };
            (*k, v)
        })
        .collect();
    fill_stream(&mut stream, jail_stream.iter().map(|(k, v)| (*k, v)));
    apply_stream(&mut filter_def, stream).map_err(|source| SkipReason::Filter {
        origin: filter_origin,
        jail: name.to_owned(),
        source: Box::new(source),
    })?;
    let spec = filter.map(|(_, spec)| spec);
    let mut jail = build(ini, name, header, &opts, spec, filter_def, warnings)?;
    jail.actions = actions;
    Ok(Some(jail))
}

/// Loads the jail's filter as fail2ban does between its two passes, and
/// copies the filter's resolved options into the jail's section as
/// `known/<option>`.
fn load_jail_filter(
    ini: &mut Ini,
    basedir: &Path,
    name: &str,
    header: &Origin,
    first: &Options,
    filter_text: &Text,
) -> Result<Option<(FilterReader, NameWithOptions)>, Problem> {
    if filter_text.as_str().is_empty() {
        return Ok(None);
    }
    let origin = filter_text.origin();
    let spec =
        NameWithOptions::parse(filter_text.as_str()).map_err(|source| SkipReason::FilterSpec {
            origin: origin.cloned(),
            jail: name.to_owned(),
            source: Box::new(source),
        })?;
    let init = spec
        .options
        .iter()
        .map(|(k, v)| {
            let text = match origin {
                Some(o) => Text::new(v.clone(), o.clone()),
                None => Text::plain(v.clone()),
            };
            (k.clone(), text)
        })
        .collect();
    let fatal = |e| Problem::Fatal(filter_error(header, name, e));
    let mut reader = match FilterReader::read(basedir, &spec.name, init) {
        Ok(reader) => reader,
        Err(source @ FilterError::NotFound { .. }) => {
            return Err(Problem::Skip(SkipReason::Filter {
                origin: origin.cloned(),
                jail: name.to_owned(),
                source: Box::new(source),
            }));
        }
        Err(e) => return Err(fatal(e)),
    };
    let backend = text_of(first, "backend")
        .map(Text::into_string)
        .unwrap_or_default();
    reader.apply_auto_options(&backend);
    reader
        .get_options(Some(&to_vars(first)), true)
        .map_err(fatal)?;
    let combined = reader.combined().map_err(fatal)?;
    ini.merge_section(name, header, combined.texts(), "known/");
    Ok(Some((reader, spec)))
}

/// fail2ban reads each action of an enabled jail: a malformed one or one
/// without an `action.d` file makes it skip the jail; a malformed file stops
/// everything. (What the action file says is not used here.)
fn check_actions(
    basedir: &Path,
    jail: &str,
    opts: &Options,
) -> Result<Vec<NameWithOptions>, Problem> {
    let Some(Some(Value::Text(text))) = opts.get("action") else {
        return Ok(Vec::new());
    };
    let origin = text.origin().cloned();
    let mut actions = Vec::new();
    for action in split_actions(text.as_str()) {
        let parsed = match NameWithOptions::parse(action) {
            Ok(parsed) => parsed,
            Err(source) => {
                return Err(Problem::Skip(SkipReason::ActionSpec {
                    origin,
                    jail: jail.to_owned(),
                    source: Box::new(source),
                }));
            }
        };
        if !parsed.name.ends_with(".py") {
            let file = Path::new("action.d").join(&parsed.name);
            if Ini::read_config(basedir, &file)?.is_none() {
                let mut tried = basedir.join(&file).into_os_string();
                tried.push(".conf");
                return Err(Problem::Skip(SkipReason::ActionNotFound {
                    origin,
                    jail: jail.to_owned(),
                    action: parsed.name,
                    tried: tried.into(),
                }));
            }
        }
        actions.push(parsed);
    }
    Ok(actions)
}

fn filter_error(header: &Origin, jail: &str, source: FilterError) -> JailError {
    match source {
        FilterError::Ini(e) => JailError::Ini(e),
        source => JailError::Filter {
            origin: header.clone(),
            jail: jail.to_owned(),
            source: Box::new(source),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_files::write;

    const FILTER: &str = "[Definition]\nfailregex = ^fail <HOST>$\n            <mdre-<mode>>\n\
        mdre-normal =\nmdre-aggressive = ^aggr <HOST>$\nmode = normal\nmaxlines = 1\n\
        [Init]\njournalmatch = _SYSTEMD_UNIT=mail.service\n";

    const JAIL: &str = "[INCLUDES]\nbefore = paths.conf\n\
        [DEFAULT]\nbantime = 10m\nfindtime = 10m\nmaxretry = 5\nmaxmatches = %(maxretry)s\n\
        backend = auto\nenabled = false\nmode = normal\nfilter = %(__name__)s[mode=%(mode)s]\n\
        port = 0:65535\nbanaction = iptables-multiport\n\
        action = %(banaction)s[port=\"%(port)s\"]\n\
        [mail]\nport = pop3,imap,465\nlogpath = %(mail_log)s\nbackend = %(mail_backend)s\n";

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "filter.d/mail.conf", FILTER);
        write(d, "jail.conf", JAIL);
        write(
            d,
            "paths.conf",
            "[DEFAULT]\nmail_log = /var/log/mail.log\nmail_backend = %(default/backend)s\n",
        );
        write(
            d,
            "action.d/iptables-multiport.conf",
            "[Definition]\nactionban = true\n",
        );
        dir
    }

    fn only(jails: &Jails) -> &Jail {
        assert_eq!(jails.jails.len(), 1, "{:?}", jails.skipped);
        &jails.jails[0]
    }

    fn regexes(jail: &Jail) -> Vec<&str> {
        jail.filter_def
            .failregex
            .iter()
            .map(|r| r.value.as_str())
            .collect()
    }

    #[test]
    fn only_enabled_jails_with_defaults_and_paths_resolved() {
        let dir = setup();
        let d = dir.path();
        assert!(read_jails(d).unwrap().jails.is_empty());
        write(d, "jail.d/mail.conf", "[mail]\nenabled = true\n");
        let jails = read_jails(d).unwrap();
        let jail = only(&jails);
        assert_eq!(jail.backend, "auto");
        assert_eq!(jail.port.as_deref(), Some("pop3,imap,465"));
        assert_eq!(jail.action, "iptables-multiport[port=\"pop3,imap,465\"]");
        assert_eq!(jail.actions[0].name, "iptables-multiport");
        assert_eq!(jail.actions[0].options["port"], "pop3,imap,465");
        assert_eq!(jail.actions[0].name, "iptables-multiport");
        assert_eq!(jail.actions[0].options["port"], "pop3,imap,465");
        assert_eq!(jail.maxretry, Some(5));
        assert_eq!(jail.maxmatches, Some(5));
        assert_eq!(jail.bantime.as_ref().unwrap().seconds, 600.0);
        assert_eq!(jail.logpath[0].pattern, "/var/log/mail.log");
        assert_eq!(jail.logpath[0].origin.as_ref().unwrap().line, 2);
        assert_eq!(regexes(jail), ["^fail <HOST>$"]);
        assert_eq!(jail.filter.as_ref().unwrap().options["mode"], "normal");
        assert_eq!(jail.filter_def.maxlines, Some(1));
        let names: Vec<_> = jails
            .files
            .iter()
            .map(|f| f.strip_prefix(d).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["paths.conf", "jail.conf", "jail.d/mail.conf"]);
    }

    #[test]
    fn jail_overrides_the_filter_through_known() {
        let dir = setup();
        let d = dir.path();
        write(
            d,
            "jail.local",
            "[mail]\nenabled = yes\nmode = aggressive\nbackend = systemd\n\
             failregex = %(known/failregex)s\n            ^jail <HOST>$\nmaxlines = 4\n",
        );
        let jails = read_jails(d).unwrap();
        let jail = only(&jails);
        assert_eq!(
            regexes(jail),
            ["^fail <HOST>$", "^aggr <HOST>$", "^jail <HOST>$"]
        );
        let lines: Vec<_> = jail
            .filter_def
            .failregex
            .iter()
            .map(|r| r.origin.as_ref().unwrap().line)
            .collect();
        assert_eq!(lines, [2, 5, 6]);
        assert!(
            jail.filter_def.failregex[2]
                .origin
                .as_ref()
                .unwrap()
                .path
                .ends_with("jail.local")
        );
        // The jail's maxlines replaces the filter's...
        assert_eq!(jail.filter_def.maxlines, Some(4));
        assert!(jail.logpath.is_empty(), "systemd backends read no files");
        let matches: Vec<_> = jail
            .filter_def
            .journalmatch
            .iter()
            .map(|m| m.value.as_str())
            .collect();
        assert_eq!(matches, ["_SYSTEMD_UNIT=mail.service"]);
        // ...but one given with the filter name comes later in fail2ban's
        // stream and wins (checked against fail2ban).
        write(
            d,
            "jail.d/x.local",
            "[mail]\nfilter = mail[mode=aggressive, maxlines=2]\n",
        );
        let jails = read_jails(d).unwrap();
        assert_eq!(only(&jails).filter_def.maxlines, Some(2));
    }

    #[test]
    fn jails_fail2ban_skips() {
        let dir = setup();
        let d = dir.path();
        write(
            d,
            "jail.local",
            "[nofilter]\nenabled = true\nfilter = nosuch\n\
             [badspec]\nenabled = true\nfilter = mail[mode = x]\n\
             [badtime]\nenabled = true\nfilter = mail\nbantime = 10 parsecs\n\
             [badpath]\nenabled = true\nfilter = mail\nlogpath = /var/log/x.log middle\n\
             [off]\nfilter = nosuch\n\
             [noaction]\nenabled = true\nfilter = mail\naction = iptables-multiport\n  nosuch[x=1]\n\
             [pyaction]\nenabled = true\nfilter = mail\naction = custom.py[x=1]\n",
        );
        let jails = read_jails(d).unwrap();
        let started: Vec<_> = jails.jails.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(started, ["pyaction"], "python actions are not looked for");
        let reasons: Vec<_> = jails
            .skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.to_string()))
            .collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(
            matches!(&jails.skipped[4].reason, SkipReason::ActionNotFound { action, .. } if action == "nosuch"),
            "{reasons:?}"
        );
        assert!(matches!(jails.skipped[0].reason, SkipReason::Filter { .. }));
        assert!(
            reasons[0].1.contains("jail.local:3: jail [nofilter]"),
            "{reasons:?}"
        );
        assert!(matches!(
            jails.skipped[1].reason,
            SkipReason::FilterSpec { .. }
        ));
        assert!(matches!(
            jails.skipped[2].reason,
            SkipReason::Time {
                option: "bantime",
                ..
            }
        ));
        assert!(reasons[3].1.contains("jail.local:14:"), "{reasons:?}");
    }

    #[test]
    fn what_fail2ban_only_warns_about() {
        let dir = setup();
        let d = dir.path();
        write(
            d,
            "jail.local",
            "[mail]\nenabled = 1\nmaxretry = many\nlogpath = /a/*.log tail\n  /b.log\n\
             ignoreip = 127.0.0.1/8 ::1,\n  mx.example.org\nbantime.maxtime =\n",
        );
        let jails = read_jails(d).unwrap();
        let jail = only(&jails);
        assert_eq!(jail.maxretry, None);
        assert_eq!(jail.maxmatches, None);
        assert_eq!(jail.warnings.len(), 2, "{:?}", jail.warnings);
        assert!(
            jail.warnings[0].contains("jail.local:3: [mail] maxretry"),
            "{:?}",
            jail.warnings
        );
        let paths: Vec<_> = jail
            .logpath
            .iter()
            .map(|l| (l.pattern.as_str(), l.tail))
            .collect();
        assert_eq!(paths, [("/a/*.log", true), ("/b.log", false)]);
        assert_eq!(jail.ignoreip, ["127.0.0.1/8", "::1", "mx.example.org"]);
        assert_eq!(jail.bantime_maxtime, None);
    }

    #[test]
    fn broken_interpolation_stops_everything_even_when_disabled() {
        let dir = setup();
        let d = dir.path();
        write(d, "jail.local", "[other]\nbackend = %(nosuch)s\n");
        let e = read_jails(d).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("jail.local:2: [other] backend: `%(nosuch)s` refers to no option"),
            "{e}"
        );
        assert!(matches!(
            read_jails(&d.join("nowhere")),
            Err(JailError::NotFound { .. })
        ));
    }

    #[test]
    fn version_and_confpath_are_defaults() {
        let dir = setup();
        let d = dir.path();
        write(
            d,
            "jail.local",
            "[mail]\nenabled = true\nignorecommand = %(fail2ban_confpath)s/x %(fail2ban_version)s\n",
        );
        let jails = read_jails(d).unwrap();
        let expected = format!("{}/x {FAIL2BAN_VERSION}", d.display());
        assert_eq!(
            only(&jails).ignorecommand.as_deref(),
            Some(expected.as_str())
        );
    }
}
