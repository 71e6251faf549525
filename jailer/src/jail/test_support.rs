//! Fixtures for the jail tests: a vpopmail jail, its log, its lines.

use std::{path::Path, sync::Arc, time::Duration};

use crate::{
    ban::{PortSet, Target},
    config::Jail,
    filter::{Filter, FilterContext},
    source::SourceId,
};

pub(super) fn log() -> SourceId {
    SourceId::File("/var/log/mail.log".into())
}

pub(super) fn jail(maxretry: u32, ports: &[&str]) -> Jail {
    let ports = PortSet::parse(ports).unwrap();
    let ctx = FilterContext {
        base: Path::new("."),
        fail2ban_dir: Path::new("/etc/fail2ban"),
        ports: Some(&ports),
        journal: false,
    };
    Jail {
        name: "vpopmail".into(),
        filter: Arc::new(Filter::load("vpopmail", &ctx).unwrap()),
        logpaths: vec!["/var/log/mail.log".into()],
        unmatched_globs: Vec::new(),
        backend: crate::config::Backend::Auto,
        journalmatch: String::new(),
        journalpath: None,
        ports,
        maxretry,
        findtime: Duration::from_secs(600),
        bantime: Some(Duration::from_secs(3600)),
        ignoreip: vec!["192.0.2.0/24".parse().unwrap()],
        ignoreself: true,
        ban_prefix_v6: 128,
        max_tracked: 1000,
        bantime_increment: true,
        bantime_factor: 1.0,
        bantime_max: Some(Duration::from_secs(4 * 3600)),
        shared_failures: false,
    }
}

pub(super) fn target(text: &str) -> Target {
    text.parse().unwrap()
}

pub(super) fn line(ip: &str) -> String {
    format!("vpopmail[1]: vchkpw-pop3: password fail bob@example.com:{ip}")
}
