//! Support for jailer's integration tests: network namespaces and veth
//! pairs, a private bpffs, frame builders, the XDP object under test run,
//! peers (POP3, line servers, a real dovecot), journal files written by
//! systemd-journal-remote, log writers, an agent runner with a readiness
//! signal instead of sleeps, the agent as a process, and a fleet of agents
//! sharing bans through real nats-server processes ([`fleet`]).
//!
//! Tests that need root are `#[ignore = "needs root"]`: plain `cargo test`
//! reports them ignored; `cargo xtask test` runs them (as root) with
//! `--include-ignored`.

mod agent;
mod bpffs;
mod dovecot;
pub mod fleet;
mod frames;
mod journal;
mod logs;
mod netns;
mod process;
mod servers;
mod xdp;

pub use self::{
    agent::{Agent, ns_agent, wait_for},
    bpffs::TempBpffs,
    dovecot::{Dovecot, DovecotLog, PASSWORD, USER},
    frames::{Ext, tcp4, tcp6, tcp6_ext, udp4, with_vlans},
    journal::JournalRemote,
    logs::{append, append_failure, ban, failure_line, host, now_stamp, target},
    netns::{NetNs, Pair, reap, sh, sh_output, unique},
    process::{AgentProcess, cpu_ticks, output_within, vm_kib, wait_bounded},
    servers::{connect_from, connect_with, exchange, login, pop3_login, pop3_server, serve},
    xdp::{bench_object, load_bench, load_xdp, on_cpu, xdp_verdict},
};

/// Root tests call this first: run with `--include-ignored` without root,
/// they fail saying why instead of failing somewhere obscure.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, bpffs, XDP): run `sudo -E cargo xtask test`"
    );
}
