//! fail2ban's `FilterReader` (with `DefinitionInitConfigReader`): a
//! `filter.d/NAME.conf` (+ `.local`, `.d/`, includes) turned into the regexes
//! and settings fail2ban hands to its server.
//!
//! Reading happens in fail2ban's steps, each reproduced because the results
//! depend on them: options given with the filter (`sshd[mode=aggressive]`)
//! and `[Init]` defaults become tags; `[Definition]`'s options are read with
//! `%(..)s` interpolation (given options taking precedence); then all values
//! go through recursive `<tag>` substitution, unknown tags (`<HOST>`,
//! `<F-USER>`, ...) staying for the regex compiler.

mod reader;
mod stream;

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    path::{Path, PathBuf},
};

use indexmap::IndexMap;

pub(crate) use self::reader::{FilterReader, Given};
pub(crate) use self::stream::{StreamValue, apply_stream, fill_stream};
use super::{
    ini::IniError,
    options::{NameWithOptions, OptionsError},
    tags::TagError,
    text::{Origin, Text},
};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// `name[opt=value, ...]` is malformed.
    #[error("not NAME or NAME[opt=value, ...]")]
    Spec {
        /// The filter as given.
        spec: String,
        /// What is wrong.
        #[source]
        source: OptionsError,
    },
    /// No configuration file for the filter exists.
    #[error("no {} (nor .local, .d/)", tried.display())]
    NotFound {
        /// The filter name as given.
        name: String,
        /// The first file looked for.
        tried: PathBuf,
    },
    /// A file of the filter is unreadable or malformed, or an option's
    /// `%(..)s` cannot be interpolated.
    #[error(transparent)]
    Ini(#[from] IniError),
    /// `<tag>` substitution cannot finish.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// An option fail2ban lists but cannot read back (an upper-case letter
    /// in the condition of a `[Section?cond]` name).
    #[error(
        "{origin}: [{section}] option `{option}` cannot be read back (write the section condition in lower case)"
    )]
    Unreadable {
        /// Where the section starts.
        origin: Origin,
        /// The section.
        section: String,
        /// The option.
        option: String,
    },
    /// `maxlines` is not a positive integer (fail2ban's server refuses it).
    #[error("{}: maxlines must be an integer greater than zero, not `{value}`", super::text::describe(.origin))]
    MaxLines {
        /// Where the value is written.
        origin: Option<Origin>,
        /// The value.
        value: String,
    },
}

/// A value with where (its first byte) was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced {
    /// The value.
    pub value: String,
    /// Where it starts; `None` for values fail2ban computes.
    pub origin: Option<Origin>,
}

impl Sourced {
    fn new(value: &str, origin: Option<&Origin>) -> Self {
        Self {
            value: value.to_owned(),
            origin: origin.cloned(),
        }
    }

    fn from_text(text: &Text) -> Self {
        Self::new(text.as_str(), text.origin())
    }
}

/// A filter as fail2ban's server receives it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterDef {
    /// The filter as named (`sshd`, or a path).
    pub name: String,
    /// The files read, in merge order.
    pub files: Vec<PathBuf>,
    /// `prefregex`, tags resolved (`Some("")` when set empty).
    pub prefregex: Option<Sourced>,
    /// One regex per non-empty `failregex` line.
    pub failregex: Vec<Sourced>,
    /// One regex per non-empty `ignoreregex` line.
    pub ignoreregex: Vec<Sourced>,
    /// `datepattern` as written after substitution (may span lines).
    pub datepattern: Option<Sourced>,
    /// `maxlines`.
    pub maxlines: Option<usize>,
    /// `journalmatch` lines (each is shell-quoted words, see
    /// [`super::options::shlex_split`]).
    pub journalmatch: Vec<Sourced>,
    /// `usedns` (`yes`, `warn`, `no`, `raw`).
    pub usedns: Option<String>,
    /// Every option fail2ban combined for the filter (the `[Definition]`
    /// options above, `[Init]` options and `known/…` copies, options given
    /// with the name), tags resolved.
    pub options: BTreeMap<String, String>,
    /// Problems fail2ban only logs (e.g. a non-numeric `maxlines`, ignored).
    pub warnings: Vec<String>,
}

impl FilterDef {
    /// `journalmatch` lines split into arguments, as fail2ban does.
    pub fn journalmatch_args(&self) -> Result<Vec<Vec<String>>, OptionsError> {
        self.journalmatch
            .iter()
            .map(|m| super::options::shlex_split(&m.value))
            .collect()
    }
}

