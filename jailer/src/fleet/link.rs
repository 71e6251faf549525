//! The link task: one loop owns all state and never awaits the network
//! itself. Connecting, opening the bucket, KV writes and publishes run as
//! futures it polls (each with a timeout), so a dead server delays nothing but
//! those futures, and the agent's handle never waits at all.
//!
//! Per connection: open (or create) the bucket, start a push consumer over
//! `$KV.<bucket>.>` with "last per subject" delivery (what a KV watch with
//! history is), replay it into a snapshot, hand the snapshot over, then
//! reconcile own keys and go live. The replay ends at the message whose
//! `pending` count is 0, or at once when the consumer starts with nothing
//! pending (an empty bucket delivers no message at all, so a watch alone
//! cannot tell "empty" from "slow").
//!
//! Resync: after every reconnect, missed heartbeat, sequence gap or end of
//! the watch, the link replays the bucket again from scratch. That costs one
//! replay each time and buys a resync that is right whatever happened
//! meanwhile (server restored from an older store, another cluster node,
//! markers collected by max_age); the caller diffs the snapshot against
//! what it holds. It is also why the watch is a plain push consumer with a
//! 1 s idle heartbeat rather than async-nats's ordered consumer (`Store::
//! watch*`): that one notices a dead consumer only after 10 s, and its own
//! recovery (recreating the consumer under a derived name) was seen to fail
//! for 20 s and more against a 2.9.10 cluster that had lost a node.
//!
//! Failures travel on core NATS, `<bucket>.fail.<origin>`, not JetStream:
//! they are many, short-lived (useful within a jail's findtime) and
//! loss-tolerant (a lost one delays a ban a little). A stream would write
//! each to disk, wait for an ack per publish and replay stale counts to a
//! restarting member; core NATS is at-most-once, memory-only and has the
//! lowest latency. Memory stays bounded: a fixed queue on the way out (full:
//! dropped and counted), the subscription's fixed buffer on the way in
//! (async-nats drops on overflow: slow consumer), a cap per message, and the
//! link's event queue (past its high mark failures are dropped). Counting
//! windows are the agent's own, bounded by its `max_tracked`.
//!
//! Heartbeats go on `<bucket>.hb.<origin>` every few seconds (core NATS).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    hash::{BuildHasher, RandomState},
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::ban::Target;
use async_nats::{
    Client, Event, Subscriber,
    jetstream::{self, consumer::push, kv},
};
use futures_util::{StreamExt, stream::FuturesUnordered};
use tokio::{sync::mpsc, time::timeout};
use tracing::{debug, info, warn};

use super::{
    Ban, EngineState, FleetConfig, FleetEvent, FleetStatus, MemberStatus, RemoteBan, Shared, key,
    lock,
    nats::{self, Connected, LinkError, OP_TIMEOUT, Watching},
    wire::{self, Failure, Heartbeat},
};

/// A replay without a message for this long is started over.
const REPLAY_STALL: Duration = Duration::from_secs(3);
/// KV writes in flight at once: enough to publish 100k bans in seconds.
const MAX_IN_FLIGHT: usize = 256;
/// Events queued for the agent; past it the watch is not polled (JetStream
/// flow control holds the rest on the server) and failures are dropped.
const MAX_QUEUED_EVENTS: usize = 8192;
/// Own failures kept while one batch is being sent.
const MAX_FAILURE_BACKLOG: usize = 4096;
/// Members tracked at most (names come from the network).
const MAX_MEMBERS: usize = 1024;
/// Housekeeping period: status, heartbeats, retries.
const TICK: Duration = Duration::from_secs(1);
/// Full reconcile and expiry sweep period (sooner after a failed write).
const SWEEP: Duration = Duration::from_secs(10);
const SWEEP_AFTER_ERROR: Duration = Duration::from_secs(1);
/// Retry delays of the first connection and of opening the bucket (doubled
/// per failure up to the max).
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(10);
const SETUP_RETRY: Duration = Duration::from_millis(500);
const SETUP_RETRY_MAX: Duration = Duration::from_secs(2);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a finished network future reports.
enum Done {
    /// A KV write of an own key: `put` is what was written (`None`: delete).
    Write {
        net: Target,
        put: Option<Ban>,
        written: u64,
        result: Result<(), String>,
    },
    Heartbeat(Result<(), String>),
    Failures(Result<(), String>),
    /// The stream's last sequence, for the watch audit.
    Audit(Result<u64, String>),
}

