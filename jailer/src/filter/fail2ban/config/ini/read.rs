//! Which files fail2ban reads for a configuration, in which order, and how
//! their sections merge.
//!
//! For `jail` under `/etc/fail2ban` that is `jail.conf`, `jail.d/*.conf`
//! (sorted), `jail.local`, `jail.d/*.local` (sorted); each file's
//! `[INCLUDES] before`/`after` files (and their `.local` siblings) come just
//! before/after it. Later files override earlier ones option by option; the
//! value an option had before being overridden stays readable as
//! `%(known/opt)s`, through a `KNOWN/<section>` section.

use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    fs,
    io::{self, Read},
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
};

use indexmap::IndexMap;

use super::super::{pystr::is_word, text::Text};
use super::{Ini, IniError, Section, parse::parse};

/// More included files than this is a runaway include graph, not a config.
const MAX_INCLUDES: usize = 1000;

/// No configuration file is this large.
const MAX_FILE_SIZE: u64 = 16 << 20;

/// The files fail2ban's `ConfigReaderUnshared.read(name)` considers under
/// `basedir`, existing ones only: `NAME.conf`, `NAME.d/*.conf`,
/// `NAME.local`, `NAME.d/*.local`. `name` may be absolute (it then replaces
/// `basedir`, as `os.path.join` does).
pub fn config_files(basedir: &Path, name: impl AsRef<Path>) -> Vec<PathBuf> {
    // `basedir.rstrip('/')`, then plain string concatenation, as fail2ban does.
    let trimmed = basedir.as_os_str().as_bytes();
    let trimmed = &trimmed[..trimmed
        .iter()
        .rposition(|&b| b != b'/')
        .map_or(0, |i| i + 1)];
    let base = Path::new(OsStr::from_bytes(trimmed)).join(name);
    let with = |suffix: &str| {
        let mut s = base.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    let dir = with(".d");
    let mut files = vec![with(".conf")];
    files.extend(glob_suffix(&dir, ".conf"));
    files.push(with(".local"));
    files.extend(glob_suffix(&dir, ".local"));
    files.retain(|f| f.exists());
    files
}

/// `sorted(glob.glob(dir + "/*" + suffix))`: non-hidden entries.
fn glob_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| {
            let n = n.as_bytes();
            !n.starts_with(b".") && n.ends_with(suffix.as_bytes())
        })
        .map(|n| dir.join(n))
        .collect();
    out.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    out
}

impl Ini {
    /// fail2ban's `ConfigReader.read(name)`: [`config_files`] merged with
    /// their includes. `Ok(None)` when none of them exists.
    pub fn read_config(basedir: &Path, name: impl AsRef<Path>) -> Result<Option<Ini>, IniError> {
        let files = config_files(basedir, name);
        if files.is_empty() {
            return Ok(None);
        }
        let ini = Ini::read_files(&files)?;
        Ok((!ini.files.is_empty()).then_some(ini))
    }

    /// `SafeConfigParserWithIncludes.read(files)`: each file with its
    /// includes and `.local` sibling, merged in order. Missing files (and
    /// directories) are skipped, as fail2ban skips them.
    pub fn read_files(files: &[PathBuf]) -> Result<Ini, IniError> {
        let mut loader = Loader::default();
        let order = loader.includes(files.to_vec(), &[])?;
        let mut ini = Ini::default();
        for path in order {
            if let Some(file) = loader.load(&path)? {
                ini.merge_file(&file);
                ini.files.push(path);
            }
        }
        Ok(ini)
    }

