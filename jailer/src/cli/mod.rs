//! The command line: fail2ban's words, one subcommand per job, one file per
//! subcommand. [`main`] is the whole binary; [`run()`] dispatches a parsed
//! command line (tests call it too).

mod args;
mod ban;
mod check;
mod detach;
mod docs;
mod fleet;
mod import;
mod list;
mod regex;
mod reload;
mod run;
mod status;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::{EnvFilter, fmt};

pub use self::{
    list::{BanRow, active_bans, format_table},
    regex::{Summary, scan},
    status::render as render_status,
};
use crate::{
    ban::Target,
    config::DEFAULT_CONFIG,
    error::{Chain, Error},
};

#[derive(Debug, Parser)]
#[command(
    name = "jailer",
    version,
    about = "fail2ban for busy mail servers: bans from the mail log, enforced by XDP in the NIC driver",
    long_about = "jailer follows your mail logs like fail2ban (jails, filters, failregex, <HOST>, \
maxretry, findtime, bantime, ignoreip) and bans offenders by writing their address into kernel \
maps that an XDP program consults for every packet: banned hosts' packets to the jail's ports are \
dropped before the kernel allocates anything. No iptables, no route entries.\n\n\
Typical use:\n  jailer check --config /etc/jailer/jailer.toml    validate before starting\n  \
jailer run --config /etc/jailer/jailer.toml      start the agent\n  \
jailer ban 203.0.113.7 --time 1d                ban by hand (pop3 by default)\n  \
jailer list                                      what is banned, for how long, drops\n  \
jailer status                                    per-jail failures and bans\n  \
jailer fleet                                     members sharing bans (with [fleet])\n  \
jailer regex /var/log/mail.log vpopmail          test a filter on a log, like fail2ban-regex\n  \
jailer import-fail2ban > jailer.toml             carry over fail2ban's jails (--bans: its bans)\n  \
bpftool map dump pinned /sys/fs/bpf/jailer/BANS_V4   the raw kernel map"
)]
pub struct Cli {
    /// Configuration file (TOML). ban/unban/list/detach only need `bpffs` and
    /// `state_dir` from it, and fall back to defaults when the default file is absent.
    #[arg(long, short, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// Log format of the agent's own messages.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the XDP program and follow the jails' logs, banning offenders.
    ///
    /// Restarting reuses the pinned maps and link: bans stay enforced while
    /// the agent is down, and expired bans lapse in the kernel on their own.
    Run,
    /// Ban an address by hand (works whether or not the agent runs).
    ///
    /// Refuses, unless --force, what would lock out the server or everyone:
    /// /0 networks, loopback, unspecified, broadcast and multicast
    /// addresses, and this host's own addresses.
    Ban(BanArgs),
    /// Lift a ban (or every ban with --all).
    Unban(UnbanArgs),
    /// Show bans in force: address, ports, time left, packets dropped, and
    /// who set each (its jail; `local` or the fleet member).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Detach the XDP program from every interface and remove its pins.
    Detach,
    /// Test a filter against a log file or a single line, like fail2ban-regex.
    Regex(RegexArgs),
    /// Per-jail failures and bans, interfaces, packets dropped (like
    /// fail2ban-client status). Asks the running agent, else reads the maps.
    Status {
        /// Only this jail.
        jail: Option<String>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The fleet (`[fleet]`) as the running agent sees it: members, when
    /// each last spoke, the bans each contributed and those enforced here,
    /// and the link to the NATS servers.
    Fleet {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration as `run` would, without attaching anything
    /// (like fail2ban-client -t): what `check` accepts, `run` starts with.
    Check,
    /// Make the running agent re-read its configuration (same as SIGHUP):
    /// jails added or removed, no ban dropped, no log line lost. All or
    /// nothing: a refused reload changes nothing.
    Reload,
    /// Print a shell completion script: jailer completions bash > /etc/bash_completion.d/jailer
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): jailer man > /usr/local/share/man/man8/jailer.8
    Man,
    /// Print a jailer.toml carrying over fail2ban's enabled jails; with
    /// --bans, also carry its bans in force into the maps and the journal.
    ///
    /// Reads jail.conf, jail.d/*.conf, jail.local and jail.d/*.local (with
    /// the paths-*.conf they include) as fail2ban 1.0.2 does, and writes for
    /// every enabled jail: its filter with options (`dovecot[mode=normal]`,
    /// read from fail2ban's filter.d), logpath (globs kept) or backend =
    /// "systemd" with its journalmatch, port (fail2ban's names and lists;
    /// other names through /etc/services; `0:65535`, ranges or more than 8
    /// ports: all), maxretry, findtime, bantime (-1: permanent),
    /// bantime.increment, .factor and .maxtime, ignoreip (addresses and
    /// networks) and ignoreself.
    ///
    /// Not carried over, said in comments with the reason: action, banaction
    /// and mta (jailer bans with XDP in the NIC driver; no action scripts,
    /// no mail), host names in ignoreip (jailer never resolves names),
    /// bantime.formula, .multipliers, .rndtime and .overalljails, protocols
    /// other than TCP, a jail's own failregex or ignoreregex (put them in
    /// filter.d/NAME.local). Enabled jails fail2ban would not start, or that
    /// do not load in jailer, are listed at the end with the reason. fail2ban
    /// names no interface: set `interface` before `jailer check`.
    ///
    /// --bans (root) reads fail2ban's database (`dbfile` of fail2ban.conf, or
    /// --dbfile; read-only) and writes the bans still in force, with the time
    /// they have left, into the maps and the journal of --config's bpffs and
    /// state_dir, as fail2ban restores them when a jail starts: cut to the
    /// jail's longest bantime now, ignoreip and this host's addresses left
    /// out. Their ports are the imported jail's, else jailer's default
    /// (pop3). The summary goes to stderr, the config to stdout:
    ///
    ///   jailer import-fail2ban --bans > /etc/jailer/jailer.toml
    #[command(name = "import-fail2ban")]
    ImportFail2ban(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// fail2ban's configuration directory.
    #[arg(long, value_name = "DIR", default_value = crate::config::DEFAULT_FAIL2BAN_DIR)]
    pub fail2ban_dir: PathBuf,
    /// Also write fail2ban's bans in force into the maps and the journal.
    #[arg(long)]
    pub bans: bool,
    /// fail2ban's database (default: `dbfile` of fail2ban.conf,
    /// /var/lib/fail2ban/fail2ban.sqlite3).
    #[arg(long, value_name = "FILE", requires = "bans")]
    pub dbfile: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true))]
