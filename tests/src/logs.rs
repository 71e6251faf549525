//! Log lines as vchkpw writes them, and bans and targets as tables take them.

use std::{
    fs::OpenOptions,
    io::Write,
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use jailer::ban::{Ban, Expiry, PortSet, Target};

/// Current local time in classic syslog form.
pub fn now_stamp() -> String {
    chrono::Local::now().format("%b %e %H:%M:%S").to_string()
}

/// A vchkpw `password fail` line from `ip`, stamped now, with its newline.
pub fn failure_line(ip: &str) -> String {
    format!(
        "{} mail vpopmail[1]: vchkpw-pop3: password fail bob@example.com:{ip}\n",
        now_stamp()
    )
}

/// Appends `text` to `log`, creating it.
pub fn append(log: &Path, text: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log")
        .write_all(text.as_bytes())
        .expect("write log");
}

/// Appends a vchkpw `password fail` line from `ip`, stamped now.
pub fn append_failure(log: &Path, ip: &str) {
    append(log, &failure_line(ip));
}

/// An address as the target the ban tables are keyed by.
pub fn host(addr: &str) -> Target {
    Target::host(addr.parse::<IpAddr>().expect("an address"))
}

/// An address or network as a ban target.
pub fn target(text: &str) -> Target {
    text.parse().expect("an address or network")
}

/// A ban on `ports` for `secs` seconds from now (`None`: permanent).
pub fn ban(ports: &[u16], secs: Option<u64>) -> Ban {
    let ports = if ports.is_empty() {
        PortSet::All
    } else {
        PortSet::only(ports)
    };
    Ban::new(
        ports,
        Expiry::after(SystemTime::now(), secs.map(Duration::from_secs)),
    )
}
