//! The fleet link: jailer servers share bans through NATS JetStream.
//!
//! Each member writes its own bans into a KV bucket, one key per origin and
//! target (`mx1.203.0.113.7`, see [`key`]), the value a JSON [`Ban`] with an
//! absolute expiry (see [`wire`]). Every member watches the whole bucket: the
//! history replay gives the current set (handed over as one
//! [`FleetEvent::Snapshot`]), then live puts and deletes become
//! [`FleetEvent::RemoteBan`] / [`FleetEvent::RemoteUnban`]. The caller
//! enforces them; this module never touches the datapath.
//!
//! Why it is shaped this way:
//! - The caller's path never waits on the network: [`FleetHandle`] methods
//!   only record the change in a map (coalesced per target, so its size is
//!   bounded by the number of distinct own bans) and wake the link task.
//! - The link keeps the set of own bans that should be published. On every
//!   (re)connect it replays the bucket, then reconciles: puts what is missing
//!   or different under its origin, deletes what was lifted. Idempotent, so
//!   changes made while disconnected are published when the server returns,
//!   and a crash between a ban and its publication heals itself.
//! - Expiry lives in the value: receivers ignore expired bans and the origin
//!   deletes its own when they lapse. Per-key TTL needs nats-server 2.11; a
//!   bucket `max_age` is only garbage collection (live bans are re-put at
//!   half of it).
//! - Lifting writes a KV delete marker, never a purge: with history 1 the
//!   marker replaces the value anyway, and a purge's rollup made 2.9.10's
//!   live consumers skip a message put on another key at the same moment.
//! - Failures for fleet-wide counting go over core NATS (see `link`).

mod config;
pub mod key;
mod link;
mod nats;
pub mod wire;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use crate::ban::Target;
use tokio::sync::{Notify, mpsc};

pub use self::{
    config::{
        Credentials, DEFAULT_BUCKET, DEFAULT_MAX_AGE, FleetConfig, FleetConfigError, RawFleet,
        TlsConfig, host_name,
    },
    nats::{LinkError, ServerFailure},
    wire::{Ban, Failure, RemoteBan},
};

/// Events from the fleet to the agent, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEvent {
    /// After every (re)connect, once the bucket's history is replayed: the
    /// complete set of remote bans to enforce now (accepted origins only,
    /// unexpired; empty without `enforce`). Diff it against the remote bans
    /// held: lift those missing, add the new ones, leave the rest alone. Live
    /// events follow.
    Snapshot(Vec<RemoteBan>),
    /// A member set (or changed) a ban. Key remote bans by (origin, target):
    /// two members may ban the same target.
    RemoteBan(RemoteBan),
    /// A member lifted its ban on `net`.
    RemoteUnban { origin: String, net: Target },
    /// Failures other members saw, for jails that count fleet-wide.
    Failures {
        origin: String,
        failures: Vec<Failure>,
    },
    /// The link's state changed.
    State(EngineState),
}

/// The link's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineState {
    /// Not connected yet.
    Connecting,
    /// Connected to `server`; `synced` once the bucket has been replayed and
    /// own bans reconciled.
    Connected { server: String, synced: bool },
    /// Lost the connection; the client is reconnecting.
    Disconnected,
    /// Cannot connect or cannot use the bucket; retried in the background.
    /// The message names the server(s).
    Error(String),
}

/// One member as this one sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    /// Unix seconds of its last heartbeat; `None` if only its bans were seen.
    pub last_heard: Option<u64>,
    /// Its unexpired bans in the bucket.
    pub bans: usize,
    /// Whether its bans are applied here.
    pub accepted: bool,
}

/// What [`FleetHandle::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetStatus {
    pub name: String,
    pub state: EngineState,
    /// Every member seen, this one included, by name.
    pub members: Vec<MemberStatus>,
    /// Own bans that should be in the bucket.
    pub own_bans: usize,
    /// Own changes not confirmed by the server yet.
    pub unpublished: usize,
    /// Failures not sent (queue full or disconnected) or not handed over
    /// (agent too slow), since start.
    pub failures_dropped: u64,
    /// Entries in the bucket this member could not use (bad key or value).
    pub rejected: u64,
}

