//! Loading the XDP object with its maps pinned, and attaching the program.

use std::{fmt, fs, path::Path, process::Command};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, MapError},
    programs::{
        ProgramError, Xdp, XdpMode as AyaXdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use jailer_common::{PROGRAM_NAME, map_names};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    BpfError, XDP_OBJECT,
    bpffs::{RETIRED_PINS, ensure_bpffs, link_pin, pin_err, remove_stale_links},
    xdp_table::XdpBanTable,
};
use crate::config::XdpMode;

/// How the program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native, in the NIC driver.
    Driver,
    /// Generic (skb) mode.
    Generic,
    /// Attached, mode not known (`ip` could not tell).
    Unknown,
    /// The interface is gone (the agent attaches again when it returns).
    Missing,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver",
            Self::Generic => "generic",
            Self::Unknown => "unknown",
            Self::Missing => "missing",
        })
    }
}

impl AttachMode {
    /// How XDP is attached to `iface`, as `ip link` reports it (a link
    /// pinned by an earlier run keeps the mode it was made with).
    pub fn of(iface: &str) -> Self {
        let text = Command::new("ip")
            .args(["-o", "link", "show", "dev", iface])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if text.contains(" xdpgeneric") {
            Self::Generic
        } else if text.contains(" xdpdrv") || text.contains(" xdp ") {
            Self::Driver
        } else {
            Self::Unknown
        }
    }
}

/// An interface the program is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub iface: String,
    pub mode: AttachMode,
}

/// Removes pins of maps whose type, key or value size differ from the
/// object's, pinned by an older jailer (the ban maps with a 40-byte value
/// and its `drops` field, or with per-CPU values), and pins of maps this
/// one no longer has ([`RETIRED_PINS`]): they are made anew, and the agent
/// restores the bans from its journal into the new, empty ban maps. The old
/// maps live on while the old program uses them.
fn retire_incompatible_pins(bpffs: &Path) -> Result<(), BpfError> {
    for name in RETIRED_PINS {
        let pin = bpffs.join(name);
        if pin.exists() {
            warn!(map = %name, "removing the pin of a map this jailer no longer uses");
            fs::remove_file(&pin).map_err(pin_err(&pin))?;
        }
    }
    let object = aya_obj::Object::parse(XDP_OBJECT)
        .map_err(|e| BpfError::Object(Box::new(aya::EbpfError::ParseError(e))))?;
    for (name, def) in &object.maps {
        let pin = bpffs.join(name);
        let Ok(info) = MapData::from_pin(&pin).and_then(|m| m.info()) else {
            continue;
        };
        let pinned = (
            info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            info.key_size(),
            info.value_size(),
        );
        if pinned != (def.map_type(), def.key_size(), def.value_size()) {
            warn!(
                map = %name,
                "pinned map has an older layout: made anew (bans come back from the journal when the agent starts; restart a running agent)"
            );
            fs::remove_file(&pin).map_err(pin_err(&pin))?;
        }
    }
    Ok(())
}

/// Loads the object with its maps pinned under `bpffs` (reusing pins that
/// exist: bans survive restarts). `max_bans` sizes each exact-address map
/// when it is created (an existing pin keeps its size).
pub(super) fn load_object(bpffs: &Path, max_bans: Option<u32>) -> Result<Ebpf, BpfError> {
    ensure_bpffs(bpffs)?;
    retire_incompatible_pins(bpffs)?;
    let pins: Vec<(&str, std::path::PathBuf)> =
        map_names::ALL.iter().map(|n| (*n, bpffs.join(n))).collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    if let Some(max) = max_bans {
        loader.map_max_entries(map_names::BANS_V4, max);
        loader.map_max_entries(map_names::BANS_V6, max);
    }
    // Two jailers creating the maps at once (`jailer ban` while `jailer run`
    // starts after a reboot): the one that pins second finds the other's
    // pin (EEXIST) and, loading again, reuses it.
    let mut tries = 0;
    loop {
        match loader.load(XDP_OBJECT) {
            Err(e) if pinned_meanwhile(&e) && tries < 3 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(match &e {
                    aya::EbpfError::MapError(MapError::SyscallError(s))
                        if s.io_error.raw_os_error() == Some(libc::EPERM) =>
                    {
                        BpfError::NotRoot
                    }
                    _ => BpfError::Object(Box::new(e)),
                });
            }
            Ok(ebpf) => return Ok(ebpf),
        }
    }
}