/// Loads a filter the way `fail2ban-regex` does: `spec` is `NAME` or
/// `NAME[opt=value, ...]` for `fail2ban_dir/filter.d/NAME.conf` (+ `.local`,
/// `NAME.d/`), or a path to a filter file (one inside a `filter.d` directory
/// loads with its `.local` and base directory, any other alone with its
/// includes). `backend` chooses `logtype`: `journal` for `systemd*`
/// backends, else `file`.
pub fn load_filter(
    fail2ban_dir: &Path,
    spec: &str,
    backend: &str,
) -> Result<FilterDef, FilterError> {
    let parsed = NameWithOptions::parse(spec).map_err(|source| FilterError::Spec {
        spec: spec.to_owned(),
        source,
    })?;
    let init: IndexMap<String, Text> = parsed
        .options
        .into_iter()
        .map(|(k, v)| (k, Text::plain(v)))
        .collect();
    let name = parsed.name;
    let mut reader = if name.contains('/') {
        let candidates: Vec<PathBuf> = if has_extension(&name) {
            vec![PathBuf::from(&name)]
        } else {
            [".conf", ".local", ""]
                .iter()
                .map(|ext| PathBuf::from(format!("{name}{ext}")))
                .collect()
        };
        let found =
            candidates
                .iter()
                .find(|p| p.is_file())
                .ok_or_else(|| FilterError::NotFound {
                    name: name.clone(),
                    tried: candidates[0].clone(),
                })?;
        let parent = found.parent().unwrap_or(Path::new(""));
        if parent.file_name() == Some(OsStr::new("filter.d")) {
            let base = parent.parent().unwrap_or(Path::new(""));
            let stem = stem(found);
            FilterReader::read(base, &stem, init)?
        } else {
            FilterReader::read_explicit(found, init)?
        }
    } else {
        let name = if fail2ban_dir.join("filter.d").join(&name).is_file() {
            stem(Path::new(&name))
        } else {
            name.clone()
        };
        FilterReader::read(fail2ban_dir, &name, init)?
    };
    reader.apply_auto_options(backend);
    reader.get_options(None, false)?;
    let combined = reader.combined()?;
    let mut def = FilterDef {
        name,
        files: reader.ini.files().to_vec(),
        warnings: combined.warnings.clone(),
        ..FilterDef::default()
    };
    let mut stream = Vec::new();
    fill_stream(
        &mut stream,
        combined.values.iter().map(|(k, v)| (k.as_str(), v)),
    );
    apply_stream(&mut def, stream)?;
    def.options = combined.options();
    Ok(def)
}

/// `"." in name[-6:]` (fail2ban-regex's test for a file extension).
fn has_extension(name: &str) -> bool {
    name.chars().rev().take(6).any(|c| c == '.')
}