/// Failures waiting to be sent at most; past it new ones are dropped.
const MAX_QUEUED_FAILURES: usize = 4096;

/// Own changes and failures handed from the agent to the link task.
#[derive(Default)]
struct Outbox {
    /// Target -> the ban to publish, or `None` to lift it. Coalesced: a ban
    /// and its unban before the link runs leave one entry.
    bans: HashMap<Target, Option<Ban>>,
    failures: VecDeque<Failure>,
}

struct Shared {
    name: String,
    outbox: Mutex<Outbox>,
    wake: Notify,
    stop: AtomicBool,
    /// Failures dropped by the handle (queue full) and the link (not sent,
    /// not handed over); read live by `status`.
    failures_dropped: AtomicU64,
    status: Mutex<FleetStatus>,
}

// A panic elsewhere while holding a lock leaves plain data behind; keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stops the link when the last handle goes.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

/// The agent's side of the link. Cheap to clone; no method waits on the
/// network or blocks for longer than a short lock.
#[derive(Clone)]
pub struct FleetHandle {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

/// Capacity of the event channel to the agent. The link buffers further
/// events itself (bounded, see `link`), so a slow agent slows the bucket
/// replay (JetStream flow control) instead of losing bans.
pub const EVENT_CHANNEL: usize = 1024;

/// Starts the link.
pub struct Fleet;

impl Fleet {
    /// Starts the link task on the current tokio runtime and returns at once:
    /// connecting, retries and errors happen in the background and are
    /// reported as [`FleetEvent::State`]. `own` is this server's active bans
    /// (restored from its journal): what its origin should hold in the bucket.
    pub fn start(config: FleetConfig, own: Vec<Ban>) -> (FleetHandle, mpsc::Receiver<FleetEvent>) {
        let (events, rx) = mpsc::channel(EVENT_CHANNEL);
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            outbox: Mutex::default(),
            wake: Notify::new(),
            stop: AtomicBool::new(false),
            failures_dropped: AtomicU64::new(0),
            status: Mutex::new(FleetStatus {
                name: config.name.clone(),
                state: EngineState::Connecting,
                members: Vec::new(),
                own_bans: own.len(),
                unpublished: own.len(),
                failures_dropped: 0,
                rejected: 0,
            }),
        });
        tokio::spawn(link::run(config, own, shared.clone(), events));
        let handle = FleetHandle {
            _stop: Arc::new(StopOnDrop(shared.clone())),
            shared,
        };
        (handle, rx)
    }
}

impl FleetHandle {
    /// This member's name (the origin of what it publishes).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Publishes a ban this server decided (never one received from the
    /// fleet: those are not re-published). Replaces an earlier ban on the
    /// same target.
    pub fn publish_ban(&self, ban: Ban) {
        lock(&self.shared.outbox).bans.insert(ban.net, Some(ban));
        self.shared.wake.notify_one();
    }

    /// Withdraws this server's ban on `net` (lifted or expired).
    pub fn publish_unban(&self, net: Target) {
        lock(&self.shared.outbox).bans.insert(net, None);
        self.shared.wake.notify_one();
    }

    /// Shares a failure seen in a jail that counts fleet-wide. Best effort:
    /// dropped (and counted) when the queue is full or the link is down.
    pub fn publish_failure(&self, failure: Failure) {
        let mut outbox = lock(&self.shared.outbox);
        if outbox.failures.len() >= MAX_QUEUED_FAILURES {
            self.shared.failures_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        outbox.failures.push_back(failure);
        drop(outbox);
        self.shared.wake.notify_one();
    }

    /// Shares a failure of `ip` in `jail` at unix time `at`.
    pub fn publish_failure_of(&self, jail: &str, ip: IpAddr, at: u64) {
        self.publish_failure(Failure {
            jail: jail.to_owned(),
            ip,
            at,
        });
    }

    /// The link's state, members and counters (updated about every second,
    /// and at once on state changes).
    pub fn status(&self) -> FleetStatus {
        let mut status = lock(&self.shared.status).clone();
        status.failures_dropped = self.shared.failures_dropped.load(Ordering::Relaxed);
        status
    }

    /// Stops the link (also done when the last handle is dropped). The event
    /// channel closes once the task has ended and dropped its connection.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}
