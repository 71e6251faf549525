//! The configuration file: fail2ban's words in TOML, validated once at start
//! into a [`Config`] (compiled filters, durations, networks), so nothing past
//! this point has to second-guess a value.

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use crate::{
    detect::Filter,
    duration::{parse_bantime, parse_duration},
    error::ConfigError,
    ports::PortSet,
};

/// Where jailer looks when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/jailer/jailer.toml";
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/jailer";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/jailer";

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAction {
    /// Drop it.
    #[default]
    Drop,
    /// Count it as a would-be drop and let it pass (try jailer beside
    /// fail2ban before enforcing).
    Monitor,
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
    pub jails: Vec<Jail>,
}

/// One jail: a filter over some logs, and what to do to offenders.
#[derive(Debug, Clone)]
pub struct Jail {
    pub name: String,
    pub filter: Arc<Filter>,
    pub logpaths: Vec<PathBuf>,
    pub ports: PortSet,
    pub maxretry: u32,
    pub findtime: Duration,
    /// `None` is permanent.
    pub bantime: Option<Duration>,
    pub ignoreip: Vec<IpNet>,
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
}

impl Jail {
    /// Whether `ip` is on the jail's allowlist.
    pub fn ignores(&self, ip: IpAddr) -> bool {
        self.ignoreip.iter().any(|net| net.contains(&ip))
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
            jails: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, deserialize_with = "interfaces")]
    interface: Vec<String>,
    #[serde(default)]
    xdp_mode: XdpMode,
    #[serde(default)]
    xdp_action: XdpAction,
    #[serde(default = "default_max_bans", deserialize_with = "max_bans")]
    max_bans: u32,
    bpffs: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "metrics_listen")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    jails: BTreeMap<String, RawJail>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJail {
    #[serde(default = "yes")]
    enabled: bool,
    filter: Spanned<String>,
    #[serde(deserialize_with = "string_or_list")]
    logpath: Vec<PathBuf>,
    #[serde(default = "default_ports", deserialize_with = "ports")]
    port: PortSet,
    #[serde(default = "default_maxretry", deserialize_with = "maxretry")]
    maxretry: u32,
    #[serde(default = "default_findtime", deserialize_with = "findtime")]
    findtime: Duration,
    #[serde(default = "default_bantime", deserialize_with = "bantime")]
    bantime: Option<Duration>,
    #[serde(default, deserialize_with = "ignoreip")]
    ignoreip: Vec<IpNet>,
    #[serde(default = "default_prefix_v6", deserialize_with = "ban_prefix_v6")]
    ban_prefix_v6: u8,
    #[serde(default = "default_max_tracked", deserialize_with = "max_tracked")]
    max_tracked: usize,
    #[serde(default)]
    bantime_increment: bool,
    #[serde(default = "default_factor", deserialize_with = "factor")]
    bantime_factor: f64,
    #[serde(default, deserialize_with = "bantime_max")]
    bantime_max: Option<Duration>,
}

fn yes() -> bool {
    true
}
fn default_ports() -> PortSet {
    PortSet::Only(vec![110])
}
// fail2ban's defaults for what a jail leaves out.
fn default_maxretry() -> u32 {
    5
}
fn default_findtime() -> Duration {
    Duration::from_secs(600)
}
fn default_bantime() -> Option<Duration> {
    Some(Duration::from_secs(600))
}
fn default_factor() -> f64 {
    1.0
}
fn default_max_bans() -> u32 {
    jailer_common::MAX_BANS
}
fn default_prefix_v6() -> u8 {
    128
}
fn default_max_tracked() -> usize {
    crate::window::DEFAULT_MAX_TRACKED
}

fn max_tracked<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)
        .map_err(|_| de::Error::custom("max_tracked: expected a whole number"))?;
    usize::try_from(n)
        .ok()
        .filter(|&n| (16..=100_000_000).contains(&n))
        .ok_or_else(|| {
            de::Error::custom(format!(
                "max_tracked: {n} is out of range (16 to 100000000)"
            ))
        })
}

fn max_bans<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n =
        i64::deserialize(d).map_err(|_| de::Error::custom("max_bans: expected a whole number"))?;
    u32::try_from(n)
        .ok()
        .filter(|&n| (1..=1 << 26).contains(&n))
        .ok_or_else(|| de::Error::custom(format!("max_bans: {n} is out of range (1 to 67108864)")))
}

fn ban_prefix_v6<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(d)
        .map_err(|_| de::Error::custom("ban_prefix_v6: expected a prefix length"))?;
    u8::try_from(n)
        .ok()
        .filter(|&n| (16..=128).contains(&n))
        .ok_or_else(|| de::Error::custom(format!("ban_prefix_v6: {n} is out of range (16 to 128)")))
}

/// A TOML value that is a string or an integer (durations, ports).
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Int(i64),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Self::Str(s) => s,
            Self::Int(i) => i.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(x) => vec![x],
            Self::Many(v) => v,
        }
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    let list = OneOrMany::<PathBuf>::deserialize(d)
        .map_err(|_| de::Error::custom("logpath: expected a path or a list of paths"))?
        .into_vec();
    if list.is_empty() {
        return Err(de::Error::custom("logpath: the list is empty"));
    }
    Ok(list)
}

