//! What a match reports: who the failure is about (fail2ban's `getFailID`)
//! and the [`Failure`] built from the match's groups.

use crate::filter::fail2ban::runtime::date::to_system_time;
use crate::filter::fail2ban::runtime::failure::{FailData, Failure, Family, Host};

/// Who a matched failure is about.
pub(super) enum Id {
    Host(Host),
    /// An `<F-MLFID>` failure still waiting for its address.
    Pending,
    /// No id at all: fail2ban's `getFailID` raises "No group found" and goes
    /// on with the next failregex.
    Missing,
}

/// The host of a failure: ip4, ip6 (with cidr), dns or, failing those, the
/// failure id.
pub(super) fn failure_host(data: &FailData, has_mlfid: bool) -> Id {
    let g = &data.groups;
    let cidr = g.get("cidr").filter(|c| !c.is_empty());
    let address = |text: &str, family: Family| {
        let parsed = match cidr {
            None => Host::address(text, family, None),
            Some(c) => c
                .parse::<u8>()
                .ok()
                .and_then(|p| Host::address(text, Family::Any, Some(p))),
        };
        parsed.unwrap_or_else(|| match cidr {
            Some(c) => Host::Name(format!("{text}/{c}")),
            None => Host::Name(text.to_owned()),
        })
    };
    if let Some(ip) = g.get("ip4") {
        return Id::Host(address(ip, Family::V4));
    }
    if let Some(ip) = g.get("ip6") {
        return Id::Host(address(ip, Family::V6));
    }
    if let Some(dns) = g.get("dns") {
        // fail2ban would resolve it (usedns); it is reported as a name
        // unless it is an address already.
        return Id::Host(Host::parse(dns));
    }
    match g.get("fid") {
        Some(fid) => Id::Host(Host::parse(fid)),
        None if has_mlfid => Id::Pending,
        None => Id::Missing,
    }
}

pub(super) fn build_failure(
    data: &FailData,
    host: Host,
    time: Option<f64>,
    regex: usize,
) -> Failure {
    let g = &data.groups;
    let host_text = g
        .get("ip4")
        .or_else(|| g.get("ip6"))
        .or_else(|| g.get("dns"));
    let fid = g
        .get("fid")
        .filter(|fid| host_text.is_some_and(|h| h != *fid))
        .map(str::to_owned);
    Failure {
        host,
        fid,
        user: g.get("user").map(str::to_owned),
        users: data.users.clone().unwrap_or_default(),
        time: time.and_then(to_system_time),
        lines: data.matches.clone(),
        regex,
    }
}
