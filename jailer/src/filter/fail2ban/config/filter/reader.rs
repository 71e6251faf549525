//! fail2ban's `FilterReader` steps: `[Init]` and given options, `[Definition]`
//! read with interpolation, then `<tag>` substitution into the combined options.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
};

use indexmap::IndexMap;

use super::{FilterError, StreamValue};
use crate::filter::fail2ban::config::{
    ini::{Ini, IniError, Vars, read::conditional},
    pystr::{is_space, is_word, parse_int},
    tags,
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
    pub(super) fn read_explicit(
        path: &Path,
        init_opts: IndexMap<String, Text>,
    ) -> Result<Self, FilterError> {
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
    use super::*;

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
