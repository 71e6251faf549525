//! Failure windows: per address, the times of its recent failures, and the
//! decision "maxretry failures within findtime". Time is passed in (the log
//! line's own time), so this is deterministic and testable.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Addresses tracked per jail before stale or oldest windows are evicted:
/// bounds memory under a botnet (one entry is ~100 bytes).
pub const DEFAULT_MAX_TRACKED: usize = 1_000_000;

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Failure counting for one jail.
#[derive(Debug)]
pub struct FailureWindow {
    findtime_ms: u64,
    maxretry: usize,
    capacity: usize,
    /// Failure times (ms since the epoch), oldest first, at most `maxretry`.
    tracked: HashMap<IpAddr, Vec<u64>>,
    evictions: u64,
}

impl FailureWindow {
    pub fn new(maxretry: u32, findtime: Duration, capacity: usize) -> Self {
        Self {
            findtime_ms: findtime.as_millis() as u64,
            maxretry: maxretry.max(1) as usize,
            capacity: capacity.max(16),
            tracked: HashMap::new(),
            evictions: 0,
        }
    }

    /// Counts a failure of `ip` at `at`. Returns `true` when this failure
    /// makes `maxretry` within `findtime`; the window is then cleared. A
    /// failure already older than `findtime` at `now` is not counted.
    pub fn record(&mut self, ip: IpAddr, at: SystemTime, now: SystemTime) -> bool {
        let at = ms(at);
        let now = ms(now);
        if at.saturating_add(self.findtime_ms) < now {
            return false;
        }
        if !self.tracked.contains_key(&ip) && self.tracked.len() >= self.capacity {
            self.evict(now);
        }
        let times = self.tracked.entry(ip).or_default();
        let pos = times.partition_point(|&t| t <= at);
        times.insert(pos, at);
        let newest = *times.last().unwrap_or(&at);
        times.retain(|&t| t.saturating_add(self.findtime_ms) >= newest);
        if times.len() > self.maxretry {
            let extra = times.len() - self.maxretry;
            times.drain(..extra);
        }
        if times.len() >= self.maxretry {
            self.tracked.remove(&ip);
            return true;
        }
        false
    }

    /// Failures currently counted for `ip` (within findtime of its newest).
    pub fn failures(&self, ip: IpAddr) -> usize {
        self.tracked.get(&ip).map_or(0, Vec::len)
    }

    /// Addresses currently tracked.
    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }

    /// Windows dropped to stay within capacity since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Drops windows whose newest failure is older than findtime; if that is
    /// not enough, the eighth with the oldest newest failure (amortised O(1)
    /// per insert, so a botnet cannot make each failure cost a full scan).
    fn evict(&mut self, now: u64) {
        let before = self.tracked.len();
        let findtime = self.findtime_ms;
        self.tracked.retain(|_, t| {
            t.last()
                .is_some_and(|&newest| newest.saturating_add(findtime) >= now)
        });
        if self.tracked.len() >= self.capacity {
            let mut ages: Vec<(u64, IpAddr)> = self
                .tracked
                .iter()
                .map(|(ip, t)| (t.last().copied().unwrap_or(0), *ip))
                .collect();
            let cut = (self.capacity / 8).max(1);
            ages.select_nth_unstable(cut - 1);
            for (_, ip) in &ages[..cut] {
                self.tracked.remove(ip);
            }
        }
        self.evictions += (before - self.tracked.len()) as u64;
    }

    /// The windows, for the state snapshot.
    pub fn export(&self) -> Vec<(IpAddr, Vec<u64>)> {
        self.tracked
            .iter()
            .map(|(ip, t)| (*ip, t.clone()))
            .collect()
    }

    /// Restores windows saved by [`Self::export`].
    pub fn import(&mut self, entries: Vec<(IpAddr, Vec<u64>)>) {
        for (ip, mut times) in entries {
            times.sort_unstable();
            if times.len() > self.maxretry {
                times.drain(..times.len() - self.maxretry);
            }
            if !times.is_empty() && self.tracked.len() < self.capacity {
                self.tracked.insert(ip, times);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 8));

    #[test]
    fn bans_on_maxretry_within_findtime() {
        let mut w = FailureWindow::new(3, Duration::from_secs(600), 1000);
        assert!(!w.record(A, t(0), t(0)));
        assert!(!w.record(A, t(100), t(100)));
        assert!(!w.record(B, t(150), t(150)));
        assert!(w.record(A, t(200), t(200)));
        assert_eq!(w.failures(A), 0, "window cleared after the ban");
        assert_eq!(w.failures(B), 1);
    }

    #[test]
    fn failures_outside_findtime_slide_out() {
        let mut w = FailureWindow::new(3, Duration::from_secs(600), 1000);
        assert!(!w.record(A, t(0), t(0)));
        assert!(!w.record(A, t(500), t(500)));
        // t(0) is now more than 600 s before t(700): only two in the window.
        assert!(!w.record(A, t(700), t(700)));
        assert_eq!(w.failures(A), 2);
        assert!(w.record(A, t(800), t(800)));
    }

    #[test]
    fn old_lines_at_start_are_not_counted() {
        let mut w = FailureWindow::new(1, Duration::from_secs(600), 1000);
        assert!(!w.record(A, t(0), t(601)));
        assert!(w.is_empty());
        assert!(w.record(A, t(1), t(601)));
    }

    #[test]
    fn out_of_order_lines_are_counted_by_their_time() {
        let mut w = FailureWindow::new(3, Duration::from_secs(60), 1000);
        assert!(!w.record(A, t(100), t(100)));
        assert!(!w.record(A, t(10), t(100))); // 90 s before: outside the window of t(100)
        assert_eq!(w.failures(A), 1);
        assert!(!w.record(A, t(90), t(100)));
        assert!(w.record(A, t(95), t(100)));
    }

    #[test]
    fn memory_stays_bounded_under_a_botnet() {
        let cap = 10_000;
        let mut w = FailureWindow::new(3, Duration::from_secs(600), cap);
        for i in 0..1_000_000u32 {
            let ip = IpAddr::V4(i.into());
            w.record(ip, t(u64::from(i) / 1000), t(u64::from(i) / 1000));
            assert!(w.len() <= cap);
        }
        assert!(w.evictions() >= 990_000, "evictions {}", w.evictions());
        // The most recent addresses survive.
        assert_eq!(w.failures(IpAddr::V4(999_999u32.into())), 1);
    }

    #[test]
    fn export_import_roundtrip() {
        let mut w = FailureWindow::new(3, Duration::from_secs(600), 1000);
        w.record(A, t(0), t(0));
        w.record(A, t(1), t(1));
        let mut w2 = FailureWindow::new(3, Duration::from_secs(600), 1000);
        w2.import(w.export());
        assert_eq!(w2.failures(A), 2);
        assert!(w2.record(A, t(2), t(2)));
    }
}
