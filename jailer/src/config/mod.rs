//! The configuration file: fail2ban's words in TOML, validated once into a
//! [`Config`] (compiled filters, durations, networks), so nothing past this
//! point has to second-guess a value. [`Config::load_for_run`] is the one
//! gate `run`, `check` and `reload` all pass: they can never disagree.

mod logpath;
mod raw;
mod validation;

use std::{
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub(crate) use self::logpath::expand_logpaths;
use self::raw::RawConfig;
pub(crate) use self::raw::default_ports;
use crate::{
    ban::{PortSet, Target},
    filter::{Filter, FilterContext, FilterError},
    fleet::{FleetConfig, FleetConfigError, host_name},
};

/// Where jailer looks when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/jailer/jailer.toml";
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/jailer";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/jailer";
/// Where fail2ban filter names (`filter = "dovecot"`) are looked up.
pub const DEFAULT_FAIL2BAN_DIR: &str = "/etc/fail2ban";

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver mode, falling back to generic (with a warning) when the NIC
    /// driver has no native XDP.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Driver,
    /// Generic (skb) mode: works everywhere, after the skb is allocated.
    Generic,
}

/// What a matching ban does to a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAction {
    /// Drop it.
    #[default]
    Drop,
    /// Count it as a would-be drop and let it pass (try jailer beside
    /// fail2ban before enforcing).
    Monitor,
}

/// Where a jail's lines come from (fail2ban's `backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Log files (`logpath`), followed with inotify. fail2ban's `auto`,
    /// `pyinotify`, `gamin` and `polling` all mean this.
    #[default]
    #[serde(
        alias = "pyinotify",
        alias = "gamin",
        alias = "polling",
        alias = "file"
    )]
    Auto,
    /// The systemd journal, filtered by `journalmatch`.
    Systemd,
}

/// A configuration file that cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// TOML syntax, an unknown key or a bad value.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A jail's filter could not be loaded.
    #[error("{}:{line}: jails.{jail}.filter", path.display())]
    Filter {
        path: PathBuf,
        line: usize,
        jail: String,
        #[source]
        source: Box<FilterError>,
    },
    /// `run` without an interface to attach to.
    #[error("{}: no `interface` set: name the NIC(s) to protect, e.g. interface = \"eth0\"", path.display())]
    NoInterface { path: PathBuf },
    /// `run` without any enabled jail (nor a fleet to enforce).
    #[error("{}: no enabled jail: add a [jails.NAME] section (see jailer.example.toml), or a [fleet] to enforce", path.display())]
    NoJail { path: PathBuf },
    /// The `[fleet]` section cannot be used.
    #[error("{}", at(path, *line))]
    Fleet {
        path: PathBuf,
        line: usize,
        #[source]
        source: FleetConfigError,
    },
    /// A value that is fine alone but cannot work on this machine or with
    /// the rest of the file; `line` 0 when the key is not in the file.
    #[error("{}: {key}: {problem}", at(path, *line))]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        problem: String,
    },
}

/// `path:line`, or `path` for line 0.
fn at(path: &Path, line: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}", path.display())
    }
}

/// Where keys were written, for messages about them (0: not written).
#[derive(Debug, Clone, Default)]
pub struct KeyLines {
    pub interface: usize,
    pub bpffs: usize,
    pub state_dir: usize,
    /// The `[jails.NAME]` header of each jail.
    pub jails: std::collections::HashMap<String, usize>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub xdp_action: XdpAction,
    /// Capacity of each exact-address ban map (IPv4, IPv6), set when the maps
    /// are created.
    pub max_bans: u32,
    pub bpffs: PathBuf,
    pub state_dir: PathBuf,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// fail2ban's configuration, for filter names.
    pub fail2ban_dir: PathBuf,
    /// Never banned by any jail (nor, with a fleet, by remote bans): the
    /// top-level `ignoreip`, fail2ban's `[DEFAULT] ignoreip`.
    pub ignoreip: Vec<Target>,
    pub jails: Vec<Jail>,
    /// Sharing bans with other servers through NATS JetStream.
    pub fleet: Option<FleetConfig>,
    /// Where keys were written.
    pub lines: KeyLines,
}

