//! The agent on top of the pipeline: it owns the tasks and the one loop
//! that drives the jail engine. Followers send line batches; the loop
//! matches, counts, bans, journals, lifts expired bans, saves state, answers
//! the control socket and metrics, and reloads on SIGHUP. One owner for all
//! mutable state: no locks.

pub mod control;
mod fleet;
pub mod metrics;
mod reload;
pub mod status;

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{Notify, mpsc, oneshot},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

pub use self::fleet::{EnforcedBans, FleetReport, MemberReport};
use self::{
    control::{Call, Request, Response},
    metrics::Histogram,
};
use crate::{
    config::{Backend, Config, XdpAction},
    error::{Chain, Error},
    host,
    jail::{self, Engine, Restoration},
    kernel::{self, Attached, BanTable},
    source::{
        DirWatcher, Follower, JournalLocation, JournalMatch, LogBatch, Resume, SourceError,
        SourceId, follow, follow_journal,
    },
    state::{self, AgentLock, Journal, Record, Replay, Snapshot},
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

/// The ban journal read (compacted when that pays) on a thread of its own.
#[derive(Debug)]
pub struct JournalRead {
    thread: std::thread::JoinHandle<Result<(Replay, u64), Error>>,
    started: Instant,
}

impl JournalRead {
    /// Starts reading the journal of `state_dir` as of `now`.
    pub fn start(state_dir: &std::path::Path, now: SystemTime) -> Self {
        let journal = Journal::new(state_dir);
        Self {
            thread: std::thread::spawn(move || read_journal(&journal, now)),
            started: Instant::now(),
        }
    }

    /// The replay and the journal's size after it; how long it has been.
    fn wait(self) -> Result<(Replay, u64, Duration), Error> {
        let (replay, size) = self
            .thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok((replay, size, self.started.elapsed()))
    }
}

/// The journal replayed (compacted when that pays), and its size then
/// (where later records start).
fn read_journal(journal: &Journal, now: SystemTime) -> Result<(Replay, u64), Error> {
    match journal.compact_if_worth_it(now) {
        Ok(done) => Ok(done),
        Err(e) => {
            warn!(error = %Chain(&e), "compacting the ban journal failed; reading it as it is");
            let size = journal.size()?;
            Ok((journal.replay(now)?, size))
        }
    }
}

/// [`run_agent_with`] with no reload, no XDP management.
pub async fn run_agent<T: BanTable + 'static>(
    config: &Config,
    table: T,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    run_agent_with(config, table, shutdown, AgentOptions::default()).await
}

/// A followed source: its task, and how to wake it (files only: journal
/// sources wake on their own).
struct Followed {
    task: JoinHandle<()>,
    wake: Option<Arc<Notify>>,
}

