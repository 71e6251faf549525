//! The agent: owns the tasks of the pipeline and the one loop that drives the
//! jail engine. Followers send line batches; the loop matches, counts, bans,
//! lifts expired bans, saves state, answers the control socket and metrics,
//! and reloads on SIGHUP. One owner for all mutable state: no locks.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{Notify, mpsc},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    admin::active_bans,
    bpf::{self, BanTable},
    config::{Config, XdpAction},
    control::{self, Call, Request, Response},
    error::{ConfigError, Error},
    jail::Engine,
    metrics::{self, Histogram},
    state::{Journal, Snapshot},
    status::{self, InterfaceStatus, JailStatus, LogStatus, Status},
    watch::{DirWatcher, Follower, LogBatch, follow},
};

/// How often positions and windows are saved while lines flow.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// What the caller of [`run_agent_with`] tells the agent about its setting.
#[derive(Debug, Default, Clone)]
pub struct AgentOptions {
    /// Re-read on SIGHUP and `jailer reload`; `None` refuses reloads.
    pub config_path: Option<PathBuf>,
    /// Attach to added interfaces and detach from removed ones on reload
    /// (the `run` command; tests attach on their own).
    pub manage_xdp: bool,
    /// Interfaces and the mode each was attached in.
    pub attached: Vec<(String, &'static str)>,
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
    snapshot: Snapshot,
    /// Jail indexes per followed log.
    path_jails: HashMap<PathBuf, Vec<usize>>,
    followers: HashMap<PathBuf, (JoinHandle<()>, Arc<Notify>)>,
    watcher: Option<DirWatcher>,
    batches: mpsc::Sender<LogBatch>,
    lines_read: BTreeMap<PathBuf, u64>,
    started: Instant,
    latency: Histogram,
    evictions_reported: u64,
    /// ifindex of each configured interface when last checked (`None`: absent).
    ifindexes: HashMap<String, Option<u32>>,
}

/// Runs the agent until `shutdown` resolves.
pub async fn run_agent_with<T: BanTable + 'static>(
    config: &Config,
    table: T,
    shutdown: impl Future<Output = ()>,
    options: AgentOptions,
) -> Result<(), Error> {
    let now = SystemTime::now();
    let journal = Journal::new(&config.state_dir)?;
    let replay = match journal.compact(now) {
        Ok(replay) => replay,
        Err(e) => {
            warn!(error = %e, "compacting the ban journal failed; reading it as it is");
            journal.replay(now)?
        }
    };
    let mut table = table;
    let monitor = config.xdp_action == XdpAction::Monitor;
    table.set_monitor(monitor)?;
    if monitor {
        info!("monitor mode: bans count would-be drops and drop nothing");
    }
    for jail in &config.jails {
        table.protect(&jail.ports)?;
    }
    let mut engine = Engine::new(config.jails.clone(), table, Some(journal));
    let restored = engine.restore(&replay, now)?;
    if restored > 0 {
        info!(count = restored, "bans restored from the journal");
    }
    let mut snapshot = Snapshot::load(&config.state_dir)?;
    engine.import_windows(std::mem::take(&mut snapshot.windows));

    let (calls_tx, mut calls) = mpsc::channel::<Call>(16);
    let control_task = match control::bind(&config.state_dir) {
        Ok(listener) => Some(tokio::spawn(control::serve(listener, calls_tx.clone()))),
        Err(e) => {
            warn!(error = %e, "no control socket: `jailer status` and `jailer reload` will not reach this agent");
            None
        }
    };
    let metrics_task = match config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Read {
                    path: PathBuf::from(format!("metrics_listen {addr}")),
                    source,
                })?;
            info!(%addr, "serving Prometheus metrics on /metrics");
            Some(tokio::spawn(metrics::serve(listener, calls_tx.clone())))
        }
        None => None,
    };
    drop(calls_tx);

    let (batches, mut rx) = mpsc::channel(64);
    let mut agent = Agent {
        config: config.clone(),
        options,
        engine,
        snapshot,
        path_jails: HashMap::new(),
        followers: HashMap::new(),
        watcher: None,
        batches,
        lines_read: BTreeMap::new(),
        started: Instant::now(),
        latency: Histogram::default(),
        evictions_reported: 0,
        ifindexes: HashMap::new(),
    };
    agent.note_interfaces();
    agent.follow_logs()?;

    let mut hangup = signal(SignalKind::hangup()).map_err(|source| Error::Read {
        path: "SIGHUP handler".into(),
        source,
    })?;
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    let mut dirty = false;
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
            _ = async { tokio::time::sleep_until(next_expiry.expect("guarded")).await }, if next_expiry.is_some() => {
                agent.engine.expire(SystemTime::now());
            }
            _ = tick.tick() => {
                if dirty {
                    agent.save();
                    dirty = false;
                }
                agent.report_evictions();
                agent.check_interfaces();
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
    for (task, _) in agent.followers.values() {
        task.abort();
    }
    for task in [control_task, metrics_task].into_iter().flatten() {
        task.abort();
    }
    let _ = std::fs::remove_file(control::socket_path(&agent.config.state_dir));
    agent.save();
    Ok(())
}

