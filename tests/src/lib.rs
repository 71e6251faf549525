//! Support for jailer's integration tests: network namespaces and veth
//! pairs, a private bpffs, frame builders, the XDP object under test run,
//! peers (POP3, line servers), log writers, and an agent runner with a
//! readiness signal instead of sleeps.
//!
//! Tests that need root are `#[ignore = "needs root"]`: plain `cargo test`
//! reports them ignored; `cargo xtask test` runs them (as root) with
//! `--include-ignored`.

mod agent;
mod bpffs;
mod frames;
mod logs;
mod netns;
mod servers;
mod xdp;

pub use self::{
    agent::{Agent, ns_agent, wait_for},
    bpffs::TempBpffs,
    frames::{Ext, tcp4, tcp6, tcp6_ext, udp4, with_vlans},
    logs::{append, append_failure, ban, failure_line, host, now_stamp, target},
    netns::{NetNs, Pair, sh, sh_output, unique},
    servers::{connect_from, exchange, login, pop3_server, serve},
    xdp::{load_xdp, xdp_verdict},
};

/// Root tests call this first: run with `--include-ignored` without root,
/// they fail saying why instead of failing somewhere obscure.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, bpffs, XDP): run `sudo -E cargo xtask test`"
    );
}
