//! Own bans: what this member should hold in the bucket, and the writes,
//! sweeps and audits that keep the bucket there whatever gets lost.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use tokio::time::timeout;
use tracing::{debug, warn};

use super::{
    Done, Link, MAX_FAILURE_BACKLOG, MAX_IN_FLIGHT, Published, SWEEP_AFTER_ERROR, unix_now,
    watch::decrement,
};
use crate::{
    ban::Target,
    fleet::{Ban, key, lock, nats::OP_TIMEOUT, wire},
};

impl Link {
    pub(super) fn take_outbox(&mut self) {
        let (bans, failures) = {
            let mut outbox = lock(&self.shared.outbox);
            (
                std::mem::take(&mut outbox.bans),
                std::mem::take(&mut outbox.failures),
            )
        };
        for (net, ban) in bans {
            match ban {
                Some(ban) => {
                    if let Some(until) = ban.until {
                        self.sweep_by(until);
                    }
                    self.desired.insert(net, ban);
                }
                None => {
                    self.desired.remove(&net);
                }
            }
            self.mark_dirty(net);
        }
        if !failures.is_empty() {
            if self.connected() {
                for failure in failures {
                    if self.failures.len() < MAX_FAILURE_BACKLOG {
                        self.failures.push_back(failure);
                    } else {
                        self.drop_failures(1);
                    }
                }
                self.send_failures();
            } else {
                // Counting is about the last minutes: old failures are noise.
                self.drop_failures(failures.len());
            }
        }
    }

    pub(super) fn mark_dirty(&mut self, net: Target) {
        if self.busy.contains(&net) {
            self.changed_while_busy.insert(net);
        } else if self.dirty_set.insert(net) {
            self.dirty.push_back(net);
        }
    }

    /// What own key `net` needs: `Some(Some(ban))` a put, `Some(None)` a
    /// delete, `None` nothing.
    fn needed(&self, net: &Target, now: u64) -> Option<Option<Ban>> {
        let want = self
            .desired
            .get(net)
            .filter(|b| self.cfg.share && b.is_active(now));
        let have = self.published.get(net);
        match (want, have) {
            (Some(want), Some(have)) => {
                let stale = !self.max_age.is_zero()
                    && now.saturating_sub(have.written) >= self.max_age.as_secs() / 2;
                (have.ban.as_ref() != Some(want) || stale).then(|| Some(want.clone()))
            }
            (Some(want), None) => Some(Some(want.clone())),
            (None, Some(_)) => Some(None),
            (None, None) => None,
        }
    }

    /// Starts writes for dirty own keys while live and below the cap.
    pub(super) fn pump(&mut self) {
        if !self.live {
            return;
        }
        let Some(store) = self.store.clone() else {
            return;
        };
        let now = unix_now();
        while self.busy.len() < MAX_IN_FLIGHT {
            let Some(net) = self.dirty.pop_front() else {
                break;
            };
            self.dirty_set.remove(&net);
            let Some(put) = self.needed(&net, now) else {
                continue;
            };
            self.busy.insert(net);
            let key = key::encode(&self.cfg.name, net);
            tracing::trace!(member = %self.cfg.name, key, put = put.is_some(), "fleet: writing");
            let store = store.clone();
            let value = put
                .as_ref()
                .map(|ban| wire::encode_ban(&self.cfg.name, ban, now));
            self.in_flight.push(Box::pin(async move {
                let result = match value {
                    Some(value) => timeout(OP_TIMEOUT, store.put(&key, value.into()))
                        .await
                        .map(|r| r.map(drop).map_err(|e| e.to_string())),
                    // A delete marker, not a purge: the bucket keeps one
                    // entry per key anyway (history 1), and a purge's
                    // rollup makes 2.9.10's consumers skip messages put on
                    // other keys at the same moment.
                    None => timeout(OP_TIMEOUT, store.delete(&key))
                        .await
                        .map(|r| r.map_err(|e| e.to_string())),
                };
                let result = result.unwrap_or_else(|_| Err("timed out".to_owned()));
                Done::Write {
                    net,
                    put,
                    written: now,
                    result: result.map_err(|e| format!("{key}: {e}")),
                }
            }));
        }
    }

