//! fail2ban's `Fail2banReader`: `fail2ban.conf` (+ `fail2ban.d/`,
//! `fail2ban.local`), the server's own settings.

use std::path::{Path, PathBuf};

use super::{
    ini::{Ini, IniError},
    pystr::parse_int,
    text::{Origin, Text},
    time::{TimeError, TimeSpec, str2seconds},
};

/// `fail2ban.conf` settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file is unreadable or malformed, or an option cannot be interpolated.
    #[error(transparent)]
    Ini(#[from] IniError),
    /// `dbpurgeage` is not a time.
    #[error("{}: dbpurgeage", super::text::describe(.origin))]
    PurgeAge {
        /// Where it is set.
        origin: Option<Origin>,
        /// What is wrong.
        #[source]
        source: TimeError,
    },
}

/// The `[Definition]` settings of `fail2ban.conf`, defaults applied as
/// fail2ban applies them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `loglevel` (default `INFO`).
    pub loglevel: String,
    /// `logtarget` (default `STDERR`).
    pub logtarget: String,
    /// `syslogsocket` (default `auto`).
    pub syslogsocket: String,
    /// `allowipv6` (default `auto`).
    pub allowipv6: String,
    /// `socket` (default `/var/run/fail2ban/fail2ban.sock`).
    pub socket: String,
    /// `pidfile` (default `/var/run/fail2ban/fail2ban.pid`).
    pub pidfile: String,
    /// `dbfile` (default `/var/lib/fail2ban/fail2ban.sqlite3`; `None` or
    /// `:memory:` are fail2ban's special values).
    pub dbfile: String,
    /// `dbmaxmatches` (`None` also when not an integer, as in fail2ban).
    pub dbmaxmatches: Option<i64>,
    /// `dbpurgeage` (default `1d`).
    pub dbpurgeage: TimeSpec,
    /// The files read, in merge order (empty: defaults only).
    pub files: Vec<PathBuf>,
}

/// Reads `fail2ban.conf` and its overrides from `fail2ban_dir`; defaults
/// only if none exists (as fail2ban, which only logs that).
pub fn read_server_config(fail2ban_dir: &Path) -> Result<ServerConfig, ServerError> {
    let ini = Ini::read_config(fail2ban_dir, "fail2ban")?.unwrap_or_default();
    let get = |option: &str, default: &str| -> Result<Text, IniError> {
        Ok(ini
            .get("Definition", option, None)?
            .unwrap_or_else(|| Text::plain(default)))
    };
    let purge = get("dbpurgeage", "1d")?;
    let dbpurgeage = TimeSpec {
        seconds: str2seconds(purge.as_str()).map_err(|source| ServerError::PurgeAge {
            origin: purge.origin().cloned(),
            source,
        })?,
        text: purge.to_string(),
        origin: purge.origin().cloned(),
    };
    Ok(ServerConfig {
        loglevel: get("loglevel", "INFO")?.into_string(),
        logtarget: get("logtarget", "STDERR")?.into_string(),
        syslogsocket: get("syslogsocket", "auto")?.into_string(),
        allowipv6: get("allowipv6", "auto")?.into_string(),
        socket: get("socket", "/var/run/fail2ban/fail2ban.sock")?.into_string(),
        pidfile: get("pidfile", "/var/run/fail2ban/fail2ban.pid")?.into_string(),
        dbfile: get("dbfile", "/var/lib/fail2ban/fail2ban.sqlite3")?.into_string(),
        dbmaxmatches: ini
            .get("Definition", "dbmaxmatches", None)?
            .and_then(|t| parse_int(t.as_str())),
        dbpurgeage,
        files: ini.files().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = read_server_config(d).unwrap();
        assert_eq!(config.dbfile, "/var/lib/fail2ban/fail2ban.sqlite3");
        assert_eq!(config.dbpurgeage.seconds, 86400.0);
        fs::write(
            d.join("fail2ban.conf"),
            "[Definition]\ndbfile = /var/lib/f2b.db\ndbpurgeage = 1d\n",
        )
        .unwrap();
        fs::create_dir(d.join("fail2ban.d")).unwrap();
        fs::write(
            d.join("fail2ban.d/x.local"),
            "[Definition]\ndbpurgeage = 2d 12h\ndbmaxmatches = 10\n",
        )
        .unwrap();
        let config = read_server_config(d).unwrap();
        assert_eq!(config.dbfile, "/var/lib/f2b.db");
        assert_eq!(config.dbpurgeage.text, "2d 12h");
        assert_eq!(config.dbpurgeage.seconds, 216000.0);
        assert_eq!(config.dbpurgeage.origin.as_ref().unwrap().line, 2);
        assert_eq!(config.dbmaxmatches, Some(10));
        fs::write(
            d.join("fail2ban.local"),
            "[Definition]\ndbpurgeage = soon\n",
        )
        .unwrap();
        fs::remove_file(d.join("fail2ban.d/x.local")).unwrap();
        let e = crate::error::Chain(&read_server_config(d).unwrap_err()).to_string();
        assert!(
            e.contains("fail2ban.local:2: dbpurgeage: `soon` is not a time"),
            "{e}"
        );
    }
}
