//! What the agent sees of the link: state changes, the events queue and the
//! status snapshot `FleetHandle::status` reads.

use std::{collections::HashMap, sync::atomic::Ordering};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Link;
use crate::fleet::{EngineState, FleetEvent, FleetStatus, MemberStatus, lock};

impl Link {
    pub(super) fn set_state(&mut self, state: EngineState) {
        if state != self.state {
            match &state {
                EngineState::Error(message) => {
                    warn!(member = %self.cfg.name, "fleet: {message} (local bans go on; retrying)")
                }
                other => info!(member = %self.cfg.name, state = ?other, "fleet link"),
            }
            self.state = state.clone();
            self.out.push_back(FleetEvent::State(state));
            self.publish_status();
        }
    }

    pub(super) fn deliver(
        &mut self,
        permit: mpsc::Permit<'_, FleetEvent>,
        events: &mpsc::Sender<FleetEvent>,
    ) {
        if let Some(event) = self.out.pop_front() {
            permit.send(event);
        }
        // Fill what room there is without another trip through select.
        while !self.out.is_empty() {
            match events.try_reserve() {
                Ok(permit) => {
                    if let Some(event) = self.out.pop_front() {
                        permit.send(event);
                    }
                }
                Err(_) => break,
            }
        }
    }

    pub(super) fn publish_status(&self) {
        let mut members: HashMap<&str, MemberStatus> = HashMap::new();
        for (name, m) in &self.members {
            members.insert(
                name,
                MemberStatus {
                    name: name.clone(),
                    last_heard: m.last_heard,
                    bans: 0,
                    accepted: self.cfg.accepts(name),
                },
            );
        }
        for (name, &n) in &self.counts {
            members
                .entry(name)
                .or_insert_with(|| MemberStatus {
                    name: name.clone(),
                    last_heard: None,
                    bans: 0,
                    accepted: self.cfg.accepts(name),
                })
                .bans = n;
        }
        let own = members
            .entry(&self.cfg.name)
            .or_insert_with(|| MemberStatus {
                name: self.cfg.name.clone(),
                last_heard: None,
                bans: 0,
                accepted: false,
            });
        own.bans = self.published.len();
        own.accepted = false;
        let mut members: Vec<MemberStatus> = members.into_values().collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        *lock(&self.shared.status) = FleetStatus {
            name: self.cfg.name.clone(),
            state: self.state.clone(),
            members,
            own_bans: self.desired.len(),
            unpublished: self.dirty_set.len() + self.busy.len(),
            failures_dropped: self.shared.failures_dropped.load(Ordering::Relaxed),
            rejected: self.rejected,
        };
    }
}
