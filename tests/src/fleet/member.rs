//! The jailer side of the fleet: a member's config, its agent (XDP in its
//! own namespace, the agent's thread in the hub) and what tests ask of it.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use jailer::{
    AgentOptions,
    agent::{
        FleetReport,
        control::{self, Request, Response},
    },
    ban::Target,
    config::Config,
    kernel::{self, BanTable, XdpBanTable},
};

use super::{Hub, NET, PASSWORD, USER};
use crate::{Agent, NetNs, Pair, TempBpffs, serve, wait_for};

/// What a member's config says beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct MemberSetup {
    /// `[fleet]` lines added (`accept_from = [...]`, `share = false`).
    pub fleet_extra: String,
    /// Top-level lines (`ignoreip = [...]`).
    pub top_extra: String,
    /// A vpopmail jail on `mail.log` with this maxretry, and whether it
    /// counts the fleet's failures.
    pub jail: Option<(u32, bool)>,
    /// Overrides the password (wrong credentials).
    pub password: Option<String>,
}

/// One jailer server of the fleet.
pub struct Member {
    pub name: String,
    pub pair: Pair,
    pub bpffs: TempBpffs,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Config,
    ns: Arc<NetNs>,
    jailer: PathBuf,
    agent: Option<Agent>,
}

impl Member {
    /// Writes the member's config (servers `urls`) and starts its agent.
    pub fn start(hub: &Hub, name: &str, urls: &[String], setup: &MemberSetup) -> Self {
        let mut m = Self::configure(hub, name, urls, setup);
        m.start_agent();
        m
    }

    /// Writes the member's config without starting it.
    pub fn configure(hub: &Hub, name: &str, urls: &[String], setup: &MemberSetup) -> Self {
        let pair = Pair::new(NET);
        pair.server.run(|| serve("0.0.0.0:110".parse().unwrap()));
        let bpffs = TempBpffs::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = format!(
            "interface = \"{iface}\"\nxdp_mode = \"generic\"\nbpffs = \"{bpffs}\"\nstate_dir = \"{state}\"\n{top}\n",
            iface = pair.iface,
            bpffs = bpffs.pins().display(),
            state = dir.path().join("state").display(),
            top = setup.top_extra,
        );
        if let Some((maxretry, shared)) = setup.jail {
            let _ = write!(
                text,
                "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nport = [\"pop3\"]\n\
                 maxretry = {maxretry}\nfindtime = \"10m\"\nbantime = \"1h\"\nshared_failures = {shared}\n",
                dir.path().join("mail.log").display()
            );
            fs::write(dir.path().join("mail.log"), "").expect("mail.log");
        }
        let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        let _ = write!(
            text,
            "[fleet]\nurl = [{}]\nname = \"{name}\"\nuser = \"{USER}\"\npassword = \"{}\"\n{}\n",
            urls.join(", "),
            setup.password.as_deref().unwrap_or(PASSWORD),
            setup.fleet_extra
        );
        let config_path = dir.path().join("jailer.toml");
        fs::write(&config_path, text).expect("write jailer.toml");
        // Checked where its interface is.
        let config = {
            let path = config_path.clone();
            pair.server.run(move || Config::load_for_run(&path))
        }
        .unwrap_or_else(|e| panic!("{name}'s config: {}", jailer::error::Chain(&e)));
        Self {
            name: name.to_owned(),
            pair,
            bpffs,
            dir,
            config_path,
            config,
            ns: hub.ns.clone(),
            jailer: hub.jailer.clone(),
            agent: None,
        }
    }

    /// Starts the agent: XDP attached in the member's namespace, the agent
    /// on a thread in the hub.
    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "{} is running", self.name);
        let config = self.config.clone();
        let datapath = self.pair.server.run(move || {
            kernel::attach(
                &config.bpffs,
                &config.interfaces,
                config.xdp_mode,
                config.max_bans,
            )
            .expect("attach")
        });
        let config = self.config.clone();
        let config_path = self.config_path.clone();
        self.agent = Some(self.ns.run(move || {
            Agent::start_with(move || {
                let options = AgentOptions {
                    config_path: Some(config_path),
                    attached: datapath.attached,
                    ..AgentOptions::default()
                };
                (config, datapath.bans, options)
            })
        }));
    }

    /// Stops the agent (a clean stop; the maps and the link stay pinned).
    pub fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().expect("the agent stopped cleanly");
        }
    }

    pub fn is_running(&self) -> bool {
        self.agent.is_some()
    }

    /// Runs the jailer command line with this member's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(&self.jailer)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .expect("run jailer");
        assert!(
            out.status.success(),
            "{} `jailer {}` failed: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `jailer ban TARGET` for an hour.
    pub fn ban(&self, target: &str) {
        self.cli(&["ban", target, "--time", "1h"]);
    }

    /// The ban table, opened from the pins.
    pub fn table(&self) -> XdpBanTable {
        XdpBanTable::open_existing(&self.bpffs.pins()).expect("open the pinned maps")
    }

    /// Whether a ban in force on `target` is in this member's kernel map.
    pub fn enforces(&self, table: &XdpBanTable, target: &str) -> bool {
        let target: Target = target.parse().expect("a target");
        table
            .get(target)
            .expect("read the ban map")
            .is_some_and(|b| b.expiry.is_active(std::time::SystemTime::now()))
    }

    /// Waits until this member's map does (or does not) hold `target`.
    pub fn wait_enforces(&self, target: &str, wanted: bool, limit: Duration) {
        let table = self.table();
        wait_for(
            &format!(
                "{} to {} {target}",
                self.name,
                if wanted { "enforce" } else { "lift" }
            ),
            limit,
            || self.enforces(&table, target) == wanted,
        );
    }

    /// Whether a TCP connection from `src` (behind this member) to its POP3
    /// port gets through, within 300 ms.
    pub fn reaches_pop3(&self, src: &str) -> bool {
        let src = src.parse().expect("an address");
        let dst = "10.77.0.1:110".parse().expect("an address");
        self.pair
            .client
            .run(move || crate::connect_from(src, dst, Duration::from_millis(300)).is_ok())
    }

    /// The agent's fleet report.
    pub fn fleet(&self) -> FleetReport {
        match control::ask(&self.config.state_dir, &Request::Fleet) {
            Ok(Some(Response::Fleet { report })) => report,
            other => panic!("{}: no fleet report: {other:?}", self.name),
        }
    }

    /// Waits until the member is connected and in sync with the bucket.
    pub fn wait_synced(&self, limit: Duration) {
        wait_for(&format!("{} to be in sync", self.name), limit, || {
            let r = self.fleet();
            r.state == "connected" && r.synced
        });
    }

    /// Appends a vchkpw failure from `ip` to this member's mail log.
    pub fn failure(&self, ip: &str) {
        crate::append_failure(&self.dir.path().join("mail.log"), ip);
    }

    /// The ban journal's lines.
    pub fn journal(&self) -> String {
        fs::read_to_string(self.config.state_dir.join(jailer::state::JOURNAL)).unwrap_or_default()
    }

    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // The agent first (it holds the maps), then the pins and namespaces.
        self.agent.take();
    }
}