/// An own key as the bucket holds it.
struct Published {
    /// `None`: a value this version cannot read (rewritten at reconcile).
    ban: Option<Ban>,
    written: u64,
}

/// A remote key in the bucket (unexpired when last seen).
struct RemoteKey {
    /// Handed to the agent (accepted origin, `enforce` on).
    applied: bool,
    until: Option<u64>,
}

struct Member {
    last_heard: Option<u64>,
    instance: Option<u64>,
}

struct Link {
    cfg: Arc<FleetConfig>,
    shared: Arc<Shared>,
    instance: u64,
    events: mpsc::Sender<FleetEvent>,
    /// Events waiting for room in `events`.
    out: VecDeque<FleetEvent>,
    nats_events_tx: mpsc::Sender<Event>,
    nats_events: mpsc::Receiver<Event>,
    state: EngineState,

    client: Option<Client>,
    server: String,
    /// The connection is lost (async-nats is reconnecting).
    down: bool,
    connecting: Option<BoxFuture<Result<Connected, LinkError>>>,
    connect_failures: u32,
    setup_failures: u32,
    setup_started: Instant,
    setup: Option<BoxFuture<Result<Watching, LinkError>>>,
    /// When to retry connecting or opening the bucket.
    retry_at: Option<Instant>,
    store: Option<Arc<kv::Store>>,
    watch: Option<push::Messages>,
    /// The last consumer and stream sequences the watch delivered: a jump
    /// in the first is a lost message (subscription overflow).
    watch_consumer_seq: u64,
    watch_stream_seq: u64,
    /// The stream's last sequence seen by the previous audit while the watch
    /// was behind it, if it was.
    audit_suspect: Option<u64>,
    /// Remote bans seen during a replay, by key; `None` once live.
    replay: Option<HashMap<Box<str>, RemoteBan>>,
    /// When the replay last made progress.
    replay_progress: Instant,
    live: bool,
    heartbeats: Option<Subscriber>,
    failures_in: Option<Subscriber>,

    /// Own bans that should be in the bucket.
    desired: HashMap<Target, Ban>,
    /// Own keys in the bucket (from the replay, echoes and acks).
    published: HashMap<Target, Published>,
    /// Own targets to check and write, in order, without repeats.
    dirty: VecDeque<Target>,
    dirty_set: HashSet<Target>,
    /// Targets with a write in flight, and those changed meanwhile.
    busy: HashSet<Target>,
    changed_while_busy: HashSet<Target>,
    in_flight: FuturesUnordered<BoxFuture<Done>>,
    max_age: Duration,
    next_sweep: Instant,
    next_heartbeat: Instant,

    failures: VecDeque<Failure>,
    sending_failures: bool,

    remote: HashMap<Box<str>, RemoteKey>,
    /// Origin -> its keys in `remote`.
    counts: HashMap<String, usize>,
    members: HashMap<String, Member>,
    rejected: u64,
    /// Last warning about a write error, to keep logs quiet in an outage.
    last_write_warning: Option<Instant>,
    last_slow_warning: Option<Instant>,
}

