//! The agent's side of the fleet link (`[fleet]`): own bans and unbans go
//! out, members' bans come in and are enforced by the engine, and failures
//! of `shared_failures` jails are counted fleet-wide. The link itself
//! ([`crate::fleet`]) never waits on the agent's loop nor the loop on it.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Agent;
use crate::{
    ban::{Ban, Expiry, Target},
    error::Chain,
    fleet::{self, EngineState, Fleet, FleetEvent, FleetHandle},
    jail::{BanEvent, LocalChange, RemoteBan},
    kernel::BanTable,
    time::{from_unix_secs, unix_secs},
};

/// The link and its events, once started.
pub(super) struct Link {
    handle: FleetHandle,
    events: mpsc::Receiver<FleetEvent>,
}

/// What `jailer fleet` and the `fleet` part of `jailer status` report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    /// This member.
    pub name: String,
    /// `starting` (the journal is being read), `connecting`, `connected`,
    /// `disconnected` or `error`.
    pub state: String,
    /// The server connected to, or the error (naming the servers).
    pub detail: String,
    /// Connected, the bucket replayed and own bans reconciled.
    pub synced: bool,
    pub members: Vec<MemberReport>,
    /// Own bans that should be in the bucket, and those not confirmed yet.
    pub own_bans: usize,
    pub unpublished: usize,
    /// Members' bans refused here (ignoreip, own addresses, lockout).
    pub refused: u64,
    /// Failures not shared or not counted (queue full, link down).
    pub failures_dropped: u64,
    /// Bucket entries that could not be used (bad key or value).
    pub rejected: u64,
    /// Members' bans enforced here, per member and jail.
    pub enforced: Vec<EnforcedBans>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnforcedBans {
    pub origin: String,
    pub jail: String,
    pub bans: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    pub name: String,
    /// Unix seconds of its last heartbeat, `None` if never heard.
    pub last_heard: Option<u64>,
    /// Its unexpired bans in the bucket.
    pub bans: usize,
    /// Its bans enforced here (after ignoreip and accept_from).
    pub enforced: usize,
    /// Whether its bans are trusted (`accept_from`, `enforce`).
    pub accepted: bool,
    /// This member itself.
    pub local: bool,
}

/// The fleet's form of an own ban.
fn wire_ban(target: Target, ban: &Ban, jail: &str, reason: &str, now: SystemTime) -> fleet::Ban {
    fleet::Ban {
        net: target,
        ports: ban.ports,
        until: match ban.expiry {
            Expiry::Never => None,
            Expiry::At(t) => Some(unix_secs(t).max(1)),
        },
        jail: jail.to_owned(),
        reason: reason.to_owned(),
        at: unix_secs(now),
    }
}

/// The engine's form of a member's ban.
fn remote_ban(r: &fleet::RemoteBan) -> RemoteBan {
    RemoteBan {
        origin: r.origin.clone(),
        target: r.ban.net,
        ban: Ban::new(
            r.ban.ports,
            r.ban
                .until
                .map_or(Expiry::Never, |u| Expiry::At(from_unix_secs(u))),
        ),
        jail: r.ban.jail.clone(),
        at: r.ban.at,
    }
}

/// Waits for the next fleet event; never, without a fleet.
pub(super) async fn next_event(link: &mut Option<Link>) -> Option<FleetEvent> {
    match link {
        Some(link) => link.events.recv().await,
        None => std::future::pending().await,
    }
}

impl<T: BanTable> Agent<T> {
    /// Starts the link with the own bans known now (the journal has been
    /// read): what this member should hold in the bucket.
    pub(super) fn start_fleet(&mut self) {
        let Some(config) = self.config.fleet.clone() else {
            return;
        };
        if self.fleet.is_some() {
            return;
        }
        let now = SystemTime::now();
        let own = if config.share {
            self.engine
                .own_bans(now)
                .iter()
                .map(|(target, ban, jail)| wire_ban(*target, ban, jail, "restored", now))
                .collect()
        } else {
            Vec::new()
        };
        info!(
            member = config.name,
            servers = config.servers_text(),
            bucket = config.bucket,
            own_bans = own.len(),
            "joining the fleet"
        );
        let (handle, events) = Fleet::start(config, own);
        self.fleet = Some(Link { handle, events });
    }

    fn sharing(&self) -> Option<&FleetHandle> {
        let share = self.config.fleet.as_ref().is_some_and(|f| f.share);
        self.fleet.as_ref().filter(|_| share).map(|l| &l.handle)
    }

    /// Publishes bans the jails just set.
    pub(super) fn publish_bans(&self, events: &[BanEvent]) {
        let Some(fleet) = self.sharing() else { return };
        let now = SystemTime::now();
        for e in events {
            fleet.publish_ban(wire_ban(e.target, &e.ban, &e.jail, "log failures", now));
        }
    }

    /// Publishes `jailer ban`/`unban` changes read from the journal.
    pub(super) fn publish_changes(&self, changes: &[LocalChange]) {
        let Some(fleet) = self.sharing() else { return };
        let now = SystemTime::now();
        for change in changes {
            match change {
                LocalChange::Ban { target, ban, jail } => {
                    fleet.publish_ban(wire_ban(*target, ban, jail, "jailer ban", now))
                }
                LocalChange::Unban(target) => fleet.publish_unban(*target),
            }
        }
    }

