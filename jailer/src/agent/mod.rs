//! The agent on top of the pipeline: it owns the tasks and the one loop
//! that drives the jail engine. Followers send line batches; the loop
//! matches, counts, bans, journals, lifts expired bans, saves state, answers
//! the control socket and metrics, and reloads on SIGHUP. One owner for all
//! mutable state: no locks.

pub mod control;
mod fleet;
mod interfaces;
pub mod metrics;
mod reload;
mod restore;
mod sources;
pub mod status;

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};
use tracing::{info, warn};

pub use self::fleet::{EnforcedBans, FleetReport, MemberReport};
pub use self::restore::JournalRead;
use self::{
    control::{Call, Request, Response},
    metrics::Histogram,
    restore::restoration,
    sources::Followed,
};
use crate::{
    config::{Config, XdpAction},
    error::{Chain, Error},
    host,
    jail::{self, Engine, Restoration},
    kernel::{Attached, BanTable},
    source::{DirWatcher, LogBatch, Resume, SourceId},
    state::{self, AgentLock, Journal, Record, Snapshot},
};

/// How often positions and windows are saved, and the journal synced,
/// while lines flow.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// Batches in flight between the followers and the loop: with
/// `source::BATCH_BYTES` each, a bound on what a log burst can hold.
const BATCHES_IN_FLIGHT: usize = 8;

/// What the caller of [`run_agent_with`] tells the agent about its setting.
#[derive(Debug, Default)]
pub struct AgentOptions {
    /// Re-read on SIGHUP and `jailer reload`; `None` refuses reloads.
    pub config_path: Option<PathBuf>,
    /// Attach to added interfaces and detach from removed ones on reload
    /// (the `run` command; tests attach on their own).
    pub manage_xdp: bool,
    /// Interfaces and the mode each was attached in.
    pub attached: Vec<Attached>,
    /// The state directory's lock, when the caller took it before
    /// attaching; otherwise the agent takes it.
    pub lock: Option<AgentLock>,
    /// Told once every log is open at its starting position and the control
    /// socket answers: lines appended from then on are read.
    pub ready: Option<oneshot::Sender<()>>,
    /// The ban journal, when the caller started reading it before attaching
    /// the XDP program (`jailer run`: after a reboot a million bans are read
    /// meanwhile); otherwise the agent reads it.
    pub journal: Option<JournalRead>,
}

/// [`run_agent_with`] with no reload, no XDP management.
pub async fn run_agent<T: BanTable + 'static>(
    config: &Config,
    table: T,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    run_agent_with(config, table, shutdown, AgentOptions::default()).await
}

struct Agent<T: BanTable> {
    config: Config,
    options: AgentOptions,
    engine: Engine<T>,
    journal: Journal,
    /// Where the journal was read up to: records others append after it
    /// (`jailer ban`/`unban`) are taken in. `None` until it was first read.
    journal_offset: Option<u64>,
    /// Ban records not written yet (the journal was busy being compacted).
    unjournaled: Vec<Record>,
    /// Records appended since the journal was last synced to disk.
    unsynced: bool,
    snapshot: Snapshot,
    /// Jail indexes per followed source.
    source_jails: HashMap<SourceId, Vec<usize>>,
    followers: HashMap<SourceId, Followed>,
    watcher: Option<DirWatcher>,
    batches: mpsc::Sender<LogBatch>,
    lines_read: BTreeMap<SourceId, u64>,
    started: Instant,
    latency: Histogram,
    evictions_reported: u64,
    /// ifindex of each configured interface when last checked (`None`: absent).
    ifindexes: HashMap<String, Option<u32>>,
    /// The fleet link (`[fleet]`), started once the journal is read.
    fleet: Option<fleet::Link>,
}

