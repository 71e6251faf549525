//! jailer: fail2ban's job (jails, filters, maxretry/findtime/bantime) with
//! bans enforced by an XDP program.
//!
//! Pipeline, one module per stage: log source ([`watch`]) -> matcher
//! ([`detect`], [`timestamp`]) -> failure window ([`window`]) -> ban decision
//! and expiry ([`jail`]) -> kernel maps ([`bpf`]); [`state`] keeps what must
//! survive restarts.

pub mod admin;
pub mod bpf;
pub mod cli;
pub mod clock;
pub mod config;
pub mod detect;
pub mod duration;
pub mod error;
pub mod jail;
pub mod ports;
pub mod regex_cmd;
pub mod state;
pub mod timestamp;
pub mod watch;
pub mod window;

use std::{
    collections::BTreeMap,
    future::Future,
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};

use crate::{
    admin::{active_bans, ban_value, format_table, write_ban},
    bpf::{BanTable, XdpBanTable},
    cli::{Cli, Command},
    clock::unix_secs,
    config::Config,
    duration::parse_bantime,
    error::{ConfigError, Error},
    jail::Engine,
    ports::PortSet,
    state::{Journal, Record, Snapshot},
    watch::{DirWatcher, Follower, follow},
};

pub use crate::error::Error as JailerError;

/// Runs a parsed command line.
pub fn main(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Regex(args) => regex_cmd::run(&args),
        Command::Run => {
            let config = Config::load(&cli.config)?;
            if config.interfaces.is_empty() {
                return Err(ConfigError::NoInterface { path: config.path }.into());
            }
            if config.jails.is_empty() {
                return Err(ConfigError::NoJail { path: config.path }.into());
            }
            let datapath = bpf::attach(&config.bpffs, &config.interfaces, config.xdp_mode)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|source| Error::Read {
                    path: "tokio runtime".into(),
                    source,
                })?;
            runtime.block_on(run_agent(&config, datapath.bans, shutdown_signal()))
        }
        Command::Ban(args) => {
            let config = Config::load_or_default(&cli.config)?;
            let addr = parse_addr(&args.ip)?;
            let ports =
                PortSet::parse(&args.port).map_err(|e| Error::Usage(format!("--port: {e}")))?;
            let duration =
                parse_bantime(&args.time).map_err(|e| Error::Usage(format!("--time: {e}")))?;
            let (mut table, created) = XdpBanTable::open(&config.bpffs)?;
            write_ban(&mut table, addr, ban_value(&ports, duration))?;
            let now = SystemTime::now();
            let journaled = Journal::new(&config.state_dir).and_then(|j| {
                j.append(&Record::Ban {
                    addr,
                    jail: "manual".into(),
                    ports: ports.to_string(),
                    until: duration.map(|d| unix_secs(now + d)),
                    at: unix_secs(now),
                })
            });
            if let Err(e) = journaled {
                warn!(error = %e, "ban is enforced but not journaled: it will not be restored after a reboot");
            }
            let how_long = duration.map_or("permanently".to_owned(), |d| {
                format!("for {}", duration::format_duration(d))
            });
            println!("banned {addr} on ports {ports} {how_long}");
            if created || bpf::attached_interfaces(&config.bpffs).is_empty() {
                eprintln!(
                    "note: no interface has the XDP program attached yet; the ban takes effect once `jailer run` attaches it"
                );
            }
            Ok(())
        }
        Command::Unban(args) => {
            let config = Config::load_or_default(&cli.config)?;
            let mut table = XdpBanTable::open_existing(&config.bpffs)?;
            let journal = Journal::new(&config.state_dir);
            let now = unix_secs(SystemTime::now());
            if args.all {
                let all = table.list()?;
                for (addr, _) in &all {
                    table.remove(*addr)?;
                }
                if let Err(e) = journal.and_then(|j| j.append(&Record::UnbanAll { at: now })) {
                    warn!(error = %e, "unban not journaled");
                }
                println!("unbanned {} address(es)", all.len());
                return Ok(());
            }
            let ip = args.ip.as_deref().unwrap_or_default();
            let addr = parse_addr(ip)?;
            let existed = table.remove(addr)?;
            if let Err(e) = journal.and_then(|j| j.append(&Record::Unban { addr, at: now })) {
                warn!(error = %e, "unban not journaled");
            }
            if existed {
                println!("unbanned {addr}");
                Ok(())
            } else {
                Err(Error::Usage(format!("{addr} is not banned")))
            }
        }
        Command::List { json } => {
            let config = Config::load_or_default(&cli.config)?;
            let table = XdpBanTable::open_existing(&config.bpffs)?;
            let rows = active_bans(&table)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("rows serialize")
                );
            } else {
                print!("{}", format_table(&rows));
            }
            Ok(())
        }
        Command::Detach => {
            let config = Config::load_or_default(&cli.config)?;
            let detached = bpf::detach(&config.bpffs)?;
            if detached.is_empty() {
                println!(
                    "nothing attached under {}; pins removed",
                    config.bpffs.display()
                );
            } else {
                println!(
                    "detached from {}; pins under {} removed",
                    detached.join(", "),
                    config.bpffs.display()
                );
            }
            Ok(())
        }
    }
}

