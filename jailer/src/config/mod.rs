//! The configuration file: fail2ban's words in TOML, validated once into a
//! [`Config`] (compiled filters, durations, networks), so nothing past this
//! point has to second-guess a value. [`Config::load_for_run`] is the one
//! gate `run`, `check` and `reload` all pass: they can never disagree.

mod raw;

use std::{
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use toml::Spanned;

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

    fn invalid(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        let key = key.into();
        let line = match key.as_str() {
            "interface" => self.lines.interface,
            "bpffs" => self.lines.bpffs,
            "state_dir" => self.lines.state_dir,
            jail => jail
                .strip_prefix("jails.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|name| self.lines.jails.get(name).copied())
                .unwrap_or(0),
        };
        ConfigError::Invalid {
            path: self.path.clone(),
            line,
            key,
            problem: problem.into(),
        }
    }

    /// Everything `run` needs beyond single values: interfaces that exist
    /// (once each), a jail, absolute and separate bpffs and state_dir, logs
    /// that can be followed. A config that passes here would do something.
    pub fn validate_for_run(&self) -> Result<(), ConfigError> {
        if self.interfaces.is_empty() {
            return Err(ConfigError::NoInterface {
                path: self.path.clone(),
            });
        }
        for (i, iface) in self.interfaces.iter().enumerate() {
            if self.interfaces[..i].contains(iface) {
                return Err(self.invalid("interface", format!("`{iface}` is listed twice")));
            }
            if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
                return Err(self.invalid(
                    "interface",
                    format!("`{iface}` does not exist on this machine (see `ip link`)"),
                ));
            }
        }
        // A fleet member may only enforce the others' bans.
        if self.jails.is_empty() && self.fleet.is_none() {
            return Err(ConfigError::NoJail {
                path: self.path.clone(),
            });
        }
        for (key, dir) in [("bpffs", &self.bpffs), ("state_dir", &self.state_dir)] {
            if !dir.is_absolute() {
                return Err(
                    self.invalid(key, format!("`{}` is not an absolute path", dir.display()))
                );
            }
        }
        if self.bpffs.starts_with(&self.state_dir) || self.state_dir.starts_with(&self.bpffs) {
            return Err(self.invalid(
                "bpffs",
                format!(
                    "`{}` and state_dir `{}` must not contain each other (bpffs would be mounted over the journal)",
                    self.bpffs.display(),
                    self.state_dir.display()
                ),
            ));
        }
        for jail in &self.jails {
            let key = format!("jails.{}.logpath", jail.name);
            if jail.backend == Backend::Auto && jail.logpaths.is_empty() {
                return Err(self.invalid(
                    &key,
                    "no log to follow: give logpath, or backend = \"systemd\" for the journal",
                ));
            }
            if let Some(glob) = jail.unmatched_globs.first() {
                return Err(self.invalid(
                    &key,
                    format!(
                        "`{}` matches no file (globs are expanded when the config is loaded: at start and at each reload)",
                        glob.display()
                    ),
                ));
            }
            for log in &jail.logpaths {
                let problem = if !log.is_absolute() {
                    Some("is not an absolute path".to_owned())
                } else if log.is_dir() {
                    Some("is a directory, not a log file".to_owned())
                } else if !log.parent().is_some_and(Path::is_dir) {
                    Some("is in a directory that does not exist".to_owned())
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(self.invalid(&key, format!("`{}` {problem}", log.display())));
                }
            }
        }
        Ok(())
    }
}

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

    #[test]
    fn disabled_jails_are_left_out() {
        let c =
            parse("[jails.a]\nenabled = false\nfilter = \"vpopmail\"\nlogpath = \"/x\"\n").unwrap();
        assert!(c.jails.is_empty());
    }

    #[test]
    fn run_refuses_what_would_fail_or_do_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let ok = format!(
            "interface = \"lo\"\nbpffs = \"{d}/bpf\"\nstate_dir = \"{d}/state\"\n[jails.a]\nfilter = \"vpopmail\"\nlogpath = \"{d}/mail.log\"\n"
        );
        parse(&ok).unwrap().validate_for_run().unwrap();
        let refused = |text: String, want: &str| {
            let e = parse(&text)
                .unwrap()
                .validate_for_run()
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{want}: {e}");
        };
        refused(ok.replace("interface = \"lo\"\n", ""), "no `interface` set");
        refused(
            ok.replace("\"lo\"", "[\"lo\", \"lo\"]"),
            "`lo` is listed twice",
        );
        refused(
            ok.replace("\"lo\"", "\"nosuchif0\""),
            "`nosuchif0` does not exist",
        );
        refused(
            ok.replace(&format!("{d}/bpf"), "bpf"),
            "bpffs: `bpf` is not an absolute path",
        );
        refused(
            ok.replace(&format!("{d}/bpf"), &format!("{d}/state")),
            "must not contain each other",
        );
        refused(
            ok.replace(&format!("{d}/bpf"), &format!("{d}/state/bpf")),
            "must not contain each other",
        );
        refused(ok.replace("mail.log", ""), "is a directory");
        refused(
            ok.replace("mail.log", "nodir/mail.log"),
            "directory that does not exist",
        );
        refused(
            ok.replace(&format!("{d}/mail.log"), "mail.log"),
            "not an absolute path",
        );
        refused(
            ok.split("[jails").next().unwrap().to_owned(),
            "no enabled jail",
        );
    }
}
