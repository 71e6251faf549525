//! fail2ban's enabled jails as a jailer.toml.
//!
//! Each jail is read as fail2ban 1.0.2 reads it (options resolved through
//! `jail.conf`, `jail.d/*.conf`, `jail.local`, `jail.d/*.local` and the
//! `paths-*.conf` includes), then written value by value. Every value that
//! is written loads as jailer loads it (filters are loaded here, ports,
//! times and networks parsed); what cannot be carried over is written as a
//! comment saying why, and a jail that cannot be carried over at all is
//! listed at the end with the reason. Output is sorted, so two imports of
//! one configuration differ only in the date of the header.

mod filter;
mod settings;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use self::{
    filter::{filter_spec, lines},
    settings::{bantime, findtime, ignoreip, increment, log_notes, maxretry, not_carried},
};
use super::{
    ImportError,
    ports::{self, Ports, Services},
};
use crate::{
    config::DEFAULT_FAIL2BAN_DIR,
    error::Chain,
    filter::fail2ban::config::{
        jail::{FAIL2BAN_VERSION, Jail as Fail2banJail, read_jails},
        options::NameWithOptions,
    },
    source::JournalMatch,
};

/// fail2ban's enabled jails, carried over.
#[derive(Debug)]
pub struct Import {
    /// fail2ban's configuration directory (absolute).
    pub fail2ban_dir: PathBuf,
    /// The files read, in fail2ban's merge order.
    pub files: Vec<PathBuf>,
    /// The jails carried over, by name.
    pub jails: Vec<ImportedJail>,
    /// Enabled jails not carried over, with the reason, by name.
    pub left_out: Vec<(String, String)>,
}

/// One jail as jailer.toml lines.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedJail {
    pub name: String,
    /// Where fail2ban declares it (`file:line`).
    pub origin: String,
    /// `key = value` lines (values as TOML), in output order.
    pub settings: Vec<(&'static str, String)>,
    /// What did not carry over, and why.
    pub notes: Vec<String>,
}

