//! fail2ban's `SafeConfigParserWithIncludes`: Python's `configparser` plus
//! `[INCLUDES]`, `.local` overrides, `KNOWN/` sections and `%(sec/opt)s`.
//!
//! - `parse`: one file, as configparser reads it with fail2ban's settings.
//! - `read`: which files are read, in which order, and how they merge.
//! - `interp`: `%(name)s` interpolation, done when a value is read.

mod interp;
mod parse;
pub(crate) mod read;

use std::{io, path::PathBuf};

use indexmap::IndexMap;

pub use read::config_files;

use super::text::{Origin, Text};

/// Python's `configparser.MAX_INTERPOLATION_DEPTH`.
pub const MAX_INTERPOLATION_DEPTH: usize = 10;

/// Values supplied by the caller that take precedence over a section's own
/// (configparser's `vars`; fail2ban passes a jail's options this way).
/// Keys are matched after lower-casing, like option names.
pub type Vars = IndexMap<String, Text>;

/// One `[section]`: where it was first declared and its options, in order.
#[derive(Clone, Debug)]
pub struct Section {
    /// The header line that created it.
    pub header: Origin,
    /// Lower-cased option names to raw (uninterpolated) values.
    pub options: IndexMap<String, Text>,
}

/// A configuration as fail2ban holds it after reading all its files.
#[derive(Clone, Debug, Default)]
pub struct Ini {
    defaults: IndexMap<String, Text>,
    sections: IndexMap<String, Section>,
    files: Vec<PathBuf>,
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IniError {
    /// The file exists but could not be read (fail2ban would skip it silently).
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not UTF-8, which fail2ban requires.
    #[error("{}:{line}: not valid UTF-8", path.display())]
    Utf8 {
        /// The file.
        path: PathBuf,
        /// Line of the first invalid byte.
        line: usize,
    },
    /// Text before the first `[section]` header.
    #[error("{}:{line}: option outside of any [section]: `{text}`", path.display())]
    MissingSectionHeader {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// The line as written.
        text: String,
    },
    /// A line that is no section header, option, continuation or comment
    /// (also an option line that starts with `=` or `:`).
    #[error("{}:{line}: not a section header, option or comment: `{text}`", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// The line as written.
        text: String,
    },
    /// A section declared twice in one file.
    #[error("{}:{line}: section [{section}] already declared in this file", path.display())]
    DuplicateSection {
        /// The file.
        path: PathBuf,
        /// The second declaration.
        line: usize,
        /// The section.
        section: String,
    },
    /// An option set twice in one section of one file.
    #[error("{}:{line}: option `{option}` already set in [{section}] of this file", path.display())]
    DuplicateOption {
        /// The file.
        path: PathBuf,
        /// The second setting.
        line: usize,
        /// The section.
        section: String,
        /// The option (lower-cased).
        option: String,
    },
    /// `[INCLUDES]` that pull in more files than any real configuration does
    /// (fail2ban guards only against direct loops and would run for ever).
    #[error("{}: more than {limit} files included", path.display())]
    TooManyIncludes {
        /// The file whose includes were being resolved.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// `%(name)s` names no option of the section, of `[DEFAULT]` or of the
    /// caller's variables.
    #[error("{origin}: [{section}] {option}: `%({reference})s` refers to no option")]
    MissingReference {
        /// Where the reference is written.
        origin: Origin,
        /// Section being read.
        section: String,
        /// Option being read.
        option: String,
        /// The name inside `%(...)s`.
        reference: String,
    },
    /// A `%` that is neither `%%` nor `%(name)s`.
    #[error(
        "{origin}: [{section}] {option}: bad interpolation syntax at `{text}` (write `%%` for a literal %)"
    )]
    InterpolationSyntax {
        /// Where the `%` is written.
        origin: Origin,
        /// Section being read.
        section: String,
        /// Option being read.
        option: String,
        /// The text from the offending `%` on (shortened).
        text: String,
    },
    /// `%(name)s` nested deeper than Python allows (usually a reference loop).
    #[error(
        "{origin}: [{section}] {option}: interpolation nested deeper than {MAX_INTERPOLATION_DEPTH} levels (reference loop?)"
    )]
    InterpolationDepth {
        /// Where the innermost reference is written.
        origin: Origin,
        /// Section being read.
        section: String,
        /// Option being read.
        option: String,
    },
}

impl Ini {
    /// One file's content, as configparser parses it (no includes, no
    /// `.local`); `path` is used in origins and errors only.
    pub fn parse(path: &std::path::Path, source: &str) -> Result<Ini, IniError> {
        parse::parse(&std::sync::Arc::from(path), source)
    }

    /// Section names in the order first declared (fail2ban's own `KNOWN/…`
    /// sections included; [`Ini::user_sections`] leaves them out).
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }

    /// Section names as fail2ban's `ConfigReader.sections()` lists them:
    /// without the `KNOWN/…` bookkeeping sections.
    pub fn user_sections(&self) -> impl Iterator<Item = &str> {
        self.sections().filter(|s| !s.starts_with("KNOWN/"))
    }

    /// A section, if declared.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.get(name)
    }

    /// Whether `[name]` was declared (`[DEFAULT]` never counts).
    pub fn has_section(&self, name: &str) -> bool {
        self.sections.contains_key(name)
    }

    /// `[DEFAULT]`'s options.
    pub fn defaults(&self) -> &IndexMap<String, Text> {
        &self.defaults
    }

    /// The files read, in the order merged (includes and `.local` files
    /// included; a file included twice appears twice).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The raw value of `option` in `section`, falling back to `[DEFAULT]`.
    pub fn get_raw(&self, section: &str, option: &str) -> Option<&Text> {
        let option = super::pystr::lower(option);
        self.sections
            .get(section)
            .and_then(|s| s.options.get(&option))
            .or_else(|| self.defaults.get(&option))
    }

    /// configparser's `get(section, option, vars=vars)`: the value from
    /// `vars`, the section or `[DEFAULT]` (in that order), interpolated.
    /// `Ok(None)` when the section (other than `DEFAULT`) or the option
    /// does not exist.
    pub fn get(
        &self,
        section: &str,
        option: &str,
        vars: Option<&Vars>,
    ) -> Result<Option<Text>, IniError> {
        interp::get(self, section, option, vars)
    }

    /// `[DEFAULT]` gains or replaces these options (fail2ban's `merge_defaults`).
    pub fn merge_defaults(&mut self, options: impl IntoIterator<Item = (String, Text)>) {
        self.defaults.extend(options);
    }

    /// fail2ban's `merge_section(section, options, pref)`: sets the options in
    /// `section` (created if needed), each name prefixed with `prefix` unless
    /// it already starts with it.
    pub fn merge_section(
        &mut self,
        section: &str,
        header: &Origin,
        options: impl IntoIterator<Item = (String, Text)>,
        prefix: &str,
    ) {
        let target = &mut self
            .sections
            .entry(section.to_owned())
            .or_insert_with(|| Section {
                header: header.clone(),
                options: IndexMap::new(),
            })
            .options;
        for (name, value) in options {
            if prefix.is_empty() {
                target.insert(name, value);
            } else if !name.starts_with(prefix) && name != "__name__" {
                target.insert(format!("{prefix}{name}"), value);
            }
        }
    }
}
