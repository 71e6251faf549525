//! The `BPF_MAP_*_BATCH` syscalls (aya 0.14 has none): one syscall moves
//! tens of thousands of elements, where aya's API makes one or two per
//! element. A million bans are written, listed or removed in seconds.

use std::{
    io,
    mem::MaybeUninit,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{Pod, maps::MapData};

/// Elements per syscall: large enough that syscall overhead vanishes, small
/// enough to keep the staging buffers modest.
const CHUNK: usize = 1 << 16;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `union bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn sys(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid bpf_attr for a batch command; the pointers in
    // it are set by the callers to buffers of `count` keys/values of the
    // map's sizes, alive for the call; the kernel writes back `count` and
    // at most `count` elements.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn fd(map: &MapData) -> u32 {
    map.fd().as_fd().as_raw_fd() as u32
}

/// Writes `keys[i] -> values[i]`. Returns how many were written and the
/// error that stopped it, if any (a full map stops it part way).
pub(super) fn update<K: Pod, V: Pod>(
    map: &MapData,
    keys: &[K],
    values: &[V],
) -> (usize, Option<io::Error>) {
    debug_assert_eq!(keys.len(), values.len());
    let mut written = 0;
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: fd(map),
            ..BatchAttr::default()
        };
        let result = sys(BPF_MAP_UPDATE_BATCH, &mut attr);
        if let Err(e) = result {
            return (written + attr.count as usize, Some(e));
        }
        written += k.len();
    }
    (written, None)
}

/// Deletes `keys`; keys that are absent are skipped. Returns how many were
/// deleted.
pub(super) fn delete<K: Pod>(map: &MapData, keys: &[K]) -> io::Result<usize> {
    let mut deleted = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(CHUNK)];
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd(map),
            ..BatchAttr::default()
        };
        match sys(BPF_MAP_DELETE_BATCH, &mut attr) {
            Ok(()) => {
                deleted += chunk.len();
                rest = &rest[chunk.len()..];
            }
            // The kernel stops at the first absent key, after deleting
            // `count` before it: skip that one and go on.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let done = attr.count as usize;
                deleted += done;
                rest = &rest[(done + 1).min(rest.len())..];
            }
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Every element of a hash map.
pub(super) fn lookup_all<K: Pod, V: Pod>(map: &MapData) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(CHUNK);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(CHUNK);
    // The batch token: a bucket index for hash maps (the kernel writes 4
    // bytes; keep room for the key-sized tokens of other map types).
    let mut token = [0u64; 4];
    let mut first = true;
    loop {
        let mut next = [0u64; 4];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd(map),
            ..BatchAttr::default()
        };
        let result = sys(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let done = match result {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        let n = (attr.count as usize).min(CHUNK);
        // SAFETY: the kernel wrote `n` keys and values; K and V are Pod, so
        // any bytes are valid values of them.
        unsafe {
            keys.set_len(n);
            values.set_len(n);
        }
        out.extend(
            keys.drain(..)
                .zip(values.drain(..))
                // SAFETY: initialised by the kernel above.
                .map(|(k, v)| unsafe { (k.assume_init(), v.assume_init()) }),
        );
        if done {
            return Ok(out);
        }
        token = next;
        first = false;
    }
}