impl<T: BanTable> Agent<T> {
    /// Starts a follower for each log not yet followed, stops those of logs
    /// no jail names any more, and re-arms inotify on their directories.
    fn follow_logs(&mut self) -> Result<(), Error> {
        let mut path_jails: HashMap<PathBuf, Vec<usize>> = HashMap::new();
        for (i, jail) in self.config.jails.iter().enumerate() {
            for path in &jail.logpaths {
                path_jails.entry(path.clone()).or_default().push(i);
            }
        }
        self.followers.retain(|path, (task, _)| {
            let keep = path_jails.contains_key(path);
            if !keep {
                task.abort();
                info!(log = %path.display(), "no longer followed");
            }
            keep
        });
        for path in path_jails.keys() {
            if self.followers.contains_key(path) {
                continue;
            }
            let wake = Arc::new(Notify::new());
            let follower = Follower::open(path, self.snapshot.positions.get(path).copied());
            let task = tokio::spawn(follow(follower, wake.clone(), self.batches.clone()));
            self.followers.insert(path.clone(), (task, wake));
        }
        let wakes: Vec<(PathBuf, Arc<Notify>)> = self
            .followers
            .iter()
            .map(|(p, (_, w))| (p.clone(), w.clone()))
            .collect();
        self.watcher = Some(DirWatcher::new(&wakes).map_err(|source| Error::Watch {
            path: wakes.first().map(|(p, _)| p.clone()).unwrap_or_default(),
            source,
        })?);
        for (path, jails) in &path_jails {
            let names: Vec<&str> = jails
                .iter()
                .map(|&i| self.config.jails[i].name.as_str())
                .collect();
            info!(log = %path.display(), jails = %names.join(","), "following");
        }
        // Wake every follower once: a reload may have added a jail to a log
        // that has unread lines.
        wakes.iter().for_each(|(_, w)| w.notify_one());
        self.path_jails = path_jails;
        Ok(())
    }

    /// Runs a batch through its jails; `true` when a position moved.
    fn handle(&mut self, batch: LogBatch) -> bool {
        let Some(jails) = self.path_jails.get(&batch.source) else {
            return false; // a log dropped by a reload
        };
        let now = SystemTime::now();
        for line in &batch.lines {
            for event in self.engine.handle_line(jails, line, now) {
                self.latency.observe(
                    now.duration_since(event.line_time)
                        .unwrap_or(Duration::ZERO),
                );
            }
        }
        *self.lines_read.entry(batch.source.clone()).or_default() += batch.lines.len() as u64;
        match batch.position {
            Some(pos) => {
                self.snapshot.positions.insert(batch.source, pos);
                true
            }
            None => false,
        }
    }

