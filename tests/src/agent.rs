//! Running the agent inside a test: on its own thread and runtime, started
//! once it says it is ready (logs open, control socket bound), stopped on
//! drop. No sleeps: tests wait on readiness and on conditions, bounded.

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use jailer::{
    AgentOptions,
    config::Config,
    error::{Chain, Error},
    kernel::{self, BanTable},
};
use tokio::sync::oneshot;

use crate::NetNs;

/// How long an agent may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// An agent running on its own thread; stopped (and joined) on drop.
pub struct Agent {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<Result<(), Error>>>,
}

impl Agent {
    /// Runs the agent over `table` (no XDP management, no reload) and
    /// returns once it is ready.
    pub fn start<T: BanTable + 'static>(config: Config, table: T) -> Self {
        Self::start_with(move || (config, table, AgentOptions::default()))
    }

    /// Runs what `setup` returns (called on the agent's thread, so in the
    /// caller's namespace when started from [`NetNs::run`]) and returns
    /// once the agent is ready.
    pub fn start_with<T: BanTable + 'static>(
        setup: impl FnOnce() -> (Config, T, AgentOptions) + Send + 'static,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            let (config, table, mut options) = setup();
            let (ready, is_ready) = oneshot::channel();
            options.ready = Some(ready);
            // As `jailer run` has it: the loop on this thread, spawned tasks
            // (followers, the fleet link) on two workers.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let agent = jailer::run_agent_with(
                    &config,
                    table,
                    async {
                        let _ = stopped.await;
                    },
                    options,
                );
                tokio::pin!(agent);
                tokio::select! {
                    result = &mut agent => return result,
                    _ = is_ready => { let _ = ready_tx.send(()); }
                }
                agent.await
            })
        });
        let mut agent = Self {
            stop: Some(stop),
            thread: Some(thread),
        };
        if ready_rx.recv_timeout(READY_WITHIN).is_err() {
            let outcome = agent.finish();
            panic!("the agent did not become ready: {outcome:?}");
        }
        agent
    }

    /// Stops the agent and returns how it ended.
    pub fn stop(mut self) -> Result<(), Error> {
        self.finish().unwrap_or(Ok(()))
    }

    fn finish(&mut self) -> Option<Result<(), Error>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().map(|t| match t.join() {
            Ok(result) => result,
            Err(_) => panic!("the agent thread panicked"),
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(Err(e)) = self.finish()
            && !thread::panicking()
        {
            panic!("the agent failed: {}", Chain(&e));
        }
    }
}

/// The agent as `jailer run` starts it (XDP attached, reload and interface
/// tracking on), inside `ns`.
pub fn ns_agent(ns: &NetNs, config: &Config, config_path: Option<PathBuf>) -> Agent {
    let config = config.clone();
    ns.run(move || {
        // Threads inherit the namespace of the thread that makes them.
        Agent::start_with(move || {
            let datapath = kernel::attach(
                &config.bpffs,
                &config.interfaces,
                config.xdp_mode,
                config.max_bans,
            )
            .expect("attach");
            let options = AgentOptions {
                config_path,
                manage_xdp: true,
                attached: datapath.attached,
                ..AgentOptions::default()
            };
            (config, datapath.bans, options)
        })
    })
}

/// Waits (bounded by `limit`) until `cond` holds; panics naming `what`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}