pub struct BanArgs {
    /// IPv4 or IPv6 address, or a network: 203.0.113.0/24, 2001:db8:1::/48.
    #[arg(group = "what", value_parser = args::target)]
    pub target: Option<Target>,
    /// Ban every address or network in FILE (`-`: standard input), one per
    /// line; `#` comments and blank lines are skipped. Bad lines are
    /// reported with their number and the rest banned (see --strict).
    #[arg(long, group = "what", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// With --file: ban nothing if any line is bad.
    #[arg(long, requires = "file")]
    pub strict: bool,
    /// Port to close, by number or name (pop3, pop3s, imap, imaps, smtp,
    /// submission, smtps, sieve) or `all`; repeat for several, or 110,995.
    #[arg(long, short, value_name = "PORT", default_value = "pop3", value_parser = args::port)]
    pub port: Vec<String>,
    /// How long: seconds or 10m, 1h, 1d, 1w (at most 10 years); or `permanent`.
    #[arg(long, short, value_name = "DURATION", default_value = "1h",
          value_parser = args::bantime, allow_hyphen_values = true)]
    pub time: args::Bantime,
    /// Count the packets this ban would drop (see `list`) but let them pass.
    #[arg(long)]
    pub monitor: bool,
    /// Ban even what would lock out the server or everyone (see above).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true))]
