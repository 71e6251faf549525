//! Reload (SIGHUP, `jailer reload`): all or nothing. Everything that can
//! fail — reading and validating the file, compiling filters, watching the
//! new logs' directories — happens before anything changes; a refused
//! reload leaves the agent following and banning exactly as before.

use tracing::{info, warn};

use super::Agent;
use crate::{
    config::{Config, XdpAction},
    error::{Chain, Error},
    kernel::{self, BanTable},
};

impl<T: BanTable> Agent<T> {
    /// Re-reads the config: jails added and removed, logs followed or not,
    /// interfaces attached or detached. Bans are never touched.
    pub(super) fn reload(&mut self) -> Result<Vec<String>, Error> {
        let result = self.try_reload();
        match &result {
            Ok(jails) => info!(jails = %jails.join(","), "configuration reloaded"),
            Err(e) => {
                warn!(error = %Chain(e), "reload refused; the running configuration is unchanged")
            }
        }
        result
    }

    fn try_reload(&mut self) -> Result<Vec<String>, Error> {
        let path = self.options.config_path.clone().ok_or_else(|| {
            Error::Usage("this agent was started without a config file to reload".into())
        })?;
        // 1. Everything fallible, nothing changed yet.
        let mut new = Config::load_for_run(&path)?;
        if new.bpffs != self.config.bpffs || new.state_dir != self.config.state_dir {
            return Err(Error::Usage(
                "bpffs and state_dir cannot change on reload: restart the agent".into(),
            ));
        }
        let watcher = self.watch(&new)?;
        let interfaces_changed = self.options.manage_xdp
            && (new.interfaces != self.config.interfaces || new.xdp_mode != self.config.xdp_mode);
        if interfaces_changed {
            // Swaps the program into each link: atomic per interface.
            let datapath = kernel::attach(&new.bpffs, &new.interfaces, new.xdp_mode, new.max_bans)?;
            self.options.attached = datapath.attached;
        }
        // 2. The swap, which cannot fail half way: map writes below only
        // widen what the datapath looks at.
        if new.metrics_listen != self.config.metrics_listen {
            warn!("metrics_listen changed: it takes effect at the next restart");
        }
        if new.fleet != self.config.fleet {
            warn!("[fleet] changed: it takes effect at the next restart");
            new.fleet = self.config.fleet.clone();
        }
        let table = self.engine.table_mut();
        if new.xdp_action != self.config.xdp_action {
            let monitor = new.xdp_action == XdpAction::Monitor;
            table.set_monitor(monitor)?;
            info!(monitor, "XDP action changed");
        }
        for jail in &new.jails {
            table.protect(&jail.ports)?;
        }
        self.save();
        self.engine.reconfigure(new.jails.clone());
        self.engine.set_ignoreip(new.ignoreip.clone());
        self.config = new;
        self.note_interfaces();
        // Journals it (re)started open in the background; a reload does not wait.
        drop(self.follow_logs(watcher));
        Ok(self.engine.jail_names())
    }
}
