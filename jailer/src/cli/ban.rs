//! `jailer ban` and `jailer unban`: bans by hand, written to the maps (in
//! force at once, agent or not) and to the journal (kept across reboots).

use std::{io::Read as _, net::IpAddr, path::Path, time::SystemTime};

use tracing::warn;

use super::{BanArgs, UnbanArgs, args, print, require_root};
use crate::{
    agent::control::{self, Request},
    ban::{Ban, Expiry, Target, lockout_risk},
    config::Config,
    error::{Chain, Error},
    host,
    kernel::{self, BanTable, XdpBanTable},
    state::{self, BanLines, Journal, Record},
    time::format_duration,
};

/// Lets a running agent know the journal changed (it also reads it every
/// second, so an agent that does not answer still learns).
pub(super) fn tell_agent(config: &Config) {
    if let Err(e) = control::ask(&config.state_dir, &Request::JournalChanged) {
        warn!(error = %Chain(&e), "the running agent could not be told; it reads the journal within a second");
    }
}

/// What a scoped thread returned (its panic goes on here).
fn joined<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A line of a `--file` that was not taken: its number, text, and why.
type BadLine = (usize, String, String);

/// The targets of a `--file` (`-`: standard input): one per line, `#`
/// comments and blank lines skipped. Returns the targets and the bad lines.
fn read_targets(
    file: &Path,
    own: &[IpAddr],
    force: bool,
) -> Result<(Vec<Target>, Vec<BadLine>), Error> {
    let io_err = |source| Error::Io {
        path: file.to_owned(),
        source,
    };
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(io_err)?;
        text
    } else {
        std::fs::read_to_string(file).map_err(io_err)?
    };
    let mut targets = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let item = line.split('#').next().unwrap_or("").trim();
        if item.is_empty() {
            continue;
        }
        match item.parse::<Target>() {
            Ok(target) => match lockout_risk(target, own).filter(|_| !force) {
                None => targets.push(target),
                Some(why) => bad.push((i + 1, item.to_owned(), why)),
            },
            Err(e) => bad.push((i + 1, item.to_owned(), e.to_string())),
        }
    }
    Ok((targets, bad))
}

/// Reports the bad lines of a `--file`; with `strict`, refuses the file.
fn check_lines(file: &Path, bad: &[BadLine], strict: bool) -> Result<(), Error> {
    for (n, text, why) in bad.iter().take(20) {
        eprintln!("{}:{n}: `{text}` skipped: {why}", file.display());
    }
    if bad.len() > 20 {
        eprintln!("{}: {} more bad lines", file.display(), bad.len() - 20);
    }
    if strict && !bad.is_empty() {
        return Err(Error::Usage(format!(
            "{}: {} bad line(s) (first at line {}): nothing done (--strict)",
            file.display(),
            bad.len(),
            bad[0].0
        )));
    }
    Ok(())
}

