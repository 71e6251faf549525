//! Jails: failures counted per address in a [`FailureWindow`], bans decided
//! by the [`Engine`] per the jail's policy, written to the ban table and
//! lifted when their bantime is over.

mod engine;
mod jail_state;
mod known;
mod policy;
mod remote;
mod restore;
#[cfg(test)]
mod test_support;
mod window;

pub use self::{
    engine::{BanEvent, Engine, LocalChange},
    jail_state::{JailStats, WindowEntries},
    known::KnownBans,
    policy::bantime_for,
    remote::RemoteBan,
    restore::{Restoration, counted_jails},
    window::{DEFAULT_MAX_TRACKED, FailureWindow},
};
