//! This host: its own addresses (never banned by a jail with `ignoreself`,
//! never by hand without `--force`).

use std::{collections::HashSet, net::IpAddr};

use crate::ban::canonical_ip;

/// The addresses of every local interface, as `getifaddrs` lists them.
pub fn own_addresses() -> HashSet<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return HashSet::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .map(canonical_ip)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_one_of_ours() {
        assert!(own_addresses().contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
