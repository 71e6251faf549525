//! The benchmark workload shared by the bench binaries: a mixed mail log in
//! which 5% of lines are vchkpw failures from many addresses.

use std::fmt::Write as _;

/// Deterministic xorshift, so every run (and fail2ban-regex) sees the same log.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const NOISE: &[&str] = &[
    "postfix/smtpd[{pid}]: connect from unknown[198.51.100.{a}]",
    "postfix/smtpd[{pid}]: disconnect from unknown[198.51.100.{a}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    "postfix/qmgr[{pid}]: 4F2A81C0A3: from=<news@example.org>, size=18231, nrcpt=1 (queue active)",
    "postfix/smtp[{pid}]: 4F2A81C0A3: to=<bob@example.com>, relay=mx.example.com[192.0.2.{a}]:25, delay=0.4, status=sent (250 2.0.0 Ok)",
    "vpopmail[{pid}]: vchkpw-pop3: login success bob@example.com:192.0.2.{a}",
    "dovecot: imap-login: Login: user=<carol@example.com>, method=PLAIN, rip=192.0.2.{a}, lip=192.0.2.1, TLS",
    "postfix/cleanup[{pid}]: 4F2A81C0A3: message-id=<20250928130103.{pid}@example.org>",
];

const FAILURES: &[&str] = &[
    "vchkpw-pop3: vpopmail user not found {user}@:{ip}",
    "vchkpw-pop3: password fail {user}@example.com:{ip}",
    "vchkpw-pop3s: password fail {user}@example.com:{ip}",
    "vchkpw-imap: vpopmail user not found {user}@example.com:{ip}",
    "vchkpw-smtp: password fail (pass: 'letmein') {user}@example.com:{ip}",
];

/// One log line; `attacker` is Some(address index) for a failure line.
pub fn line(rng: &mut Rng, out: &mut String, second: u32, attacker: Option<u32>) {
    let (h, m, s) = (13 + second / 3600 % 10, second / 60 % 60, second % 60);
    let pid = 20_000 + rng.next() % 9000;
    let _ = write!(out, "Sep 28 {h:02}:{m:02}:{s:02} www ");
    match attacker {
        Some(n) => {
            let ip = format!("203.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
            let t = FAILURES[(rng.next() % FAILURES.len() as u64) as usize];
            let users = ["admin", "info", "test", "www", "sales", "root"];
            let user = users[(rng.next() % users.len() as u64) as usize];
            let _ = write!(
                out,
                "vpopmail[{pid}]: {}",
                t.replace("{user}", user).replace("{ip}", &ip)
            );
        }
        None => {
            let t = NOISE[(rng.next() % NOISE.len() as u64) as usize];
            let a = rng.next() % 250 + 1;
            out.push_str(
                &t.replace("{pid}", &pid.to_string())
                    .replace("{a}", &a.to_string()),
            );
        }
    }
    out.push('\n');
}

/// `lines` lines, 5% failures spread over `attackers` addresses.
#[allow(
    dead_code,
    reason = "the follow bench writes its own lines at a fixed rate"
)]
pub fn mail_log(lines: usize, attackers: u32) -> String {
    let mut rng = Rng::new(0x5eed);
    let mut out = String::with_capacity(lines * 110);
    for i in 0..lines {
        let attacker = (rng.next() % 100 < 5).then(|| (rng.next() % u64::from(attackers)) as u32);
        line(&mut rng, &mut out, (i / 1000) as u32, attacker);
    }
    out
}
