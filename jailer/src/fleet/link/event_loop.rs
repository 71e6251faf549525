//! The select loop: one place that waits on everything the link reacts to,
//! so every handler runs with the whole state to itself.

use std::{sync::atomic::Ordering, time::Instant};

use async_nats::Event;
use futures_util::StreamExt;

use super::{BoxFuture, Link, MAX_QUEUED_EVENTS, REPLAY_STALL, SWEEP, TICK};

/// Polls an optional future; never ready when there is none.
async fn maybe<T>(f: &mut Option<BoxFuture<T>>) -> T {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; forever when there is none.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The next item of an optional stream; never ready when there is none.
async fn next_of<S: futures_util::Stream + Unpin>(s: &mut Option<S>) -> Option<S::Item> {
    match s {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

impl Link {
    pub(super) async fn main(&mut self) {
        self.start_connect();
        self.publish_status();
        // A clone, so a reserved permit borrows a local, not `self`.
        let events = self.events.clone();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            self.pump();
            let watch_open = self.out.len() < MAX_QUEUED_EVENTS;
            tokio::select! {
                _ = self.shared.wake.notified() => self.take_outbox(),
                Some(event) = self.nats_events.recv() => self.on_nats_event(event),
                result = maybe(&mut self.connecting), if self.connecting.is_some() => {
                    self.connecting = None;
                    self.on_connect(result);
                }
                result = maybe(&mut self.setup), if self.setup.is_some() => {
                    self.setup = None;
                    self.on_setup(result);
                }
                message = next_of(&mut self.watch), if self.watch.is_some() && watch_open => {
                    self.on_watch(message);
                }
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.on_done(done);
                }
                permit = events.reserve(), if !self.out.is_empty() => match permit {
                    Ok(permit) => self.deliver(permit, &events),
                    // The agent dropped its receiver: nobody to serve.
                    Err(_) => break,
                },
                message = next_of(&mut self.heartbeats), if self.heartbeats.is_some() => {
                    match message {
                        Some(message) => self.on_heartbeat(&message),
                        // Only when the client is closed; do not spin on it.
                        None => self.heartbeats = None,
                    }
                }
                message = next_of(&mut self.failures_in), if self.failures_in.is_some() => {
                    match message {
                        Some(message) => self.on_failures(&message),
                        None => self.failures_in = None,
                    }
                }
                _ = sleep_until(self.retry_at), if self.retry_at.is_some() => self.retry(),
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        // The messages counted as pending can vanish before delivery (max_age):
        // then no message ever says "0 pending". Start over rather than wait.
        if self.replay.is_some() && now.duration_since(self.replay_progress) >= REPLAY_STALL {
            self.resync("the replay stalled");
        }
        // async-nats drops events when its queue is full: do not wait
        // forever for a `Connected` that was lost.
        if self.down
            && self
                .client
                .as_ref()
                .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
        {
            self.on_nats_event(Event::Connected);
        }
        if self.connected() && now >= self.next_heartbeat {
            self.next_heartbeat = now + self.cfg.heartbeat;
            self.send_heartbeat();
        }
        if now >= self.next_sweep {
            // A short bucket max_age needs refreshes more often than that.
            let period = if self.max_age.is_zero() {
                SWEEP
            } else {
                (self.max_age / 4).clamp(TICK, SWEEP)
            };
            self.next_sweep = now + period;
            self.sweep();
        }
        self.publish_status();
    }

    fn retry(&mut self) {
        self.retry_at = None;
        if self.client.is_none() {
            if self.connecting.is_none() {
                self.start_connect();
            }
        } else if !self.down && self.setup.is_none() && self.watch.is_none() {
            self.start_setup();
        }
    }
}
