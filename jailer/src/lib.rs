//! jailer: fail2ban's job (jails, filters, maxretry/findtime/bantime) with
//! bans enforced by an XDP program.
//!
//! Pipeline, one module per stage: log source ([`watch`]) -> matcher
//! ([`detect`], [`timestamp`]) -> failure window ([`window`]) -> ban decision
//! and expiry ([`jail`]) -> kernel maps ([`bpf`]); [`state`] keeps what must
//! survive restarts.

pub mod admin;
pub mod agent;
pub mod bpf;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod detect;
pub mod duration;
pub mod error;
pub mod jail;
pub mod metrics;
pub mod ports;
pub mod regex_cmd;
pub mod state;
pub mod status;
pub mod timestamp;
pub mod watch;
pub mod window;

use std::{net::IpAddr, time::SystemTime};

use ipnet::IpNet;
use jailer_common::BAN_MONITOR;

use clap::CommandFactory;
use tracing::{info, warn};

pub use crate::agent::{AgentOptions, run_agent, run_agent_with};
use crate::{
    admin::{active_bans, ban_value, format_table, write_ban},
    bpf::{BanTable, XdpBanTable},
    cli::{Cli, Command},
    clock::unix_secs,
    config::Config,
    control::{Request, Response},
    duration::parse_bantime,
    error::{ConfigError, Error},
    ports::PortSet,
    state::{Journal, Record},
};

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
            let datapath = bpf::attach(
                &config.bpffs,
                &config.interfaces,
                config.xdp_mode,
                config.max_bans,
            )?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|source| Error::Read {
                    path: "tokio runtime".into(),
                    source,
                })?;
            let options = AgentOptions {
                config_path: Some(cli.config.clone()),
                manage_xdp: true,
                attached: datapath.attached,
            };
            runtime.block_on(run_agent_with(
                &config,
                datapath.bans,
                shutdown_signal(),
                options,
            ))
        }
        Command::Check => {
            let config = Config::load(&cli.config)?;
            if config.jails.is_empty() {
                return Err(ConfigError::NoJail { path: config.path }.into());
            }
            for iface in &config.interfaces {
                if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
                    warn!(%iface, "interface does not exist on this machine (yet)");
                }
            }
            println!("{}: OK", config.path.display());
            for j in &config.jails {
                let logs: Vec<String> =
                    j.logpaths.iter().map(|p| p.display().to_string()).collect();
                println!(
                    "  jail {}: filter {}, logs {}, ports {}, maxretry {}, findtime {}, bantime {}",
                    j.name,
                    j.filter.name(),
                    logs.join(" "),
                    j.ports,
                    j.maxretry,
                    duration::format_duration(j.findtime),
                    j.bantime
                        .map_or("permanent".into(), duration::format_duration)
                );
            }
            Ok(())
        }
        Command::Status { jail, json } => {
            let config = Config::load_or_default(&cli.config)?;
            let status = match control::ask(&config.state_dir, &Request::Status)? {
                Some(Response::Status { status }) => status,
                Some(Response::Error { message }) => return Err(Error::Usage(message)),
                _ => status::from_maps(&config)?,
            };
            if let Some(name) = &jail
                && !status.jails.iter().any(|j| &j.name == name)
            {
                return Err(Error::Usage(format!("no jail named `{name}`")));
            }
            if json {
                let mut status = status;
                if let Some(name) = &jail {
                    status.jails.retain(|j| &j.name == name);
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).expect("status serializes")
                );
            } else {
                print!("{}", status::render(&status, jail.as_deref()));
            }
            Ok(())
        }
        Command::Reload => {
            let config = Config::load_or_default(&cli.config)?;
            match control::ask(&config.state_dir, &Request::Reload)? {
                Some(Response::Reloaded { jails }) => {
                    println!("reloaded; jails: {}", jails.join(", "));
                    Ok(())
                }
                Some(Response::Error { message }) => {
                    Err(Error::Usage(format!("reload refused: {message}")))
                }
                Some(other) => Err(Error::Usage(format!("unexpected reply: {other:?}"))),
                None => Err(Error::Usage(format!(
                    "no agent is running (no socket in {})",
                    config.state_dir.display()
                ))),
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "jailer", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .section("8")
            .render(&mut std::io::stdout())
            .map_err(|source| Error::Read {
                path: "stdout".into(),
                source,
            }),
        Command::Ban(args) => {
            let config = Config::load_or_default(&cli.config)?;
            let addr = parse_target(&args.ip)?;
            let ports =
                PortSet::parse(&args.port).map_err(|e| Error::Usage(format!("--port: {e}")))?;
            let duration =
                parse_bantime(&args.time).map_err(|e| Error::Usage(format!("--time: {e}")))?;
            let (mut table, created) = XdpBanTable::open(&config.bpffs)?;
            let mut value = ban_value(&ports, duration);
            if args.monitor {
                value.flags |= BAN_MONITOR;
            }
            write_ban(&mut table, addr, value)?;
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
            let mode = if args.monitor {
                " (monitor: counted, not dropped)"
            } else {
                ""
            };
            println!(
                "banned {} on ports {ports} {how_long}{mode}",
                bpf::show(&addr)
            );
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
            let addr = parse_target(ip)?;
            let existed = table.remove(addr)?;
            if let Err(e) = journal.and_then(|j| j.append(&Record::Unban { addr, at: now })) {
                warn!(error = %e, "unban not journaled");
            }
            if existed {
                println!("unbanned {}", bpf::show(&addr));
                Ok(())
            } else {
                Err(Error::Usage(format!("{} is not banned", bpf::show(&addr))))
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

/// An address or a CIDR network; `::ffff:a.b.c.d` is the IPv4 host.
fn parse_target(text: &str) -> Result<IpNet, Error> {
    config::parse_net(text)
        .map(|net| match net.addr() {
            IpAddr::V6(v6) if bpf::is_host(&net) => v6
                .to_ipv4_mapped()
                .map_or(net, |v4| IpNet::from(IpAddr::V4(v4))),
            _ => net,
        })
        .ok_or_else(|| {
            Error::Usage(format!(
                "`{text}` is not an IPv4/IPv6 address or CIDR network"
            ))
        })
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
