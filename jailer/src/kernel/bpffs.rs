//! The bpffs directory: mounting it when needed, and the pins in it.

use std::{
    fs, io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use jailer_common::map_names;
use nix::{
    errno::Errno,
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use tracing::info;

use super::BpfError;

pub(super) fn pin_err(path: &Path) -> impl FnOnce(io::Error) -> BpfError + '_ {
    move |source| BpfError::Pin {
        path: path.to_owned(),
        source,
    }
}

fn is_bpffs(p: &Path) -> bool {
    statfs(p).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Checks, without changing anything, that `dir` can hold jailer's pins:
/// an absolute path with no symlink in it, and either on a bpf filesystem
/// already or an empty (or absent) directory jailer may mount bpffs on.
pub fn check_bpffs(dir: &Path) -> Result<(), BpfError> {
    let refuse = |problem: String| BpfError::UnsafeBpffs {
        path: dir.to_owned(),
        problem,
    };
    if !dir.is_absolute() {
        return Err(refuse("is not an absolute path".into()));
    }
    for p in dir.ancestors() {
        match fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(format!("{} is a symlink", p.display())));
            }
            Ok(m) if !m.is_dir() => {
                return Err(refuse(format!("{} is not a directory", p.display())));
            }
            _ => {}
        }
    }
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing) {
        return Ok(());
    }
    // Not on bpffs: jailer would mount one at /sys/fs/bpf (below it) or at
    // `dir` itself, hiding whatever is there.
    let mount_at = mount_point(dir);
    if fs::read_dir(mount_at).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(refuse(format!(
            "{} is not a bpf filesystem and is not empty: mounting bpffs there would hide its content",
            mount_at.display()
        )));
    }
    Ok(())
}

fn mount_point(dir: &Path) -> &Path {
    let sys_bpf = Path::new("/sys/fs/bpf");
    if dir.starts_with(sys_bpf) {
        sys_bpf
    } else {
        dir
    }
}

/// Makes sure `dir` is a directory on a bpf filesystem, mounting bpffs where
/// needed (at `/sys/fs/bpf` when `dir` is below it, else at `dir` itself)
/// with mode 0700: only root may plant or read pins there.
pub fn ensure_bpffs(dir: &Path) -> Result<(), BpfError> {
    check_bpffs(dir)?;
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(existing) {
        let mount_at = mount_point(dir);
        fs::create_dir_all(mount_at).map_err(pin_err(mount_at))?;
        if !is_bpffs(mount_at) {
            mount(
                Some("bpffs"),
                mount_at,
                Some("bpf"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=0700"),
            )
            .map_err(|source| match source {
                Errno::EPERM => BpfError::NotRoot,
                source => BpfError::MountBpffs {
                    path: mount_at.to_owned(),
                    source,
                },
            })?;
            info!(path = %mount_at.display(), "mounted bpffs");
        }
    }
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(pin_err(dir))?;
    }
    Ok(())
}

/// Where the XDP link of `iface` is pinned.
pub(super) fn link_pin(bpffs: &Path, iface: &str) -> PathBuf {
    bpffs.join(format!("link_{iface}"))
}

/// (interface, pin path) of every pinned link.
pub(super) fn pinned_links(bpffs: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(bpffs) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("link_")
                .map(|iface| (iface.to_owned(), e.path()))
        })
        .collect()
}

/// Removes the links of interfaces no longer configured (detaching them).
pub(super) fn remove_stale_links(bpffs: &Path, keep: &[String]) -> Result<(), BpfError> {
    for (iface, path) in pinned_links(bpffs) {
        if !keep.contains(&iface) {
            fs::remove_file(&path).map_err(pin_err(&path))?;
            info!(%iface, "XDP program detached (interface no longer configured)");
        }
    }
    Ok(())
}

/// Maps an older jailer pinned that this one no longer declares (the
/// per-CPU prefix drop counts, now in `DROPS`): removed at load and detach.
pub(super) const RETIRED_PINS: [&str; 2] = ["NET_DROPS_V4", "NET_DROPS_V6"];

/// Detaches the program from every interface and removes links, maps and the
/// directory. Returns the interfaces it was detached from.
pub fn detach(bpffs: &Path) -> Result<Vec<String>, BpfError> {
    if !bpffs.exists() {
        return Ok(Vec::new());
    }
    let mut detached = Vec::new();
    for (iface, path) in pinned_links(bpffs) {
        // Removing the last reference to a link detaches its program.
        fs::remove_file(&path).map_err(pin_err(&path))?;
        detached.push(iface);
    }
    for name in map_names::ALL.into_iter().chain(RETIRED_PINS) {
        let path = bpffs.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(pin_err(&path)(e)),
            _ => {}
        }
    }
    if bpffs != Path::new("/sys/fs/bpf") {
        let _ = fs::remove_dir(bpffs);
    }
    Ok(detached)
}

/// Interfaces with a pinned jailer link, sorted.
pub fn attached_interfaces(bpffs: &Path) -> Vec<String> {
    let mut v: Vec<String> = pinned_links(bpffs).into_iter().map(|(i, _)| i).collect();
    v.sort();
    v
}
