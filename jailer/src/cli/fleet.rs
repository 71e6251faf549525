//! `jailer fleet`: the fleet as this member sees it — members, when each
//! last spoke, the bans each contributed and those enforced here, and the
//! link's state. Asks the running agent.

use std::{fmt::Write as _, path::Path, time::SystemTime};

use super::{print, print_json, require_root};
use crate::{
    agent::{
        FleetReport,
        control::{self, Request, Response},
    },
    config::Config,
    error::Error,
    time::{format_duration, unix_secs},
};

pub(super) fn run(config_path: &Path, json: bool) -> Result<(), Error> {
    require_root("fleet")?;
    let config = Config::load_or_default(config_path)?;
    let report = match control::ask(&config.state_dir, &Request::Fleet)? {
        Some(Response::Fleet { report }) => report,
        Some(Response::Error { message }) => return Err(Error::Usage(message)),
        Some(other) => return Err(Error::Usage(format!("unexpected reply: {other:?}"))),
        None => {
            return Err(Error::Usage(format!(
                "no agent is running (no socket in {}): the fleet is only known to a running agent",
                config.state_dir.display()
            )));
        }
    };
    if json {
        print_json(&report)
    } else {
        print(&render(&report, unix_secs(SystemTime::now())))
    }
}

/// `12s ago`, `never`.
fn ago(at: Option<u64>, now: u64) -> String {
    at.map_or_else(
        || "never".to_owned(),
        |at| {
            format!(
                "{} ago",
                format_duration(std::time::Duration::from_secs(now.saturating_sub(at)))
            )
        },
    )
}

/// The human form.
pub fn render(r: &FleetReport, now: u64) -> String {
    let mut out = String::new();
    let state = if r.detail.is_empty() {
        r.state.clone()
    } else {
        format!("{} ({})", r.state, r.detail)
    };
    let _ = writeln!(
        out,
        "Fleet member {}: {state}{}",
        r.name,
        if r.synced { ", in sync" } else { "" }
    );
    let _ = writeln!(
        out,
        "|- Own bans:\t{} ({} not published yet)",
        r.own_bans, r.unpublished
    );
    let _ = writeln!(
        out,
        "|- Refused:\t{} (ignoreip, own addresses, lockout); failures dropped {}; bad entries {}",
        r.refused, r.failures_dropped, r.rejected
    );
    let _ = writeln!(out, "`- Members:");
    let _ = writeln!(
        out,
        "   {:<24} {:<16} {:>10} {:>10}  TRUSTED",
        "NAME", "LAST HEARD", "BANS", "ENFORCED"
    );
    for m in &r.members {
        let name = if m.local {
            format!("{} (this one)", m.name)
        } else {
            m.name.clone()
        };
        let trusted = if m.local {
            "-"
        } else if m.accepted {
            "yes"
        } else {
            "no"
        };
        let _ = writeln!(
            out,
            "   {:<24} {:<16} {:>10} {:>10}  {trusted}",
            name,
            ago(m.last_heard, now),
            m.bans,
            m.enforced
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::MemberReport;

    #[test]
    fn shows_members_and_state() {
        let r = FleetReport {
            name: "mx1".into(),
            state: "connected".into(),
            detail: "nats://127.0.0.1:4222".into(),
            synced: true,
            members: vec![
                MemberReport {
                    name: "mx1".into(),
                    last_heard: Some(100),
                    bans: 3,
                    local: true,
                    ..MemberReport::default()
                },
                MemberReport {
                    name: "mx2".into(),
                    last_heard: Some(88),
                    bans: 5,
                    enforced: 4,
                    accepted: true,
                    local: false,
                },
            ],
            own_bans: 3,
            ..FleetReport::default()
        };
        let text = render(&r, 100);
        assert!(
            text.contains("mx1: connected (nats://127.0.0.1:4222), in sync"),
            "{text}"
        );
        assert!(text.contains("mx1 (this one)"));
        let mx2 = text.lines().find(|l| l.contains("mx2")).unwrap();
        assert!(
            mx2.contains("12s ago")
                && mx2.contains(" 5 ")
                && mx2.contains(" 4 ")
                && mx2.ends_with("yes"),
            "{mx2}"
        );
    }
}
