//! Connecting and opening the bucket: each attempt is a future the loop
//! polls, retried with backoff, so a dead server holds up nothing else.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use async_nats::Event;
use tracing::{debug, info, warn};

use super::{CONNECT_RETRY_MAX, Link, SETUP_RETRY, SETUP_RETRY_MAX};
use crate::fleet::{
    EngineState,
    nats::{self, Connected, LinkError, Watching},
};

impl Link {
    pub(super) fn connected(&self) -> bool {
        self.client.is_some() && !self.down
    }

    pub(super) fn start_connect(&mut self) {
        let cfg = self.cfg.clone();
        let events = self.nats_events_tx.clone();
        let seed = self.instance;
        self.connecting = Some(Box::pin(nats::connect(cfg, events, seed)));
    }

    pub(super) fn on_connect(&mut self, result: Result<Connected, LinkError>) {
        match result {
            Ok(c) => {
                info!(member = %self.cfg.name, server = %c.server, "fleet: connected");
                self.connect_failures = 0;
                self.server = c.server;
                self.client = Some(c.client);
                self.heartbeats = Some(c.heartbeats);
                self.failures_in = Some(c.failures);
                self.down = false;
                self.set_state(EngineState::Connected {
                    server: self.server.clone(),
                    synced: false,
                });
                self.start_setup();
            }
            Err(error) => {
                self.set_state(EngineState::Error(error.to_string()));
                self.connect_failures = self.connect_failures.saturating_add(1);
                let delay = Duration::from_millis(500)
                    .saturating_mul(1 << self.connect_failures.min(5))
                    .min(CONNECT_RETRY_MAX);
                self.retry_at = Some(Instant::now() + delay);
            }
        }
    }

    pub(super) fn on_nats_event(&mut self, event: Event) {
        let Some(client) = &self.client else {
            return;
        };
        match event {
            Event::Connected => {
                if self.down {
                    self.down = false;
                    self.server = nats::server_name(client);
                    self.set_state(EngineState::Connected {
                        server: self.server.clone(),
                        synced: false,
                    });
                    self.start_setup();
                }
            }
            Event::Disconnected => {
                self.down = true;
                self.go_offline();
                self.set_state(EngineState::Disconnected);
            }
            // While reconnecting, authentication and connection errors come
            // here; name the servers, since async-nats does not.
            Event::ServerError(error) => {
                if self.down {
                    let message = format!("{}: {error}", self.cfg.servers_text());
                    self.set_state(EngineState::Error(message));
                } else {
                    warn!(member = %self.cfg.name, "fleet: server error: {error}");
                }
            }
            Event::ClientError(error) => {
                if self.down {
                    let message = format!("reconnecting to {}: {error}", self.cfg.servers_text());
                    self.set_state(EngineState::Error(message));
                } else {
                    warn!(member = %self.cfg.name, "fleet: client error: {error}");
                }
            }
            // Rate-limited. A gap in the watch is caught by its sequence
            // check or the sweep's audit, and resynced.
            Event::SlowConsumer(sid) => {
                if self
                    .last_slow_warning
                    .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
                {
                    warn!(member = %self.cfg.name, sid, "fleet: a subscription overflowed, messages dropped");
                    self.last_slow_warning = Some(Instant::now());
                }
            }
            other => debug!(member = %self.cfg.name, event = %other, "fleet: nats event"),
        }
    }

    /// Drops what belongs to the lost connection; own changes stay in
    /// `desired` and `dirty` for the reconcile after the next replay.
    pub(super) fn go_offline(&mut self) {
        self.setup = None;
        self.watch = None;
        self.replay = None;
        self.live = false;
    }

    pub(super) fn start_setup(&mut self) {
        let Some(client) = self.client.clone() else {
            return;
        };
        self.go_offline();
        self.setup_started = Instant::now();
        self.setup = Some(Box::pin(nats::setup(client, self.cfg.clone())));
    }

    pub(super) fn on_setup(&mut self, result: Result<Watching, LinkError>) {
        match result {
            Ok(w) => {
                debug!(member = %self.cfg.name, pending = w.pending, "fleet: replaying bucket");
                self.setup_failures = 0;
                self.store = Some(w.store);
                self.watch = Some(w.messages);
                self.watch_consumer_seq = 0;
                self.watch_stream_seq = 0;
                self.audit_suspect = None;
                self.max_age = w.max_age;
                // Start from nothing: the snapshot is the whole truth.
                self.remote.clear();
                self.counts.clear();
                self.published.clear();
                self.replay = Some(HashMap::new());
                self.replay_progress = Instant::now();
                if w.pending == 0 {
                    self.finish_replay();
                }
            }
            Err(error) => {
                self.set_state(EngineState::Error(error.to_string()));
                self.setup_failures = self.setup_failures.saturating_add(1);
                // Attempts start at most every `delay` apart: one that
                // already waited out its timeouts is retried at once.
                let delay = SETUP_RETRY
                    .saturating_mul(1 << (self.setup_failures - 1).min(5))
                    .min(SETUP_RETRY_MAX);
                self.retry_at = Some(self.setup_started + delay);
            }
        }
    }
}
