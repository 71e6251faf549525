//! An entry's fields and the line made of them, as fail2ban's
//! `formatJournalEntry` builds it, so its filters match journal lines unchanged.

/// The fields of an entry that the line is made of.
#[derive(Debug, Default)]
pub(super) struct Fields {
    hostname: Option<Vec<u8>>,
    identifier: Option<Vec<u8>>,
    comm: Option<Vec<u8>>,
    syslog_pid: Option<Vec<u8>>,
    pid: Option<Vec<u8>>,
    /// All of them: an entry may carry several, which fail2ban joins.
    message: Vec<Vec<u8>>,
    pub(super) source_realtime: Option<u64>,
    source_monotonic: Option<u64>,
}

impl Fields {
    /// Keeps `name=value` if it is one of ours (the first value of a
    /// repeated field, except MESSAGE).
    pub(super) fn take(&mut self, name: &[u8], value: &[u8]) {
        let slot = match name {
            b"_HOSTNAME" => &mut self.hostname,
            b"SYSLOG_IDENTIFIER" => &mut self.identifier,
            b"_COMM" => &mut self.comm,
            b"SYSLOG_PID" => &mut self.syslog_pid,
            b"_PID" => &mut self.pid,
            b"MESSAGE" => {
                self.message.push(value.to_vec());
                return;
            }
            b"_SOURCE_REALTIME_TIMESTAMP" => {
                self.source_realtime = self.source_realtime.or_else(|| parse_u64(value));
                return;
            }
            b"_SOURCE_MONOTONIC_TIMESTAMP" => {
                self.source_monotonic = self.source_monotonic.or_else(|| parse_u64(value));
                return;
            }
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(value.to_vec());
        }
    }

    /// SYSLOG_IDENTIFIER, or _COMM when it is missing or empty.
    fn identifier(&self) -> Option<&[u8]> {
        non_empty(&self.identifier).or_else(|| non_empty(&self.comm))
    }

    /// SYSLOG_PID, or _PID; python-systemd makes them ints, so a 0 counts as
    /// missing too (`if not v`).
    fn pid(&self) -> Option<String> {
        pid_text(&self.syslog_pid).or_else(|| pid_text(&self.pid))
    }

    /// The kernel's lines carry the monotonic time (fail2ban's `[%12.6f]`).
    pub(super) fn needs_monotonic(&self) -> bool {
        self.source_monotonic.is_none() && self.is_kernel()
    }

    fn is_kernel(&self) -> bool {
        self.identifier() == Some(b"kernel".as_slice()) && self.pid().is_none()
    }

    /// fail2ban's `formatJournalEntry`: `HOST IDENT[PID]: MESSAGE`, each part
    /// left out when missing; newlines escaped as `\n`.
    pub(super) fn line(&self, monotonic: Option<u64>) -> String {
        let mut parts: Vec<String> = Vec::with_capacity(4);
        if let Some(host) = non_empty(&self.hostname) {
            parts.push(String::from_utf8_lossy(host).into_owned());
        }
        if let Some(ident) = self.identifier() {
            let mut tag = String::from_utf8_lossy(ident).into_owned();
            if let Some(pid) = self.pid() {
                tag.push('[');
                tag.push_str(&pid);
                tag.push(']');
            }
            tag.push(':');
            let kernel = tag == "kernel:";
            parts.push(tag);
            if kernel && let Some(usec) = self.source_monotonic.or(monotonic) {
                let secs = format!("{}.{:06}", usec / 1_000_000, usec % 1_000_000);
                parts.push(format!("[{secs:>12}]"));
            }
        }
        let message: Vec<_> = self
            .message
            .iter()
            .map(|m| String::from_utf8_lossy(m))
            .collect();
        parts.push(message.join(" "));
        parts.join(" ").replace('\n', "\\n")
    }
}

fn non_empty(value: &Option<Vec<u8>>) -> Option<&[u8]> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// A PID as fail2ban prints it: the integer if it is one (and not 0), else
/// the text as it is.
fn pid_text(value: &Option<Vec<u8>>) -> Option<String> {
    let text = String::from_utf8_lossy(non_empty(value)?);
    match text.trim().parse::<i64>() {
        Ok(0) => None,
        Ok(n) => Some(n.to_string()),
        Err(_) => Some(text.into_owned()),
    }
}

