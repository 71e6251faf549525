//! Lines that match nothing cost no heap allocation in jailer's fail2ban
//! matcher once a stream has warmed up (single-line and multi-line filters);
//! `LineMatcher` can move to another thread and `CompiledFilter` can be
//! shared. A test binary of its own: it installs a counting global
//! allocator.

mod fail2ban;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jailer::filter::fail2ban::runtime::{CompiledFilter, LineMatcher};

/// Counts allocations made by the thread that asked for it.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to `System` unchanged; the thread-locals
// are `const`-initialised `Cell`s, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

fn matcher(spec: &str) -> LineMatcher {
    Arc::new(fail2ban::stock_filter(spec)).matcher()
}

const QUIET: [&str; 4] = [
    "Nov 28 10:11:12 mail postfix/smtpd[4242]: connect from mail.example.com[198.51.100.7]",
    "Nov 28 10:11:12 mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=198.51.100.7, lip=192.0.2.1, mpid=4243, TLS",
    "Nov 28 10:11:13 mail sshd[4244]: Server listening on 0.0.0.0 port 22.",
    "Nov 28 10:11:14 mail kernel: [12345.678] eth0: link up",
];
const FAILING: &str =
    "Nov 28 10:11:15 mail dovecot: auth: passwd-file(bob,203.0.113.9,<abc>): unknown user";

#[test]
fn quiet_lines_do_not_allocate() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_324_000);
    for name in [
        "dovecot",
        "postfix",
        "slapd",
        "mongodb-auth",
        "sshd[mode=aggressive]",
    ] {
        let mut m = matcher(name);
        // Warm up: buffers grow to size, templates settle.
        for _ in 0..50 {
            for line in QUIET.iter().chain([&FAILING]) {
                let _ = m.process_line(line, now);
            }
        }
        let n = allocations(|| {
            for _ in 0..200 {
                for line in QUIET {
                    let found = m.process_line(line, now);
                    assert!(found.is_empty(), "{name}: {line}");
                }
            }
        });
        assert_eq!(n, 0, "{name}: {n} allocations for 800 quiet lines");
    }
}

#[test]
fn thread_safety() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<LineMatcher>();
    send_sync::<CompiledFilter>();
}