/// `os.path.splitext(os.path.basename(path))[0]`.
fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(dot) if name[..dot].chars().any(|c| c != '.') => name[..dot].to_owned(),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::test_files::write;

    fn regexes(lines: &[Sourced]) -> Vec<&str> {
        lines.iter().map(|l| l.value.as_str()).collect()
    }

    const COMMON: &str = "[INCLUDES]\nafter = common.local\n[DEFAULT]\nlogtype = file\n\
        __prefix_line = <lt_<logtype>/__prefix_line>\ndatepattern = <lt_<logtype>/datepattern>\n\
        [lt_file]\n__prefix_line = FILE:\ndatepattern = {^LN-BEG}\n\
        [lt_journal]\n__prefix_line = JOURNAL:\ndatepattern = %(lt_file/datepattern)s\n";

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "filter.d/common.conf", COMMON);
        write(
            d,
            "filter.d/mail.conf",
            "[INCLUDES]\nbefore = common.conf\n[Definition]\n\
             prefregex = ^%(__prefix_line)s<F-CONTENT>.+</F-CONTENT>$\n\
             failregex = ^auth failed from <HOST>$\n\
             \x20           <mdre-<mode>>\n\
             mdre-normal =\n\
             mdre-aggressive = ^no auth from <HOST>$\n\
             \x20                 ^lost from <HOST>$\n\
             mode = normal\nignoreregex =\nmaxlines = 2\n\
             [Init]\njournalmatch = _SYSTEMD_UNIT=mail.service\n",
        );
        dir
    }

    #[test]
    fn modes_prefix_lines_and_origins() {
        let dir = setup();
        let def = load_filter(dir.path(), "mail", "auto").unwrap();
        assert_eq!(
            def.prefregex.as_ref().unwrap().value,
            "^FILE:<F-CONTENT>.+</F-CONTENT>$"
        );
        assert_eq!(regexes(&def.failregex), ["^auth failed from <HOST>$"]);
        assert_eq!(def.datepattern.unwrap().value, "{^LN-BEG}");
        assert_eq!(def.maxlines, Some(2));
        assert_eq!(regexes(&def.journalmatch), ["_SYSTEMD_UNIT=mail.service"]);
        assert!(def.ignoreregex.is_empty());

        let def = load_filter(dir.path(), "mail[mode=aggressive]", "systemd").unwrap();
        assert_eq!(
            def.prefregex.unwrap().value,
            "^JOURNAL:<F-CONTENT>.+</F-CONTENT>$"
        );
        assert_eq!(
            regexes(&def.failregex),
            [
                "^auth failed from <HOST>$",
                "^no auth from <HOST>$",
                "^lost from <HOST>$"
            ]
        );
        let lines: Vec<_> = def
            .failregex
            .iter()
            .map(|r| r.origin.as_ref().unwrap().line)
            .collect();
        assert_eq!(lines, [5, 8, 9]);
        assert!(
            def.failregex[1]
                .origin
                .as_ref()
                .unwrap()
                .path
                .ends_with("filter.d/mail.conf")
        );
        assert_eq!(def.options["mode"], "aggressive");
        assert_eq!(
            def.options["known/journalmatch"],
            "_SYSTEMD_UNIT=mail.service"
        );
    }

    #[test]
    fn filter_given_as_a_path() {
        let dir = setup();
        let path = dir.path().join("filter.d/mail.conf");
        let spec = format!("{}[mode=aggressive]", path.display());
        let def = load_filter(Path::new("/nonexistent"), &spec, "auto").unwrap();
        assert_eq!(def.failregex.len(), 3);
        let spec = format!(
            "{}[mode=aggressive]",
            dir.path().join("filter.d/mail").display()
        );
        assert_eq!(
            load_filter(Path::new("/nonexistent"), &spec, "auto")
                .unwrap()
                .failregex
                .len(),
            3
        );
        let outside = dir.path().join("own.conf");
        fs::write(&outside, "[Definition]\nfailregex = ^x <HOST>\n").unwrap();
        let def =
            load_filter(Path::new("/nonexistent"), outside.to_str().unwrap(), "auto").unwrap();
        assert_eq!(regexes(&def.failregex), ["^x <HOST>"]);
        let def = load_filter(dir.path(), "mail.conf", "auto").unwrap();
        assert_eq!(def.failregex.len(), 1);
    }

    #[test]
    fn local_overrides_with_known_and_init_options() {
        let dir = setup();
        let d = dir.path();
        write(
            d,
            "filter.d/mail.local",
            "[Definition]\nfailregex = %(known/failregex)s\n            ^local <HOST> <extra>\n\
             [Init]\nextra = X\n",
        );
        let def = load_filter(d, "mail[extra=Y]", "auto").unwrap();
        assert_eq!(
            regexes(&def.failregex),
            ["^auth failed from <HOST>$", "^local <HOST> Y"]
        );
        let lines: Vec<_> = def
            .failregex
            .iter()
            .map(|r| r.origin.as_ref().unwrap().line)
            .collect();
        assert_eq!(lines, [5, 3]);
        assert_eq!(def.options["known/extra"], "X");
        let def = load_filter(d, "mail", "auto").unwrap();
        assert_eq!(def.failregex[1].value, "^local <HOST> X");
    }

    #[test]
    fn conditional_init_options_are_not_substituted() {
        let dir = setup();
        let d = dir.path();
        write(
            d,
            "filter.d/cond.conf",
            "[Definition]\nfailregex = <af> <HOST>\n[Init]\naf = inet\n[Init?family=inet6]\naf = inet6\n",
        );
        let def = load_filter(d, "cond", "auto").unwrap();
        assert_eq!(regexes(&def.failregex), ["<af> <HOST>"]);
        assert_eq!(def.options["af?family=inet6"], "inet6");
    }

    #[test]
    fn errors() {
        let dir = setup();
        let d = dir.path();
        assert!(matches!(
            load_filter(d, "nosuch", "auto"),
            Err(FilterError::NotFound { .. })
        ));
        assert!(matches!(
            load_filter(d, "mail[mode = x]", "auto"),
            Err(FilterError::Spec { .. })
        ));
        write(
            d,
            "filter.d/loop.conf",
            "[Definition]\nfailregex = <a>\na = x<b>\nb = <a>\n",
        );
        let e = load_filter(d, "loop", "auto").unwrap_err();
        assert!(matches!(e, FilterError::Tag(_)), "{e}");
        write(
            d,
            "filter.d/badmax.conf",
            "[Definition]\nfailregex = x\nmaxlines = 0\n",
        );
        let e = load_filter(d, "badmax", "auto").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("badmax.conf:3: maxlines must be an integer greater than zero, not `0`"),
            "{e}"
        );
        write(
            d,
            "filter.d/nanmax.conf",
            "[Definition]\nfailregex = x\nmaxlines = many\n",
        );
        let def = load_filter(d, "nanmax", "auto").unwrap();
        assert_eq!(def.maxlines, None);
        assert_eq!(def.warnings.len(), 1);
        write(
            d,
            "filter.d/missing.conf",
            "[Definition]\nfailregex = %(nope)s\n",
        );
        let e = load_filter(d, "missing", "auto").unwrap_err();
        assert!(
            e.to_string().ends_with(
                "missing.conf:2: [Definition] failregex: `%(nope)s` refers to no option"
            ),
            "{e}"
        );
    }
}