/// What following a configuration's sources needs, prepared (fallibly)
/// before anything changes.
struct Watch {
    watcher: DirWatcher,
    /// A wake-up per log file.
    wakes: HashMap<PathBuf, Arc<Notify>>,
    /// Per jail reading the journal: where, and which entries.
    journals: HashMap<String, (JournalLocation, JournalMatch)>,
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
    // After a reboot the restore writes the maps there too, through
    // handles of its own (one per core: the kernel inserts in parallel),
    // while this one serves the loop.
    let mut writers = Vec::new();
    if maps_empty {
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

/// The journal read and prepared for the engine, off the loop, the bans in
/// force written through `writers` when the maps are empty; and the
/// journal's size then (where later records start).
fn restoration(
    read: JournalRead,
    now: SystemTime,
    maps_empty: bool,
    counted: &[String],
    mut writers: Vec<Box<dyn BanTable>>,
) -> Result<(Restoration, u64), Error> {
    let (replay, size, read) = read.wait()?;
    let start = Instant::now();
    let restoration = if maps_empty && !writers.is_empty() {
        Restoration::prepare_writing(&replay, now, counted, &mut writers)?
    } else {
        Restoration::prepare(&replay, now, maps_empty, counted)
    };
    debug!(
        records = replay.records,
        read_ms = read.as_millis(),
        prepared_ms = start.elapsed().as_millis(),
        "ban journal read"
    );
    Ok((restoration, size))
}

impl<T: BanTable> Agent<T> {
    /// Jail indexes per source of `config`: each log file, and the
    /// journal of each jail that reads it.
    fn source_jails(&self, config: &Config) -> HashMap<SourceId, Vec<usize>> {
        let mut sources: HashMap<SourceId, Vec<usize>> = HashMap::new();
        for (i, jail) in config.jails.iter().enumerate() {
            match jail.backend {
                Backend::Auto => {
                    for path in &jail.logpaths {
                        sources
                            .entry(SourceId::File(path.clone()))
                            .or_default()
                            .push(i);
                    }
                }
                Backend::Systemd => sources
                    .entry(SourceId::Journal(jail.name.clone()))
                    .or_default()
                    .push(i),
            }
        }
        sources
    }

    /// inotify on the directories of the log files in `sources`, with a
    /// wake-up per file (followers already running keep theirs); the
    /// journalmatch of each journal source, parsed. Fallible, and done
    /// before anything changes, so a reload that cannot watch or parse
    /// changes nothing.
    fn watch(&self, config: &Config) -> Result<Watch, Error> {
        let sources = self.source_jails(config);
        let mut wakes = HashMap::new();
        let mut journals = HashMap::new();
        for (source, jails) in &sources {
            match source {
                SourceId::File(path) => {
                    let wake = self
                        .followers
                        .get(source)
                        .and_then(|f| f.wake.clone())
                        .unwrap_or_else(|| Arc::new(Notify::new()));
                    wakes.insert(path.clone(), wake);
                }
                SourceId::Journal(name) => {
                    let Some(jail) = jails.first().and_then(|&i| config.jails.get(i)) else {
                        continue;
                    };
                    let matches = JournalMatch::parse(&jail.journalmatch).map_err(|source| {
                        SourceError::Journalmatch {
                            jail: name.clone(),
                            source,
                        }
                    })?;
                    let location = jail
                        .journalpath
                        .clone()
                        .map_or(JournalLocation::System, JournalLocation::Directory);
                    journals.insert(name.clone(), (location, matches));
                }
            }
        }
        let list: Vec<(PathBuf, Arc<Notify>)> =
            wakes.iter().map(|(p, w)| (p.clone(), w.clone())).collect();
        let watcher = DirWatcher::new(&list).map_err(|source| SourceError::Watch {
            path: list.first().map(|(p, _)| p.clone()).unwrap_or_default(),
            source,
        })?;
        Ok(Watch {
            watcher,
            wakes,
            journals,
        })
    }

    /// Starts a follower for each source not yet followed, stops those no
    /// jail reads any more, and installs the new watcher. Infallible: the
    /// fallible part is [`Agent::watch`]. Returns, per journal started, when
    /// it has been opened at its starting position (files are opened here).
    fn follow_logs(&mut self, watch: Watch) -> Vec<oneshot::Receiver<()>> {
        let mut opening = Vec::new();
        let sources = self.source_jails(&self.config);
        self.followers.retain(|source, followed| {
            let keep = sources.contains_key(source);
            if !keep {
                followed.task.abort();
                info!(%source, "no longer followed");
            }
            keep
        });
        for (path, wake) in watch.wakes {
            let source = SourceId::File(path);
            if self.followers.contains_key(&source) {
                continue;
            }
            let SourceId::File(path) = &source else {
                continue;
            };
            let follower = Follower::open(path, self.snapshot.positions.get(path).copied());
            let task = tokio::spawn(follow(follower, wake.clone(), self.batches.clone()));
            self.followers.insert(
                source,
                Followed {
                    task,
                    wake: Some(wake),
                },
            );
        }
        for (jail, (location, matches)) in watch.journals {
            let source = SourceId::Journal(jail.clone());
            if let Some(old) = self.followers.remove(&source) {
                // The journalmatch or path may have changed: start afresh
                // from the last entry handled.
                old.task.abort();
            }
            let cursor = self.snapshot.cursors.get(&jail).cloned();
            let (opened, is_opened) = oneshot::channel();
            opening.push(is_opened);
            let task = tokio::spawn(follow_journal(
                jail,
                location,
                matches,
                cursor,
                self.batches.clone(),
                opened,
            ));
            self.followers.insert(source, Followed { task, wake: None });
        }
        self.watcher = Some(watch.watcher);
        for (source, jails) in &sources {
            let names: Vec<&str> = jails
                .iter()
                .map(|&i| self.config.jails[i].name.as_str())
                .collect();
            info!(%source, jails = %names.join(","), "following");
        }
        // Wake every file follower once: a reload may have added a jail to
        // a log that has unread lines.
        self.followers
            .values()
            .filter_map(|f| f.wake.as_ref())
            .for_each(|w| w.notify_one());
        self.source_jails = sources;
        opening
    }

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

    /// Takes in the journal read at start.
    fn restore(&mut self, restoration: Restoration, offset: u64) {
        let to_write = restoration.to_write();
        match self.engine.restore(restoration) {
            Ok(n) if n > 0 => info!(
                count = n,
                "bans restored from the journal into the empty maps"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %Chain(&e), wanted = to_write, "restoring bans failed"),
        }
        // Bans met in the maps before the journal was read, missing from it.
        self.unjournaled.extend(self.engine.take_records());
        self.write_journal();
        self.journal_offset = Some(offset);
        // Whatever was appended since the journal was read.
        self.read_journal();
        // Reading a million bans leaves a lot freed: give it back.
        // SAFETY: malloc_trim only returns free heap memory to the system.
        unsafe { libc::malloc_trim(0) };
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

    fn note_interfaces(&mut self) {
        self.ifindexes = self
            .config
            .interfaces
            .iter()
            .map(|i| (i.clone(), nix::net::if_::if_nametoindex(i.as_str()).ok()))
            .collect();
    }

    /// An interface removed and added again is a new device: its old XDP
    /// link died with it. Seen on the next tick, it gets the program again.
    fn check_interfaces(&mut self) {
        if !self.options.manage_xdp {
            return;
        }
        let mut returned = false;
        for iface in &self.config.interfaces {
            let now = nix::net::if_::if_nametoindex(iface.as_str()).ok();
            let before = self.ifindexes.get(iface).copied().flatten();
            if now == before {
                continue;
            }
            match now {
                None => warn!(%iface, "interface gone; XDP is attached again when it returns"),
                Some(_) => {
                    info!(%iface, "interface (re)appeared; attaching XDP");
                    returned = true;
                }
            }
            self.ifindexes.insert(iface.clone(), now);
        }
        if returned {
            let present: Vec<String> = self
                .config
                .interfaces
                .iter()
                .filter(|i| self.ifindexes.get(*i).copied().flatten().is_some())
                .cloned()
                .collect();
            match kernel::attach(
                &self.config.bpffs,
                &present,
                self.config.xdp_mode,
                self.config.max_bans,
            ) {
                Ok(datapath) => self.options.attached = datapath.attached,
                Err(e) => {
                    warn!(error = %Chain(&e), "re-attaching XDP failed; retrying when the interface changes again")
                }
            }
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