fn interfaces<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = OneOrMany::<String>::deserialize(d)
        .map_err(|_| de::Error::custom("interface: expected a name or a list of names"))?
        .into_vec();
    if let Some(bad) = list
        .iter()
        .find(|i| i.is_empty() || i.len() > 15 || i.contains('/'))
    {
        return Err(de::Error::custom(format!(
            "interface: `{bad}` is not an interface name"
        )));
    }
    Ok(list)
}

fn metrics_listen<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(d)
        .map_err(|_| de::Error::custom("metrics_listen: expected \"ADDRESS:PORT\""))?;
    text.parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "metrics_listen: `{text}` is not ADDRESS:PORT (e.g. \"127.0.0.1:9567\" or \"[::1]:9567\")"
        ))
    })
}

fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<PortSet, D::Error> {
    let items: Vec<String> = OneOrMany::<Scalar>::deserialize(d)
        .map_err(|_| {
            de::Error::custom("port: expected a port, a service name, \"all\", or a list of them")
        })?
        .into_vec()
        .into_iter()
        .map(Scalar::text)
        .collect();
    PortSet::parse(&items).map_err(|e| de::Error::custom(format!("port: {e}")))
}

fn maxretry<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n =
        i64::deserialize(d).map_err(|_| de::Error::custom("maxretry: expected a whole number"))?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| de::Error::custom(format!("maxretry: {n} is out of range (1 or more)")))
}

fn scalar<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<String, D::Error> {
    Scalar::deserialize(d).map(Scalar::text).map_err(|_| {
        de::Error::custom(format!(
            "{key}: expected a duration such as \"10m\" or a number of seconds"
        ))
    })
}

fn findtime<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration(&scalar(d, "findtime")?).map_err(|e| de::Error::custom(format!("findtime: {e}")))
}

fn bantime<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_bantime(&scalar(d, "bantime")?)
        .map_err(|e| de::Error::custom(format!("bantime: {e} (or \"permanent\")")))
}

fn bantime_max<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_bantime(&scalar(d, "bantime_max")?)
        .map_err(|e| de::Error::custom(format!("bantime_max: {e} (or \"permanent\")")))
}

fn factor<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let f =
        f64::deserialize(d).map_err(|_| de::Error::custom("bantime_factor: expected a number"))?;
    if !(f.is_finite() && f > 0.0) {
        return Err(de::Error::custom(format!(
            "bantime_factor: {f} must be a positive number"
        )));
    }
    Ok(f)
}

fn ignoreip<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    OneOrMany::<String>::deserialize(d)
        .map_err(|_| de::Error::custom("ignoreip: expected a list of addresses or networks"))?
        .into_vec()
        .iter()
        .map(|s| {
            parse_net(s).ok_or_else(|| {
                de::Error::custom(format!("ignoreip: `{s}` is not an address or CIDR network"))
            })
        })
        .collect()
}

/// An address (as a host network) or a CIDR network.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let t = text.trim();
    if t.contains('/') {
        t.parse::<IpNet>().ok().map(|n| n.trunc())
    } else {
        t.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
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
        let mut jails = Vec::new();
        for (name, raw_jail) in raw.jails {
            if !raw_jail.enabled {
                continue;
            }
            let filter_name = raw_jail.filter.get_ref();
            let filter = Filter::load(filter_name, base).map_err(|source| ConfigError::Filter {
                path: path.to_owned(),
                line: line_col(text, raw_jail.filter.span().start).0,
                jail: name.clone(),
                source: Box::new(source),
            })?;
            jails.push(Jail {
                name,
                filter: Arc::new(filter),
                logpaths: raw_jail.logpath,
                ports: raw_jail.port,
                maxretry: raw_jail.maxretry,
                findtime: raw_jail.findtime,
                bantime: raw_jail.bantime,
                ignoreip: raw_jail.ignoreip,
                ban_prefix_v6: raw_jail.ban_prefix_v6,
                max_tracked: raw_jail.max_tracked,
                bantime_increment: raw_jail.bantime_increment,
                bantime_factor: raw_jail.bantime_factor,
                bantime_max: raw_jail.bantime_max,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            interfaces: raw.interface,
            xdp_mode: raw.xdp_mode,
            xdp_action: raw.xdp_action,
            max_bans: raw.max_bans,
            bpffs: raw.bpffs.unwrap_or_else(|| PathBuf::from(DEFAULT_BPFFS)),
            state_dir: raw
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            metrics_listen: raw.metrics_listen,
            jails,
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

    const EXAMPLE: &str = include_str!("../../jailer.example.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/jailer/jailer.toml"), text)
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("config accepted").to_string()
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
        assert_eq!(j.ports, PortSet::Only(vec![110]));
        assert_eq!(j.maxretry, 3);
        assert_eq!(j.findtime, Duration::from_secs(600));
        assert_eq!(j.bantime, Some(Duration::from_secs(3600)));
        assert!(j.ignores("127.0.0.9".parse().unwrap()));
        assert!(j.ignores("::1".parse().unwrap()));
        assert!(j.ignores("192.0.2.200".parse().unwrap()));
        assert!(!j.ignores("203.0.113.7".parse().unwrap()));
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
