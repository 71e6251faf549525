//! Finding and reading the date of a log line, as fail2ban's
//! server/datedetector.py, datetemplate.py and strptime.py do.

mod detector;
mod strptime;
mod template;

pub use detector::{DateDetector, DateMatch, DateTemplates, TemplateInfo};
pub(crate) use detector::{to_system_time, unix_seconds};
pub(crate) use strptime::zone_offset;