/// One jail: a filter over some logs, and what to do to offenders.
#[derive(Debug, Clone)]
pub struct Jail {
    pub name: String,
    pub filter: Arc<Filter>,
    /// The files to follow: `logpath` as written, globs expanded.
    pub logpaths: Vec<PathBuf>,
    /// `logpath` globs that matched no file when the config was loaded
    /// (refused by [`Config::validate_for_run`], as fail2ban refuses a jail
    /// with no log).
    pub unmatched_globs: Vec<PathBuf>,
    pub backend: Backend,
    /// With `backend = "systemd"`: which journal entries (fail2ban syntax:
    /// `FIELD=value` terms, `+` between alternatives); the jail's own, else
    /// the filter's.
    pub journalmatch: String,
    /// A directory of journal files to read instead of the system journal
    /// (fail2ban's `journalpath`).
    pub journalpath: Option<PathBuf>,
    pub ports: PortSet,
    pub maxretry: u32,
    pub findtime: Duration,
    /// `None` is permanent.
    pub bantime: Option<Duration>,
    pub ignoreip: Vec<Target>,
    /// Never ban this host's own addresses (fail2ban's `ignoreself`).
    pub ignoreself: bool,
    /// IPv6 attackers are counted and banned per prefix of this length (one
    /// host owns a whole /64); 128 is per address.
    pub ban_prefix_v6: u8,
    /// Failing addresses tracked at most; past it stale windows, then the
    /// oldest, are evicted (and counted).
    pub max_tracked: usize,
    /// Repeat offenders get `bantime * factor * 2^(previous bans)`.
    pub bantime_increment: bool,
    pub bantime_factor: f64,
    /// Cap for incremented bans; `None` is no cap.
    pub bantime_max: Option<Duration>,
    /// Count the fleet's failures too (members that share one auth backend
    /// see one attacker's guesses spread over them).
    pub shared_failures: bool,
}

impl Jail {
    /// Whether `ip` is on the jail's allowlist (the top-level `ignoreip`
    /// included).
    pub fn ignores(&self, ip: IpAddr) -> bool {
        self.ignoreip.iter().any(|net| net.contains(ip))
    }

    /// What the jail reads, for logs and messages.
    pub fn sources(&self) -> String {
        match self.backend {
            Backend::Auto => self
                .logpaths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            Backend::Systemd => format!("the systemd journal ({})", self.journalmatch),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_CONFIG),
            interfaces: Vec::new(),
            xdp_mode: XdpMode::Auto,
            xdp_action: XdpAction::Drop,
            max_bans: jailer_common::MAX_BANS,
            bpffs: PathBuf::from(DEFAULT_BPFFS),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            metrics_listen: None,
            fail2ban_dir: PathBuf::from(DEFAULT_FAIL2BAN_DIR),
            ignoreip: Vec::new(),
            jails: Vec::new(),
            fleet: None,
            lines: KeyLines::default(),
        }
    }
}

impl Config {
    /// Reads `path` and checks each value.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// [`Config::load`], then everything the agent needs to hold on this
    /// machine ([`Config::validate_for_run`]).
    pub fn load_for_run(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::load(path)?;
        config.validate_for_run()?;
        Ok(config)
    }

    /// `load`, or the built-in defaults when `path` is the default location
    /// and does not exist (so `jailer list` works on a machine with no config).
    pub fn load_or_default(path: &Path) -> Result<Self, ConfigError> {
        if path == Path::new(DEFAULT_CONFIG) && !path.exists() {
            return Ok(Self::default());
        }
        Self::load(path)
    }

