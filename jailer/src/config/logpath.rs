//! fail2ban's `logpath` globs, expanded as Python's glob does. Apart from
//! the rest of the config because `import-fail2ban` expands them too, to
//! note logs that are not there.

use std::path::PathBuf;

/// fail2ban's `logpath` globs (`/var/log/mail/*.log`), expanded as fail2ban
/// expands them when a jail starts (Python's glob: `*`, `?`, `[...]`, no
/// match of a leading dot, a `[` that opens no set is itself); here when
/// the config is loaded, so at start and at each reload. Plain paths are
/// kept as written: a log that does not exist yet is waited for. Returns
/// the files and the globs that matched none.
pub(crate) fn expand_logpaths(patterns: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut unmatched = Vec::new();
    for pattern in patterns {
        // Relative paths are refused by `validate_for_run` as written.
        let matches = pattern
            .to_str()
            .filter(|p| pattern.is_absolute() && p.contains(['*', '?', '[']))
            .and_then(|glob| glob::glob_with(glob, options).ok());
        let Some(matches) = matches else {
            files.push(pattern.clone());
            continue;
        };
        let before = files.len();
        // Unreadable directories are skipped, as Python's glob skips them.
        files.extend(matches.filter_map(Result::ok).filter(|p| !p.is_dir()));
        if files.len() == before {
            unmatched.push(pattern.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
    (files, unmatched)
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use crate::config::{Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/jailer/jailer.toml"), text)
    }

    #[test]
    fn logpath_globs_are_expanded_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["b.log", "a.log", ".hidden.log", "c.txt"] {
            fs::write(d.join(f), "").unwrap();
        }
        fs::create_dir(d.join("dir.log")).unwrap();
        let text = format!(
            "interface = \"lo\"\nbpffs = \"{d}/bpf\"\nstate_dir = \"{d}/state\"\n[jails.a]\nfilter = \"vpopmail\"\nlogpath = [\"{d}/*.log\", \"{d}/b.log\", \"{d}/new.log\"]\n",
            d = d.display()
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.jails[0].logpaths,
            [d.join("a.log"), d.join("b.log"), d.join("new.log")],
            "sorted, no directories, no dot files, once each; plain paths as written"
        );
        c.validate_for_run().unwrap();
        let e = parse(&text.replace("*.log", "*.gz"))
            .unwrap()
            .validate_for_run()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":4: jails.a.logpath: `") && e.contains("*.gz` matches no file"),
            "{e}"
        );
        // As in Python, a `[` that opens no set is itself.
        let c = parse(&text.replace("*.log", "[.log")).unwrap();
        assert_eq!(c.jails[0].logpaths[0], d.join("[.log"));
    }
}
