//! `jailer reload`: asks the running agent to re-read its configuration.

use std::path::Path;

use super::{print, require_root};
use crate::{
    agent::control::{self, Request, Response},
    config::Config,
    error::Error,
};

pub(super) fn run(config_path: &Path) -> Result<(), Error> {
    require_root("reload")?;
    let config = Config::load_or_default(config_path)?;
    match control::ask(&config.state_dir, &Request::Reload)? {
        Some(Response::Reloaded { jails }) => {
            print(&format!("reloaded; jails: {}\n", jails.join(", ")))
        }
        Some(Response::Error { message }) => {
            Err(Error::Usage(format!("reload refused: {message}")))
        }
        Some(other) => Err(Error::Usage(format!("unexpected reply: {other:?}"))),
        None => Err(Error::Usage(format!(
            "no agent is running (no socket in {})",
            config.state_dir.display()
        ))),
    }
}
