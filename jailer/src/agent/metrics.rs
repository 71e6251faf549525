//! Prometheus text metrics, rendered from the same [`Status`] that `jailer
//! status` prints (so the two always agree), plus what only the agent knows:
//! unbans and the ban latency histogram. Served over plain HTTP on
//! `metrics_listen`.

use std::{
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{Semaphore, mpsc, oneshot},
};
use tracing::warn;

use super::{
    FleetReport,
    control::{Call, Request, Response},
    status::{JailStatus, Status},
};

/// Scrapes served at once; more wait in the kernel's accept queue. Idle
/// connections cannot take every file descriptor the agent has.
const MAX_CONNECTIONS: usize = 16;
/// A client gets this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bounds (seconds) of the ban latency buckets.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0];

/// Ban latency: from the moment the failure line was read to the map write,
/// on the monotonic clock.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if v <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family: HELP, TYPE, then one sample per (labels, value).
fn family<'a>(
    o: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Option<(&'a str, &'a str)>, u64)>,
) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (label, value) in samples {
        match label {
            Some((key, v)) => {
                let _ = writeln!(o, "{name}{{{key}=\"{}\"}} {value}", esc(v));
            }
            None => {
                let _ = writeln!(o, "{name} {value}");
            }
        }
    }
}

/// The exposition text.
pub fn render(status: &Status, unbans: u64, latency: &Histogram) -> String {
    let mut o = String::new();
    let per_jail =
        |o: &mut String, name: &str, kind: &str, help: &str, value: fn(&JailStatus) -> u64| {
            family(
                o,
                name,
                kind,
                help,
                status
                    .jails
                    .iter()
                    .map(|j| (Some(("jail", j.name.as_str())), value(j))),
            );
        };
    family(
        &mut o,
        "jailer_up_seconds",
        "gauge",
        "Seconds since the agent started.",
        [(None, status.uptime_secs.unwrap_or(0))],
    );
    family(
        &mut o,
        "jailer_lines_read_total",
        "counter",
        "Log lines read, per log file.",
        status
            .logs
            .iter()
            .map(|l| (Some(("log", l.path.as_str())), l.lines)),
    );
    per_jail(
        &mut o,
        "jailer_failures_total",
        "counter",
        "Failures matched, per jail.",
        |j| j.total_failed.unwrap_or(0),
    );
    per_jail(
        &mut o,
        "jailer_failing_addresses",
        "gauge",
        "Addresses with failures in their findtime window, per jail.",
        |j| j.currently_failed.unwrap_or(0),
    );
    per_jail(
        &mut o,
        "jailer_bans_total",
        "counter",
        "Bans set, per jail.",
        |j| j.total_banned.unwrap_or(0),
    );
    per_jail(
        &mut o,
        "jailer_ban_errors_total",
        "counter",
        "Bans that could not be written (ban map full), per jail.",
        |j| j.ban_errors.unwrap_or(0),
    );
    per_jail(
        &mut o,
        "jailer_banned",
        "gauge",
        "Bans in force, per jail.",
        |j| j.currently_banned,
    );
    family(
        &mut o,
        "jailer_bans_in_force",
        "gauge",
        "Bans in force in the kernel maps (all jails and manual bans).",
        [(None, status.bans_in_force as u64)],
    );
    family(
        &mut o,
        "jailer_unbans_total",
        "counter",
        "Bans lifted when their bantime ran out.",
        [(None, unbans)],
    );
    family(
        &mut o,
        "jailer_window_evictions_total",
        "counter",
        "Failure windows evicted to bound memory.",
        [(None, status.window_evictions.unwrap_or(0))],
    );
    if let Some(p) = status.packets {
        family(
            &mut o,
            "jailer_packets_total",
            "counter",
            "Packets the XDP program ran on.",
            [(None, p.seen)],
        );
        family(
            &mut o,
            "jailer_packets_dropped_total",
            "counter",
            "Packets dropped by a ban, per address family.",
            [
                (Some(("family", "ipv4")), p.dropped_v4),
                (Some(("family", "ipv6")), p.dropped_v6),
            ],
        );
        family(
            &mut o,
            "jailer_packets_would_drop_total",
            "counter",
            "Packets a ban matched in monitor mode (counted, not dropped).",
            [(None, p.would_drop)],
        );
    }
    if let Some(f) = &status.fleet {
        fleet(&mut o, f);
    }
    let _ = writeln!(
        o,
        "# HELP jailer_ban_latency_seconds From reading the failure line to the ban map write.\n# TYPE jailer_ban_latency_seconds histogram"
    );
    for (bound, n) in BUCKETS.iter().zip(latency.counts) {
        let _ = writeln!(o, "jailer_ban_latency_seconds_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "jailer_ban_latency_seconds_bucket{{le=\"+Inf\"}} {}",
        latency.count
    );
    let _ = writeln!(o, "jailer_ban_latency_seconds_sum {}", latency.sum);
    let _ = writeln!(o, "jailer_ban_latency_seconds_count {}", latency.count);
    o
}

/// The fleet link's families (`[fleet]` only).
fn fleet(o: &mut String, f: &FleetReport) {
    family(
        o,
        "jailer_fleet_connected",
        "gauge",
        "1 when connected to a NATS server and in sync with the bucket.",
        [(None, u64::from(f.state == "connected" && f.synced))],
    );
    family(
        o,
        "jailer_fleet_members",
        "gauge",
        "Fleet members seen, this one included.",
        [(None, f.members.len() as u64)],
    );
    family(
        o,
        "jailer_fleet_member_last_heard_timestamp_seconds",
        "gauge",
        "Unix time of each member's last heartbeat.",
        f.members
            .iter()
            .filter_map(|m| Some((Some(("member", m.name.as_str())), m.last_heard?))),
    );
    family(
        o,
        "jailer_fleet_member_bans",
        "gauge",
        "Unexpired bans each member has in the bucket.",
        f.members
            .iter()
            .map(|m| (Some(("member", m.name.as_str())), m.bans as u64)),
    );
    let _ = writeln!(
        o,
        "# HELP jailer_fleet_enforced_bans Members' bans enforced here, per origin and jail.\n# TYPE jailer_fleet_enforced_bans gauge"
    );
    for e in &f.enforced {
        let _ = writeln!(
            o,
            "jailer_fleet_enforced_bans{{origin=\"{}\",jail=\"{}\"}} {}",
            esc(&e.origin),
            esc(&e.jail),
            e.bans
        );
    }
    family(
        o,
        "jailer_fleet_unpublished",
        "gauge",
        "Own ban changes not confirmed by the NATS server yet.",
        [(None, f.unpublished as u64)],
    );
    family(
        o,
        "jailer_fleet_refused_total",
        "counter",
        "Members' bans refused here (ignoreip, own addresses, lockout).",
        [(None, f.refused)],
    );
    family(
        o,
        "jailer_fleet_failures_dropped_total",
        "counter",
        "Shared failures not sent or not counted (queue full, link down).",
        [(None, f.failures_dropped)],
    );
    family(
        o,
        "jailer_fleet_rejected_total",
        "counter",
        "Bucket entries that could not be used (bad key or value).",
        [(None, f.rejected)],
    );
}

/// A minimal HTTP/1.1 server: `GET /metrics` gets the text, anything else
/// 404. Bounded: at most `MAX_CONNECTIONS` at once, each with a read
/// timeout; when accept fails (out of file descriptors) it backs off instead
/// of spinning.
pub async fn serve(listener: TcpListener, calls: mpsc::Sender<Call>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut last_warning: Option<Instant> = None;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    warn!(error = %e, "metrics: accept failed; backing off");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            let read = tokio::time::timeout(READ_TIMEOUT, async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let wanted = head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?");
            let (code, body) = if wanted {
                let (tx, rx) = oneshot::channel();
                if calls.send((Request::Metrics, tx)).await.is_err() {
                    return;
                }
                match rx.await {
                    Ok(Response::Metrics { text }) => ("200 OK", text),
                    _ => ("503 Service Unavailable", "agent busy\n".to_owned()),
                }
            } else {
                ("404 Not Found", "try /metrics\n".to_owned())
            };
            let reply = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{agent::status::LogStatus, kernel::PacketStats};

    /// A status with every part present (packets, a jail, a fleet).
    fn full_status() -> Status {
        Status {
            source: "agent".into(),
            uptime_secs: Some(5),
            logs: vec![LogStatus {
                path: "/var/log/mail.log".into(),
                lines: 10,
            }],
            jails: vec![JailStatus {
                name: "vpopmail".into(),
                currently_failed: Some(2),
                total_failed: Some(7),
                currently_banned: 1,
                total_banned: Some(1),
                ban_errors: Some(0),
                banned: vec![],
            }],
            packets: Some(PacketStats {
                seen: 100,
                passed: 90,
                dropped_v4: 9,
                dropped_v6: 1,
                would_drop: 0,
            }),
            bans_in_force: 1,
            window_evictions: Some(0),
            fleet: Some(FleetReport {
                name: "mx1".into(),
                state: "connected".into(),
                synced: true,
                members: vec![crate::agent::MemberReport {
                    name: "mx2".into(),
                    last_heard: Some(1_700_000_000),
                    bans: 4,
                    enforced: 3,
                    accepted: true,
                    local: false,
                }],
                enforced: vec![crate::agent::EnforcedBans {
                    origin: "mx2".into(),
                    jail: "dovecot".into(),
                    bans: 3,
                }],
                ..FleetReport::default()
            }),
            ..Status::default()
        }
    }

    #[test]
    fn renders_counters_and_histogram() {
        let status = full_status();
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        let text = render(&status, 3, &h);
        for want in [
            "jailer_lines_read_total{log=\"/var/log/mail.log\"} 10",
            "jailer_failures_total{jail=\"vpopmail\"} 7",
            "jailer_bans_total{jail=\"vpopmail\"} 1",
            "jailer_banned{jail=\"vpopmail\"} 1",
            "jailer_unbans_total 3",
            "jailer_packets_dropped_total{family=\"ipv4\"} 9",
            "jailer_ban_latency_seconds_bucket{le=\"0.001\"} 1",
            "jailer_ban_latency_seconds_bucket{le=\"0.05\"} 2",
            "jailer_ban_latency_seconds_count 2",
            "jailer_fleet_connected 1",
            "jailer_fleet_member_last_heard_timestamp_seconds{member=\"mx2\"} 1700000000",
            "jailer_fleet_member_bans{member=\"mx2\"} 4",
            "jailer_fleet_enforced_bans{origin=\"mx2\",jail=\"dovecot\"} 3",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
    }

    /// Every metric the Grafana dashboard in dist/ queries is one the agent
    /// exports.
    #[test]
    fn the_dashboard_queries_only_exported_metrics() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../dist/grafana-dashboard.json")).unwrap();
        let mut exprs = Vec::new();
        fn walk<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        match (k.as_str(), v.as_str()) {
                            ("expr" | "query", Some(text)) => out.push(text),
                            _ => walk(v, out),
                        }
                    }
                }
                serde_json::Value::Array(list) => list.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&dashboard, &mut exprs);
        assert!(exprs.len() >= 15, "{exprs:?}");
        let text = render(&full_status(), 1, &Histogram::default());
        let exported: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut queried = Vec::new();
        for expr in exprs {
            for (i, _) in expr.match_indices("jailer_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                queried.push(name);
            }
        }
        assert!(queried.len() >= 15);
        for name in queried {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|f| exported.contains(f))
                .unwrap_or(&name);
            assert!(
                exported.contains(&family),
                "the dashboard queries {name}, which the agent does not export"
            );
        }
    }
}
