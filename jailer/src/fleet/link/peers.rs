//! Core NATS traffic with the other members: heartbeats, and failures for
//! jails that count fleet-wide (best effort, dropped and counted when full).

use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::{Done, Link, MAX_MEMBERS, MAX_QUEUED_EVENTS, Member, unix_now};
use crate::fleet::{
    FleetEvent, key, nats,
    wire::{self, Failure, Heartbeat},
};

impl Link {
    pub(super) fn drop_failures(&self, n: usize) {
        self.shared
            .failures_dropped
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(super) fn send_heartbeat(&mut self) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let now = unix_now();
        let beat = Heartbeat {
            instance: self.instance,
            at: now,
            bans: self.desired.len() as u64,
            share: self.cfg.share,
            enforce: self.cfg.enforce,
        };
        let payload = serde_json::to_vec(&beat).unwrap_or_default();
        let subject = format!("{}.hb.{}", self.cfg.bucket, self.cfg.name);
        self.in_flight.push(Box::pin(async move {
            Done::Heartbeat(nats::publish(&client, subject, payload).await)
        }));
        self.note_member(&self.cfg.name.clone(), self.instance, now);
    }

    pub(super) fn send_failures(&mut self) {
        if self.sending_failures || self.failures.is_empty() {
            return;
        }
        let Some(client) = self.client.clone().filter(|_| !self.down) else {
            self.drop_failures(self.failures.len());
            self.failures.clear();
            return;
        };
        let n = self.failures.len().min(wire::MAX_FAILURES_PER_MESSAGE);
        let batch: Vec<Failure> = self.failures.drain(..n).collect();
        let payload = wire::encode_failures(&batch);
        let subject = format!("{}.fail.{}", self.cfg.bucket, self.cfg.name);
        self.sending_failures = true;
        self.in_flight.push(Box::pin(async move {
            Done::Failures(nats::publish(&client, subject, payload).await)
        }));
    }

    /// The origin of a `<bucket>.<kind>.<origin>` message, if well formed.
    fn origin_of<'m>(&self, message: &'m async_nats::Message) -> Option<&'m str> {
        message
            .subject
            .rsplit_once('.')
            .map(|(_, origin)| origin)
            .filter(|origin| key::valid_name(origin))
    }

    pub(super) fn on_heartbeat(&mut self, message: &async_nats::Message) {
        let Some(origin) = self.origin_of(message) else {
            return;
        };
        let Ok(beat) = serde_json::from_slice::<Heartbeat>(&message.payload) else {
            return;
        };
        if origin == self.cfg.name {
            if beat.instance != self.instance {
                warn!(member = %self.cfg.name, "fleet: another process uses this member name; give each server its own `name`");
            }
            return;
        }
        self.note_member(origin, beat.instance, unix_now());
    }

    fn note_member(&mut self, name: &str, instance: u64, now: u64) {
        if !self.members.contains_key(name) && self.members.len() >= MAX_MEMBERS {
            // Names come from the network: forget the longest silent one.
            if let Some(oldest) = self
                .members
                .iter()
                .min_by_key(|(_, m)| m.last_heard)
                .map(|(n, _)| n.clone())
            {
                self.members.remove(&oldest);
            }
        }
        let member = self.members.entry(name.to_owned()).or_insert(Member {
            last_heard: None,
            instance: None,
        });
        if member.instance.is_some_and(|i| i != instance) {
            info!(member = %self.cfg.name, peer = name, "fleet: member restarted");
        }
        member.last_heard = Some(now);
        member.instance = Some(instance);
    }

    pub(super) fn on_failures(&mut self, message: &async_nats::Message) {
        let Some(origin) = self.origin_of(message) else {
            return;
        };
        if origin == self.cfg.name || !self.cfg.accepts(origin) {
            return;
        }
        let Some(failures) = wire::decode_failures(&message.payload) else {
            self.rejected += 1;
            return;
        };
        if failures.is_empty() {
            return;
        }
        if self.out.len() >= MAX_QUEUED_EVENTS {
            self.drop_failures(failures.len());
            return;
        }
        self.out.push_back(FleetEvent::Failures {
            origin: origin.to_owned(),
            failures,
        });
    }
}
