//! Time on the two clocks jailer uses: wall time (log lines, state files) and
//! `CLOCK_BOOTTIME` (what the XDP program compares ban expiries against; it
//! keeps counting through suspend and never jumps with NTP).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on `CLOCK_BOOTTIME`.
pub fn boot_ns() -> u64 {
    // BOOTTIME is always available on Linux >= 2.6.39; a failure is a broken kernel.
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME unavailable");
    (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64
}

/// A wall-clock expiry (unix seconds) as a `CLOCK_BOOTTIME` deadline, given
/// one reading of each clock (a million restored bans share one). Past
/// expiries lapse now, and never become 0 (= permanent).
pub fn unix_to_boot_ns(expires: u64, now_unix: u64, now_boot_ns: u64) -> u64 {
    now_boot_ns
        .saturating_add(
            expires
                .saturating_sub(now_unix)
                .saturating_mul(1_000_000_000),
        )
        .max(1)
}

/// Remaining time of a `CLOCK_BOOTTIME` deadline.
pub fn boot_remaining(expires_ns: u64) -> Duration {
    Duration::from_nanos(expires_ns.saturating_sub(boot_ns()))
}

/// Seconds since the epoch (for state files).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Inverse of [`unix_secs`].
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_moves_and_converts() {
        let a = boot_ns();
        let now = unix_secs(SystemTime::now());
        let deadline = unix_to_boot_ns(now + 60, now, boot_ns());
        assert!(deadline > a + 59_000_000_000 && deadline < a + 61_000_000_000);
        let left = boot_remaining(deadline);
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));
        assert!(boot_remaining(1) == Duration::ZERO);
        // Past deadlines lapse now, never turn into 0 (= permanent).
        assert!(unix_to_boot_ns(0, now, boot_ns()) >= a);
        assert_eq!(unix_to_boot_ns(5, 10, 0), 1);
    }
}
