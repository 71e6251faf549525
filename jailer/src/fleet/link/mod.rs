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

mod connection;
mod event_loop;
mod own_bans;
mod peers;
mod status;
mod watch;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    hash::{BuildHasher, RandomState},
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::ban::Target;
use async_nats::{
    Client, Event, Subscriber,
    jetstream::{consumer::push, kv},
};
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::debug;

use super::{
    Ban, EngineState, FleetConfig, FleetEvent, RemoteBan, Shared,
    nats::{Connected, LinkError, Watching},
    wire::Failure,
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
