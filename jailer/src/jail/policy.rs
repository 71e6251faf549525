//! Ban policy: how long a ban lasts.

use std::time::Duration;

use crate::{config::Jail, time::MAX_DURATION};

/// fail2ban's bantime.increment: `bantime * factor * 2^previous`, capped by
/// `bantime_max` and in any case by [`MAX_DURATION`]. `None` is permanent.
pub fn bantime_for(jail: &Jail, previous: u32) -> Option<Duration> {
    let base = jail.bantime?;
    if !jail.bantime_increment || previous == 0 {
        return Some(base);
    }
    let mult = jail.bantime_factor * f64::from(1u32 << previous.min(20));
    let secs = (base.as_secs_f64() * mult).min(MAX_DURATION.as_secs_f64());
    let grown = Duration::from_secs_f64(secs);
    Some(match jail.bantime_max {
        Some(max) => grown.min(max),
        None => grown,
    })
}