/// Runs the agent until `shutdown` resolves.
pub async fn run_agent_with<T: BanTable + 'static>(
    config: &Config,
    table: T,
    shutdown: impl Future<Output = ()>,
    mut options: AgentOptions,
) -> Result<(), Error> {
    state::prepare_state_dir(&config.state_dir)?;
    let _lock = match options.lock.take() {
        Some(lock) => lock,
        None => AgentLock::acquire(&config.state_dir)?,
    };
    let now = SystemTime::now();
    let journal = Journal::new(&config.state_dir);
    let mut table = table;
    // The journal is read (and compacted) on another thread while the logs
    // are already followed: a restart with a million bans pinned must not
    // wait for it. After a reboot the maps are empty and the restore writes
    // them; until then the bans survive in the maps anyway.
    let maps_empty = table.is_empty()?;
    // The restore writes the bans the maps lack (all of them after a
    // reboot) through handles of its own (one per core: the kernel inserts
    // in parallel), while this one serves the loop.
    let mut writers = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    for _ in 0..cores {
        match table.bulk_writer() {
            Ok(Some(writer)) => writers.push(writer),
            Ok(None) => break,
            Err(e) => {
                warn!(error = %Chain(&e), "restoring through the agent's own handle on the maps");
                writers.clear();
                break;
            }
        }
    }
    let restoring = {
        let read = options
            .journal
            .take()
            .unwrap_or_else(|| JournalRead::start(&config.state_dir, now));
        let counted = jail::counted_jails(&config.jails);
        tokio::task::spawn_blocking(move || restoration(read, now, maps_empty, &counted, writers))
    };
    let monitor = config.xdp_action == XdpAction::Monitor;
    table.set_monitor(monitor)?;
    if monitor {
        info!("monitor mode: bans count would-be drops and drop nothing");
    }
    for jail in &config.jails {
        table.protect(&jail.ports)?;
    }
    let mut engine = Engine::new(config.jails.clone(), table);
    engine.set_own_addresses(host::own_addresses());
    engine.set_ignoreip(config.ignoreip.clone());
    let mut snapshot = Snapshot::load(&config.state_dir)?;
    engine.import_windows(std::mem::take(&mut snapshot.windows), now);

    let (calls_tx, mut calls) = mpsc::channel::<Call>(16);
    let metrics_task = match config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Io {
                    path: PathBuf::from(format!("metrics_listen {addr}")),
                    source,
                })?;
            info!(%addr, "serving Prometheus metrics on /metrics");
            Some(tokio::spawn(metrics::serve(listener, calls_tx.clone())))
        }
        None => None,
    };

    let (batches, mut rx) = mpsc::channel(BATCHES_IN_FLIGHT);
    let mut agent = Agent {
        config: config.clone(),
        options,
        engine,
        journal,
        journal_offset: None,
        unjournaled: Vec::new(),
        unsynced: false,
        snapshot,
        source_jails: HashMap::new(),
        followers: HashMap::new(),
        watcher: None,
        batches,
        lines_read: BTreeMap::new(),
        started: Instant::now(),
        latency: Histogram::default(),
        evictions_reported: 0,
        ifindexes: HashMap::new(),
        fleet: None,
    };
    agent.note_interfaces();
    let watcher = agent.watch(&agent.config)?;
    // Journals open on their own tasks: ready means they too are positioned,
    // so nothing appended from then on is missed.
    for opened in agent.follow_logs(watcher) {
        let _ = opened.await;
    }
    // Bound last: a socket that answers means the logs are followed.
    let control_task = match control::bind(&config.state_dir) {
        Ok(listener) => Some(tokio::spawn(control::serve(listener, calls_tx))),
        Err(e) => {
            warn!(error = %Chain(&e), "no control socket: `jailer status` and `jailer reload` will not reach this agent");
            None
        }
    };
    if let Some(ready) = agent.options.ready.take() {
        let _ = ready.send(());
    }

    let mut hangup = signal(SignalKind::hangup()).map_err(|source| Error::Io {
        path: "SIGHUP handler".into(),
        source,
    })?;
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    let mut dirty = false;
    tokio::pin!(restoring);
    let mut restored = false;
    loop {
        let next_expiry = agent.engine.next_expiry().map(|t| {
            tokio::time::Instant::now()
                + t.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
        });
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                dirty |= agent.handle(batch);
            }
            () = async {
                match next_expiry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                agent.engine.expire(SystemTime::now());
            }
            done = &mut restoring, if !restored => {
                restored = true;
                match done {
                    Ok(Ok((restoration, offset))) => agent.restore(restoration, offset),
                    Ok(Err(e)) => {
                        warn!(error = %Chain(&e), "reading the ban journal failed: bans in the maps stay, expiry and repeat counts start afresh");
                        agent.restore(Restoration::default(), agent.journal.size().unwrap_or(0));
                    }
                    Err(_) => {
                        warn!("reading the ban journal stopped");
                        agent.restore(Restoration::default(), agent.journal.size().unwrap_or(0));
                    }
                }
                agent.start_fleet();
            }
            event = fleet::next_event(&mut agent.fleet) => match event {
                Some(event) => agent.on_fleet(event),
                None => {
                    warn!("the fleet link stopped; local bans go on");
                    agent.fleet = None;
                }
            },
            _ = tick.tick() => {
                if dirty {
                    agent.save();
                    dirty = false;
                }
                agent.write_journal();
                agent.sync_journal();
                agent.read_journal();
                agent.report_evictions();
                agent.check_interfaces();
                agent.engine.set_own_addresses(host::own_addresses());
            }
            Some((request, reply)) = calls.recv() => {
                let response = agent.answer(request);
                let _ = reply.send(response);
            }
            _ = hangup.recv() => {
                info!("SIGHUP: reloading the configuration");
                let _ = agent.reload();
            }
            () = &mut shutdown => break,
        }
    }
    for followed in agent.followers.values() {
        followed.task.abort();
    }
    for task in [control_task, metrics_task].into_iter().flatten() {
        task.abort();
    }
    agent.leave_fleet().await;
    // Ours to remove: we hold the state directory's lock.
    let _ = std::fs::remove_file(control::socket_path(&agent.config.state_dir));
    agent.save();
    if !agent.unjournaled.is_empty()
        && let Err(e) = agent.journal.append(&agent.unjournaled, false)
    {
        warn!(error = %Chain(&e), "bans could not be journaled at shutdown");
    }
    agent.sync_journal();
    Ok(())
}

