//! fail2ban's bans in force, from its SQLite database, as jailer bans.
//!
//! fail2ban 1.0 keeps the latest ban of each (address, jail) in `bips`
//! (and every ban in `bans`; an unban deletes from both). A ban is in force
//! while `timeofban + bantime > now`, or for ever with a negative bantime.
//! As fail2ban restores them when a jail starts, a ban longer than its
//! jail's longest bantime now (`bantime`, or `bantime.maxtime` with
//! `bantime.increment`) is cut to it, and addresses in the jail's ignoreip
//! (or this host's, with ignoreself) are left out. The database is only
//! ever opened read-only.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use rusqlite::{Connection, OpenFlags, types::ValueRef};

use super::ImportError;
use crate::{
    ban::{Ban, Expiry, Target},
    config::{Jail, default_ports},
    error::Error,
    kernel::BanTable,
    state::{Journal, Record},
    time::{MAX_DURATION, from_unix_secs, unix_secs},
};

/// One ban as fail2ban stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbBan {
    pub jail: String,
    /// An address as fail2ban wrote it (or whatever else it banned).
    pub ip: String,
    /// Unix seconds.
    pub timeofban: i64,
    /// Seconds; negative is for ever, `-2` unknown (a database upgraded
    /// from before 0.11).
    pub bantime: i64,
}

/// Every stored ban, or why a row is unreadable.
pub fn read_bans(path: &Path) -> Result<Vec<Result<DbBan, String>>, ImportError> {
    if !path.exists() {
        return Err(ImportError::DatabaseMissing {
            path: path.to_owned(),
        });
    }
    let db_err = |source| ImportError::Database {
        path: path.to_owned(),
        source,
    };
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    // fail2ban may be writing: wait for its lock rather than fail.
    db.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
    let has_bantime = |table: &str| -> Result<bool, rusqlite::Error> {
        let mut columns = db.prepare(&format!("PRAGMA table_info({table})"))?;
        let names = columns.query_map([], |row| row.get::<_, String>(1))?;
        for name in names {
            if name? == "bantime" {
                return Ok(true);
            }
        }
        Ok(false)
    };
    // `bips` holds the latest ban per (address, jail); older databases
    // only `bans`, where the latest row of each pair is the one.
    let query = if has_bantime("bips").map_err(db_err)? {
        "SELECT jail, ip, timeofban, bantime FROM bips"
    } else if has_bantime("bans").map_err(db_err)? {
        "SELECT jail, ip, MAX(timeofban), bantime FROM bans GROUP BY jail, ip"
    } else {
        return Err(ImportError::DatabaseSchema {
            path: path.to_owned(),
        });
    };
    let mut statement = db.prepare(query).map_err(db_err)?;
    let rows = statement
        .query_map([], |row| Ok(db_ban(row)))
        .map_err(db_err)?;
    rows.collect::<Result<_, _>>().map_err(db_err)
}