    pub(super) fn on_done(&mut self, done: Done) {
        match done {
            Done::Write {
                net,
                put,
                written,
                result,
            } => {
                self.busy.remove(&net);
                tracing::trace!(member = %self.cfg.name, %net, ok = result.is_ok(), "fleet: written");
                match result {
                    Ok(()) => match put {
                        Some(ban) => {
                            self.published.insert(
                                net,
                                Published {
                                    ban: Some(ban),
                                    written,
                                },
                            );
                        }
                        None => {
                            self.published.remove(&net);
                        }
                    },
                    Err(message) => {
                        let quiet = self
                            .last_write_warning
                            .is_some_and(|at| at.elapsed() < Duration::from_secs(60));
                        if !quiet {
                            warn!(member = %self.cfg.name, "fleet: publishing failed (retried): {message}");
                            self.last_write_warning = Some(Instant::now());
                        }
                        // The sweep's reconcile retries it.
                        self.next_sweep = self.next_sweep.min(Instant::now() + SWEEP_AFTER_ERROR);
                    }
                }
                if self.changed_while_busy.remove(&net) {
                    self.mark_dirty(net);
                }
            }
            Done::Heartbeat(result) => {
                if let Err(message) = result {
                    debug!(member = %self.cfg.name, "fleet: heartbeat not sent: {message}");
                }
            }
            Done::Audit(Ok(last)) => {
                if !self.live || self.watch_stream_seq >= last {
                    self.audit_suspect = None;
                } else if self
                    .audit_suspect
                    .is_some_and(|suspect| self.watch_stream_seq < suspect)
                {
                    // Behind twice in a row, a sweep apart: not a message in flight.
                    let why = format!("watch at {} of {last}", self.watch_stream_seq);
                    self.resync(&why);
                } else {
                    self.audit_suspect = Some(last);
                }
            }
            Done::Audit(Err(message)) => {
                debug!(member = %self.cfg.name, "fleet: audit: {message}");
            }
            Done::Failures(result) => {
                self.sending_failures = false;
                if let Err(message) = result {
                    debug!(member = %self.cfg.name, "fleet: failures not sent: {message}");
                }
                self.send_failures();
            }
        }
    }

    /// Drops own bans that lapsed, then checks every own key against the
    /// bucket: catches lost writes, keys someone else overwrote, echoes that
    /// arrived out of order, and bans due for a max_age refresh.
    pub(super) fn sweep(&mut self) {
        let now = unix_now();
        let lapsed: Vec<Target> = self
            .desired
            .iter()
            .filter(|(_, b)| !b.is_active(now))
            .map(|(net, _)| *net)
            .collect();
        for net in lapsed {
            self.desired.remove(&net);
            self.mark_dirty(net);
        }
        if let Some(until) = self.desired.values().filter_map(|b| b.until).min() {
            self.sweep_by(until);
        }
        self.remote.retain(|key, r| {
            let keep = r.until.is_none_or(|until| now < until);
            if !keep && let Some((origin, _)) = key::decode(key) {
                decrement(&mut self.counts, origin);
            }
            keep
        });
        if self.live {
            self.reconcile();
            self.audit();
        }
    }

    /// Brings the next sweep forward to unix time `until`, so the origin
    /// deletes its lapsed bans within a tick of their expiry.
    pub(super) fn sweep_by(&mut self, until: u64) {
        let wait = Duration::from_secs(until.saturating_sub(unix_now()));
        self.next_sweep = self.next_sweep.min(Instant::now() + wait);
    }

    /// Asks for the stream's last sequence: a watch that lost its last
    /// messages (overflow) and then went quiet would never notice by itself.
    fn audit(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        let mut stream = store.stream.clone();
        self.in_flight.push(Box::pin(async move {
            let last = match timeout(OP_TIMEOUT, stream.info()).await {
                Ok(Ok(info)) => Ok(info.state.last_sequence),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
            Done::Audit(last)
        }));
    }

    /// Marks every own key whose bucket state differs from what it should be.
    pub(super) fn reconcile(&mut self) {
        let now = unix_now();
        let nets: Vec<Target> = self
            .desired
            .keys()
            .chain(self.published.keys())
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|net| self.needed(net, now).is_some())
            .collect();
        for net in nets {
            self.mark_dirty(net);
        }
    }
}
