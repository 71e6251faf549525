//! What the agent needs to hold on this machine beyond single values
//! ([`Config::validate_for_run`]): interfaces that exist, a jail, separate
//! absolute directories, logs that can be followed. Apart from parsing
//! because commands that only read a config (`list`, `detach`) skip it.

use std::path::Path;

use super::{Backend, Config, ConfigError};

impl Config {
    fn invalid(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        let key = key.into();
        let line = match key.as_str() {
            "interface" => self.lines.interface,
            "bpffs" => self.lines.bpffs,
            "state_dir" => self.lines.state_dir,
            jail => jail
                .strip_prefix("jails.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|name| self.lines.jails.get(name).copied())
                .unwrap_or(0),
        };
        ConfigError::Invalid {
            path: self.path.clone(),
            line,
            key,
            problem: problem.into(),
        }
    }

    /// Everything `run` needs beyond single values: interfaces that exist
    /// (once each), a jail, absolute and separate bpffs and state_dir, logs
    /// that can be followed. A config that passes here would do something.
    pub fn validate_for_run(&self) -> Result<(), ConfigError> {
        if self.interfaces.is_empty() {
            return Err(ConfigError::NoInterface {
                path: self.path.clone(),
            });
        }
        for (i, iface) in self.interfaces.iter().enumerate() {
            if self.interfaces[..i].contains(iface) {
                return Err(self.invalid("interface", format!("`{iface}` is listed twice")));
            }
            if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
                return Err(self.invalid(
                    "interface",
                    format!("`{iface}` does not exist on this machine (see `ip link`)"),
                ));
            }
        }
        // A fleet member may only enforce the others' bans.
        if self.jails.is_empty() && self.fleet.is_none() {
            return Err(ConfigError::NoJail {
                path: self.path.clone(),
            });
        }
        for (key, dir) in [("bpffs", &self.bpffs), ("state_dir", &self.state_dir)] {
            if !dir.is_absolute() {
                return Err(
                    self.invalid(key, format!("`{}` is not an absolute path", dir.display()))
                );
            }
        }
        if self.bpffs.starts_with(&self.state_dir) || self.state_dir.starts_with(&self.bpffs) {
            return Err(self.invalid(
                "bpffs",
                format!(
                    "`{}` and state_dir `{}` must not contain each other (bpffs would be mounted over the journal)",
                    self.bpffs.display(),
                    self.state_dir.display()
                ),
            ));
        }
        for jail in &self.jails {
            let key = format!("jails.{}.logpath", jail.name);
            if jail.backend == Backend::Auto && jail.logpaths.is_empty() {
                return Err(self.invalid(
                    &key,
                    "no log to follow: give logpath, or backend = \"systemd\" for the journal",
                ));
            }
            if let Some(glob) = jail.unmatched_globs.first() {
                return Err(self.invalid(
                    &key,
                    format!(
                        "`{}` matches no file (globs are expanded when the config is loaded: at start and at each reload)",
                        glob.display()
                    ),
                ));
            }
            for log in &jail.logpaths {
                let problem = if !log.is_absolute() {
                    Some("is not an absolute path".to_owned())
                } else if log.is_dir() {
                    Some("is a directory, not a log file".to_owned())
                } else if !log.parent().is_some_and(Path::is_dir) {
                    Some("is in a directory that does not exist".to_owned())
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(self.invalid(&key, format!("`{}` {problem}", log.display())));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/jailer/jailer.toml"), text)
    }

    #[test]
    fn run_refuses_what_would_fail_or_do_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let ok = format!(
            "interface = \"lo\"\nbpffs = \"{d}/bpf\"\nstate_dir = \"{d}/state\"\n[jails.a]\nfilter = \"vpopmail\"\nlogpath = \"{d}/mail.log\"\n"
        );
        parse(&ok).unwrap().validate_for_run().unwrap();
        let refused = |text: String, want: &str| {
            let e = parse(&text)
                .unwrap()
                .validate_for_run()
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{want}: {e}");
        };
        refused(ok.replace("interface = \"lo\"\n", ""), "no `interface` set");
        refused(
            ok.replace("\"lo\"", "[\"lo\", \"lo\"]"),
            "`lo` is listed twice",
        );
        refused(
            ok.replace("\"lo\"", "\"nosuchif0\""),
            "`nosuchif0` does not exist",
        );
        refused(
            ok.replace(&format!("{d}/bpf"), "bpf"),
            "bpffs: `bpf` is not an absolute path",
        );
        refused(
            ok.replace(&format!("{d}/bpf"), &format!("{d}/state")),
            "must not contain each other",
        );
        refused(
            ok.replace(&format!("{d}/bpf"), &format!("{d}/state/bpf")),
            "must not contain each other",
        );
        refused(ok.replace("mail.log", ""), "is a directory");
        refused(
            ok.replace("mail.log", "nodir/mail.log"),
            "directory that does not exist",
        );
        refused(
            ok.replace(&format!("{d}/mail.log"), "mail.log"),
            "not an absolute path",
        );
        refused(
            ok.split("[jails").next().unwrap().to_owned(),
            "no enabled jail",
        );
    }
}
