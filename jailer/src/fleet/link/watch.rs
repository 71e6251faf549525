//! The bucket's watch: replaying it into a snapshot, applying live entries,
//! and starting over whenever the watch may have missed something.

use std::{collections::HashMap, time::Instant};

use async_nats::jetstream::{self, consumer::push};
use tracing::{debug, info};

use super::{Link, Published, RemoteKey, unix_now};
use crate::fleet::{EngineState, FleetEvent, RemoteBan, key, wire};

impl Link {
    pub(super) fn on_watch(
        &mut self,
        message: Option<Result<jetstream::Message, push::MessagesError>>,
    ) {
        match message {
            Some(Ok(message)) => self.on_entry(&message),
            // A missed heartbeat: the consumer is gone (its node died, the
            // server restarted) or unreachable.
            Some(Err(error)) => self.resync(&format!("watch: {error}")),
            None => self.resync("the watch ended"),
        }
    }

    /// Starts over with a fresh watch and replay.
    pub(super) fn resync(&mut self, why: &str) {
        info!(member = %self.cfg.name, "fleet: resyncing: {why}");
        self.go_offline();
        if self.connected() {
            self.start_setup();
        }
    }

    fn on_entry(&mut self, message: &jetstream::Message) {
        tracing::trace!(member = %self.cfg.name, subject = %message.subject, "fleet: entry");
        let Ok(info) = message.info() else {
            self.rejected += 1;
            return;
        };
        let pending = info.pending;
        if info.consumer_sequence != self.watch_consumer_seq + 1 {
            let why = format!(
                "watch skipped from {} to {}",
                self.watch_consumer_seq, info.consumer_sequence
            );
            self.resync(&why);
            return;
        }
        self.watch_consumer_seq = info.consumer_sequence;
        self.watch_stream_seq = info.stream_sequence;
        self.replay_progress = Instant::now();
        let prefix_len = "$KV.".len() + self.cfg.bucket.len() + 1;
        let key = message.subject.get(prefix_len..).unwrap_or_default();
        let op = message
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .map(|v| v.as_str());
        let payload = (op.is_none() || op == Some("PUT")).then_some(&message.payload[..]);
        self.apply(key, payload);
        if self.replay.is_some() && pending == 0 {
            self.finish_replay();
        }
    }

    /// One bucket entry: `payload` is the value, `None` a delete or purge.
    fn apply(&mut self, key: &str, payload: Option<&[u8]>) {
        let Some((origin, net)) = key::decode(key) else {
            self.rejected += 1;
            return;
        };
        if origin == self.cfg.name {
            // Own key: what the bucket holds, never an event (no echo).
            match payload {
                Some(bytes) => {
                    let (ban, written) = match wire::decode_ban(origin, net, bytes) {
                        Ok((ban, written)) => (Some(ban), written),
                        Err(_) => (None, 0),
                    };
                    self.published.insert(net, Published { ban, written });
                }
                None => {
                    self.published.remove(&net);
                }
            }
            return;
        }
        let now = unix_now();
        let ban = payload.and_then(|bytes| match wire::decode_ban(origin, net, bytes) {
            Ok((ban, _)) => ban.is_active(now).then_some(ban),
            Err(error) => {
                self.rejected += 1;
                debug!(member = %self.cfg.name, key, "fleet: unusable value: {error}");
                None
            }
        });
        let before = self.remote.remove(key);
        if before.is_some() {
            decrement(&mut self.counts, origin);
        }
        let applied = self.cfg.enforce && self.cfg.accepts(origin);
        match ban {
            Some(ban) => {
                self.remote.insert(
                    key.into(),
                    RemoteKey {
                        applied,
                        until: ban.until,
                    },
                );
                *self.counts.entry(origin.to_owned()).or_default() += 1;
                if applied {
                    let remote = RemoteBan {
                        origin: origin.to_owned(),
                        ban,
                    };
                    match &mut self.replay {
                        Some(snapshot) => {
                            snapshot.insert(key.into(), remote);
                        }
                        None => self.out.push_back(FleetEvent::RemoteBan(remote)),
                    }
                }
            }
            None => match &mut self.replay {
                Some(snapshot) => {
                    snapshot.remove(key);
                }
                None => {
                    if before.is_some_and(|b| b.applied) {
                        self.out.push_back(FleetEvent::RemoteUnban {
                            origin: origin.to_owned(),
                            net,
                        });
                    }
                }
            },
        }
    }

    pub(super) fn finish_replay(&mut self) {
        let Some(snapshot) = self.replay.take() else {
            return;
        };
        // Without `enforce` the snapshot is empty: the agent lifts any
        // remote bans it still holds.
        self.out
            .push_back(FleetEvent::Snapshot(snapshot.into_values().collect()));
        self.live = true;
        // Rebuilt from the replay: the dirty list is recomputed from scratch.
        self.dirty.clear();
        self.dirty_set.clear();
        self.reconcile();
        info!(
            member = %self.cfg.name,
            remote = self.remote.len(),
            own_published = self.published.len(),
            to_write = self.dirty.len(),
            "fleet: in sync"
        );
        self.set_state(EngineState::Connected {
            server: self.server.clone(),
            synced: true,
        });
    }
}

pub(super) fn decrement(counts: &mut HashMap<String, usize>, origin: &str) {
    if let Some(n) = counts.get_mut(origin) {
        *n -= 1;
        if *n == 0 {
            counts.remove(origin);
        }
    }
}
