//! The `[fleet]` section.
//!
//! ```toml
//! [fleet]
//! url = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]   # or one string
//! name = "mx1"                 # default: the host name
//! bucket = "jailer-bans"       # created if absent
//! user = "mx1"                 # with password; or token = "..."; or creds = "/etc/jailer/mx1.creds"
//! password = "..."
//! tls = { ca_file = "/etc/jailer/ca.pem", cert_file = "/etc/jailer/mx1.pem", key_file = "/etc/jailer/mx1.key" }
//! share = true                 # publish this server's bans
//! enforce = true               # apply the other members' bans
//! accept_from = ["mx2", "mx3"] # default: every member
//! replicas = 3                 # when the bucket is created (JetStream cluster)
//! max_age = "30d"              # bucket garbage collection, see below
//! ```

use std::{collections::BTreeSet, fmt, path::PathBuf, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, de};

use super::key;

pub const DEFAULT_BUCKET: &str = "jailer-bans";
/// Bucket max_age when the fleet creates the bucket. Only garbage collection
/// (delete markers, members gone for good): members re-put their live bans
/// after half of it, and correctness never depends on it.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// How the member proves who it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// A `.creds` file (JWT and nkey seed), read at each connection attempt
    /// so a rotated file is picked up.
    CredsFile(PathBuf),
}

// Secrets stay out of logs and `{:?}` dumps.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Self::Token(_) => f.write_str("Token(***)"),
            Self::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
        }
    }
}

/// TLS towards the servers; any of it turns TLS on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA bundle that signs the servers' certificates (default: system roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A validated `[fleet]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// Server URLs (`nats://host:port`, `tls://host:port`, `host:port`).
    pub servers: Vec<String>,
    /// This member; the origin of what it publishes.
    pub name: String,
    pub bucket: String,
    pub credentials: Credentials,
    pub tls: Option<TlsConfig>,
    pub share: bool,
    pub enforce: bool,
    /// Members whose bans are applied; `None` is every member.
    pub accept_from: Option<BTreeSet<String>>,
    /// Replicas of the bucket when this member creates it.
    pub replicas: usize,
    /// The bucket's max_age when this member creates it; zero is none.
    pub max_age: Duration,
    /// Heartbeat period (not in the file: tests shorten it).
    pub heartbeat: Duration,
}

impl FleetConfig {
    /// Defaults for everything but the servers and the name.
    pub fn new(servers: Vec<String>, name: &str) -> Self {
        Self {
            servers,
            name: name.to_owned(),
            bucket: DEFAULT_BUCKET.to_owned(),
            credentials: Credentials::None,
            tls: None,
            share: true,
            enforce: true,
            accept_from: None,
            replicas: 1,
            max_age: DEFAULT_MAX_AGE,
            heartbeat: DEFAULT_HEARTBEAT,
        }
    }

    /// Validates a parsed section; `host_name` supplies the default `name`.
    pub fn from_raw(
        raw: RawFleet,
        host_name: impl FnOnce() -> Option<String>,
    ) -> Result<Self, FleetConfigError> {
        if raw.url.is_empty() {
            return Err(FleetConfigError::NoUrl);
        }
        for url in &raw.url {
            async_nats::ServerAddr::from_str(url).map_err(|e| FleetConfigError::Url {
                url: url.clone(),
                message: e.to_string(),
            })?;
        }
        let name = match raw.name {
            Some(name) if key::valid_name(&name) => name,
            Some(name) => return Err(FleetConfigError::Name { name }),
            None => host_name()
                .as_deref()
                .and_then(key::name_from_host)
                .ok_or(FleetConfigError::NoHostName)?,
        };
        let bucket = raw.bucket.unwrap_or_else(|| DEFAULT_BUCKET.to_owned());
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(FleetConfigError::Bucket { bucket });
        }
        let credentials = match (raw.user, raw.password, raw.token, raw.creds) {
            (None, None, None, None) => Credentials::None,
            (Some(user), Some(password), None, None) => {
                Credentials::UserPassword { user, password }
            }
            (None, None, Some(token), None) => Credentials::Token(token),
            (None, None, None, Some(path)) => Credentials::CredsFile(path),
            (Some(_), None, None, None) | (None, Some(_), None, None) => {
                return Err(FleetConfigError::Credentials(
                    "`user` and `password` go together",
                ));
            }
            _ => {
                return Err(FleetConfigError::Credentials(
                    "give one of `user`/`password`, `token` or `creds`",
                ));
            }
        };
        if let Some(tls) = &raw.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err(FleetConfigError::Tls);
        }
        let accept_from = match raw.accept_from {
            None => None,
            Some(names) => {
                if let Some(bad) = names.iter().find(|n| !key::valid_name(n)) {
                    return Err(FleetConfigError::Name { name: bad.clone() });
                }
                Some(names.into_iter().collect())
            }
        };
        let replicas = match raw.replicas {
            None => 1,
            Some(n @ 1..=5) => n as usize,
            Some(n) => return Err(FleetConfigError::Replicas(n)),
        };
        Ok(Self {
            servers: raw.url,
            name,
            bucket,
            credentials,
            tls: raw.tls,
            share: raw.share,
            enforce: raw.enforce,
            accept_from,
            replicas,
            max_age: raw.max_age.unwrap_or(DEFAULT_MAX_AGE),
            heartbeat: DEFAULT_HEARTBEAT,
        })
    }

    /// Whether bans from `origin` are applied here.
    pub fn accepts(&self, origin: &str) -> bool {
        self.accept_from
            .as_ref()
            .is_none_or(|names| names.contains(origin))
    }

    /// The servers, for messages.
    pub fn servers_text(&self) -> String {
        self.servers.join(", ")
    }
}

