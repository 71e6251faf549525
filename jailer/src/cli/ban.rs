//! `jailer ban` and `jailer unban`: bans by hand, written to the maps (in
//! force at once, agent or not) and to the journal (kept across reboots).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::SystemTime,
};

use tracing::warn;

use super::{BanArgs, UnbanArgs, args, print, require_root};
use crate::{
    agent::control::{self, Request},
    ban::{Ban, Expiry, Target},
    config::Config,
    error::{Chain, Error},
    host,
    kernel::{self, BanTable, XdpBanTable},
    state::{self, Journal, Record},
    time::format_duration,
};

/// Why banning `target` could lock out the server or everyone, if it could.
pub fn lockout_risk(target: Target, own: &[IpAddr]) -> Option<String> {
    if target.prefix_len() == 0 {
        return Some("a /0 network is every address".into());
    }
    let ranges: [(&str, Target); 7] = [
        (
            "loopback",
            Target::network(ipnet::IpNet::new(Ipv4Addr::LOCALHOST.into(), 8).ok()?),
        ),
        ("loopback", Target::host(Ipv6Addr::LOCALHOST.into())),
        (
            "the unspecified address",
            Target::host(Ipv4Addr::UNSPECIFIED.into()),
        ),
        (
            "the unspecified address",
            Target::host(Ipv6Addr::UNSPECIFIED.into()),
        ),
        ("broadcast", Target::host(Ipv4Addr::BROADCAST.into())),
        (
            "multicast",
            Target::network(ipnet::IpNet::new(Ipv4Addr::new(224, 0, 0, 0).into(), 4).ok()?),
        ),
        (
            "multicast",
            Target::network(
                ipnet::IpNet::new(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0).into(), 8).ok()?,
            ),
        ),
    ];
    let overlaps = |a: &Target, b: &Target| a.contains(b.addr()) || b.contains(a.addr());
    if let Some((what, _)) = ranges.iter().find(|(_, range)| overlaps(&target, range)) {
        return Some(format!("it covers {what} addresses"));
    }
    own.iter()
        .find(|ip| target.contains(**ip))
        .map(|ip| format!("it covers {ip}, an address of this host"))
}

/// Lets a running agent know the journal changed (it also reads it every
/// second, so an agent that does not answer still learns).
pub(super) fn tell_agent(config: &Config) {
    if let Err(e) = control::ask(&config.state_dir, &Request::JournalChanged) {
        warn!(error = %Chain(&e), "the running agent could not be told; it reads the journal within a second");
    }
}

pub(super) fn ban(config_path: &Path, args: &BanArgs) -> Result<(), Error> {
    require_root("ban")?;
    let config = Config::load_or_default(config_path)?;
    let target = args.target;
    if !args.force {
        let own: Vec<IpAddr> = host::own_addresses().into_iter().collect();
        if let Some(why) = lockout_risk(target, &own) {
            return Err(Error::Usage(format!(
                "refusing to ban {target}: {why} (add --force if you really mean it)"
            )));
        }
    }
    let ports = args::port_set(&args.port).map_err(|e| Error::Usage(format!("--port: {e}")))?;
    let now = SystemTime::now();
    let ban = Ban {
        ports,
        expiry: Expiry::after(now, args.time.0),
        monitor: args.monitor,
    };
    state::prepare_state_dir(&config.state_dir)?;
    let (mut table, created) = XdpBanTable::open(&config.bpffs)?;
    table.insert(target, &ban)?;
    let journaled =
        Journal::new(&config.state_dir).append(&[Record::ban(target, "manual", &ban, now)], true);
    if let Err(e) = journaled {
        warn!(error = %Chain(&e), "the ban is enforced but not journaled: it will not be restored after a reboot");
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
    print(&format!(
        "banned {target} on ports {} {how_long}{mode}\n",
        ban.ports
    ))?;
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
    let (record, message) = match args.target {
        None => {
            let all: Vec<Target> = table.list()?.into_iter().map(|l| l.target).collect();
            let n = table.remove_many(&all)?;
            (
                Record::UnbanAll { at },
                format!("unbanned {n} address(es)\n"),
            )
        }
        Some(target) => {
            if !table.remove(target)? {
                return Err(Error::Usage(format!("{target} is not banned")));
            }
            (
                Record::Unban { addr: target, at },
                format!("unbanned {target}\n"),
            )
        }
    };
    if let Err(e) = journal.append(&[record], true) {
        warn!(error = %Chain(&e), "the unban is done but not journaled: a reboot would restore the ban");
    }
    tell_agent(&config);
    print(&message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn risk(text: &str) -> Option<String> {
        lockout_risk(text.parse().unwrap(), &["198.51.100.1".parse().unwrap()])
    }

    #[test]
    fn lockout_foot_guns_are_named() {
        for (target, why) in [
            ("0.0.0.0/0", "/0"),
            ("::/0", "/0"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.5", "multicast"),
            ("ff02::1", "multicast"),
            ("198.51.100.1", "this host"),
            ("198.51.100.0/24", "this host"),
            ("0.0.0.0/1", "loopback"),
        ] {
            let got = risk(target).unwrap_or_default();
            assert!(got.contains(why), "{target}: {got:?}");
        }
        for fine in [
            "203.0.113.7",
            "203.0.113.0/24",
            "2001:db8::1",
            "198.51.100.2",
        ] {
            assert_eq!(risk(fine), None, "{fine}");
        }
    }
}