/// Whether loading failed because a map's pin appeared while it was
/// being created.
fn pinned_meanwhile(e: &aya::EbpfError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EEXIST))
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// The program attached to the configured interfaces, with maps pinned.
pub struct Datapath {
    pub bans: XdpBanTable,
    pub attached: Vec<Attached>,
}

/// Loads the XDP program and attaches it to every interface, replacing the
/// program inside an existing pinned link (atomic, no gap), or creating and
/// pinning a new link. Links for interfaces no longer configured are removed.
pub fn attach(
    bpffs: &Path,
    interfaces: &[String],
    mode: XdpMode,
    max_bans: u32,
) -> Result<Datapath, BpfError> {
    let mut ebpf = load_object(bpffs, Some(max_bans))?;
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| BpfError::Link {
            path: bpffs.to_owned(),
            message: format!("the object has no XDP program `{PROGRAM_NAME}`"),
        })?;
    program.load().map_err(|source| BpfError::Load {
        log: match &source {
            ProgramError::LoadError { verifier_log, .. } => verifier_log.to_string(),
            _ => String::new(),
        },
        source,
    })?;

    let mut attached = Vec::new();
    for iface in interfaces {
        if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
            return Err(BpfError::NoInterface {
                iface: iface.clone(),
            });
        }
        let pin = link_pin(bpffs, iface);
        if pin.exists() {
            match replace_in_link(program, &pin) {
                Ok(()) => {
                    let mode = AttachMode::of(iface);
                    info!(%iface, %mode, "XDP program replaced in pinned link");
                    attached.push(Attached {
                        iface: iface.clone(),
                        mode,
                    });
                    continue;
                }
                Err(message) => {
                    warn!(%iface, %message, "pinned link unusable, attaching afresh");
                    fs::remove_file(&pin).map_err(pin_err(&pin))?;
                }
            }
        }
        let (link_id, how) = attach_new(program, iface, mode)?;
        let link = program
            .take_link(link_id)
            .map_err(|source| BpfError::Attach {
                iface: iface.clone(),
                mode: how,
                source,
            })?;
        let fd_link = FdLink::try_from(link).map_err(|e| BpfError::Link {
            path: pin.clone(),
            message: format!("kernel gave a netlink attachment, which cannot be pinned: {e}"),
        })?;
        fd_link.pin(&pin).map_err(|e| BpfError::Link {
            path: pin.clone(),
            message: e.to_string(),
        })?;
        info!(%iface, mode = %how, "XDP program attached");
        attached.push(Attached {
            iface: iface.clone(),
            mode: how,
        });
    }
    remove_stale_links(bpffs, interfaces)?;
    let bans = XdpBanTable::from_ebpf(&mut ebpf)?;
    Ok(Datapath { bans, attached })
}

fn attach_new(
    program: &mut Xdp,
    iface: &str,
    mode: XdpMode,
) -> Result<(XdpLinkId, AttachMode), BpfError> {
    let try_mode = |program: &mut Xdp, flags: AyaXdpMode, mode: AttachMode| {
        program
            .attach(iface, flags)
            .map(|id| (id, mode))
            .map_err(|source| BpfError::Attach {
                iface: iface.to_owned(),
                mode,
                source,
            })
    };
    match mode {
        XdpMode::Driver => try_mode(program, AyaXdpMode::Driver, AttachMode::Driver),
        XdpMode::Generic => try_mode(program, AyaXdpMode::Skb, AttachMode::Generic),
        XdpMode::Auto => try_mode(program, AyaXdpMode::Driver, AttachMode::Driver).or_else(|e| {
            warn!(%iface, error = %crate::error::Chain(&e), "driver-mode XDP unavailable, falling back to generic mode");
            try_mode(program, AyaXdpMode::Skb, AttachMode::Generic)
        }),
    }
}

/// Swaps our freshly loaded program into the pinned link at `pin`.
fn replace_in_link(program: &mut Xdp, pin: &Path) -> Result<(), String> {
    let pinned = PinnedLink::from_pin(pin).map_err(|e| e.to_string())?;
    let xdp_link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
    let id = program
        .attach_to_link(xdp_link)
        .map_err(|e| e.to_string())?;
    // The pin keeps the link alive; dropping our handle must not detach it.
    let link = program.take_link(id).map_err(|e| e.to_string())?;
    drop(FdLink::try_from(link).map_err(|e| e.to_string())?);
    Ok(())
}
