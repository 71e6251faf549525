//! The configuration file as written: serde structures and the checks of
//! single values (ranges, syntax). Checks across values are in
//! `super::validation`.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use super::{Backend, XdpAction, XdpMode};
use crate::{
    ban::{PortSet, Target},
    fleet::RawFleet,
    time::{parse_bantime, parse_duration},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) interface: Option<Spanned<Interfaces>>,
    #[serde(default)]
    pub(super) xdp_mode: XdpMode,
    #[serde(default)]
    pub(super) xdp_action: XdpAction,
    #[serde(default = "default_max_bans", deserialize_with = "max_bans")]
    pub(super) max_bans: u32,
    pub(super) bpffs: Option<Spanned<PathBuf>>,
    pub(super) state_dir: Option<Spanned<PathBuf>>,
    #[serde(default, deserialize_with = "metrics_listen")]
    pub(super) metrics_listen: Option<std::net::SocketAddr>,
    pub(super) fail2ban_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "ignoreip")]
    pub(super) ignoreip: Vec<Target>,
    #[serde(default)]
    pub(super) jails: BTreeMap<String, Spanned<RawJail>>,
    pub(super) fleet: Option<Spanned<RawFleet>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJail {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    pub(super) filter: Spanned<String>,
    #[serde(default, deserialize_with = "string_or_list")]
    pub(super) logpath: Vec<PathBuf>,
    #[serde(default)]
    pub(super) backend: Backend,
    pub(super) journalmatch: Option<String>,
    pub(super) journalpath: Option<PathBuf>,
    #[serde(default = "default_ports", deserialize_with = "ports")]
    pub(super) port: PortSet,
    #[serde(default = "default_maxretry", deserialize_with = "maxretry")]
    pub(super) maxretry: u32,
    #[serde(default = "default_findtime", deserialize_with = "findtime")]
    pub(super) findtime: Duration,
    #[serde(default = "default_bantime", deserialize_with = "bantime")]
    pub(super) bantime: Option<Duration>,
    #[serde(default, deserialize_with = "ignoreip")]
    pub(super) ignoreip: Vec<Target>,
    #[serde(default = "yes")]
    pub(super) ignoreself: bool,
    #[serde(default = "default_prefix_v6", deserialize_with = "ban_prefix_v6")]
    pub(super) ban_prefix_v6: u8,
    #[serde(default = "default_max_tracked", deserialize_with = "max_tracked")]
    pub(super) max_tracked: usize,
    #[serde(default)]
    pub(super) bantime_increment: bool,
    #[serde(default = "default_factor", deserialize_with = "factor")]
    pub(super) bantime_factor: f64,
    #[serde(default, deserialize_with = "bantime_max")]
    pub(super) bantime_max: Option<Duration>,
    #[serde(default)]
    pub(super) shared_failures: bool,
}

fn yes() -> bool {
    true
}
/// A jail's ports when it names none: POP3.
pub(crate) fn default_ports() -> PortSet {
    PortSet::only(&[110])
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
    crate::jail::DEFAULT_MAX_TRACKED
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

/// `interface`: a name or a list of names.
pub(super) struct Interfaces(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for Interfaces {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        interfaces(d).map(Self)
    }
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

fn ignoreip<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Target>, D::Error> {
    OneOrMany::<String>::deserialize(d)
        .map_err(|_| de::Error::custom("ignoreip: expected a list of addresses or networks"))?
        .into_vec()
        .iter()
        .map(|s| {
            s.parse::<Target>()
                .map_err(|e| de::Error::custom(format!("ignoreip: {e}")))
        })
        .collect()
}
