//! jailer: fail2ban's job (jails, filters, maxretry/findtime/bantime) with
//! bans enforced by an XDP program in the NIC driver.
//!
//! The pipeline, one folder per stage, in the order a failure travels:
//!
//! | stage | module | what it does |
//! |---|---|---|
//! | log source | [`source`] | follows log files across rotation, in bounded batches |
//! | matcher | [`filter`] | a line in, the failing address (and its time) out |
//! | failure window, ban decision, expiry | [`jail`] | maxretry within findtime, bantime policy |
//! | a ban | [`ban`] | target, ports, expiry: built and compared in one place |
//! | kernel maps | [`kernel`] | pins, attach, the ban table, batch syscalls, counters |
//! | what survives restarts | [`state`] | the ban journal, the snapshot of positions |
//!
//! Around it: [`config`] (the validated configuration), [`agent`] (the loop
//! that owns the pipeline, its control socket, status and metrics),
//! [`import`] (a fail2ban installation carried over) and [`cli`] (one file
//! per subcommand).

pub mod agent;
pub mod ban;
pub mod cli;
pub mod config;
pub mod error;
pub mod filter;
pub mod fleet;
pub mod host;
pub mod import;
pub mod jail;
pub mod kernel;
pub mod source;
pub mod state;
#[cfg(test)]
mod test_files;
pub mod time;

pub use crate::agent::{AgentOptions, run_agent, run_agent_with};
