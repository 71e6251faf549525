//! Jails: failures counted per address in a [`FailureWindow`], bans decided
//! by the [`Engine`] per the jail's policy, written to the ban table and
//! lifted when their bantime is over.

mod engine;
mod known;
mod policy;
mod remote;
mod window;

pub use self::{
    engine::{BanEvent, Engine, JailStats, LocalChange, Restoration, WindowEntries, counted_jails},
    known::KnownBans,
    policy::bantime_for,
    remote::RemoteBan,
    window::{DEFAULT_MAX_TRACKED, FailureWindow},
};
