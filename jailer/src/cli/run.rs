//! `jailer run`: the agent, attached to the configured interfaces.

use std::{path::Path, time::SystemTime};

use tracing::{info, warn};

use super::require_root;
use crate::{
    agent::{AgentOptions, JournalRead, run_agent_with},
    config::Config,
    error::{Chain, Error},
    kernel,
    state::{self, AgentLock},
};

/// Everything `run` checks before it changes anything; `check` runs the
/// same, so the two can never disagree.
pub(super) fn preflight(config_path: &Path) -> Result<Config, Error> {
    let config = Config::load_for_run(config_path)?;
    kernel::check_bpffs(&config.bpffs)?;
    if config.state_dir.exists() {
        state::check_state_dir(&config.state_dir)?;
    }
    Ok(config)
}

pub(super) fn run(config_path: &Path) -> Result<(), Error> {
    require_root("run")?;
    let config = preflight(config_path)?;
    state::prepare_state_dir(&config.state_dir)?;
    // First the lock: a second agent must leave the first one's links,
    // journal and socket alone.
    let lock = AgentLock::acquire(&config.state_dir)?;
    // The journal is read while the program is loaded and attached: after a
    // reboot that is a million bans to restore as soon as the maps exist.
    let journal = JournalRead::start(&config.state_dir, SystemTime::now());
    let datapath = kernel::attach(
        &config.bpffs,
        &config.interfaces,
        config.xdp_mode,
        config.max_bans,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    let options = AgentOptions {
        config_path: Some(config_path.to_owned()),
        manage_xdp: true,
        attached: datapath.attached,
        lock: Some(lock),
        ready: None,
        journal: Some(journal),
    };
    runtime.block_on(run_agent_with(
        &config,
        datapath.bans,
        shutdown_signal(),
        options,
    ))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            warn!(error = %Chain(&e), "no SIGTERM handler; stop the agent with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    info!("shutting down; the XDP program stays attached and bans stay enforced");
}
