//! Command line: fail2ban's words, one subcommand per job.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::DEFAULT_CONFIG;

#[derive(Debug, Parser)]
#[command(
    name = "jailer",
    version,
    about = "fail2ban for busy mail servers: bans from the mail log, enforced by XDP in the NIC driver",
    long_about = "jailer follows your mail logs like fail2ban (jails, filters, failregex, <HOST>, \
maxretry, findtime, bantime, ignoreip) and bans offenders by writing their address into kernel \
maps that an XDP program consults for every packet: banned hosts' packets to the jail's ports are \
dropped before the kernel allocates anything. No iptables, no route entries.\n\n\
Typical use:\n  jailer run --config /etc/jailer/jailer.toml      start the agent\n  \
jailer ban 203.0.113.7 --time 1d                ban by hand (pop3 by default)\n  \
jailer list                                      what is banned, for how long, drops\n  \
jailer regex /var/log/mail.log vpopmail          test a filter on a log, like fail2ban-regex\n  \
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
    Ban(BanArgs),
    /// Lift a ban (or every ban with --all).
    Unban(UnbanArgs),
    /// Show bans in force: address, ports, time left, packets dropped.
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
    /// Validate the configuration and its filters without attaching anything
    /// (like fail2ban-client -t).
    Check,
    /// Make the running agent re-read its configuration (same as SIGHUP):
    /// jails added or removed, no ban dropped, no log line lost.
    Reload,
    /// Print a shell completion script: jailer completions bash > /etc/bash_completion.d/jailer
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): jailer man > /usr/local/share/man/man8/jailer.8
    Man,
}

#[derive(Debug, Args)]
pub struct BanArgs {
    /// IPv4 or IPv6 address, or a network: 203.0.113.0/24, 2001:db8:1::/48.
    pub ip: String,
    /// Port to close, by number or name (pop3, pop3s, imap, imaps, smtp,
    /// submission, smtps, sieve) or `all`; repeat for several.
    #[arg(long, short, value_name = "PORT", default_value = "pop3")]
    pub port: Vec<String>,
    /// How long: seconds or 10m, 1h, 1d, 1w; or `permanent`.
    #[arg(long, short, value_name = "DURATION", default_value = "1h")]
    pub time: String,
    /// Count the packets this ban would drop (see `list`) but let them pass.
    #[arg(long)]
    pub monitor: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true))]
pub struct UnbanArgs {
    /// IPv4 or IPv6 address, or a network banned as such.
    #[arg(group = "target")]
    pub ip: Option<String>,
    /// Remove every ban.
    #[arg(long, group = "target")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct RegexArgs {
    /// A log file, or a single log line.
    pub log: String,
    /// A built-in filter (`vpopmail`) or a fail2ban-style filter file.
    pub filter: String,
    /// One JSON object per matched line, then a summary object.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
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
        assert_eq!(b.time, "1h");
        assert!(
            Cli::try_parse_from(["jailer", "unban"]).is_err(),
            "unban needs an IP or --all"
        );
        assert!(Cli::try_parse_from(["jailer", "unban", "1.2.3.4", "--all"]).is_err());
    }
}