    fn save(&mut self) {
        self.snapshot.windows = self.engine.export_windows().into_iter().collect();
        if let Err(e) = self.snapshot.save(&self.config.state_dir) {
            warn!(error = %e, "saving log positions failed; a restart may re-read or skip lines");
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
            match bpf::attach(
                &self.config.bpffs,
                &present,
                self.config.xdp_mode,
                self.config.max_bans,
            ) {
                Ok(datapath) => self.options.attached = datapath.attached,
                Err(e) => {
                    warn!(error = %e, "re-attaching XDP failed; retrying when the interface changes again")
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
            Request::Reload => match self.reload() {
                Ok(jails) => Response::Reloaded { jails },
                Err(e) => Response::Error {
                    message: format!("{e:#}"),
                },
            },
        }
    }

    fn status(&self) -> Status {
        let interfaces = if self.options.attached.is_empty() {
            bpf::attached_interfaces(&self.config.bpffs)
                .into_iter()
                .map(|name| InterfaceStatus {
                    mode: status::attach_mode(&name),
                    name,
                })
                .collect()
        } else {
            self.options
                .attached
                .iter()
                .map(|(name, mode)| InterfaceStatus {
                    name: name.clone(),
                    mode: (*mode).to_owned(),
                })
                .collect()
        };
        let jails = self
            .engine
            .jail_report()
            .into_iter()
            .map(|(name, stats, failing, banned)| JailStatus {
                name,
                currently_failed: Some(failing as u64),
                total_failed: Some(stats.total_failed),
                currently_banned: banned.len() as u64,
                total_banned: Some(stats.total_banned),
                ban_errors: Some(stats.ban_errors),
                banned: banned.iter().map(bpf::show).collect(),
            })
            .collect();
        Status {
            source: "agent".into(),
            uptime_secs: Some(self.started.elapsed().as_secs()),
            interfaces,
            packets: status::packet_stats(&self.config.bpffs),
            logs: self
                .path_jails
                .keys()
                .map(|p| LogStatus {
                    path: p.display().to_string(),
                    lines: self.lines_read.get(p).copied().unwrap_or(0),
                })
                .collect(),
            jails,
            bans_in_maps: active_bans(self.engine.table())
                .map(|r| r.len())
                .unwrap_or(0),
            window_evictions: Some(self.engine.evictions()),
        }
    }

    /// Re-reads the config: jails added and removed, logs followed or not,
    /// interfaces attached or detached. Bans are never touched. On any error
    /// the running configuration stays as it was.
    fn reload(&mut self) -> Result<Vec<String>, Error> {
        let result = self.try_reload();
        match &result {
            Ok(jails) => info!(jails = %jails.join(","), "configuration reloaded"),
            Err(e) => warn!(error = %e, "reload refused; the running configuration is unchanged"),
        }
        result
    }

    fn try_reload(&mut self) -> Result<Vec<String>, Error> {
        let path = self.options.config_path.clone().ok_or_else(|| {
            Error::Usage("this agent was started without a config file to reload".into())
        })?;
        let new = Config::load(&path)?;
        if new.jails.is_empty() {
            return Err(ConfigError::NoJail { path }.into());
        }
        if new.bpffs != self.config.bpffs || new.state_dir != self.config.state_dir {
            return Err(Error::Usage(
                "bpffs and state_dir cannot change on reload: restart the agent".into(),
            ));
        }
        if new.metrics_listen != self.config.metrics_listen {
            warn!("metrics_listen changed: it takes effect at the next restart");
        }
        if self.options.manage_xdp
            && (new.interfaces != self.config.interfaces || new.xdp_mode != self.config.xdp_mode)
        {
            if new.interfaces.is_empty() {
                return Err(ConfigError::NoInterface { path }.into());
            }
            let datapath = bpf::attach(&new.bpffs, &new.interfaces, new.xdp_mode, new.max_bans)?;
            self.options.attached = datapath.attached;
        }
        if new.xdp_action != self.config.xdp_action {
            let monitor = new.xdp_action == XdpAction::Monitor;
            self.engine.table_mut().set_monitor(monitor)?;
            info!(monitor, "XDP action changed");
        }
        for jail in &new.jails {
            self.engine.table_mut().protect(&jail.ports)?;
        }
        self.save();
        self.engine.reconfigure(new.jails.clone());
        self.config = new;
        self.note_interfaces();
        self.follow_logs()?;
        Ok(self.engine.jail_names())
    }
}