pub struct UnbanArgs {
    /// IPv4 or IPv6 address, or a network banned as such.
    #[arg(group = "what", value_parser = args::target)]
    pub target: Option<Target>,
    /// Remove every ban.
    #[arg(long, group = "what")]
    pub all: bool,
    /// Lift the ban on every address or network in FILE (`-`: standard
    /// input), one per line; `#` comments and blank lines skipped.
    #[arg(long, group = "what", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// With --file: lift nothing if any line is bad.
    #[arg(long, requires = "file")]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct RegexArgs {
    /// A log file, or a single log line (text with spaces).
    pub log: String,
    /// A built-in filter (`vpopmail`, `vpopmail[service=pop3]`), a fail2ban
    /// filter by name (`dovecot`, `dovecot[mode=aggressive]`, looked up in
    /// --fail2ban-dir), or a filter file's path (options too:
    /// `/etc/fail2ban/filter.d/postfix.conf[mode=auth]`).
    pub filter: String,
    /// One JSON object per failure (`line`, and `addr` or `host` for a host
    /// name, `time`), then a summary object.
    #[arg(long)]
    pub json: bool,
    /// fail2ban's configuration directory, for filter names.
    #[arg(long, value_name = "DIR", default_value = crate::config::DEFAULT_FAIL2BAN_DIR)]
    pub fail2ban_dir: PathBuf,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    let config = cli.config;
    match cli.command {
        Command::Run => run::run(&config),
        Command::Check => check::run(&config),
        Command::Ban(args) => ban::ban(&config, &args),
        Command::Unban(args) => ban::unban(&config, &args),
        Command::List { json } => list::run(&config, json),
        Command::Status { jail, json } => status::run(&config, jail.as_deref(), json),
        Command::Reload => reload::run(&config),
        Command::Fleet { json } => fleet::run(&config, json),
        Command::Detach => detach::run(&config),
        Command::Regex(args) => regex::run(&args),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
        Command::ImportFail2ban(args) => import::run(&config, &args),
    }
}

/// Fails with a clear message unless root: the maps, the bpffs directory
/// and the control socket are root's.
fn require_root(what: &str) -> Result<(), Error> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "`jailer {what}` needs root (the ban maps, bpffs and the agent's socket are root's): run it with sudo"
        )))
    }
}

/// Writes command output; `jailer list | head` must end quietly, not panic.
fn print(text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|source| Error::Io {
            path: "stdout".into(),
            source,
        }),
    }
}

/// Writes `value` as one pretty JSON document (`--json`).
fn print_json(value: &impl serde::Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Io {
        path: "stdout".into(),
        source: e.into(),
    })?;
    print(&(text + "\n"))
}

/// The `jailer` binary: parse, set up logging, run, map the result to an
/// exit status (2: fix your input; 1: the system failed).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `jailer regex ... | head`: the reader left, we are done.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("jailer: {}", Chain(&err));
            ExitCode::from(err.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_is_global_and_ban_has_defaults() {
        let cli =
            Cli::try_parse_from(["jailer", "ban", "203.0.113.7", "--config", "/x.toml"]).unwrap();
        assert_eq!(cli.config, PathBuf::from("/x.toml"));
        let Command::Ban(b) = cli.command else {
            panic!("not ban")
        };
        assert_eq!(b.port, ["pop3"]);
        assert_eq!(b.time, args::Bantime(Some(Duration::from_secs(3600))));
        assert!(
            Cli::try_parse_from(["jailer", "unban"]).is_err(),
            "unban needs an IP or --all"
        );
        assert!(Cli::try_parse_from(["jailer", "unban", "1.2.3.4", "--all"]).is_err());
    }

    #[test]
    fn import_reads_etc_fail2ban_and_dbfile_goes_with_bans() {
        let cli = Cli::try_parse_from(["jailer", "import-fail2ban"]).unwrap();
        let Command::ImportFail2ban(args) = cli.command else {
            panic!("not import-fail2ban")
        };
        assert_eq!(args.fail2ban_dir, PathBuf::from("/etc/fail2ban"));
        assert!(!args.bans && args.dbfile.is_none());
        assert!(Cli::try_parse_from(["jailer", "import-fail2ban", "--dbfile", "/x.db"]).is_err());
        let cli = Cli::try_parse_from([
            "jailer",
            "import-fail2ban",
            "--bans",
            "--dbfile",
            "/x.db",
            "--fail2ban-dir",
            "/f2b",
        ])
        .unwrap();
        let Command::ImportFail2ban(args) = cli.command else {
            panic!("not import-fail2ban")
        };
        assert!(args.bans);
        assert_eq!(args.dbfile, Some(PathBuf::from("/x.db")));
        assert_eq!(args.fail2ban_dir, PathBuf::from("/f2b"));
    }

    #[test]
    fn bad_values_are_refused_by_the_parser_with_the_reason() {
        let e = Cli::try_parse_from(["jailer", "ban", "1.2.3.4", "--time", "-5"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid duration `-5`"), "{e}");
        let e = Cli::try_parse_from(["jailer", "ban", "1.2.3.400"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not an address or CIDR network"), "{e}");
        let e = Cli::try_parse_from(["jailer", "ban", "1.2.3.4", "--port", "gopher"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown port `gopher`"), "{e}");
    }
}
