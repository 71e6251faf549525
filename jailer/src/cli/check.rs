//! `jailer check`: the configuration validated exactly as `run` would.

use std::path::Path;

use super::{print, run::preflight};
use crate::{error::Error, time::format_duration};

pub(super) fn run(config_path: &Path) -> Result<(), Error> {
    let config = preflight(config_path)?;
    let mut out = format!("{}: OK\n", config.path.display());
    out.push_str(&format!(
        "  interfaces {} (xdp_mode {:?}, xdp_action {:?}), bpffs {}, state_dir {}\n",
        config.interfaces.join(" "),
        config.xdp_mode,
        config.xdp_action,
        config.bpffs.display(),
        config.state_dir.display()
    ));
    for j in &config.jails {
        out.push_str(&format!(
            "  jail {}: filter {}, reads {}, ports {}, maxretry {}, findtime {}, bantime {}\n",
            j.name,
            j.filter.name(),
            j.sources(),
            j.ports,
            j.maxretry,
            format_duration(j.findtime),
            j.bantime.map_or("permanent".into(), format_duration)
        ));
    }
    print(&out)
}