pub(super) async fn run(
    cfg: FleetConfig,
    own: Vec<Ban>,
    shared: Arc<Shared>,
    events: mpsc::Sender<FleetEvent>,
) {
    let (nats_events_tx, nats_events) = mpsc::channel(64);
    let now = Instant::now();
    let instance = RandomState::new().hash_one((&cfg.name, SystemTime::now()));
    let mut link = Link {
        cfg: Arc::new(cfg),
        shared,
        instance,
        events,
        out: VecDeque::new(),
        nats_events_tx,
        nats_events,
        state: EngineState::Connecting,
        client: None,
        server: String::new(),
        down: false,
        connecting: None,
        connect_failures: 0,
        setup_failures: 0,
        setup_started: now,
        setup: None,
        retry_at: None,
        store: None,
        watch: None,
        watch_consumer_seq: 0,
        watch_stream_seq: 0,
        audit_suspect: None,
        replay: None,
        replay_progress: now,
        live: false,
        heartbeats: None,
        failures_in: None,
        desired: HashMap::new(),
        published: HashMap::new(),
        dirty: VecDeque::new(),
        dirty_set: HashSet::new(),
        busy: HashSet::new(),
        changed_while_busy: HashSet::new(),
        in_flight: FuturesUnordered::new(),
        max_age: Duration::ZERO,
        next_sweep: now + SWEEP,
        next_heartbeat: now,
        failures: VecDeque::new(),
        sending_failures: false,
        remote: HashMap::new(),
        counts: HashMap::new(),
        members: HashMap::new(),
        rejected: 0,
        last_write_warning: None,
        last_slow_warning: None,
    };
    let today = unix_now();
    for ban in own {
        let net = ban.net;
        if ban.is_active(today) {
            link.desired.insert(net, Ban { net, ..ban });
            link.mark_dirty(net);
        }
    }
    if let Some(until) = link.desired.values().filter_map(|b| b.until).min() {
        link.sweep_by(until);
    }
    link.main().await;
    debug!(member = %link.cfg.name, "fleet link stopped");
}

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
    async fn main(&mut self) {
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

    // ----- state, status, events -----

    fn set_state(&mut self, state: EngineState) {
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

    fn deliver(&mut self, permit: mpsc::Permit<'_, FleetEvent>, events: &mpsc::Sender<FleetEvent>) {
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

    fn publish_status(&self) {
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

    fn drop_failures(&self, n: usize) {
        self.shared
            .failures_dropped
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    fn connected(&self) -> bool {
        self.client.is_some() && !self.down
    }

    // ----- connection -----

    fn start_connect(&mut self) {
        let cfg = self.cfg.clone();
        let events = self.nats_events_tx.clone();
        let seed = self.instance;
        self.connecting = Some(Box::pin(nats::connect(cfg, events, seed)));
    }

    fn on_connect(&mut self, result: Result<Connected, LinkError>) {
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

    fn on_nats_event(&mut self, event: Event) {
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
    fn go_offline(&mut self) {
        self.setup = None;
        self.watch = None;
        self.replay = None;
        self.live = false;
    }

    fn start_setup(&mut self) {
        let Some(client) = self.client.clone() else {
            return;
        };
        self.go_offline();
        self.setup_started = Instant::now();
        self.setup = Some(Box::pin(nats::setup(client, self.cfg.clone())));
    }

    fn on_setup(&mut self, result: Result<Watching, LinkError>) {
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

    // ----- own bans -----

    fn take_outbox(&mut self) {
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

    fn mark_dirty(&mut self, net: Target) {
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
    fn pump(&mut self) {
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

    fn on_done(&mut self, done: Done) {
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
    fn sweep(&mut self) {
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
    fn sweep_by(&mut self, until: u64) {
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
    fn reconcile(&mut self) {
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

    // ----- the bucket -----

    fn on_watch(&mut self, message: Option<Result<jetstream::Message, push::MessagesError>>) {
        match message {
            Some(Ok(message)) => self.on_entry(&message),
            // A missed heartbeat: the consumer is gone (its node died, the
            // server restarted) or unreachable.
            Some(Err(error)) => self.resync(&format!("watch: {error}")),
            None => self.resync("the watch ended"),
        }
    }

    /// Starts over with a fresh watch and replay.
    fn resync(&mut self, why: &str) {
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

    fn finish_replay(&mut self) {
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

    // ----- heartbeats and failures -----

    fn send_heartbeat(&mut self) {
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

    fn send_failures(&mut self) {
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

    fn on_heartbeat(&mut self, message: &async_nats::Message) {
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

    fn on_failures(&mut self, message: &async_nats::Message) {
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

fn decrement(counts: &mut HashMap<String, usize>, origin: &str) {
    if let Some(n) = counts.get_mut(origin) {
        *n -= 1;
        if *n == 0 {
            counts.remove(origin);
        }
    }
}
