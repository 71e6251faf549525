//! File operations for state files, safe in a directory others might
//! reach: symlinks are never followed (`O_NOFOLLOW`), temp files are created
//! exclusively (`O_EXCL`), files are created 0600, and replacements are
//! atomic (write, fsync, rename).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// Opens `path` for appending, creating it 0600; refuses a symlink.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens `path` for reading; refuses a symlink.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Reads `path` whole; refuses a symlink.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_read(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically: a fresh temp file (a planted one
/// of any kind, symlink included, is removed, never written through),
/// fsync, rename over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
    };
    let mut file = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left by a crash, or planted: unlink removes the entry itself.
            fs::remove_file(&tmp)?;
            create()?
        }
        other => other?,
    };
    file.write_all(bytes)?;
    file.sync_data()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    #[test]
    fn planted_symlinks_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let state = dir.path().join("bans.jsonl");
        symlink(&victim, &state).unwrap();
        assert_eq!(
            open_append(&state).unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
        assert!(read(&state).is_err());

        let snap = dir.path().join("snapshot.json");
        symlink(&victim, tmp_path(&snap)).unwrap();
        write_atomic(&snap, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&snap).unwrap(), b"new");
        assert!(
            !fs::symlink_metadata(&snap)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn files_are_created_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("bans.jsonl");
        open_append(&j).unwrap();
        write_atomic(&dir.path().join("s.json"), b"{}").unwrap();
        for f in [j, dir.path().join("s.json")] {
            let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
}
