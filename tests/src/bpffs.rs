//! A private bpffs for one test.

use std::path::{Path, PathBuf};

/// A bpffs mounted on a temp dir, unmounted on drop.
pub struct TempBpffs {
    dir: tempfile::TempDir,
}

impl TempBpffs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        nix::mount::mount(
            Some("bpffs"),
            dir.path(),
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount bpffs");
        Self { dir }
    }

    /// The directory jailer pins into (below the mount, like /sys/fs/bpf/jailer).
    pub fn pins(&self) -> PathBuf {
        self.dir.path().join("jailer")
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TempBpffs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempBpffs {
    fn drop(&mut self) {
        let _ = jailer::kernel::detach(&self.pins());
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}
