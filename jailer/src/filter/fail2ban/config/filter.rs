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

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::OsStr,
    path::{Path, PathBuf},
};

use indexmap::IndexMap;

use super::{
    ini::{Ini, IniError, Vars, read::conditional},
    options::{NameWithOptions, OptionsError},
    pystr::{is_space, is_word, parse_int},
    tags::{self, TagError},
    text::{Origin, Text},
};

/// fail2ban's `FilterReader._configOpts`, in its order.
pub(crate) const CONFIG_OPTS: [&str; 7] = [
    "usedns",
    "prefregex",
    "ignoreregex",
    "failregex",
    "maxlines",
    "datepattern",
    "journalmatch",
];

/// A filter that cannot be loaded.
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

/// `getCombined()`'s result.
pub(crate) struct Combined {
    pub(crate) values: IndexMap<String, Option<StreamValue>>,
    pub(crate) warnings: Vec<String>,
}

impl Combined {
    /// The options as strings (`None` values left out).
    pub(crate) fn options(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .filter_map(|(k, v)| {
                let v = match v.as_ref()? {
                    StreamValue::Text(t) => t.to_string(),
                    StreamValue::Int(n, _) => n.to_string(),
                };
                Some((k.clone(), v))
            })
            .collect()
    }

    /// The options as texts, as fail2ban merges them into a jail.
    pub(crate) fn texts(&self) -> impl Iterator<Item = (String, Text)> + '_ {
        self.values.iter().filter_map(|(k, v)| {
            let text = match v.as_ref()? {
                StreamValue::Text(t) => t.clone(),
                StreamValue::Int(n, Some(origin)) => Text::new(n.to_string(), origin.clone()),
                StreamValue::Int(n, None) => Text::plain(n.to_string()),
            };
            Some((k.clone(), text))
        })
    }
}

/// Options a jail passes to its filter.
pub(crate) type Given = IndexMap<String, Option<Text>>;

/// fail2ban's `FilterReader` state between its calls.
pub(crate) struct FilterReader {
    pub(crate) ini: Ini,
    /// Options given with the filter name, then `logtype`, then `[Init]`'s
    /// (and their `known/` copies).
    init_opts: IndexMap<String, Text>,
    /// `[Definition]` options read by the last `get_options` (`None`: no
    /// `[Definition]` section).
    opts: IndexMap<String, Option<Text>>,
    /// The variables the last `get_options` interpolated with.
    p_opts: Vars,
    /// `getCombOption` results, kept across calls as fail2ban keeps them.
    comb_cache: HashMap<String, Option<Text>>,
}

impl FilterReader {
    fn new(ini: Ini, init_opts: IndexMap<String, Text>) -> Self {
        Self {
            ini,
            init_opts,
            opts: IndexMap::new(),
            p_opts: Vars::new(),
            comb_cache: HashMap::new(),
        }
    }

    /// Reads `basedir/filter.d/NAME` as a jail does (`name` may be absolute).
    pub(crate) fn read(
        basedir: &Path,
        name: &str,
        init_opts: IndexMap<String, Text>,
    ) -> Result<Self, FilterError> {
        let file = Path::new("filter.d").join(name);
        match Ini::read_config(basedir, &file)? {
            Some(ini) => Ok(Self::new(ini, init_opts)),
            None => {
                let mut tried = basedir.join(&file).into_os_string();
                tried.push(".conf");
                Err(FilterError::NotFound {
                    name: name.to_owned(),
                    tried: tried.into(),
                })
            }
        }
    }

    /// `readexplicit()`: one file with its includes and `.local` sibling.
    fn read_explicit(path: &Path, init_opts: IndexMap<String, Text>) -> Result<Self, FilterError> {
        let ini = Ini::read_files(&[path.to_path_buf()])?;
        if ini.files().is_empty() {
            return Err(FilterError::NotFound {
                name: path.display().to_string(),
                tried: path.to_path_buf(),
            });
        }
        Ok(Self::new(ini, init_opts))
    }

    /// `applyAutoOptions(backend)`: `logtype` follows the backend unless the
    /// filter or its caller sets it.
    pub(crate) fn apply_auto_options(&mut self, backend: &str) {
        let given = self
            .init_opts
            .get("logtype")
            .is_some_and(|v| !v.as_str().is_empty());
        let in_definition = self
            .ini
            .section("Definition")
            .is_some_and(|s| s.options.contains_key("logtype"));
        if !given && !in_definition {
            let logtype = if backend.starts_with("systemd") {
                "journal"
            } else {
                "file"
            };
            self.init_opts
                .insert("logtype".to_owned(), Text::plain(logtype));
        }
    }

