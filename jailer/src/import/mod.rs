//! `jailer import-fail2ban`: a fail2ban installation carried over.
//!
//! - [`jails`]: the enabled jails, read as fail2ban reads them
//!   ([`crate::filter::fail2ban::config::jail`]), written as a jailer.toml a
//!   mail admin can read; what cannot carry over is said in comments.
//! - [`ports`]: fail2ban's `port` lists (service names, numbers, ranges).
//! - [`bans`]: the bans in force in fail2ban's database, with the time they
//!   have left, for the maps and the journal.

pub mod bans;
pub mod jails;
pub mod ports;

use std::path::PathBuf;

pub use self::{
    bans::{BanImport, DbBan, read_bans},
    jails::{Import, import_jails},
    ports::Services,
};
use crate::{
    config::ConfigError,
    filter::fail2ban::config::{jail::JailError, server::ServerError},
};

/// A fail2ban installation that cannot be carried over.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The jail configuration is unreadable or malformed (fail2ban would
    /// not start either).
    #[error("fail2ban's jails")]
    Jails(#[from] JailError),
    /// `fail2ban.conf` is malformed (its `dbfile` is needed for `--bans`).
    #[error("fail2ban's server settings")]
    Server(#[from] ServerError),
    /// fail2ban keeps no database (`dbfile = :memory:` or `None`).
    #[error("fail2ban keeps its bans in no file (dbfile = {dbfile}): there are none to import")]
    NoDatabase { dbfile: String },
    /// The database file is missing.
    #[error("{}: no fail2ban database there (fail2ban's `dbfile`; --dbfile names another)", path.display())]
    DatabaseMissing { path: PathBuf },
    /// The database cannot be read.
    #[error("{}: fail2ban's database", path.display())]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The database has no table of bans jailer knows.
    #[error("{}: no `bips` or `bans` table with ban times (a fail2ban database older than 0.11? start fail2ban 1.x once to upgrade it)", path.display())]
    DatabaseSchema { path: PathBuf },
    /// The generated configuration does not load: a bug of the importer.
    #[error("the generated configuration does not load (please report this)")]
    Generated(#[source] ConfigError),
}
