//! The `BPF_MAP_*_BATCH` syscalls (aya 0.14 has none): one syscall moves
//! tens of thousands of elements, where aya's API makes one or two per
//! element. A million bans are written, listed or removed in seconds.
//!
//! Values are passed as `per_key` consecutive `V`s per key: 1 for a plain
//! map (the ban maps), the number of possible CPUs for a per-CPU map (the
//! `DROPS` array), whose kernel layout is each CPU's value rounded up to 8
//! bytes, CPU after CPU.

use std::{
    io,
    mem::MaybeUninit,
    os::fd::{AsFd as _, AsRawFd as _},
    thread,
    time::{Duration, Instant},
};

use aya::{Pod, maps::MapData};

/// Elements per syscall: large enough that syscall overhead vanishes, small
/// enough to keep the staging buffers modest.
const CHUNK: usize = 1 << 16;
/// Bytes of values per syscall at most (a per-CPU value on a 256-CPU
/// machine is 256 values): at least 1024 elements per call all the same.
const CHUNK_BYTES: usize = 32 << 20;

/// Elements per syscall for values of `per_key` consecutive `V`s.
fn chunk_len<V>(per_key: usize) -> usize {
    (CHUNK_BYTES / (size_of::<V>() * per_key).max(1)).clamp(1024, CHUNK)
}

/// A per-CPU value is laid out as `round_up(size, 8)` bytes per CPU: `V`
/// must need no rounding to be repeated as a plain slice.
fn check_layout<V>(per_key: usize) {
    assert!(
        per_key == 1 || size_of::<V>().is_multiple_of(8),
        "per-CPU values must be a multiple of 8 bytes"
    );
}

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

/// Writes `keys[i] -> values[i * per_key..][..per_key]`. Returns how many
/// were written and the error that stopped it, if any (a full map stops it
/// part way). A batch the kernel's allocator could not keep up with is
/// resumed where it stopped (see `allocator_caught_up`).
pub fn update<K: Pod, V: Pod>(
    map: &MapData,
    keys: &[K],
    values: &[V],
    per_key: usize,
) -> (usize, Option<io::Error>) {
    check_layout::<V>(per_key);
    assert_eq!(keys.len() * per_key, values.len());
    let chunk = chunk_len::<V>(per_key);
    let mut written = 0;
    let mut progress = Instant::now();
    while written < keys.len() {
        let n = (keys.len() - written).min(chunk);
        let mut attr = BatchAttr {
            keys: keys[written..].as_ptr() as u64,
            values: values[written * per_key..].as_ptr() as u64,
            count: n as u32,
            map_fd: fd(map),
            ..BatchAttr::default()
        };
        let result = sys(BPF_MAP_UPDATE_BATCH, &mut attr);
        // The kernel reports how many it wrote, also when it stopped.
        let done = if result.is_ok() {
            n
        } else {
            (attr.count as usize).min(n)
        };
        written += done;
        if done > 0 {
            progress = Instant::now();
        }
        if let Err(e) = result
            && !allocator_caught_up(&e, progress)
        {
            return (written, Some(e));
        }
    }
    (written, None)
}

/// Whether to try again after `e`: `ENOMEM` while the kernel made progress
/// within the last second.
///
/// Each new element of a hash map that is not preallocated comes from the
/// BPF memory allocator's per-CPU cache, refilled in the background (an
/// irq_work). A burst of inserts can empty the cache before it is refilled:
/// the kernel then fails the element (`ENOMEM`) and stops the batch there.
/// Seen often with per-CPU values (a per-CPU allocation per element, which
/// this project's ban maps no longer use); kept for the plain hash, where a
/// loaded machine can still run the cache dry.
fn allocator_caught_up(e: &io::Error, progress: Instant) -> bool {
    if e.raw_os_error() != Some(libc::ENOMEM) || progress.elapsed() > Duration::from_secs(1) {
        return false;
    }
    thread::yield_now();
    true
}

/// Deletes `keys`; keys that are absent are skipped. Returns how many were
/// deleted. (No values move: the same for per-CPU maps.)
pub fn delete<K: Pod>(map: &MapData, keys: &[K]) -> io::Result<usize> {
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

/// Every element of a hash map: the keys, and `per_key` values for each,
/// key after key.
pub fn lookup_all<K: Pod, V: Pod>(map: &MapData, per_key: usize) -> io::Result<(Vec<K>, Vec<V>)> {
    check_layout::<V>(per_key);
    let chunk = chunk_len::<V>(per_key);
    let (mut all_keys, mut all_values) = (Vec::new(), Vec::new());
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(chunk);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(chunk * per_key);
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
            count: chunk as u32,
            map_fd: fd(map),
            ..BatchAttr::default()
        };
        let result = sys(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let done = match result {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        let n = (attr.count as usize).min(chunk);
        // SAFETY: the kernel wrote `n` keys and their values; K and V are
        // Pod, so any bytes are valid values of them.
        unsafe {
            keys.set_len(n);
            values.set_len(n * per_key);
        }
        // SAFETY: initialised by the kernel above.
        all_keys.extend(keys.drain(..).map(|k| unsafe { k.assume_init() }));
        // SAFETY: as above.
        all_values.extend(values.drain(..).map(|v| unsafe { v.assume_init() }));
        if done {
            return Ok((all_keys, all_values));
        }
        token = next;
        first = false;
    }
}