    /// `getOptions(pOpts, all)`. `p_opts` are the jail's options; a `None`
    /// (a value fail2ban failed to convert) counts as given but cannot be
    /// interpolated.
    pub(crate) fn get_options(
        &mut self,
        p_opts: Option<&Given>,
        all: bool,
    ) -> Result<(), FilterError> {
        let mut given = p_opts.cloned().unwrap_or_default();
        given.extend(
            self.init_opts
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone()))),
        );
        let vars: Vars = given
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        let has_definition = self.ini.has_section("Definition");
        let mut opts = IndexMap::new();
        for name in CONFIG_OPTS {
            if given.contains_key(name) {
                continue;
            }
            if !has_definition {
                opts.insert(name.to_owned(), None);
            } else if let Some(value) = self.ini.get("Definition", name, Some(&vars))? {
                opts.insert(name.to_owned(), Some(value));
            }
        }
        self.opts = opts;
        self.p_opts = vars;
        if let Some(init) = self.ini.section("Init") {
            let header = init.header.clone();
            let names: Vec<String> = init.options.keys().cloned().collect();
            for name in names {
                if name == "__name__" {
                    continue;
                }
                let mut value = None;
                if !name.starts_with("known/") {
                    let v = self.get_own("Init", &name, &header)?;
                    self.init_opts.insert(format!("known/{name}"), v.clone());
                    value = Some(v);
                }
                if !self.init_opts.contains_key(&name) {
                    let v = match value {
                        Some(v) => v,
                        None => self.get_own("Init", &name, &header)?,
                    };
                    self.init_opts.insert(name, v);
                }
            }
        }
        if all && let Some(definition) = self.ini.section("Definition") {
            let header = definition.header.clone();
            let names: Vec<String> = definition.options.keys().cloned().collect();
            for name in names {
                if name == "__name__" || self.opts.contains_key(&name) {
                    continue;
                }
                let value = self.get_own("Definition", &name, &header)?;
                self.opts.insert(name, Some(value));
            }
        }
        Ok(())
    }

    /// A section's own option, which must be readable.
    fn get_own(&self, section: &str, name: &str, header: &Origin) -> Result<Text, FilterError> {
        self.ini
            .get(section, name, None)?
            .ok_or_else(|| FilterError::Unreadable {
                origin: header.clone(),
                section: section.to_owned(),
                option: name.to_owned(),
            })
    }

    /// `getCombined()`: the options with `<tag>`s substituted and `maxlines`
    /// converted to a number.
    pub(crate) fn combined(&mut self) -> Result<Combined, FilterError> {
        let mut combined = self.opts.clone();
        combined.extend(
            self.init_opts
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone()))),
        );
        if combined.is_empty() {
            return Ok(Combined {
                values: IndexMap::new(),
                warnings: Vec::new(),
            });
        }
        // Options with `[Init?cond]` variants are for actions; filters leave
        // their tags alone.
        let ignore: HashSet<String> = combined
            .keys()
            .filter_map(|k| conditional(k).map(|(base, _)| base.to_owned()))
            .collect();
        let Self {
            ini,
            p_opts,
            comb_cache,
            ..
        } = self;
        let substituted = tags::substitute::<FilterError>(&combined, &ignore, |tag| {
            if let Some(cached) = comb_cache.get(tag) {
                return Ok(cached.clone());
            }
            let value = get_ex(ini, "Definition", tag, p_opts)?;
            comb_cache.insert(tag.to_owned(), value.clone());
            Ok(value)
        })?;
        let mut warnings = Vec::new();
        let values = substituted
            .into_iter()
            .map(|(name, value)| {
                let value = match value {
                    Some(text) if name == "maxlines" => match parse_int(text.as_str()) {
                        Some(n) => Some(StreamValue::Int(n, text.origin().cloned())),
                        None => {
                            let at = text.origin().map_or_else(String::new, |o| format!("{o}: "));
                            warnings
                                .push(format!("{at}maxlines `{text}` is not an integer; ignored"));
                            None
                        }
                    },
                    other => other.map(StreamValue::Text),
                };
                (name, value)
            })
            .collect();
        Ok(Combined { values, warnings })
    }
}

/// fail2ban's `get_ex`: `known/opt`, `default/opt` and `section/opt` tags
/// read the named section (for `known/`: the value before the last override,
/// else the current one); anything else is an option of `section`.
fn get_ex(ini: &Ini, section: &str, option: &str, vars: &Vars) -> Result<Option<Text>, IniError> {
    if let Some((sec, opt)) = section_option(option) {
        let candidates = match sec.to_lowercase().as_str() {
            "known" => vec![format!("KNOWN/{section}"), section.to_owned()],
            "default" => vec!["DEFAULT".to_owned()],
            _ => vec![sec.to_owned()],
        };
        for candidate in candidates {
            if let Some(value) = ini.get(&candidate, opt, None)? {
                return Ok(Some(value));
            }
        }
    }
    ini.get(section, option, Some(vars))
}

/// `^([\w\-]+)/([^\s>]+)$`.
fn section_option(name: &str) -> Option<(&str, &str)> {
    let (sec, opt) = name.split_once('/')?;
    let opt = opt.strip_suffix('\n').unwrap_or(opt);
    let valid = !sec.is_empty()
        && sec.chars().all(|c| is_word(c) || c == '-')
        && !opt.is_empty()
        && !opt.chars().any(|c| is_space(c) || c == '>');
    valid.then_some((sec, opt))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

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

    #[test]
    fn section_option_is_the_regex() {
        assert_eq!(
            section_option("known/failregex"),
            Some(("known", "failregex"))
        );
        assert_eq!(
            section_option("lt_file/__prefix_line"),
            Some(("lt_file", "__prefix_line"))
        );
        assert_eq!(section_option("a b/c"), None);
        assert_eq!(section_option("a/b c"), None);
        assert_eq!(section_option("HOST"), None);
    }
}
