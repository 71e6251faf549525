//! Typed errors, one enum per area. Messages are one line and name the file,
//! line, key, interface or address concerned; `main` prints the chain.

use std::{io, path::PathBuf};

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
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
    #[error("{}:{line}: jails.{jail}.filter: {source}", path.display())]
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
    /// `run` without any enabled jail.
    #[error("{}: no enabled jail: add a [jails.NAME] section (see jailer.example.toml)", path.display())]
    NoJail { path: PathBuf },
}

/// A filter (built-in name or fail2ban-style file) that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Neither a built-in filter nor a readable file.
    #[error("`{name}` is neither a built-in filter (vpopmail) nor a readable file ({source})")]
    NotFound {
        name: String,
        #[source]
        source: io::Error,
    },
    /// A problem at a given line of a filter file.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A failregex/ignoreregex that does not compile; `message` is the
    /// regex error's own last line (its full form spans several lines).
    #[error("{}:{line}: {key}: `{pattern}`: {message}", path.display())]
    Regex {
        path: PathBuf,
        line: usize,
        key: &'static str,
        pattern: String,
        message: String,
    },
}

/// Talking to the kernel: bpffs, loading, attaching, maps.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// bpffs is missing at the configured directory and could not be mounted.
    #[error("cannot mount bpffs at {}: {source}", path.display())]
    MountBpffs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    /// Creating or removing something under bpffs failed.
    #[error("{}: {source}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The verifier (or the loader) refused the program.
    #[error("the kernel refused the XDP program: {source}\nverifier log:\n{log}")]
    Load {
        log: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The object or its maps could not be loaded.
    #[error("loading the XDP object failed: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    /// The interface does not exist.
    #[error("interface `{iface}` does not exist (see `ip link`)")]
    NoInterface { iface: String },
    /// Attaching to an interface failed.
    #[error("cannot attach XDP to `{iface}` in {mode} mode: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A pinned link could not be used or replaced.
    #[error("pinned XDP link {}: {message}", path.display())]
    Link { path: PathBuf, message: String },
    /// The maps are not pinned: nothing has set jailer up yet.
    #[error("no jailer maps under {}: start the agent (`jailer run`) or check `bpffs` in the config", path.display())]
    NotPinned { path: PathBuf },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// A ban did not fit: the map is full. No existing ban is evicted.
    #[error(
        "ban map {map} is full ({capacity} entries): {addr} was not banned (raise max_bans, then `jailer detach` and restart)"
    )]
    MapFull {
        map: &'static str,
        capacity: u32,
        addr: String,
    },
    /// The operation needs privileges we do not have.
    #[error(
        "permission denied: jailer needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN to mount bpffs); run it with sudo"
    )]
    NotRoot,
}

/// The on-disk state (ban journal, log positions).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing a state file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Any failure of a jailer command; `exit_code` maps it for the shell.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Filter(#[from] Box<FilterError>),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    State(#[from] StateError),
    /// A bad argument on the command line.
    #[error("{0}")]
    Usage(String),
    /// Following the logs failed to start.
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    /// Reading a log for `jailer regex`.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// 2 for what the user must fix in their input (config, filter,
    /// arguments), 1 for failures of the system.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Filter(_) | Self::Usage(_) => 2,
            _ => 1,
        }
    }
}
