//! `jailer detach`: the XDP program off every interface, pins removed.

use std::path::Path;

use super::{print, require_root};
use crate::{config::Config, error::Error, kernel};

pub(super) fn run(config_path: &Path) -> Result<(), Error> {
    require_root("detach")?;
    let config = Config::load_or_default(config_path)?;
    let detached = kernel::detach(&config.bpffs)?;
    print(&if detached.is_empty() {
        format!(
            "nothing attached under {}; pins removed\n",
            config.bpffs.display()
        )
    } else {
        format!(
            "detached from {}; pins under {} removed\n",
            detached.join(", "),
            config.bpffs.display()
        )
    })
}
