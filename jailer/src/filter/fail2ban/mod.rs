//! fail2ban's filter files, read and matched as fail2ban 1.0.2 does.
//!
//! - [`config`] reads fail2ban's configuration dialect: file order
//!   (`X.conf`, `X.d/*.conf`, `X.local`, `X.d/*.local`), `[INCLUDES]`,
//!   `[DEFAULT]`, `[Init]` and options given with the name
//!   (`dovecot[mode=aggressive]`), `%(x)s` interpolation, `<tag>`
//!   substitution; and `jail.conf`/`jail.local` for `jailer import-fail2ban`.
//! - [`runtime`] compiles the regexes with PCRE2 (Python's syntax as is),
//!   finds and cuts each line's date, applies `prefregex`, `failregex` and
//!   `ignoreregex`, and joins multi-line failures.
//!
//! Checked against fail2ban itself on every stock filter and on its own
//! annotated sample logs (tests/tests/fail2ban_samples.rs).

pub mod config;
pub mod runtime;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use self::{
    config::filter::{FilterDef as ReadDef, load_filter},
    runtime::{CompiledFilter, FilterDef, FilterOptions, UseDns},
};
use super::FilterError;

/// A fail2ban filter, read and compiled.
#[derive(Debug)]
pub struct Fail2banFilter {
    /// As it was named: `dovecot[mode=aggressive]`, or a path.
    pub spec: String,
    /// The files read, in merge order.
    pub files: Vec<PathBuf>,
    /// `journalmatch`, split as fail2ban splits it (for `backend = "systemd"`).
    pub journalmatch: Vec<Vec<String>>,
    pub compiled: Arc<CompiledFilter>,
}

/// `NAME` or `NAME[opt=value, ...]` under `fail2ban_dir/filter.d`, or a
/// path to a filter file (relative paths from `base`, the directory of the
/// file that names it). `systemd` backends read `logtype = journal`.
pub fn load(
    spec: &str,
    base: &Path,
    fail2ban_dir: &Path,
    journal: bool,
) -> Result<Fail2banFilter, FilterError> {
    // Spaces around it are no part of it (as in fail2ban's config values);
    // `name` is then a prefix of `trimmed`, so the options follow it there.
    let trimmed = spec.trim();
    let name = trimmed.split('[').next().unwrap_or(trimmed).trim_end();
    // fail2ban resolves relative paths from its working directory; a
    // daemon's is `/`: resolve them from the file that names them instead.
    // A bare name that is a file there (`filter = "mail.conf"`) is that file.
    let relative =
        !Path::new(name).is_absolute() && (name.contains('/') || base.join(name).is_file());
    let resolved = if relative {
        format!("{}{}", base.join(name).display(), &trimmed[name.len()..])
    } else {
        trimmed.to_owned()
    };
    let backend = if journal { "systemd" } else { "auto" };
    let def = load_filter(fail2ban_dir, &resolved, backend).map_err(|source| match source {
        config::filter::FilterError::NotFound { .. } => FilterError::NotFound {
            spec: spec.to_owned(),
            filter_d: fail2ban_dir.join("filter.d"),
            base: base.to_owned(),
        },
        source => FilterError::Read {
            spec: spec.to_owned(),
            source: Box::new(source),
        },
    })?;
    compile(spec, &def)
}

fn compile(spec: &str, def: &ReadDef) -> Result<Fail2banFilter, FilterError> {
    // fail2ban loads such a filter and its jail never bans: a mistake.
    if def.failregex.is_empty() {
        return Err(FilterError::NoFailregex {
            spec: spec.to_owned(),
            files: def
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let runtime_def = FilterDef {
        prefregex: def.prefregex.as_ref().map(|r| r.value.clone()),
        failregex: def.failregex.iter().map(|r| r.value.clone()).collect(),
        ignoreregex: def.ignoreregex.iter().map(|r| r.value.clone()).collect(),
        datepattern: def.datepattern.as_ref().map(|r| r.value.clone()),
        maxlines: def.maxlines,
    };
    let use_dns = match def.usedns.as_deref() {
        Some("no") => UseDns::No,
        Some("yes") => UseDns::Yes,
        Some("raw") => UseDns::Raw,
        _ => UseDns::Warn,
    };
    let options = FilterOptions {
        use_dns,
        ..FilterOptions::default()
    };
    let compiled = CompiledFilter::with_options(&runtime_def, &options).map_err(|source| {
        // Name the file and line the failing regex came from.
        let origin = match &source {
            runtime::FilterError::Compile { kind, index, .. }
            | runtime::FilterError::EmptyRegex { kind, index } => {
                let list = match kind {
                    runtime::RegexKind::Prefregex => def.prefregex.iter().collect::<Vec<_>>(),
                    runtime::RegexKind::Failregex => def.failregex.iter().collect(),
                    runtime::RegexKind::Ignoreregex => def.ignoreregex.iter().collect(),
                    _ => Vec::new(),
                };
                list.get(*index)
                    .and_then(|r| r.origin.as_ref())
                    .map(ToString::to_string)
            }
            runtime::FilterError::NoFailureId { index, .. } => def
                .failregex
                .get(*index)
                .and_then(|r| r.origin.as_ref())
                .map(ToString::to_string),
            _ => None,
        };
        FilterError::Compile {
            spec: spec.to_owned(),
            origin: origin.unwrap_or_else(|| spec.to_owned()),
            source: Box::new(source),
        }
    })?;
    let journalmatch = def
        .journalmatch_args()
        .map_err(|source| FilterError::Journalmatch {
            spec: spec.to_owned(),
            source: Box::new(source),
        })?;
    Ok(Fail2banFilter {
        spec: spec.to_owned(),
        files: def.files.clone(),
        journalmatch,
        compiled: Arc::new(compiled),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_around_a_relative_path_are_not_part_of_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/f.conf"),
            "[Definition]\nfailregex = ^from <HOST>$\n",
        )
        .unwrap();
        let none = Path::new("/nonexistent");
        for spec in ["sub/f.conf", " sub/f.conf ", "\tsub/f.conf[maxlines=1]"] {
            let f = load(spec, dir.path(), none, false).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            assert_eq!(f.files, [dir.path().join("sub/f.conf")], "{spec:?}");
        }
        // Used to slice inside `é` and panic.
        assert!(matches!(
            load(" a/é", dir.path(), none, false),
            Err(FilterError::NotFound { .. })
        ));
    }
}
