//! Every integration test, one module per area (the kernel ones need root:
//! `#[ignore = "needs root"]`, run by `cargo xtask test` with
//! `--include-ignored`).

mod agent;
mod cli;
mod crash;
mod dovecot;
mod fail2ban_samples;
mod fleet;
mod import;
mod limits;
mod maps_contract;
mod netns;
mod operate;
mod pipeline;
mod relink;
mod shapes;
mod state;
mod verdict;