impl ImportedJail {
    /// The TOML value of `key`, if written.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the jails of `fail2ban_dir` as fail2ban does and converts the
/// enabled ones; `services` resolves port names jailer does not know.
pub fn import_jails(fail2ban_dir: &Path, services: &Services) -> Result<Import, ImportError> {
    // Absolute, so the config names the same directory wherever it is read.
    let fail2ban_dir = std::path::absolute(fail2ban_dir).unwrap_or_else(|_| fail2ban_dir.into());
    let read = read_jails(&fail2ban_dir)?;
    let mut jails = Vec::new();
    let mut left_out = Vec::new();
    for jail in &read.jails {
        match convert(jail, &fail2ban_dir, services) {
            Ok(imported) => jails.push(imported),
            Err(why) => left_out.push((jail.name.clone(), why)),
        }
    }
    for skipped in &read.skipped {
        left_out.push((
            skipped.name.clone(),
            format!("fail2ban would not start it: {}", Chain(&skipped.reason)),
        ));
    }
    jails.sort_by(|a, b| a.name.cmp(&b.name));
    left_out.sort();
    Ok(Import {
        fail2ban_dir,
        files: read.files,
        jails,
        left_out,
    })
}

impl Import {
    /// The jailer.toml text; `generated` says when (the header's only
    /// varying line).
    pub fn render(&self, generated: &str) -> String {
        let mut out = String::new();
        let enabled = self.jails.len() + self.left_out.len();
        out.push_str("# jailer configuration imported from fail2ban by `jailer import-fail2ban`\n");
        comment(
            &mut out,
            &format!(
                "on {generated}, from {} as fail2ban {FAIL2BAN_VERSION} reads it:",
                self.fail2ban_dir.display()
            ),
        );
        for file in &self.files {
            comment(&mut out, &format!("  {}", file.display()));
        }
        comment(
            &mut out,
            &format!(
                "{enabled} enabled jail(s), {} imported. Check with `jailer check --config FILE`.",
                self.jails.len()
            ),
        );
        out.push_str(
            "#\n\
             # Not carried over, for every jail: fail2ban's actions (action, banaction,\n\
             # mta): jailer bans by writing the address into kernel maps that its XDP\n\
             # program reads, in the NIC driver; it runs no action scripts and sends no\n\
             # mail. Each jail lists its own below. Logs are read from their end on the\n\
             # first start (fail2ban reads a `head` log from its start). Settings not\n\
             # written here (bpffs, state_dir, ...) take their defaults: see\n\
             # jailer.example.toml.\n\n\
             # fail2ban bans on every interface; jailer attaches to the NICs named here.\n\
             # Set the one(s) your clients reach (see `ip link`), e.g. [\"eth0\", \"eth1\"].\n\
             interface = \"eth0\"\n",
        );
        if self.fail2ban_dir != Path::new(DEFAULT_FAIL2BAN_DIR) {
            let _ = writeln!(
                out,
                "# Filters are read from this fail2ban configuration.\nfail2ban_dir = {}",
                toml_str(&self.fail2ban_dir.to_string_lossy())
            );
        }
        for jail in &self.jails {
            let _ = writeln!(out, "\n[jails.{}]", toml_key(&jail.name));
            comment(
                &mut out,
                &format!("fail2ban's [{}], {}", jail.name, jail.origin),
            );
            for (key, value) in &jail.settings {
                let _ = writeln!(out, "{key} = {value}");
            }
            for note in &jail.notes {
                comment(&mut out, note);
            }
        }
        if !self.left_out.is_empty() {
            out.push_str("\n# Enabled in fail2ban, not imported:\n");
            for (name, why) in &self.left_out {
                comment(&mut out, &format!("[{name}] {why}"));
            }
        }
        out
    }
}

/// `text` as TOML comment lines (continuation lines indented). TOML allows
/// no control character but tab in a comment: others are escaped, so any
/// text fail2ban's files hold keeps the config loadable.
fn comment(out: &mut String, text: &str) {
    for (i, line) in text.split('\n').enumerate() {
        out.push_str(if i == 0 { "# " } else { "#   " });
        for c in line.chars() {
            if c.is_control() && c != '\t' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        out.push('\n');
    }
}

/// One jail, or why it cannot be carried over.
fn convert(
    jail: &Fail2banJail,
    fail2ban_dir: &Path,
    services: &Services,
) -> Result<ImportedJail, String> {
    let mut settings: Vec<(&'static str, String)> = Vec::new();
    let mut notes = Vec::new();
    let backend = NameWithOptions::parse(&jail.backend)
        .map_err(|e| format!("backend `{}`: {e}", jail.backend))?;
    let systemd = match backend.name.trim().to_lowercase().as_str() {
        "auto" | "pyinotify" | "gamin" | "polling" => false,
        "systemd" => true,
        other => {
            return Err(format!(
                "backend `{other}` is none jailer has (auto, pyinotify, gamin, polling: files; systemd: the journal)"
            ));
        }
    };
    let spec = filter_spec(jail, fail2ban_dir, systemd, &mut notes)?;
    settings.push(("filter", toml_str(&spec)));
    if systemd {
        settings.push(("backend", toml_str("systemd")));
        for (option, value) in &backend.options {
            if option == "journalpath" {
                settings.push(("journalpath", toml_str(value)));
            } else {
                notes.push(format!(
                    "backend option {option}={value}: not carried over (jailer reads the system journal, or the files of journalpath)"
                ));
            }
        }
        let journalmatch = lines(&jail.filter_def.journalmatch);
        JournalMatch::parse(&journalmatch)
            .map_err(|e| format!("journalmatch `{journalmatch}`: {}", Chain(&e)))?;
        if !journalmatch.is_empty() {
            settings.push(("journalmatch", toml_str(&journalmatch)));
        }
    } else {
        let patterns: Vec<PathBuf> = jail
            .logpath
            .iter()
            .map(|l| PathBuf::from(&l.pattern))
            .collect();
        if patterns.is_empty() {
            return Err("no logpath: fail2ban would find no log to read either".into());
        }
        log_notes(&patterns, &mut notes);
        let list: Vec<String> = patterns
            .iter()
            .map(|p| toml_str(&p.to_string_lossy()))
            .collect();
        settings.push(("logpath", format!("[{}]", list.join(", "))));
    }
    let allports = jail
        .actions
        .iter()
        .find(|a| a.name.contains("allports"))
        .map(|a| a.name.as_str());
    let ports = ports::convert(jail.port.as_deref(), allports, services, &mut notes);
    settings.push((
        "port",
        match ports {
            Ports::All => toml_str("all"),
            Ports::Only(items) => {
                let items: Vec<String> = items.iter().map(ToString::to_string).collect();
                format!("[{}]", items.join(", "))
            }
        },
    ));
    if let Some(protocol) = jail.protocol.as_deref()
        && !protocol.trim().eq_ignore_ascii_case("tcp")
    {
        notes.push(format!(
            "protocol = {protocol}: not carried over: jailer's XDP program judges TCP only"
        ));
    }
    settings.push(("maxretry", maxretry(jail.maxretry, &mut notes).to_string()));
    settings.push(("findtime", findtime(jail.findtime.as_ref(), &mut notes)));
    settings.push((
        "bantime",
        bantime(jail.bantime.as_ref(), "bantime", &mut notes),
    ));
    increment(jail, &mut settings, &mut notes);
    let ignoreip = ignoreip(&jail.ignoreip, &mut notes);
    if !ignoreip.is_empty() {
        let list: Vec<String> = ignoreip.iter().map(|t| toml_str(&t.to_string())).collect();
        settings.push(("ignoreip", format!("[{}]", list.join(", "))));
    }
    settings.push(("ignoreself", jail.ignoreself.unwrap_or(true).to_string()));
    not_carried(jail, &mut notes);
    Ok(ImportedJail {
        name: jail.name.clone(),
        origin: jail.origin.to_string(),
        settings,
        notes,
    })
}

/// A TOML string.
fn toml_str(s: &str) -> String {
    toml::Value::from(s).to_string()
}

/// A jail name as a TOML key: bare when it can be, else quoted.
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        return name.to_owned();
    }
    // One line, always: the `toml` crate writes a name holding a newline as
    // a multi-line string, which no key may be.
    let mut key = String::from("\"");
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                key.push('\\');
                key.push(c);
            }
            c if c.is_control() => {
                let _ = write!(key, "\\u{:04X}", u32::from(c));
            }
            c => key.push(c),
        }
    }
    key.push('"');
    key
}