/// Exit status for an error (see [`Error::exit_code`]).
pub fn exit_code(err: &Error) -> u8 {
    err.exit_code()
}

fn parse_addr(text: &str) -> Result<IpAddr, Error> {
    text.trim()
        .parse::<IpAddr>()
        .map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        })
        .map_err(|_| Error::Usage(format!("`{text}` is not an IPv4 or IPv6 address")))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down; the XDP program stays attached and bans stay enforced");
}

/// How often positions and windows are saved while lines flow.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// The agent: follows every jail's logs, bans through `table`, lifts bans
/// when due, and saves its state; returns when `shutdown` resolves.
pub async fn run_agent<T: BanTable + 'static>(
    config: &Config,
    table: T,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let now = SystemTime::now();
    let journal = Journal::new(&config.state_dir)?;
    let replay = journal.replay(now)?;
    if let Err(e) = journal.compact(now) {
        warn!(error = %e, "compacting the ban journal failed");
    }
    let mut engine = Engine::new(config.jails.clone(), table, Some(journal));
    let restored = engine.restore(&replay, now)?;
    if restored > 0 {
        info!(count = restored, "bans restored from the journal");
    }
    let mut snapshot = Snapshot::load(&config.state_dir)?;
    engine.import_windows(std::mem::take(&mut snapshot.windows));

    // Each log path is followed once, whatever the number of jails on it.
    let mut sources: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
    for (i, jail) in config.jails.iter().enumerate() {
        for path in &jail.logpaths {
            sources.entry(path.clone()).or_default().push(i);
        }
    }
    let sources: Vec<(PathBuf, Vec<usize>)> = sources.into_iter().collect();
    let (tx, mut rx) = mpsc::channel(64);
    let mut wakes = Vec::new();
    let mut tasks = Vec::new();
    for (source, (path, _)) in sources.iter().enumerate() {
        let wake = Arc::new(Notify::new());
        wakes.push((path.clone(), wake.clone()));
        let follower = Follower::open(path, snapshot.positions.get(path).copied());
        tasks.push(tokio::spawn(follow(follower, source, wake, tx.clone())));
    }
    drop(tx);
    let _watcher = DirWatcher::new(&wakes).map_err(|source| Error::Watch {
        path: wakes.first().map(|(p, _)| p.clone()).unwrap_or_default(),
        source,
    })?;
    for (path, jails) in &sources {
        let names: Vec<&str> = jails
            .iter()
            .map(|&i| config.jails[i].name.as_str())
            .collect();
        info!(log = %path.display(), jails = %names.join(","), "following");
    }

    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    let mut dirty = false;
    loop {
        let next_expiry = engine.next_expiry().map(|t| {
            tokio::time::Instant::now()
                + t.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
        });
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                let jails = &sources[batch.source].1;
                let now = SystemTime::now();
                for line in &batch.lines {
                    engine.handle_line(jails, line, now);
                }
                if let Some(pos) = batch.position {
                    snapshot.positions.insert(sources[batch.source].0.clone(), pos);
                    dirty = true;
                }
            }
            _ = async { tokio::time::sleep_until(next_expiry.expect("guarded")).await }, if next_expiry.is_some() => {
                engine.expire(SystemTime::now());
            }
            _ = tick.tick() => {
                if dirty {
                    save_snapshot(&mut snapshot, &engine, config);
                    dirty = false;
                }
            }
            () = &mut shutdown => break,
        }
    }
    for t in &tasks {
        t.abort();
    }
    save_snapshot(&mut snapshot, &engine, config);
    Ok(())
}

fn save_snapshot<T: BanTable>(snapshot: &mut Snapshot, engine: &Engine<T>, config: &Config) {
    snapshot.windows = engine.export_windows().into_iter().collect();
    if let Err(e) = snapshot.save(&config.state_dir) {
        warn!(error = %e, "saving log positions failed; a restart may re-read or skip lines");
    }
}