pub(super) fn ban(config_path: &Path, args: &BanArgs) -> Result<(), Error> {
    require_root("ban")?;
    let config = Config::load_or_default(config_path)?;
    let own: Vec<IpAddr> = host::own_addresses().into_iter().collect();
    let ports = args::port_set(&args.port).map_err(|e| Error::Usage(format!("--port: {e}")))?;
    state::prepare_state_dir(&config.state_dir)?;
    let (targets, opened) = match (&args.file, args.target) {
        (Some(file), _) => {
            // The maps are opened (the first time: the object parsed and
            // the maps created, a fifth of a second) while the file is read.
            let (targets, opened) = std::thread::scope(|s| {
                let opened = s.spawn(|| XdpBanTable::open(&config.bpffs));
                let targets =
                    read_targets(file, &own, args.force).and_then(|(mut targets, bad)| {
                        check_lines(file, &bad, args.strict)?;
                        // The order the table writes in: when a full map stops
                        // it, the first ones written are the ones to journal.
                        targets.sort_by_key(|t| (!t.is_host(), t.addr().is_ipv6()));
                        Ok(targets)
                    });
                (targets, joined(opened))
            });
            (targets?, opened)
        }
        (None, Some(target)) => {
            if let Some(why) = lockout_risk(target, &own).filter(|_| !args.force) {
                return Err(Error::Usage(format!(
                    "refusing to ban {target}: {why} (add --force if you really mean it)"
                )));
            }
            (vec![target], XdpBanTable::open(&config.bpffs))
        }
        (None, None) => return Err(Error::Usage("give an address, or --file".into())),
    };
    let (mut table, created) = opened?;
    let now = SystemTime::now();
    let ban = Ban {
        ports,
        expiry: Expiry::after(now, args.time.0),
        monitor: args.monitor,
    };
    let journal = Journal::new(&config.state_dir);
    let (banned, journaled) = match targets.as_slice() {
        [one] => {
            table.insert(*one, &ban)?;
            (
                1,
                journal.append(&[Record::ban(*one, "manual", &ban, now)], true),
            )
        }
        many => {
            // Two halves written at once through two handles (the kernel
            // inserts in parallel), the journal lines made meanwhile; each
            // half is written in order, so what fitted in a full map is a
            // prefix of each, and only those are journaled.
            let bans: Vec<(Target, Ban)> = many.iter().map(|t| (*t, ban)).collect();
            let mid = bans.len() / 2;
            let mut other = table.reopen()?;
            let (written, lines) = std::thread::scope(|s| {
                let lines = s.spawn(|| BanLines::new(many, "manual", &ban, now));
                let second = s.spawn(|| other.insert_many(&bans[mid..]));
                let first = table.insert_many(&bans[..mid]);
                ((first, joined(second)), joined(lines))
            });
            // A full map may leave one half with nothing written (an error
            // of its own) and the other with some: those count.
            let full = |r: &Result<usize, _>| matches!(r, Err(kernel::BpfError::MapFull { .. }));
            let (first, second) = match written {
                (Ok(a), Ok(b)) => (a, b),
                (a, Ok(b)) if b > 0 && full(&a) => (0, b),
                (Ok(a), b) if a > 0 && full(&b) => (a, 0),
                (Err(e), _) | (_, Err(e)) => return Err(e.into()),
            };
            let mut text = lines.range(0, first).to_vec();
            text.extend_from_slice(lines.range(mid, mid + second));
            (first + second, journal.append_lines(&text, true))
        }
    };
    if let Err(e) = journaled {
        warn!(error = %Chain(&e), "the bans are enforced but not journaled: they will not be restored after a reboot");
    }
    tell_agent(&config);
    let how_long = args.time.0.map_or("permanently".to_owned(), |d| {
        format!("for {}", format_duration(d))
    });
    let mode = if args.monitor {
        " (monitor: counted, not dropped)"
    } else {
        ""
    };
    let what = match targets.as_slice() {
        [one] => one.to_string(),
        _ => format!("{banned} address(es)"),
    };
    print(&format!(
        "banned {what} on ports {} {how_long}{mode}\n",
        ban.ports
    ))?;
    if banned < targets.len() {
        eprintln!(
            "jailer: the ban maps are full: {} of {} banned (raise max_bans)",
            banned,
            targets.len()
        );
    }
    if created || kernel::attached_interfaces(&config.bpffs).is_empty() {
        eprintln!(
            "note: no interface has the XDP program attached yet; the ban takes effect once `jailer run` attaches it"
        );
    }
    Ok(())
}

pub(super) fn unban(config_path: &Path, args: &UnbanArgs) -> Result<(), Error> {
    require_root("unban")?;
    let config = Config::load_or_default(config_path)?;
    let mut table = XdpBanTable::open_existing(&config.bpffs)?;
    let journal = Journal::new(&config.state_dir);
    let at = crate::time::unix_secs(SystemTime::now());
    let (records, message) = if args.all {
        let all: Vec<Target> = table.list()?.into_iter().map(|l| l.target).collect();
        let n = table.remove_many(&all)?;
        (
            vec![Record::UnbanAll { at }],
            format!("unbanned {n} address(es)\n"),
        )
    } else if let Some(file) = &args.file {
        // Lifting a ban is never a lockout risk: no refusals here.
        let (targets, bad) = read_targets(file, &[], true)?;
        check_lines(file, &bad, args.strict)?;
        let n = table.remove_many(&targets)?;
        let records = targets
            .iter()
            .map(|t| Record::Unban {
                addr: *t,
                at,
                origin: None,
            })
            .collect();
        (
            records,
            format!("unbanned {n} of {} address(es)\n", targets.len()),
        )
    } else if let Some(target) = args.target {
        if !table.remove(target)? {
            return Err(Error::Usage(format!("{target} is not banned")));
        }
        (
            vec![Record::Unban {
                addr: target,
                at,
                origin: None,
            }],
            format!("unbanned {target}\n"),
        )
    } else {
        return Err(Error::Usage("give an address, --all or --file".into()));
    };
    if let Err(e) = journal.append(&records, true) {
        warn!(error = %Chain(&e), "the unban is done but not journaled: a reboot would restore the ban");
    }
    tell_agent(&config);
    print(&message)
}
