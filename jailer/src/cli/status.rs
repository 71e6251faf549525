//! `jailer status`: from the running agent, else from the maps and journal,
//! printed in the shape of `fail2ban-client status JAIL`.

use std::{fmt::Write as _, path::Path};

use super::{print, print_json, require_root};
use crate::{
    agent::{
        control::{self, Request, Response},
        status::{self, JailStatus, Status},
    },
    config::Config,
    error::Error,
    time::format_duration,
};

pub(super) fn run(config_path: &Path, jail: Option<&str>, json: bool) -> Result<(), Error> {
    require_root("status")?;
    let config = Config::load_or_default(config_path)?;
    let mut status = match control::ask(&config.state_dir, &Request::Status)? {
        Some(Response::Status { status }) => status,
        Some(Response::Error { message }) => return Err(Error::Usage(message)),
        _ => status::from_maps(&config)?,
    };
    if let Some(name) = jail
        && !status.jails.iter().any(|j| j.name == name)
    {
        return Err(Error::Usage(format!("no jail named `{name}`")));
    }
    if json {
        if let Some(name) = jail {
            status.jails.retain(|j| j.name == name);
        }
        print_json(&status)
    } else {
        print(&render(&status, jail))
    }
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// The human form, shaped like `fail2ban-client status JAIL`.
pub fn render(status: &Status, only: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Status ({})",
        if status.source == "agent" {
            "from the running agent"
        } else {
            "agent not running: from the kernel maps"
        }
    );
    if let Some(up) = status.uptime_secs {
        let _ = writeln!(
            out,
            "|- Uptime:\t{}",
            format_duration(std::time::Duration::from_secs(up))
        );
    }
    let ifaces: Vec<String> = status
        .interfaces
        .iter()
        .map(|i| format!("{} ({})", i.name, i.mode))
        .collect();
    let _ = writeln!(
        out,
        "|- Interfaces:\t{}",
        if ifaces.is_empty() {
            "none attached".into()
        } else {
            ifaces.join(", ")
        }
    );
    if let Some(p) = status.packets {
        let _ = writeln!(
            out,
            "|- Packets:\tseen {}, passed {}, dropped {} (IPv4 {}, IPv6 {}), would-drop (monitor) {}",
            p.seen,
            p.passed,
            p.dropped_v4 + p.dropped_v6,
            p.dropped_v4,
            p.dropped_v6,
            p.would_drop
        );
    }
    for log in &status.logs {
        let _ = writeln!(out, "|- Log:\t\t{} ({} lines read)", log.path, log.lines);
    }
    let _ = writeln!(out, "|- Bans in force:\t{}", status.bans_in_force);
    if let Some(e) = status.window_evictions {
        let _ = writeln!(out, "|- Window evictions:\t{e}");
    }
    if let Some(f) = &status.fleet {
        let enforced: usize = f.members.iter().map(|m| m.enforced).sum();
        let _ = writeln!(
            out,
            "|- Fleet:\t{} as {}, {} member(s), {} of their bans enforced here (see `jailer fleet`)",
            f.state,
            f.name,
            f.members.len(),
            enforced
        );
    }
    let jails: Vec<&JailStatus> = status
        .jails
        .iter()
        .filter(|j| only.is_none_or(|n| n == j.name))
        .collect();
    let _ = writeln!(
        out,
        "`- Jail list:\t{}",
        jails
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for j in jails {
        let _ = write!(
            out,
            "\nStatus for the jail: {}\n|- Filter\n|  |- Currently failed:\t{}\n|  `- Total failed:\t{}\n`- Actions\n   |- Currently banned:\t{}\n   |- Total banned:\t{}\n   |- Ban errors:\t{}\n   `- Banned IP list:\t{}\n",
            j.name,
            opt(j.currently_failed),
            opt(j.total_failed),
            j.currently_banned,
            opt(j.total_banned),
            opt(j.ban_errors),
            j.banned.join(" ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::status::{InterfaceStatus, LogStatus},
        kernel::{AttachMode, PacketStats},
    };

    #[test]
    fn renders_fail2ban_shape_and_filters_jails() {
        let s = Status {
            source: "agent".into(),
            uptime_secs: Some(3661),
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                mode: AttachMode::Driver,
            }],
            packets: Some(PacketStats {
                seen: 10,
                passed: 7,
                dropped_v4: 2,
                dropped_v6: 1,
                would_drop: 0,
            }),
            logs: vec![LogStatus {
                path: "/var/log/mail.log".into(),
                lines: 42,
            }],
            jails: vec![
                JailStatus {
                    name: "vpopmail".into(),
                    currently_failed: Some(1),
                    total_failed: Some(4),
                    currently_banned: 1,
                    total_banned: Some(1),
                    ban_errors: Some(0),
                    banned: vec!["203.0.113.7".into()],
                },
                JailStatus {
                    name: "other".into(),
                    ..JailStatus::default()
                },
            ],
            bans_in_force: 1,
            window_evictions: Some(0),
            fleet: None,
        };
        let text = render(&s, Some("vpopmail"));
        assert!(text.contains("Uptime:\t1h 1m 1s"), "{text}");
        assert!(text.contains("eth0 (driver)"));
        assert!(text.contains("dropped 3 (IPv4 2, IPv6 1)"));
        assert!(text.contains("/var/log/mail.log (42 lines read)"));
        assert!(text.contains("Currently failed:\t1") && text.contains("Total failed:\t4"));
        assert!(text.contains("Banned IP list:\t203.0.113.7"));
        assert!(!text.contains("Status for the jail: other"));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }
}
