//! Interfaces that go away and come back: their ifindex is noted, checked
//! on every tick, and a returned one gets the XDP program again (`run` only).

use tracing::{info, warn};

use super::Agent;
use crate::{
    error::Chain,
    kernel::{self, BanTable},
};

impl<T: BanTable> Agent<T> {
    pub(super) fn note_interfaces(&mut self) {
        self.ifindexes = self
            .config
            .interfaces
            .iter()
            .map(|i| (i.clone(), nix::net::if_::if_nametoindex(i.as_str()).ok()))
            .collect();
    }

    /// An interface removed and added again is a new device: its old XDP
    /// link died with it. Seen on the next tick, it gets the program again.
    pub(super) fn check_interfaces(&mut self) {
        if !self.options.manage_xdp {
            return;
        }
        let mut returned = false;
        for iface in &self.config.interfaces {
            let now = nix::net::if_::if_nametoindex(iface.as_str()).ok();
            let before = self.ifindexes.get(iface).copied().flatten();
            if now == before {
                continue;
            }
            match now {
                None => warn!(%iface, "interface gone; XDP is attached again when it returns"),
                Some(_) => {
                    info!(%iface, "interface (re)appeared; attaching XDP");
                    returned = true;
                }
            }
            self.ifindexes.insert(iface.clone(), now);
        }
        if returned {
            let present: Vec<String> = self
                .config
                .interfaces
                .iter()
                .filter(|i| self.ifindexes.get(*i).copied().flatten().is_some())
                .cloned()
                .collect();
            match kernel::attach(
                &self.config.bpffs,
                &present,
                self.config.xdp_mode,
                self.config.max_bans,
            ) {
                Ok(datapath) => self.options.attached = datapath.attached,
                Err(e) => {
                    warn!(error = %Chain(&e), "re-attaching XDP failed; retrying when the interface changes again")
                }
            }
        }
    }
}
