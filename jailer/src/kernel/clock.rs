//! The clock the XDP program compares ban expiries against, and conversions
//! from wall time. `CLOCK_BOOTTIME` keeps counting through suspend and never
//! jumps with NTP; wall time is what log lines and state files carry.

use std::time::{Duration, SystemTime};

use jailer_common::BAN_PERMANENT;
use nix::time::{ClockId, clock_gettime};

use crate::ban::Expiry;

/// Nanoseconds on the datapath's clock.
pub fn kernel_now_ns() -> u64 {
    // BOOTTIME exists on every kernel that runs XDP; a failure is a broken kernel.
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME unavailable");
    (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64
}

/// One reading of both clocks: a million bans converted with one pair agree
/// with each other, and conversions back and forth are exact.
#[derive(Clone, Copy, Debug)]
pub struct Clocks {
    pub wall: SystemTime,
    pub kernel_ns: u64,
}

impl Clocks {
    pub fn now() -> Self {
        Self {
            wall: SystemTime::now(),
            kernel_ns: kernel_now_ns(),
        }
    }

    /// The kernel deadline of `expiry`: 0 is permanent, a past expiry lapses
    /// at once (1, never 0).
    pub fn deadline(&self, expiry: Expiry) -> u64 {
        match expiry {
            Expiry::Never => BAN_PERMANENT,
            Expiry::At(t) => {
                let left = t.duration_since(self.wall).unwrap_or(Duration::ZERO);
                let left = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
                self.kernel_ns.saturating_add(left).max(1)
            }
        }
    }

    /// The wall-clock expiry of a kernel deadline.
    pub fn expiry(&self, deadline_ns: u64) -> Expiry {
        if deadline_ns == BAN_PERMANENT {
            return Expiry::Never;
        }
        let left = Duration::from_nanos(deadline_ns.saturating_sub(self.kernel_ns));
        Expiry::At(
            self.wall
                .checked_add(left)
                .unwrap_or(self.wall + crate::time::MAX_DURATION),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_convert_both_ways() {
        let c = Clocks::now();
        let in_a_minute = Expiry::At(c.wall + Duration::from_secs(60));
        let ns = c.deadline(in_a_minute);
        assert_eq!(ns, c.kernel_ns + 60_000_000_000);
        assert_eq!(c.expiry(ns), in_a_minute);
        assert_eq!(c.deadline(Expiry::Never), BAN_PERMANENT);
        assert_eq!(c.expiry(BAN_PERMANENT), Expiry::Never);
        let past = Expiry::At(c.wall - Duration::from_secs(5));
        assert_eq!(c.deadline(past), c.kernel_ns.max(1));
        assert!(kernel_now_ns() >= c.kernel_ns);
    }
}