fn parse_u64(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        let mut f = Fields::default();
        for (name, value) in pairs {
            f.take(name.as_bytes(), value.as_bytes());
        }
        f
    }

    #[test]
    fn line_has_host_ident_pid_message() {
        let f = fields(&[
            ("_HOSTNAME", "mail"),
            ("SYSLOG_IDENTIFIER", "dovecot"),
            ("_PID", "812"),
            ("_COMM", "auth"),
            ("MESSAGE", "auth: Info: hi"),
        ]);
        assert_eq!(f.line(None), "mail dovecot[812]: auth: Info: hi");
    }

    #[test]
    fn line_fallbacks() {
        // _COMM when no identifier; SYSLOG_PID before _PID.
        let f = fields(&[
            ("_COMM", "smtpd"),
            ("SYSLOG_PID", "7"),
            ("_PID", "8"),
            ("MESSAGE", "m"),
        ]);
        assert_eq!(f.line(None), "smtpd[7]: m");
        // Empty identifier counts as missing; a 0 PID too.
        let f = fields(&[
            ("SYSLOG_IDENTIFIER", ""),
            ("_COMM", "c"),
            ("SYSLOG_PID", "0"),
            ("_PID", "9"),
            ("MESSAGE", "m"),
        ]);
        assert_eq!(f.line(None), "c[9]: m");
        // No identifier at all: no tag, no colon; the PID is not shown.
        let f = fields(&[("_HOSTNAME", "h"), ("_PID", "9"), ("MESSAGE", "m")]);
        assert_eq!(f.line(None), "h m");
        // No PID.
        let f = fields(&[("SYSLOG_IDENTIFIER", "x"), ("MESSAGE", "m")]);
        assert_eq!(f.line(None), "x: m");
        // A non-numeric PID is shown as it is; a padded one as its number.
        let f = fields(&[
            ("SYSLOG_IDENTIFIER", "x"),
            ("SYSLOG_PID", "a1"),
            ("MESSAGE", "m"),
        ]);
        assert_eq!(f.line(None), "x[a1]: m");
        let f = fields(&[
            ("SYSLOG_IDENTIFIER", "x"),
            ("SYSLOG_PID", " 012 "),
            ("MESSAGE", "m"),
        ]);
        assert_eq!(f.line(None), "x[12]: m");
        // No MESSAGE: the line ends with the separator, as in fail2ban.
        let f = fields(&[("SYSLOG_IDENTIFIER", "x")]);
        assert_eq!(f.line(None), "x: ");
    }

    #[test]
    fn line_joins_messages_and_escapes_newlines() {
        let f = fields(&[
            ("SYSLOG_IDENTIFIER", "x"),
            ("MESSAGE", "one\ntwo"),
            ("MESSAGE", "three"),
        ]);
        assert_eq!(f.line(None), "x: one\\ntwo three");
        let mut f = Fields::default();
        f.take(b"SYSLOG_IDENTIFIER", b"x");
        f.take(b"MESSAGE", b"bad \xff byte");
        assert_eq!(f.line(None), "x: bad \u{fffd} byte");
    }

    #[test]
    fn dovecot_entries_as_formatted_here_match_fail2bans_filter() {
        use crate::filter::tests::{DOVECOT_LOG, dovecot_filter, failures};
        let Some(filter) = dovecot_filter(true) else {
            return;
        };
        // The same lines as dovecot writes them to stderr under systemd
        // (`log_timestamp = ""`), and as journald records them.
        let now = SystemTime::now();
        let entries = DOVECOT_LOG.lines().map(|l| {
            let message = l.splitn(4, ' ').nth(3).unwrap();
            let f = fields(&[
                ("_HOSTNAME", "mail"),
                ("SYSLOG_IDENTIFIER", "dovecot"),
                ("_PID", "812"),
                ("MESSAGE", message),
            ]);
            (f.line(None), Some(now))
        });
        let attacker = Some("10.251.0.2".parse().unwrap());
        assert_eq!(
            failures(&filter, entries),
            [
                None, attacker, attacker, None, None, attacker, attacker, None
            ]
        );
    }

    #[test]
    fn kernel_lines_carry_monotonic_seconds() {
        let f = fields(&[("SYSLOG_IDENTIFIER", "kernel"), ("MESSAGE", "oops")]);
        assert!(f.needs_monotonic());
        assert_eq!(f.line(Some(12_345_678)), "kernel: [   12.345678] oops");
        let f = fields(&[
            ("SYSLOG_IDENTIFIER", "kernel"),
            ("_SOURCE_MONOTONIC_TIMESTAMP", "5"),
            ("MESSAGE", "m"),
        ]);
        assert!(!f.needs_monotonic());
        assert_eq!(f.line(Some(1)), "kernel: [    0.000005] m");
    }
}