    /// Shares the failures of `shared_failures` jails seen since last time.
    pub(super) fn publish_failures(&mut self) {
        let failures = self.engine.take_shared_failures();
        let Some(link) = &self.fleet else { return };
        for (jail, ip, at) in failures {
            link.handle.publish_failure_of(&jail, ip, unix_secs(at));
        }
    }

    /// Takes in one event from the link.
    pub(super) fn on_fleet(&mut self, event: FleetEvent) {
        let now = SystemTime::now();
        match event {
            FleetEvent::Snapshot(all) => {
                let all: Vec<RemoteBan> = all.iter().map(remote_ban).collect();
                match self.engine.resync_remote(&all, now) {
                    Ok((applied, lifted)) => {
                        info!(bans = all.len(), applied, lifted, "in sync with the fleet")
                    }
                    Err(e) => warn!(error = %Chain(&e), "applying the fleet's bans failed"),
                }
            }
            FleetEvent::RemoteBan(r) => {
                if let Err(e) = self.engine.apply_remote(&remote_ban(&r), now) {
                    warn!(target = %r.ban.net, origin = r.origin, error = %Chain(&e), "a member's ban could not be enforced");
                }
            }
            FleetEvent::RemoteUnban { origin, net } => {
                if let Err(e) = self.engine.lift_remote(&origin, net, now) {
                    warn!(target = %net, origin, error = %Chain(&e), "lifting a member's ban failed");
                }
            }
            FleetEvent::Failures { failures, .. } => {
                let failures: Vec<_> = failures
                    .into_iter()
                    .map(|f| (f.jail, f.ip, from_unix_secs(f.at)))
                    .collect();
                let events = self.engine.remote_failures(&failures, now);
                self.publish_bans(&events);
            }
            // The link logs its own state changes.
            FleetEvent::State(_) => {}
        }
        self.unjournaled.extend(self.engine.take_records());
        self.write_journal();
    }

    /// Stops the link, giving it a moment to publish what is pending.
    pub(super) async fn leave_fleet(&mut self) {
        let Some(mut link) = self.fleet.take() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while link.handle.status().unpublished > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        link.handle.shutdown();
        // The channel closes when the link has dropped its connection.
        let _ = tokio::time::timeout_at(deadline + Duration::from_secs(1), async {
            while link.events.recv().await.is_some() {}
        })
        .await;
    }

    /// The link as `jailer fleet` shows it.
    pub(super) fn fleet_report(&self) -> Option<FleetReport> {
        let config = self.config.fleet.as_ref()?;
        let Some(link) = &self.fleet else {
            // Not started yet: the journal is still being read.
            return Some(FleetReport {
                name: config.name.clone(),
                state: "starting".into(),
                ..FleetReport::default()
            });
        };
        let status = link.handle.status();
        let mut enforced: Vec<EnforcedBans> = self
            .engine
            .remote_per_origin(SystemTime::now())
            .into_iter()
            .map(|((origin, jail), bans)| EnforcedBans { origin, jail, bans })
            .collect();
        enforced.sort_by(|a, b| (&a.origin, &a.jail).cmp(&(&b.origin, &b.jail)));
        let enforced_by = |name: &str| -> usize {
            enforced
                .iter()
                .filter(|e| e.origin == name)
                .map(|e| e.bans)
                .sum()
        };
        let (state, detail, synced) = match status.state {
            EngineState::Connecting => ("connecting", String::new(), false),
            EngineState::Connected { server, synced } => ("connected", server, synced),
            EngineState::Disconnected => ("disconnected", String::new(), false),
            EngineState::Error(message) => ("error", message, false),
        };
        Some(FleetReport {
            members: status
                .members
                .iter()
                .map(|m| MemberReport {
                    name: m.name.clone(),
                    last_heard: m.last_heard,
                    bans: m.bans,
                    enforced: enforced_by(&m.name),
                    accepted: m.accepted,
                    local: m.name == status.name,
                })
                .collect(),
            name: status.name,
            state: state.to_owned(),
            detail,
            synced,
            own_bans: status.own_bans,
            unpublished: status.unpublished,
            refused: self.engine.remote_refused(),
            failures_dropped: status.failures_dropped,
            rejected: status.rejected,
            enforced,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ban::PortSet;

    #[test]
    fn bans_cross_in_both_directions_unchanged() {
        let now = SystemTime::now();
        let target: Target = "2001:db8:1::/48".parse().unwrap();
        let ban = Ban::new(
            PortSet::only(&[110, 995]),
            Expiry::At(from_unix_secs(unix_secs(now) + 600)),
        );
        let wire = wire_ban(target, &ban, "dovecot", "log failures", now);
        assert_eq!(wire.until, Some(unix_secs(now) + 600));
        let back = remote_ban(&fleet::RemoteBan {
            origin: "mx2".into(),
            ban: wire,
        });
        assert_eq!(
            (back.target, back.ban, back.jail.as_str()),
            (target, ban, "dovecot")
        );
        let permanent = wire_ban(
            target,
            &Ban::new(PortSet::All, Expiry::Never),
            "manual",
            "",
            now,
        );
        assert_eq!(permanent.until, None);
    }
}