/// The machine's host name (the default member name).
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok()
}

/// A `[fleet]` section that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetConfigError {
    #[error("fleet.url: give at least one server, e.g. url = \"nats://10.0.0.1:4222\"")]
    NoUrl,
    #[error("fleet.url: `{url}`: {message}")]
    Url { url: String, message: String },
    #[error(
        "fleet: `{name}` is not a member name (1-64 of A-Z a-z 0-9 - _; no dots: it prefixes the member's keys)"
    )]
    Name { name: String },
    #[error("fleet.name: not set and the host name cannot be read")]
    NoHostName,
    #[error("fleet.bucket: `{bucket}` is not a bucket name (A-Z a-z 0-9 - _)")]
    Bucket { bucket: String },
    #[error("fleet: {0}")]
    Credentials(&'static str),
    #[error("fleet.tls: `cert_file` and `key_file` go together")]
    Tls,
    #[error("fleet.replicas: {0} is out of range (1 to 5)")]
    Replicas(i64),
}

/// `[fleet]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    pub name: Option<String>,
    pub bucket: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub creds: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    #[serde(default = "yes")]
    pub share: bool,
    #[serde(default = "yes")]
    pub enforce: bool,
    pub accept_from: Option<Vec<String>>,
    pub replicas: Option<i64>,
    #[serde(default, deserialize_with = "max_age")]
    pub max_age: Option<Duration>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match OneOrMany::deserialize(d)
        .map_err(|_| de::Error::custom("url: expected a server URL or a list of them"))?
    {
        OneOrMany::One(s) => Ok(vec![s]),
        OneOrMany::Many(v) => Ok(v),
    }
}

/// `max_age`: a duration as everywhere in the file (`30d`), or 0 for none.
fn max_age<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Str(String),
        Int(i64),
    }
    let text = match Scalar::deserialize(d)
        .map_err(|_| de::Error::custom("max_age: expected a duration such as \"30d\""))?
    {
        Scalar::Str(s) => s,
        Scalar::Int(n) => n.to_string(),
    };
    if text.trim() == "0" {
        return Ok(Some(Duration::ZERO));
    }
    crate::time::parse_duration(&text)
        .map(Some)
        .map_err(|e| de::Error::custom(format!("max_age: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FleetConfig, String> {
        #[derive(Deserialize)]
        struct File {
            fleet: RawFleet,
        }
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        FleetConfig::from_raw(file.fleet, || Some("mx9.example.org\n".into()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse("[fleet]\nurl = \"nats://127.0.0.1:4222\"").unwrap();
        assert_eq!(c.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(c.name, "mx9_example_org");
        assert_eq!(c.bucket, "jailer-bans");
        assert_eq!(c.credentials, Credentials::None);
        assert!(c.share && c.enforce);
        assert!(c.accepts("anyone"));
        assert_eq!(c.replicas, 1);
        assert_eq!(c.max_age, DEFAULT_MAX_AGE);
    }

    #[test]
    fn everything() {
        let c = parse(
            r#"[fleet]
url = ["nats://10.0.0.1:4222", "tls://10.0.0.2:4222", "10.0.0.3"]
name = "mx1"
bucket = "bans"
user = "mx1"
password = "s3cret"
tls = { ca_file = "/ca.pem", cert_file = "/c.pem", key_file = "/k.pem" }
share = false
enforce = false
accept_from = ["mx2", "mx3"]
replicas = 3
max_age = "7d"
"#,
        )
        .unwrap();
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.name, "mx1");
        assert_eq!(c.bucket, "bans");
        assert_eq!(
            c.credentials,
            Credentials::UserPassword {
                user: "mx1".into(),
                password: "s3cret".into()
            }
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            c.tls.as_ref().and_then(|t| t.ca_file.clone()),
            Some("/ca.pem".into())
        );
        assert!(!c.share && !c.enforce);
        assert!(c.accepts("mx2") && !c.accepts("mx4"));
        assert_eq!(c.replicas, 3);
        assert_eq!(c.max_age, Duration::from_secs(7 * 86_400));
        let c = parse("[fleet]\nurl = \"h:1\"\ntoken = \"t\"\nmax_age = 0").unwrap();
        assert_eq!(c.credentials, Credentials::Token("t".into()));
        assert_eq!(c.max_age, Duration::ZERO);
        let c = parse("[fleet]\nurl = \"h:1\"\ncreds = \"/x.creds\"").unwrap();
        assert_eq!(c.credentials, Credentials::CredsFile("/x.creds".into()));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, want) in [
            ("url = []", "at least one server"),
            ("url = 5", "expected a server URL"),
            ("url = \"nats://h:99999\"", "fleet.url: `nats://h:99999`"),
            (
                "url = \"h:1\"\nname = \"mx1.example\"",
                "`mx1.example` is not a member name",
            ),
            ("url = \"h:1\"\nbucket = \"a.b\"", "fleet.bucket"),
            ("url = \"h:1\"\nuser = \"u\"", "go together"),
            (
                "url = \"h:1\"\ntoken = \"t\"\ncreds = \"/c\"",
                "give one of",
            ),
            ("url = \"h:1\"\ntls = { cert_file = \"/c\" }", "fleet.tls"),
            (
                "url = \"h:1\"\naccept_from = [\"a b\"]",
                "`a b` is not a member name",
            ),
            ("url = \"h:1\"\nreplicas = 7", "out of range"),
            (
                "url = \"h:1\"\nmax_age = \"soon\"",
                "max_age: invalid duration `soon`",
            ),
            ("url = \"h:1\"\nshard = true", "unknown field"),
        ] {
            let err = parse(&format!("[fleet]\n{text}")).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