    fn merge_file(&mut self, file: &Ini) {
        self.defaults
            .extend(file.defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (name, section) in &file.sections {
            // `[Init?family=inet6]` merges into `[Init]` as `opt?family=inet6`.
            let (name, options): (&str, IndexMap<String, Text>) = match conditional(name) {
                Some((base, condition)) => (
                    base,
                    section
                        .options
                        .iter()
                        .map(|(k, v)| (format!("{k}{condition}"), v.clone()))
                        .collect(),
                ),
                None => (name, section.options.clone()),
            };
            match self.sections.get(name) {
                Some(existing) => {
                    let known: Vec<(String, Text)> = existing
                        .options
                        .iter()
                        .filter(|(k, _)| options.contains_key(*k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    self.merge_section(&format!("KNOWN/{name}"), &section.header, known, "");
                    if let Some(existing) = self.sections.get_mut(name) {
                        existing.options.extend(options);
                    }
                }
                None => {
                    let section = Section {
                        header: section.header.clone(),
                        options,
                    };
                    self.sections.insert(name.to_owned(), section);
                }
            }
        }
    }
}

/// `^(\w+)(\?.+)$` on a section name: `("Init", "?family=inet6")`.
pub(crate) fn conditional(name: &str) -> Option<(&str, &str)> {
    let split = name.find(|c: char| !is_word(c))?;
    let (base, condition) = name.split_at(split);
    (!base.is_empty()
        && condition.starts_with('?')
        && condition.len() > 1
        && !condition.contains('\n'))
    .then_some((base, condition))
}

#[derive(Default)]
struct Loader {
    /// Each file parsed once (fail2ban's shared-config cache); `None` for
    /// files that do not exist.
    cache: HashMap<OsString, Option<Rc<Ini>>>,
    resolved: usize,
}

impl Loader {
    fn load(&mut self, path: &Path) -> Result<Option<Rc<Ini>>, IniError> {
        if let Some(cached) = self.cache.get(path.as_os_str()) {
            return Ok(cached.clone());
        }
        let loaded = match read_capped(path) {
            Ok(bytes) => {
                let source = String::from_utf8(bytes).map_err(|e| {
                    let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                    IniError::Utf8 {
                        path: path.to_path_buf(),
                        line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
                    }
                })?;
                Some(Rc::new(parse(&Arc::from(path), &source)?))
            }
            // configparser skips what it cannot open; fail2ban relies on
            // that for optional includes such as `common.local`.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::IsADirectory
                        | io::ErrorKind::NotADirectory
                ) =>
            {
                None
            }
            Err(source) => {
                return Err(IniError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        self.cache
            .insert(path.as_os_str().to_owned(), loaded.clone());
        Ok(loaded)
    }

    /// `_getIncludes`: the files, each expanded with its `.local` sibling and
    /// its includes, in merge order.
    fn includes(
        &mut self,
        files: Vec<PathBuf>,
        seen: &[OsString],
    ) -> Result<Vec<PathBuf>, IniError> {
        let mut out = Vec::new();
        for file in with_locals(files) {
            out.extend(self.includes_of(file, seen)?);
        }
        Ok(out)
    }

    /// `__getIncludesUncached`: `before` includes, the file, `after`
    /// includes. A file already on the include path is not followed again
    /// (which still lets a file include itself once, as in fail2ban).
    fn includes_of(&mut self, file: PathBuf, seen: &[OsString]) -> Result<Vec<PathBuf>, IniError> {
        self.resolved += 1;
        if self.resolved > MAX_INCLUDES {
            return Err(IniError::TooManyIncludes {
                path: file,
                limit: MAX_INCLUDES,
            });
        }
        let Some(parsed) = self.load(&file)? else {
            return Ok(Vec::new());
        };
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut lists = [Vec::new(), Vec::new()];
        if parsed.has_section("INCLUDES") {
            for (key, list) in ["before", "after"].into_iter().zip(&mut lists) {
                let Some(value) = parsed.get("INCLUDES", key, None)? else {
                    continue;
                };
                for resource in value.as_str().split('\n') {
                    let included = dir.join(resource);
                    if seen.iter().any(|s| s == included.as_os_str()) {
                        continue;
                    }
                    let mut path = seen.to_vec();
                    path.push(file.as_os_str().to_owned());
                    list.extend(self.includes(vec![included], &path)?);
                }
            }
        }
        let [before, after] = lists;
        Ok(before.into_iter().chain([file]).chain(after).collect())
    }
}

/// The file's bytes; `InvalidData` past [`MAX_FILE_SIZE`] (so an include of
/// `/dev/zero` fails instead of exhausting memory).
fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "larger than 16 MiB",
        ));
    }
    Ok(bytes)
}

/// `_expandConfFilesWithLocal`: each file followed by its existing `.local`
/// sibling, unless that is already in the list.
fn with_locals(files: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out = Vec::with_capacity(files.len());
    for file in &files {
        out.push(file.clone());
        let mut local = splitext_root(file.as_os_str());
        local.push(".local");
        let local = PathBuf::from(local);
        if !files.iter().any(|f| f.as_os_str() == local.as_os_str()) && local.is_file() {
            out.push(local);
        }
    }
    out
}

/// `os.path.splitext(p)[0]`.
fn splitext_root(p: &OsStr) -> OsString {
    let bytes = p.as_bytes();
    let name_start = bytes.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    match bytes.iter().rposition(|&b| b == b'.') {
        // Leading dots of the file name do not start an extension.
        Some(dot) if dot > name_start && bytes[name_start..dot].iter().any(|&b| b != b'.') => {
            OsString::from_vec(bytes[..dot].to_vec())
        }
        _ => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::test_files::write;

    fn value(ini: &Ini, section: &str, option: &str) -> String {
        ini.get(section, option, None)
            .unwrap()
            .unwrap()
            .into_string()
    }

    #[test]
    fn file_order_is_conf_confd_local_locald() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "jail.conf",
            "[s]\na = conf\nb = conf\nc = conf\nd = conf\n",
        );
        write(d, "jail.d/2.conf", "[s]\nb = d2\n");
        write(d, "jail.d/1.conf", "[s]\nb = d1\nc = d1\n");
        write(d, "jail.local", "[s]\nc = local\nd = local\n");
        write(d, "jail.d/z.local", "[s]\nd = dlocal\n");
        write(d, "jail.d/.hidden.conf", "[s]\na = hidden\n");
        let files = config_files(d, "jail");
        let names: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(d).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "jail.conf",
                "jail.d/1.conf",
                "jail.d/2.conf",
                "jail.local",
                "jail.d/z.local"
            ]
        );
        let ini = Ini::read_config(d, "jail").unwrap().unwrap();
        assert_eq!(value(&ini, "s", "a"), "conf");
        assert_eq!(value(&ini, "s", "b"), "d2");
        assert_eq!(value(&ini, "s", "c"), "local");
        assert_eq!(value(&ini, "s", "d"), "dlocal");
        assert!(Ini::read_config(d, "nothing").unwrap().is_none());
    }

    #[test]
    fn includes_before_after_and_local_siblings() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "filter.d/common.conf",
            "[INCLUDES]\nafter = common.local\n[DEFAULT]\nx = common\ny = common\nz = common\n",
        );
        write(d, "filter.d/common.local", "[DEFAULT]\ny = common.local\n");
        write(
            d,
            "filter.d/f.conf",
            "[INCLUDES]\nbefore = common.conf\nafter = sub/after.conf\n[DEFAULT]\nz = f\n[Definition]\nv = %(x)s %(y)s %(z)s %(w)s\n",
        );
        write(d, "filter.d/sub/after.conf", "[DEFAULT]\nw = after\n");
        let ini = Ini::read_config(d, "filter.d/f").unwrap().unwrap();
        assert_eq!(
            value(&ini, "Definition", "v"),
            "common common.local f after"
        );
        let names: Vec<_> = ini
            .files()
            .iter()
            .map(|f| f.strip_prefix(d).unwrap().to_str().unwrap())
            .collect();
        // common.local comes twice: as common.conf's include and as its
        // `.local` sibling (fail2ban reads it twice too).
        assert_eq!(
            names,
            [
                "filter.d/common.conf",
                "filter.d/common.local",
                "filter.d/common.local",
                "filter.d/f.conf",
                "filter.d/sub/after.conf"
            ]
        );
    }

    #[test]
    fn include_loops_stop_like_fail2ban() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "a.conf",
            "[INCLUDES]\nbefore = b.conf\n[DEFAULT]\nx = a\n",
        );
        write(
            d,
            "b.conf",
            "[INCLUDES]\nbefore = a.conf\n[DEFAULT]\nx = b\n",
        );
        write(
            d,
            "self.conf",
            "[INCLUDES]\nafter = self.conf\n[s]\nx = 1\n",
        );
        let ini = Ini::read_config(d, "a").unwrap().unwrap();
        let names: Vec<_> = ini
            .files()
            .iter()
            .map(|f| f.strip_prefix(d).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["b.conf", "a.conf"]);
        assert_eq!(value(&ini, "DEFAULT", "x"), "a");
        // A file including itself is read twice (fail2ban's guard only
        // looks at the include path above the current file).
        let ini = Ini::read_config(d, "self").unwrap().unwrap();
        assert_eq!(ini.files().len(), 2);
        assert_eq!(value(&ini, "KNOWN/s", "x"), "1");
    }

    #[test]
    fn known_holds_the_value_before_the_last_override() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "f.conf",
            "[Definition]\nfailregex = base\nother = 1\n[Init]\nmode = normal\n",
        );
        write(
            d,
            "f.local",
            "[Definition]\nfailregex = %(known/failregex)s\n    local <HOST>\nonly = %(known/only)s\n[DEFAULT]\nonly = dflt\n",
        );
        let ini = Ini::read_config(d, "f").unwrap().unwrap();
        assert_eq!(value(&ini, "Definition", "failregex"), "base\nlocal <HOST>");
        assert_eq!(value(&ini, "Definition", "only"), "dflt");
        assert_eq!(value(&ini, "Definition", "other"), "1");
        assert!(!ini.user_sections().any(|s| s.starts_with("KNOWN/")));
        // A second override refers to the first one, which refers to itself:
        // fail2ban fails the same way (InterpolationDepthError).
        write(
            d,
            "f.d/x.local",
            "[Definition]\nfailregex = %(known/failregex)s\n    last\n",
        );
        let ini = Ini::read_config(d, "f").unwrap().unwrap();
        let e = ini.get("Definition", "failregex", None).unwrap_err();
        assert!(matches!(e, IniError::InterpolationDepth { .. }), "{e}");
    }

    #[test]
    fn conditional_sections_merge_with_suffixed_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "a.conf", "[Init]\nx = 1\n[Init?family=inet6]\nx = 6\n");
        let ini = Ini::read_config(d, "a").unwrap().unwrap();
        let init = ini.section("Init").unwrap();
        assert_eq!(
            init.options.keys().collect::<Vec<_>>(),
            ["x", "x?family=inet6"]
        );
        assert_eq!(
            conditional("Init?family=inet6"),
            Some(("Init", "?family=inet6"))
        );
        assert_eq!(conditional("Init?"), None);
        assert_eq!(conditional("My Init?x"), None);
    }

    #[test]
    fn errors_carry_the_including_files_problem() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "a.conf", "[INCLUDES]\nbefore = bad.conf\n");
        write(d, "bad.conf", "[s]\nno delimiter here\n");
        let e = Ini::read_config(d, "a").unwrap_err();
        assert!(
            e.to_string().ends_with(
                "bad.conf:2: not a section header, option or comment: `no delimiter here`"
            ),
            "{e}"
        );
        fs::write(d.join("bin.conf"), b"[s]\nx = \xff\n").unwrap();
        let e = Ini::read_config(d, "bin").unwrap_err();
        assert!(matches!(e, IniError::Utf8 { line: 2, .. }), "{e}");
    }

    #[test]
    fn splitext_like_python() {
        let root = |s: &str| splitext_root(OsStr::new(s)).into_string().unwrap();
        assert_eq!(root("/a/b.conf"), "/a/b");
        assert_eq!(root("/a.d/b"), "/a.d/b");
        assert_eq!(root(".hidden"), ".hidden");
        assert_eq!(root("x/..conf"), "x/..conf");
        assert_eq!(root("x.tar.gz"), "x.tar");
    }
}