    /// Validates the text of a config file; `path` is for messages and for
    /// resolving relative filter paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fail2ban_dir = raw
            .fail2ban_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FAIL2BAN_DIR));
        let mut jails = Vec::new();
        let line_of = |span: std::ops::Range<usize>| line_col(text, span.start).0;
        let mut lines = KeyLines {
            interface: raw.interface.as_ref().map_or(0, |i| line_of(i.span())),
            bpffs: raw.bpffs.as_ref().map_or(0, |b| line_of(b.span())),
            state_dir: raw.state_dir.as_ref().map_or(0, |d| line_of(d.span())),
            jails: Default::default(),
        };
        for (name, raw_jail) in raw.jails {
            // The table header, not its first key.
            let header = text[..raw_jail.span().start]
                .rfind(&format!("[jails.{name}]"))
                .map_or_else(|| line_of(raw_jail.span()), |at| line_col(text, at).0);
            lines.jails.insert(name.clone(), header);
            let raw_jail = raw_jail.into_inner();
            if !raw_jail.enabled {
                continue;
            }
            let line = line_col(text, raw_jail.filter.span().start).0;
            let ctx = FilterContext {
                base,
                fail2ban_dir: &fail2ban_dir,
                ports: Some(&raw_jail.port),
                journal: raw_jail.backend == Backend::Systemd,
            };
            let filter = Filter::load(raw_jail.filter.get_ref(), &ctx).map_err(|source| {
                ConfigError::Filter {
                    path: path.to_owned(),
                    line,
                    jail: name.clone(),
                    source: Box::new(source),
                }
            })?;
            let journalmatch = raw_jail.journalmatch.clone().unwrap_or_else(|| {
                let lines: Vec<String> =
                    filter.journalmatch().iter().map(|w| w.join(" ")).collect();
                lines.join("\n")
            });
            let (logpaths, unmatched_globs) = expand_logpaths(&raw_jail.logpath);
            let mut ignoreip = raw.ignoreip.clone();
            ignoreip.extend(raw_jail.ignoreip);
            jails.push(Jail {
                name,
                filter: Arc::new(filter),
                logpaths,
                unmatched_globs,
                backend: raw_jail.backend,
                journalmatch,
                journalpath: raw_jail.journalpath,
                ports: raw_jail.port,
                maxretry: raw_jail.maxretry,
                findtime: raw_jail.findtime,
                bantime: raw_jail.bantime,
                ignoreip,
                ignoreself: raw_jail.ignoreself,
                ban_prefix_v6: raw_jail.ban_prefix_v6,
                max_tracked: raw_jail.max_tracked,
                bantime_increment: raw_jail.bantime_increment,
                bantime_factor: raw_jail.bantime_factor,
                bantime_max: raw_jail.bantime_max,
                shared_failures: raw_jail.shared_failures,
            });
        }
        let fleet = match raw.fleet {
            None => None,
            Some(raw_fleet) => {
                let line = line_of(raw_fleet.span());
                Some(
                    FleetConfig::from_raw(raw_fleet.into_inner(), host_name).map_err(|source| {
                        ConfigError::Fleet {
                            path: path.to_owned(),
                            line,
                            source,
                        }
                    })?,
                )
            }
        };
        Ok(Self {
            path: path.to_owned(),
            interfaces: raw.interface.map(|i| i.into_inner().0).unwrap_or_default(),
            xdp_mode: raw.xdp_mode,
            xdp_action: raw.xdp_action,
            max_bans: raw.max_bans,
            bpffs: raw
                .bpffs
                .map_or_else(|| PathBuf::from(DEFAULT_BPFFS), Spanned::into_inner),
            state_dir: raw
                .state_dir
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), Spanned::into_inner),
            metrics_listen: raw.metrics_listen,
            fail2ban_dir,
            ignoreip: raw.ignoreip,
            jails,
            fleet,
            lines,
        })
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../jailer.example.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/jailer/jailer.toml"), text)
    }

    fn err(text: &str) -> String {
        crate::error::Chain(&parse(text).expect_err("config accepted")).to_string()
    }

    #[test]
    fn example_config_is_valid_with_documented_values() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.interfaces, ["eth0"]);
        assert_eq!(c.xdp_mode, XdpMode::Auto);
        assert_eq!(c.bpffs, Path::new("/sys/fs/bpf/jailer"));
        assert_eq!(c.state_dir, Path::new("/var/lib/jailer"));
        let j = &c.jails[0];
        assert_eq!(j.name, "vpopmail");
        assert_eq!(j.logpaths, [Path::new("/var/log/mail.log")]);
        assert_eq!(j.ports, PortSet::only(&[110]));
        assert_eq!(j.maxretry, 3);
        assert_eq!(j.findtime, Duration::from_secs(600));
        assert_eq!(j.bantime, Some(Duration::from_secs(3600)));
        assert!(j.ignoreself, "fail2ban's default");
        assert!(j.ignores("127.0.0.9".parse().unwrap()));
        assert!(j.ignores("::1".parse().unwrap()));
        assert!(j.ignores("192.0.2.200".parse().unwrap()));
        assert!(!j.ignores("203.0.113.7".parse().unwrap()));
    }

    /// Every setting the example shows commented out is valid as shown.
    #[test]
    fn example_config_with_every_setting_uncommented_is_valid() {
        let is_setting = |text: &str| {
            let key: String = text
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            (!key.is_empty() && text[key.len()..].starts_with(" = "))
                || text == "[fleet]"
                || (text.starts_with("[jails.") && text.ends_with(']'))
        };
        let full: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(text) if is_setting(text) => format!("{text}\n"),
                _ => format!("{line}\n"),
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let filter = dir.path().join("filter.d");
        fs::create_dir_all(&filter).unwrap();
        fs::write(
            filter.join("dovecot.conf"),
            "[Definition]\nfailregex = ^auth failed, rip=<HOST>$\njournalmatch = _SYSTEMD_UNIT=dovecot.service\n",
        )
        .unwrap();
        let full = full.replace(
            "fail2ban_dir = \"/etc/fail2ban\"",
            &format!("fail2ban_dir = \"{}\"", dir.path().display()),
        );
        let c = parse(&full).unwrap_or_else(|e| panic!("{}\n{full}", crate::error::Chain(&e)));
        assert_eq!(c.jails.len(), 2, "{full}");
        let fleet = c.fleet.expect("[fleet]");
        assert_eq!((fleet.name.as_str(), fleet.replicas), ("mx1", 3));
        assert!(c.jails.iter().any(|j| j.shared_failures));
        assert!(!c.ignoreip.is_empty());
    }

    #[test]
    fn scalars_and_lists_both_accepted() {
        let c = parse(
            "interface = [\"eth0\", \"eth1\"]\n[jails.a]\nfilter = \"vpopmail\"\nlogpath = \"/x\"\nport = 110\nfindtime = 600\nbantime = \"permanent\"\n",
        )
        .unwrap();
        assert_eq!(c.interfaces, ["eth0", "eth1"]);
        let j = &c.jails[0];
        assert_eq!(j.logpaths, [Path::new("/x")]);
        assert_eq!(j.findtime, Duration::from_secs(600));
        assert_eq!(j.bantime, None);
        assert_eq!(j.maxretry, 5, "fail2ban's default");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = err("interface = \"eth0\"\nbogus = 1\n");
        assert!(e.starts_with("/etc/jailer/jailer.toml:2:"), "{e}");
        assert!(e.contains("unknown field `bogus`"), "{e}");

        let e = err("[jails.a]\nfilter = \"vpopmail\"\nlogpath = \"/x\"\nfindtime = \"10x\"\n");
        assert!(e.starts_with("/etc/jailer/jailer.toml:4:"), "{e}");
        assert!(e.contains("findtime: invalid duration `10x`"), "{e}");

        let e = err("[jails.a]\nfilter = \"vpopmail\"\nlogpath = \"/x\"\nport = [\"gopher\"]\n");
        assert!(
            e.contains(":4:") && e.contains("port: unknown port `gopher`"),
            "{e}"
        );

        let e =
            err("[jails.a]\nfilter = \"vpopmail\"\nlogpath = \"/x\"\nignoreip = [\"300.1.1.1\"]\n");
        assert!(e.contains("ignoreip: `300.1.1.1`"), "{e}");

        let e = err("[jails.a]\nfilter = \"vpopmail\"\nlogpath = \"/x\"\nmaxretry = 0\n");
        assert!(e.contains("maxretry: 0 is out of range"), "{e}");

        let e = err(
            "[jails.a]\nfilter = \"vpopmail\"\nlogpath = \"/x\"\nbantime = \"30000000000000w\"\n",
        );
        assert!(
            e.contains("bantime: duration `30000000000000w` is longer than 10 years"),
            "{e}"
        );

        let e = err("xdp_mode = \"fast\"\n");
        assert!(e.contains(":1:") && e.contains("fast"), "{e}");

        let e = err("[jails.a]\nlogpath = \"/x\"\n");
        assert!(e.contains("missing field `filter`"), "{e}");
    }

    #[test]
    fn unknown_filter_names_jail_and_line() {
        let e = err("\n[jails.mail]\nlogpath = \"/x\"\nfilter = \"no-such-filter\"\n");
        assert!(
            e.starts_with("/etc/jailer/jailer.toml:4: jails.mail.filter:"),
            "{e}"
        );
    }

    #[test]
    fn disabled_jails_are_left_out() {
        let c =
            parse("[jails.a]\nenabled = false\nfilter = \"vpopmail\"\nlogpath = \"/x\"\n").unwrap();
        assert!(c.jails.is_empty());
    }
}
