//! The integration tests, one module per area; `fail2ban_alloc.rs` is a
//! binary of its own (it installs a counting global allocator).

mod fail2ban;

mod badconfig;
mod fail2ban_dates;
mod fail2ban_no_panic;
mod fail2ban_reference;
mod fail2ban_robustness;
mod fuzz;
