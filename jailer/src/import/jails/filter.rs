//! The filter a carried-over jail names: fail2ban's filter and options,
//! plus what the jail itself sets, loaded as fail2ban and as jailer would
//! load it to check they agree. Apart from the other settings because it
//! alone reads files (the filters) to decide what to write.

use std::path::Path;

use crate::{
    config::DEFAULT_CONFIG,
    error::Chain,
    filter::{
        Filter, FilterContext,
        fail2ban::config::{
            filter::{FilterDef, Sourced, load_filter},
            jail::Jail as Fail2banJail,
            options::NameWithOptions,
        },
    },
};

/// The filter as jailer names it: fail2ban's name and options, plus the
/// jail's own single-line filter settings (`maxlines`, `usedns`, ...)
/// given as options, which fail2ban reads last. Checked by loading it as
/// fail2ban and as jailer would; what the jail sets that still differs
/// (its own multi-line `failregex`, say) becomes a note.
pub(super) fn filter_spec(
    jail: &Fail2banJail,
    fail2ban_dir: &Path,
    systemd: bool,
    notes: &mut Vec<String>,
) -> Result<String, String> {
    let named = jail
        .filter
        .as_ref()
        .ok_or("no filter: a jailer jail needs one")?;
    let backend = if systemd { "systemd" } else { "auto" };
    let load = |named: &NameWithOptions| -> Result<(String, FilterDef), String> {
        let spec = named
            .to_spec()
            .ok_or_else(|| format!("filter `{}`: an option cannot be written back", named.name))?;
        let def = load_filter(fail2ban_dir, &spec, backend)
            .map_err(|e| format!("filter `{spec}`: {}", Chain(&e)))?;
        Ok((spec, def))
    };
    let (mut spec, alone) = load(named)?;
    let mut differ = differences(&jail.filter_def, &alone);
    if !differ.is_empty() {
        let mut carried = named.clone();
        for (option, value, _) in &differ {
            if !value.contains('\n') {
                carried.options.insert((*option).to_owned(), value.clone());
            }
        }
        if let Ok((with_options, def)) = load(&carried) {
            let left = differences(&jail.filter_def, &def);
            if left.len() < differ.len() {
                (spec, differ) = (with_options, left);
            }
        }
    }
    for (option, _, origin) in differ {
        let at = origin.map_or_else(String::new, |o| format!(" at {o}"));
        notes.push(format!(
            "{option}: the jail's own (set{at}) is not carried over: jailer takes the filter's; put it in filter.d/{}.local",
            named.name.trim()
        ));
    }
    // As `Config::parse` will load it.
    let ctx = FilterContext {
        base: Path::new(DEFAULT_CONFIG).parent().unwrap_or(Path::new("/")),
        fail2ban_dir,
        ports: None,
        journal: systemd,
    };
    Filter::load(&spec, &ctx)
        .map_err(|e| format!("filter `{spec}` does not load in jailer: {}", Chain(&e)))?;
    Ok(spec)
}

/// What the jail's filter settings change against the filter loaded alone:
/// (option, the jail's value, where it is set).
fn differences(jail: &FilterDef, alone: &FilterDef) -> Vec<(&'static str, String, Option<String>)> {
    let origin = |s: Option<&Sourced>| s.and_then(|s| s.origin.as_ref()).map(ToString::to_string);
    let mut out = Vec::new();
    let mut one = |option, mine: &Option<Sourced>, theirs: &Option<Sourced>| {
        let value = |s: &Option<Sourced>| s.as_ref().map(|s| s.value.clone());
        if value(mine) != value(theirs) {
            out.push((
                option,
                value(mine).unwrap_or_default(),
                origin(mine.as_ref()),
            ));
        }
    };
    one("prefregex", &jail.prefregex, &alone.prefregex);
    one("datepattern", &jail.datepattern, &alone.datepattern);
    for (option, mine, theirs) in [
        ("failregex", &jail.failregex, &alone.failregex),
        ("ignoreregex", &jail.ignoreregex, &alone.ignoreregex),
    ] {
        if lines(mine) != lines(theirs) {
            out.push((option, lines(mine), origin(mine.first())));
        }
    }
    if jail.maxlines != alone.maxlines {
        let value = jail.maxlines.map(|n| n.to_string()).unwrap_or_default();
        out.push(("maxlines", value, None));
    }
    // No `usedns` is fail2ban's `warn`.
    let usedns = |d: &FilterDef| d.usedns.clone().unwrap_or_else(|| "warn".into());
    if usedns(jail) != usedns(alone) {
        out.push(("usedns", usedns(jail), None));
    }
    out
}

/// Values of a multi-line option, one per line.
pub(super) fn lines(values: &[Sourced]) -> String {
    values
        .iter()
        .map(|s| s.value.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