impl<T: BanTable> Agent<T> {
    /// Runs a batch through its jails and journals the bans it made;
    /// `true` when a position moved.
    fn handle(&mut self, batch: LogBatch) -> bool {
        let Some(jails) = self.source_jails.get(&batch.source) else {
            return false; // a source dropped by a reload
        };
        let now = SystemTime::now();
        let mut bans = Vec::new();
        for (line, time) in batch.lines.iter_timed() {
            let events = self
                .engine
                .handle_line(&batch.source, jails, line, time, now);
            for _ in &events {
                // From reading the line to the map write, monotonic.
                self.latency.observe(batch.read_at.elapsed());
            }
            bans.extend(events);
        }
        self.publish_bans(&bans);
        self.publish_failures();
        self.unjournaled.extend(self.engine.take_records());
        self.write_journal();
        *self.lines_read.entry(batch.source.clone()).or_default() += batch.lines.len() as u64;
        match (batch.source, batch.resume) {
            (SourceId::File(path), Some(Resume::File(pos))) => {
                self.snapshot.positions.insert(path, pos);
                true
            }
            (SourceId::Journal(jail), Some(Resume::Journal(cursor))) => {
                self.snapshot.cursors.insert(jail, cursor);
                true
            }
            _ => false,
        }
    }

    /// Takes in what others appended to the journal since it was last read.
    fn read_journal(&mut self) -> usize {
        let Some(offset) = self.journal_offset else {
            return 0; // the journal has not been read yet
        };
        match self.journal.read_from(offset, SystemTime::now()) {
            Ok((records, offset)) => {
                self.journal_offset = Some(offset);
                let changes = self.engine.apply_records(&records);
                self.publish_changes(&changes);
                records.len()
            }
            Err(e) => {
                warn!(error = %Chain(&e), "reading the ban journal failed");
                0
            }
        }
    }

    /// Appends the bans not journaled yet; if the journal is being
    /// compacted, they wait for the next batch or tick (never the loop).
    fn write_journal(&mut self) {
        if self.unjournaled.is_empty() {
            return;
        }
        match self.journal.try_append(&self.unjournaled) {
            Ok(true) => {
                self.unjournaled.clear();
                self.unsynced = true;
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %Chain(&e), bans = self.unjournaled.len(), "bans are enforced but could not be journaled; they will not survive a reboot");
                self.unjournaled.clear();
            }
        }
    }

    /// Group commit: bans of the last second reach the disk together.
    fn sync_journal(&mut self) {
        if std::mem::take(&mut self.unsynced)
            && let Err(e) = self.journal.sync()
        {
            warn!(error = %Chain(&e), "syncing the ban journal failed");
        }
    }

    fn save(&mut self) {
        self.snapshot.windows = self.engine.export_windows();
        if let Err(e) = self.snapshot.save(&self.config.state_dir) {
            warn!(error = %Chain(&e), "saving log positions failed; a restart may re-read or skip lines");
        }
    }

    fn report_evictions(&mut self) {
        let total = self.engine.evictions();
        if total > self.evictions_reported {
            warn!(
                evicted = total - self.evictions_reported,
                total, "failure windows evicted: more failing addresses than a jail tracks"
            );
            self.evictions_reported = total;
        }
    }

    fn answer(&mut self, request: Request) -> Response {
        match request {
            Request::Status => Response::Status {
                status: self.status(),
            },
            Request::Metrics => Response::Metrics {
                text: metrics::render(&self.status(), self.engine.unbans(), &self.latency),
            },
            Request::JournalChanged => Response::JournalRead {
                records: self.read_journal(),
            },
            Request::Fleet => match self.fleet_report() {
                Some(report) => Response::Fleet { report },
                None => Response::Error {
                    message: "this agent has no [fleet] configured".into(),
                },
            },
            Request::Reload => match self.reload() {
                Ok(jails) => Response::Reloaded { jails },
                Err(e) => Response::Error {
                    message: Chain(&e).to_string(),
                },
            },
        }
    }
}