#[cfg(test)]
mod tests {
    use std::{fs, time::Duration};

    use super::*;
    use crate::test_files::write;
    use crate::{ban::PortSet, config::Config};

    /// A small fail2ban configuration exercising each mapping.
    fn fail2ban_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let log = d.join("mail.log");
        fs::write(&log, "").unwrap();
        write(
            d,
            "filter.d/mail.conf",
            "[Definition]\nfailregex = ^fail <HOST>$\nmode = normal\n[Init]\njournalmatch = _SYSTEMD_UNIT=mail.service\n",
        );
        for action in ["iptables-multiport", "iptables-allports"] {
            write(
                d,
                &format!("action.d/{action}.conf"),
                "[Definition]\nactionban = true\n",
            );
        }
        write(
            d,
            "jail.conf",
            &format!(
                "[DEFAULT]\nbantime = 10m\nfindtime = 10m\nmaxretry = 5\nbackend = auto\nenabled = false\n\
                 mode = normal\nfilter = %(__name__)s[mode=%(mode)s]\nport = 0:65535\nprotocol = tcp\n\
                 banaction = iptables-multiport\nbanaction_allports = iptables-allports\nmta = sendmail\n\
                 action = %(banaction)s[port=\"%(port)s\", protocol=\"%(protocol)s\"]\n\
                 ignoreip = 127.0.0.1/8 ::1\n\
                 [mail]\nport = pop3,imap,465\nlogpath = {log}\n\
                 [mail-journal]\nfilter = mail\nbackend = systemd[journalpath=/run/log/remote, journalflags=1]\n\
                 [mail-all]\nfilter = mail\nlogpath = {d}/*.log\n  {d}/missing.log\n\
                 banaction = %(banaction_allports)s\nprotocol = all\n\
                 [own-regex]\nfilter = mail\nlogpath = {log}\nfailregex = %(known/failregex)s\n            ^jail <HOST>$\n\
                 [nofilter]\nfilter = nosuch\nlogpath = {log}\n\
                 [kqueue]\nfilter = mail\nbackend = kqueue\nlogpath = {log}\n\
                 [off]\nfilter = nosuch\n",
                log = log.display(),
                d = d.display()
            ),
        );
        write(
            d,
            "jail.local",
            "[mail]\nenabled = true\nmaxretry = 3\nbantime = -1\nbantime.increment = true\n\
             bantime.factor = 2\nbantime.maxtime = 1w\nbantime.rndtime = 10m\n\
             bantime.formula = ban.Time * banFactor\nignoreip = %(default/ignoreip)s 192.0.2.0/24 mx.example.org\n\
             ignoreself = false\nusedns = no\n\
             [mail-journal]\nenabled = true\n[mail-all]\nenabled = true\n[own-regex]\nenabled = true\n\
             [nofilter]\nenabled = true\n[kqueue]\nenabled = true\n",
        );
        dir
    }

    fn import(dir: &Path) -> Import {
        import_jails(dir, &Services::parse("ssh 22/tcp\n")).unwrap()
    }

    #[test]
    fn each_jail_is_carried_over_or_said_why_not() {
        let dir = fail2ban_dir();
        let d = dir.path();
        let import = import(d);
        let names: Vec<&str> = import.jails.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            ["mail", "mail-all", "mail-journal", "own-regex"],
            "sorted"
        );
        let left: Vec<&str> = import.left_out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(left, ["kqueue", "nofilter"]);
        assert!(
            import.left_out[0].1.contains("backend `kqueue`"),
            "{:?}",
            import.left_out
        );
        assert!(
            import.left_out[1]
                .1
                .starts_with("fail2ban would not start it: ")
                && import.left_out[1].1.contains("nosuch"),
            "{:?}",
            import.left_out
        );

        let mail = &import.jails[0];
        assert_eq!(mail.get("filter"), Some("\"mail[mode=normal, usedns=no]\""));
        assert_eq!(mail.get("port"), Some("[\"pop3\", \"imap\", 465]"));
        assert_eq!(mail.get("maxretry"), Some("3"));
        assert_eq!(mail.get("bantime"), Some("\"permanent\""));
        assert_eq!(mail.get("bantime_increment"), Some("true"));
        assert_eq!(mail.get("bantime_factor"), Some("2.0"));
        assert_eq!(mail.get("bantime_max"), Some("\"7d\""));
        assert_eq!(
            mail.get("ignoreip"),
            Some("[\"127.0.0.0/8\", \"::1\", \"192.0.2.0/24\"]")
        );
        assert_eq!(mail.get("ignoreself"), Some("false"));
        let notes = mail.notes.join("\n");
        for said in [
            "bantime.formula = ban.Time * banFactor: not carried over",
            "bantime.rndtime = 10m: not carried over",
            "`mx.example.org` is not an address",
            "Not carried over (jailer bans in XDP: no action scripts, no mail):\naction = iptables-multiport[port=\"pop3,imap,465\", protocol=\"tcp\"]\nbanaction = iptables-multiport\nmta = sendmail",
        ] {
            assert!(notes.contains(said), "{said}: {notes}");
        }

        let all = &import.jails[1];
        assert_eq!(all.get("port"), Some("\"all\""));
        let notes = all.notes.join("\n");
        for said in [
            "`iptables-allports` bans every port",
            "protocol = all: not carried over",
            "missing.log` does not exist yet",
        ] {
            assert!(notes.contains(said), "{said}: {notes}");
        }

        let journal = &import.jails[2];
        assert_eq!(journal.get("backend"), Some("\"systemd\""));
        assert_eq!(journal.get("journalpath"), Some("\"/run/log/remote\""));
        assert_eq!(
            journal.get("journalmatch"),
            Some("\"_SYSTEMD_UNIT=mail.service\"")
        );
        assert_eq!(journal.get("logpath"), None);
        assert_eq!(journal.get("port"), Some("\"all\""), "0:65535");
        assert!(journal.notes[0].contains("journalflags=1: not carried over"));

        let own = &import.jails[3];
        assert_eq!(own.get("filter"), Some("\"mail\""), "as the jail names it");
        assert!(
            own.notes[0].starts_with("failregex: the jail's own (set at ")
                && own.notes[0].contains("put it in filter.d/mail.local"),
            "{:?}",
            own.notes
        );
    }

    proptest::proptest! {
        /// Whatever fail2ban's files hold (names, paths, values quoted in
        /// notes), the text loads.
        #[test]
        fn any_text_in_names_and_notes_still_loads(
            name in "[^\\[\\]]{1,20}",
            text in proptest::collection::vec(".*", 1..4),
        ) {
            let jail = ImportedJail {
                name: name.clone(),
                origin: text[0].clone(),
                settings: vec![
                    ("filter", toml_str("vpopmail")),
                    ("logpath", format!("[{}]", toml_str(&format!("/var/log/{}", text[0])))),
                ],
                notes: text.clone(),
            };
            let import = Import {
                fail2ban_dir: PathBuf::from(format!("/etc/{}", text[0])),
                files: text.iter().map(PathBuf::from).collect(),
                jails: vec![jail],
                left_out: vec![(name.clone(), text.join("\n"))],
            };
            let rendered = import.render(&text[0]);
            let config = Config::parse(Path::new("/etc/jailer/jailer.toml"), &rendered);
            let config = config.map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{}\n{rendered}", Chain(&e))))?;
            proptest::prop_assert_eq!(&config.jails[0].name, &name);
        }
    }

    #[test]
    fn the_output_loads_and_is_stable() {
        let dir = fail2ban_dir();
        let d = dir.path();
        let text = import(d).render("now");
        assert_eq!(text, import(d).render("now"), "deterministic");
        assert!(text.contains("interface = \"eth0\"\n"), "{text}");
        assert!(
            text.contains(&format!("fail2ban_dir = \"{}\"", d.display())),
            "{text}"
        );
        assert!(
            text.contains("\n# Enabled in fail2ban, not imported:\n# [kqueue] "),
            "{text}"
        );
        let config = Config::parse(Path::new("/etc/jailer/jailer.toml"), &text).unwrap();
        let mail = &config.jails[0];
        assert_eq!(mail.name, "mail");
        assert_eq!(mail.ports, PortSet::only(&[110, 143, 465]));
        assert_eq!((mail.maxretry, mail.bantime), (3, None));
        assert!(mail.bantime_increment && !mail.ignoreself);
        assert_eq!(mail.bantime_factor, 2.0);
        assert_eq!(mail.bantime_max, Some(Duration::from_secs(7 * 86400)));
        assert!(mail.ignores("192.0.2.9".parse().unwrap()));
        assert_eq!(config.jails[1].ports, PortSet::All);
        assert_eq!(
            config.jails[1].logpaths,
            [d.join("mail.log"), d.join("missing.log")],
            "the glob expanded"
        );
        assert_eq!(config.jails[2].backend, crate::config::Backend::Systemd);
        assert_eq!(config.jails[2].journalmatch, "_SYSTEMD_UNIT=mail.service");
    }
}
