//! `jailer import-fail2ban`: fail2ban's enabled jails printed as a
//! jailer.toml; with `--bans`, fail2ban's bans in force written into the
//! maps and the journal.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{ImportArgs, ban::tell_agent, print, require_root};
use crate::{
    config::{Config, DEFAULT_CONFIG},
    error::Error,
    filter::fail2ban::config::server::read_server_config,
    host,
    import::{BanImport, Import, ImportError, Services, import_jails, read_bans},
    kernel::XdpBanTable,
    state::{self, Journal},
};

pub(super) fn run(config_path: &Path, args: &ImportArgs) -> Result<(), Error> {
    if args.bans {
        require_root("import-fail2ban --bans")?;
    }
    let import = import_jails(&args.fail2ban_dir, &Services::system())?;
    let generated = chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S %z")
        .to_string();
    let text = import.render(&generated);
    // What is printed loads as jailer will load it.
    let imported =
        Config::parse(Path::new(DEFAULT_CONFIG), &text).map_err(ImportError::Generated)?;
    print(&text)?;
    if args.bans {
        import_bans(config_path, args, &import, &imported)?;
    }
    Ok(())
}

/// fail2ban's database: `--dbfile`, else `dbfile` of fail2ban.conf.
fn dbfile(args: &ImportArgs, import: &Import) -> Result<PathBuf, ImportError> {
    if let Some(path) = &args.dbfile {
        return Ok(path.clone());
    }
    let dbfile = read_server_config(&import.fail2ban_dir)?.dbfile;
    if dbfile.eq_ignore_ascii_case("none") || dbfile == ":memory:" {
        return Err(ImportError::NoDatabase { dbfile });
    }
    Ok(PathBuf::from(dbfile))
}

fn import_bans(
    config_path: &Path,
    args: &ImportArgs,
    import: &Import,
    imported: &Config,
) -> Result<(), Error> {
    let dbfile = dbfile(args, import)?;
    let rows = read_bans(&dbfile)?;
    let now = SystemTime::now();
    let own: Vec<IpAddr> = host::own_addresses().into_iter().collect();
    let plan = BanImport::plan(rows, &imported.jails, &own, now);
    // Where bans go: the maps and journal of the config in use.
    let config = Config::load_or_default(config_path)?;
    state::prepare_state_dir(&config.state_dir)?;
    let (mut table, _) = XdpBanTable::open(&config.bpffs)?;
    let journal = Journal::new(&config.state_dir);
    let (written, covered) = plan.apply(&mut table, &journal, now)?;
    if written > 0 {
        tell_agent(&config);
    }
    eprint!(
        "{}",
        summary(&dbfile, &plan, written, covered, &config, &journal)
    );
    Ok(())
}

/// What `--bans` did, for stderr (stdout holds the config).
fn summary(
    dbfile: &Path,
    plan: &BanImport,
    written: usize,
    covered: usize,
    config: &Config,
    journal: &Journal,
) -> String {
    let mut out = format!(
        "fail2ban bans from {}: {written} imported into {} and {}\n",
        dbfile.display(),
        config.bpffs.display(),
        journal.path().display()
    );
    let full = plan.bans.len().saturating_sub(written + covered);
    let _ = writeln!(
        out,
        "  skipped: {} expired, {covered} already banned as widely, {} ignored, {} invalid",
        plan.expired,
        plan.ignored.len(),
        plan.invalid.len()
    );
    if full > 0 {
        let _ = writeln!(
            out,
            "  {full} not written: the ban map is full (raise max_bans, `jailer detach`, restart)"
        );
    }
    for line in plan.ignored.iter().chain(&plan.invalid) {
        let _ = writeln!(out, "  {line}");
    }
    for jail in &plan.unknown_jails {
        let _ = writeln!(
            out,
            "  jail {jail} is not among the imported jails: its bans close jailer's default port (pop3)"
        );
    }
    out
}