/// A row, typed; fail2ban's columns hold whatever was written to them.
fn db_ban(row: &rusqlite::Row<'_>) -> Result<DbBan, String> {
    let text = |i: usize| match row.get_ref(i) {
        Ok(ValueRef::Text(t)) => Ok(String::from_utf8_lossy(t).into_owned()),
        other => Err(format!("{other:?}")),
    };
    let int = |i: usize| match row.get_ref(i) {
        Ok(ValueRef::Integer(n)) => Ok(n),
        // Only a whole number in range is a time.
        Ok(ValueRef::Real(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(f as i64),
        other => Err(format!("{other:?}")),
    };
    let jail = text(0).map_err(|v| format!("no jail name ({v})"))?;
    let ip = text(1).map_err(|v| format!("jail {jail}: no address ({v})"))?;
    let timeofban =
        int(2).map_err(|v| format!("{ip} (jail {jail}): timeofban {v} is not a time"))?;
    let bantime = int(3).map_err(|v| format!("{ip} (jail {jail}): bantime {v} is not a time"))?;
    Ok(DbBan {
        jail,
        ip,
        timeofban,
        bantime,
    })
}

/// fail2ban's bans in force as jailer bans, one per target.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BanImport {
    /// (target, jail, ban): several jails' bans of one target merged (their
    /// ports, the latest end), under the jail that banned last.
    pub bans: Vec<(Target, String, Ban)>,
    /// Bans whose time is up (now, or cut to their jail's bantime).
    pub expired: usize,
    /// Bans fail2ban would not restore either: ignoreip, ignoreself.
    pub ignored: Vec<String>,
    /// Rows that are no ban jailer can hold, with the reason.
    pub invalid: Vec<String>,
    /// Jails of the database that are not configured: their bans close
    /// jailer's default port.
    pub unknown_jails: BTreeSet<String>,
}

impl BanImport {
    /// The bans of `rows` in force at `now`, as `jails` would restore them;
    /// `own` are this host's addresses (ignoreself).
    pub fn plan(
        rows: Vec<Result<DbBan, String>>,
        jails: &[Jail],
        own: &[IpAddr],
        now: SystemTime,
    ) -> Self {
        let mut out = Self::default();
        let mut rows: Vec<DbBan> = rows
            .into_iter()
            .filter_map(|row| row.map_err(|why| out.invalid.push(why)).ok())
            .collect();
        // Oldest first: the last jail to ban a target names the merged ban.
        rows.sort_by(|a, b| (a.timeofban, &a.jail, &a.ip).cmp(&(b.timeofban, &b.jail, &b.ip)));
        let mut merged: BTreeMap<Target, (String, Ban)> = BTreeMap::new();
        for row in rows {
            let Ok(target) = row.ip.parse::<Target>() else {
                out.invalid.push(format!(
                    "`{}` (jail {}): not an address or network",
                    row.ip, row.jail
                ));
                continue;
            };
            let jail = jails.iter().find(|j| j.name == row.jail);
            let Some(expiry) = expiry(&row, jail, now) else {
                out.expired += 1;
                continue;
            };
            let ports = match jail {
                Some(jail) => {
                    let own_address = jail.ignoreself && own.iter().any(|ip| target.contains(*ip));
                    if jail.ignores(target.addr()) || own_address {
                        let why = if own_address {
                            "ignoreself: an address of this host"
                        } else {
                            "in the jail's ignoreip"
                        };
                        out.ignored
                            .push(format!("{target} (jail {}): {why}", row.jail));
                        continue;
                    }
                    jail.ports
                }
                None => {
                    out.unknown_jails.insert(row.jail.clone());
                    default_ports()
                }
            };
            let ban = Ban::new(ports, expiry);
            merged
                .entry(target)
                .and_modify(|(name, old)| {
                    *old = old.merge(&ban);
                    name.clone_from(&row.jail);
                })
                .or_insert((row.jail, ban));
        }
        out.bans = merged
            .into_iter()
            .map(|(target, (jail, ban))| (target, jail, ban))
            .collect();
        out
    }

    /// Writes the bans into `table` (each merged with a ban in force there;
    /// those it already covers are left alone) and the journal. Returns
    /// (written, already covered); fewer written than planned means the
    /// map is full.
    pub fn apply(
        &self,
        table: &mut impl BanTable,
        journal: &Journal,
        now: SystemTime,
    ) -> Result<(usize, usize), Error> {
        let mut bans = Vec::with_capacity(self.bans.len());
        let mut records = Vec::with_capacity(self.bans.len());
        let mut covered = 0;
        for (target, jail, ban) in &self.bans {
            let mut ban = *ban;
            if let Some(old) = table.get(*target)?
                && old.expiry.is_active(now)
            {
                if old.covers(&ban) {
                    covered += 1;
                    continue;
                }
                ban = old.merge(&ban);
            }
            records.push(Record::ban(*target, jail, &ban, now));
            bans.push((*target, ban));
        }
        let written = table.insert_many(&bans)?;
        journal.append(&records[..written], true)?;
        Ok((written, covered))
    }
}

/// When a stored ban ends, as fail2ban restores it at `now`; `None` when
/// it is over.
fn expiry(row: &DbBan, jail: Option<&Jail>, now: SystemTime) -> Option<Expiry> {
    // The jail's longest bantime now; `None` for ever.
    let longest = jail.map(|j| {
        if j.bantime_increment {
            j.bantime_max
        } else {
            j.bantime
        }
    });
    let secs =
        |d: Option<Duration>| d.map_or(-1, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut bantime = row.bantime;
    if bantime == -2 {
        // Unknown: fail2ban takes the jail's bantime.
        bantime = jail.map_or(600, |j| secs(j.bantime));
    }
    if let Some(Some(longest)) = longest {
        let longest = secs(Some(longest));
        if bantime < 0 || bantime > longest {
            bantime = longest;
        }
    }
    if bantime < 0 {
        return Some(Expiry::Never);
    }
    let end = row.timeofban.saturating_add(bantime);
    let now = i64::try_from(unix_secs(now)).unwrap_or(i64::MAX);
    if end <= now {
        return None;
    }
    // Past jailer's longest ban: permanent, as in its config.
    let left = u64::try_from(end - now).unwrap_or(u64::MAX);
    if left > MAX_DURATION.as_secs() {
        return Some(Expiry::Never);
    }
    Some(Expiry::At(from_unix_secs(end.unsigned_abs())))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rusqlite::types::Value;

    use super::*;
    use crate::{ban::PortSet, config::Config, kernel::MemBanTable};

    /// fail2ban 1.0's `bans` and `bips` (server/database.py).
    const SCHEMA: &str = "CREATE TABLE bans(jail TEXT NOT NULL, ip TEXT, timeofban INTEGER NOT NULL, \
        bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON);\
        CREATE TABLE bips(ip TEXT NOT NULL, jail TEXT NOT NULL, timeofban INTEGER NOT NULL, \
        bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON, PRIMARY KEY(ip, jail));";

    fn db(dir: &Path, schema: &str, table: &str, rows: &[(&str, Value, Value, i64)]) -> PathBuf {
        let path = dir.join("fail2ban.sqlite3");
        let db = Connection::open(&path).unwrap();
        db.execute_batch(schema).unwrap();
        for (jail, ip, timeofban, bantime) in rows {
            db.execute(
                &format!(
                    "INSERT INTO {table}(jail, ip, timeofban, bantime) VALUES (?1, ?2, ?3, ?4)"
                ),
                rusqlite::params![jail, ip, timeofban, bantime],
            )
            .unwrap();
        }
        path
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn rows_are_read_typed_and_the_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(
            dir.path(),
            SCHEMA,
            "bips",
            &[
                ("sshd", text("203.0.113.7"), Value::Integer(1000), 600),
                ("sshd", text("203.0.113.8"), Value::Real(1000.0), -1),
                ("sshd", text("203.0.113.9"), text("yesterday"), 600),
                ("sshd", text("203.0.113.10"), Value::Real(1000.5), 600),
            ],
        );
        let before = std::fs::read(&path).unwrap();
        let rows = read_bans(&path).unwrap();
        assert_eq!(
            rows[..2],
            [
                Ok(DbBan {
                    jail: "sshd".into(),
                    ip: "203.0.113.7".into(),
                    timeofban: 1000,
                    bantime: 600
                }),
                Ok(DbBan {
                    jail: "sshd".into(),
                    ip: "203.0.113.8".into(),
                    timeofban: 1000,
                    bantime: -1
                })
            ]
        );
        for bad in &rows[2..] {
            assert!(bad.as_ref().unwrap_err().contains("timeofban"), "{bad:?}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), before, "opened read-only");
    }

    #[test]
    fn older_databases_give_the_latest_ban_of_each_pair() {
        let dir = tempfile::tempdir().unwrap();
        let bans_only = "CREATE TABLE bans(jail TEXT NOT NULL, ip TEXT, timeofban INTEGER NOT NULL, \
            bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON);";
        let path = db(
            dir.path(),
            bans_only,
            "bans",
            &[
                ("sshd", text("203.0.113.7"), Value::Integer(1000), 600),
                ("sshd", text("203.0.113.7"), Value::Integer(5000), 1200),
                ("sshd", Value::Null, Value::Integer(5000), 1200),
            ],
        );
        let rows = read_bans(&path).unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(
            rows.iter()
                .any(|r| r.as_ref().is_err_and(|e| e.contains("no address")))
        );
        let ok = rows.iter().find_map(|r| r.as_ref().ok()).unwrap();
        assert_eq!((ok.timeofban, ok.bantime), (5000, 1200));

        let dir = tempfile::tempdir().unwrap();
        let path = db(
            dir.path(),
            "CREATE TABLE bans(jail TEXT, ip TEXT, timeofban INTEGER);",
            "bans",
            &[],
        );
        assert!(matches!(
            read_bans(&path),
            Err(ImportError::DatabaseSchema { .. })
        ));
        assert!(matches!(
            read_bans(&dir.path().join("nothing.sqlite3")),
            Err(ImportError::DatabaseMissing { .. })
        ));
        std::fs::write(dir.path().join("junk"), "not a database").unwrap();
        assert!(matches!(
            read_bans(&dir.path().join("junk")),
            Err(ImportError::Database { .. })
        ));
    }

    const NOW: u64 = 1_000_000;

    fn jails() -> Vec<Jail> {
        let jail = |name: &str, extra: &str| {
            format!("[jails.{name}]\nfilter = \"vpopmail\"\nlogpath = \"/x\"\n{extra}")
        };
        let text = [
            jail(
                "dovecot",
                "port = [\"pop3\", \"imap\"]\nbantime = \"1h\"\nignoreip = [\"192.0.2.0/24\"]\n",
            ),
            jail(
                "inc",
                "port = \"smtp\"\nbantime = \"10m\"\nbantime_increment = true\nbantime_max = \"1d\"\n",
            ),
            jail("perm", "port = \"all\"\nbantime = \"permanent\"\n"),
        ]
        .concat();
        Config::parse(Path::new("/etc/jailer/jailer.toml"), &text)
            .unwrap()
            .jails
    }

    fn row(jail: &str, ip: &str, ago: i64, bantime: i64) -> Result<DbBan, String> {
        Ok(DbBan {
            jail: jail.into(),
            ip: ip.into(),
            timeofban: NOW as i64 - ago,
            bantime,
        })
    }

    fn until(secs_from_now: u64) -> Expiry {
        Expiry::At(from_unix_secs(NOW + secs_from_now))
    }

    #[test]
    fn bans_in_force_as_fail2ban_restores_them() {
        let rows = vec![
            row("dovecot", "203.0.113.1", 600, 3600),
            row("dovecot", "203.0.113.2", 4000, 3600),
            row("dovecot", "203.0.113.3", 600, 86_400),
            row("dovecot", "203.0.113.4", 100, -1),
            row("dovecot", "203.0.113.8", 60, -2),
            row("inc", "203.0.113.5", 100, -1),
            row("perm", "203.0.113.6", 100_000_000, -1),
            row("sshd", "2001:db8::1", 10, -1),
            row("dovecot", "192.0.2.7", 10, 3600),
            row("dovecot", "10.9.9.9", 10, 3600),
            row("dovecot", "not-an-ip", 10, 3600),
            Err("no jail name (Null)".into()),
            row("dovecot", "203.0.113.9", 600, 3600),
            row("inc", "203.0.113.9", 60, 86_400),
        ];
        let own: [IpAddr; 1] = ["10.9.9.9".parse().unwrap()];
        let plan = BanImport::plan(rows, &jails(), &own, from_unix_secs(NOW));
        let pop_imap = PortSet::only(&[110, 143]);
        let got: Vec<(String, &str, &PortSet, Expiry)> = plan
            .bans
            .iter()
            .map(|(t, j, b)| (t.to_string(), j.as_str(), &b.ports, b.expiry))
            .collect();
        let want = [
            ("203.0.113.1", "dovecot", &pop_imap, until(3000)),
            // Cut to the jail's bantime, as fail2ban restores it.
            ("203.0.113.3", "dovecot", &pop_imap, until(3000)),
            ("203.0.113.4", "dovecot", &pop_imap, until(3500)),
            // Incremented bans are cut to bantime.maxtime.
            ("203.0.113.5", "inc", &PortSet::only(&[25]), until(86_300)),
            ("203.0.113.6", "perm", &PortSet::All, Expiry::Never),
            // bantime unknown: the jail's.
            ("203.0.113.8", "dovecot", &pop_imap, until(3540)),
            // Two jails: both ports, the later end, the later jail.
            (
                "203.0.113.9",
                "inc",
                &PortSet::only(&[25, 110, 143]),
                until(86_340),
            ),
            // A jail not imported: jailer's default port.
            ("2001:db8::1", "sshd", &PortSet::only(&[110]), Expiry::Never),
        ];
        let want: Vec<_> = want
            .into_iter()
            .map(|(t, j, p, e)| (t.to_owned(), j, p, e))
            .collect();
        assert_eq!(got, want);
        assert_eq!(plan.expired, 1);
        assert_eq!(
            plan.ignored,
            [
                "10.9.9.9 (jail dovecot): ignoreself: an address of this host",
                "192.0.2.7 (jail dovecot): in the jail's ignoreip",
            ]
        );
        assert_eq!(plan.invalid.len(), 2, "{:?}", plan.invalid);
        assert!(plan.invalid[1].contains("`not-an-ip` (jail dovecot)"));
        assert_eq!(plan.unknown_jails, BTreeSet::from(["sshd".to_owned()]));
    }

    #[test]
    fn apply_merges_with_bans_in_force_and_journals() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let now = from_unix_secs(NOW);
        let target = |s: &str| s.parse::<Target>().unwrap();
        let mut table = MemBanTable::default();
        // Already banned wider and longer: left alone.
        table
            .insert(
                target("203.0.113.1"),
                &Ban::new(PortSet::All, Expiry::Never),
            )
            .unwrap();
        // Banned narrower: merged.
        table
            .insert(
                target("203.0.113.2"),
                &Ban::new(PortSet::only(&[25]), until(60)),
            )
            .unwrap();
        let pop3 = PortSet::only(&[110]);
        let plan = BanImport {
            bans: ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
                .iter()
                .map(|t| (target(t), "dovecot".to_owned(), Ban::new(pop3, until(600))))
                .collect(),
            ..BanImport::default()
        };
        assert_eq!(plan.apply(&mut table, &journal, now).unwrap(), (2, 1));
        let merged = table.get(target("203.0.113.2")).unwrap().unwrap();
        assert_eq!(merged, Ban::new(PortSet::only(&[25, 110]), until(600)));
        let replay = journal.replay(now).unwrap();
        let mut journaled: Vec<(String, &str, Ban)> = replay
            .active(now)
            .map(|(t, e)| (t.to_string(), replay.jail(e), replay.ban(e)))
            .collect();
        journaled.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            journaled,
            [
                ("203.0.113.2".to_owned(), "dovecot", merged),
                (
                    "203.0.113.3".to_owned(),
                    "dovecot",
                    Ban::new(pop3, until(600))
                ),
            ]
        );
    }
}
