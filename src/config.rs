//! Options from `OXMALLOC_*` environment variables, read once, lazily, the first time the
//! allocator leaves its fast path.
//!
//! The environment is scanned without allocating: through `environ` when libc has set it
//! up, and otherwise (a `malloc` from the dynamic loader before libc's initialisation)
//! through `/proc/self/environ` read with raw syscalls into a stack buffer.
//!
//! Options:
//! - `OXMALLOC_CHECK=1`: the check mode (see `check.rs`): every block gets a trailer and
//!   canary bytes checked at free, freed blocks wait in a quarantine before reuse, so
//!   writes past the end and double frees of reused blocks are reported. Slow: every call
//!   goes through one lock.
//! - `OXMALLOC_STATS=1`: print the `malloc_stats` report to fd 2 when the process exits.
//! - `OXMALLOC_PURGE_DELAY_MS=N`: how long freed memory may stay resident with no use
//!   before it is returned to the OS (default 1000).
//! - `OXMALLOC_PROF=1`: the sampling heap profiler (see `prof/`), with
//!   `OXMALLOC_PROF_DIR` (where profiles go, default "."), `OXMALLOC_PROF_INTERVAL` (mean
//!   bytes between samples, default 524288), `OXMALLOC_PROF_SIGNAL` (a signal number, or
//!   `SIGUSR1`, `SIGUSR2`, `USR1`, `USR2`, that asks for a dump), `OXMALLOC_PROF_DUMP_BYTES`
//!   (a dump every N bytes allocated, 0 = never) and `OXMALLOC_PROF_DUMP_PEAK=1` (a dump at
//!   each new peak of live memory).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

const NOT_LOADED: u8 = 0;
const LOADED: u8 = 1;
const LOADING: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(NOT_LOADED);
/// The thread loading the options (its `pthread_self`), while LOADING.
static LOADER: AtomicUsize = AtomicUsize::new(0);
static CHECK: AtomicU8 = AtomicU8::new(0);
static STATS: AtomicU8 = AtomicU8::new(0);
static PURGE_DELAY_MS: AtomicU32 = AtomicU32::new(1000);
static PROF: AtomicU8 = AtomicU8::new(0);
static PROF_INTERVAL_BYTES: AtomicU64 = AtomicU64::new(512 * 1024);
static PROF_SIGNAL: AtomicI32 = AtomicI32::new(0);
static PROF_DUMP_BYTES: AtomicU64 = AtomicU64::new(0);
static PROF_DUMP_PEAK: AtomicU8 = AtomicU8::new(0);
static PROF_DIR: PathOption = PathOption::new();

/// Longest `OXMALLOC_PROF_DIR` kept (longer values are ignored).
const PROF_DIR_MAX_BYTES: usize = 4000;

/// A path-valued option: bytes copied out of the environment while loading.
struct PathOption {
    bytes: UnsafeCell<[u8; PROF_DIR_MAX_BYTES]>,
    len: AtomicUsize,
}

// SAFETY: `bytes` is written only by `apply`, which runs only inside `load_slow` on the one
// thread that won the LOADING state (possibly nested in itself, from a signal handler, one
// load after the other), before it publishes LOADED with Release; it is read only after
// `ensure_loaded` saw LOADED with Acquire. So writes and reads never overlap.
unsafe impl Sync for PathOption {}

impl PathOption {
    const fn new() -> Self {
        PathOption {
            bytes: UnsafeCell::new([0; PROF_DIR_MAX_BYTES]),
            len: AtomicUsize::new(0),
        }
    }

    /// Keeps `value` (called while loading only).
    fn set(&self, value: &[u8]) {
        if value.is_empty() || value.len() > PROF_DIR_MAX_BYTES || value.contains(&0) {
            return;
        }
        // SAFETY: only the loading thread writes, before LOADED is published (see the Sync
        // argument above).
        let bytes = unsafe { &mut *self.bytes.get() };
        if let Some(dest) = bytes.get_mut(..value.len()) {
            dest.copy_from_slice(value);
            self.len.store(value.len(), Ordering::Relaxed);
        }
    }

    /// The value, or `default` when unset (call after `ensure_loaded`).
    fn get(&'static self, default: &'static [u8]) -> &'static [u8] {
        let len = self.len.load(Ordering::Relaxed);
        if len == 0 {
            return default;
        }
        // SAFETY: loading is over (the caller ran `ensure_loaded`), so nothing writes the
        // buffer any more; `len` is at most its size.
        unsafe { (*self.bytes.get()).get(..len).unwrap_or(default) }
    }
}

extern "C" {
    static environ: *const *const libc::c_char;
}

/// Applies one `NAME=value` entry if it is one of ours.
fn apply(entry: &[u8]) {
    let Some(eq) = entry.iter().position(|&b| b == b'=') else {
        return;
    };
    let (name, value) = (&entry[..eq], &entry[eq + 1..]);
    let on = !value.is_empty() && value != b"0";
    match name {
        b"OXMALLOC_CHECK" => CHECK.store(u8::from(on), Ordering::Relaxed),
        b"OXMALLOC_STATS" => STATS.store(u8::from(on), Ordering::Relaxed),
        b"OXMALLOC_PURGE_DELAY_MS" => {
            if let Some(ms) = parse_u32(value) {
                PURGE_DELAY_MS.store(ms, Ordering::Relaxed);
            }
        }
        b"OXMALLOC_PROF" => PROF.store(u8::from(on), Ordering::Relaxed),
        b"OXMALLOC_PROF_DIR" => PROF_DIR.set(value),
        b"OXMALLOC_PROF_INTERVAL" => {
            if let Some(n) = parse_u64(value).filter(|&n| n > 0 && n <= 1 << 40) {
                PROF_INTERVAL_BYTES.store(n, Ordering::Relaxed);
            }
        }
        b"OXMALLOC_PROF_SIGNAL" => {
            if let Some(signo) = parse_signal(value) {
                PROF_SIGNAL.store(signo, Ordering::Relaxed);
            }
        }
        b"OXMALLOC_PROF_DUMP_BYTES" => {
            if let Some(n) = parse_u64(value) {
                PROF_DUMP_BYTES.store(n, Ordering::Relaxed);
            }
        }
        b"OXMALLOC_PROF_DUMP_PEAK" => PROF_DUMP_PEAK.store(u8::from(on), Ordering::Relaxed),
        _ => {}
    }
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// A signal number (1 to 64), or `SIGUSR1`, `SIGUSR2`, `USR1`, `USR2`; 0 turns it off.
fn parse_signal(value: &[u8]) -> Option<i32> {
    let name = value.strip_prefix(b"SIG").unwrap_or(value);
    match name {
        b"USR1" => Some(libc::SIGUSR1),
        b"USR2" => Some(libc::SIGUSR2),
        _ => parse_u32(value)
            .filter(|&n| n <= 64)
            .and_then(|n| i32::try_from(n).ok()),
    }
}

fn parse_u32(digits: &[u8]) -> Option<u32> {
    parse_u64(digits).and_then(|v| u32::try_from(v).ok())
}

/// Scans `environ`; false when libc has not set it up yet.
fn scan_environ() -> bool {
    // SAFETY: `environ` is libc's environment: null, or a null-terminated array of
    // null-terminated strings that stay valid while we read them.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return false;
        }
        while !(*entry).is_null() {
            let s = core::ffi::CStr::from_ptr(*entry).to_bytes();
            if s.starts_with(b"OXMALLOC_") {
                apply(s);
            }
            entry = entry.add(1);
        }
    }
    true
}

/// Scans `/proc/self/environ` (entries separated by NUL) with a small stack buffer.
fn scan_proc_environ() {
    // SAFETY: a path literal with its terminator; open(2) does not allocate.
    let fd = unsafe {
        libc::open(
            c"/proc/self/environ".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 1024];
    let mut entry = [0u8; 256];
    let mut len = 0usize;
    let mut overflow = false;
    loop {
        // SAFETY: reading into a stack buffer of that length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b == 0 {
                if !overflow && entry[..len].starts_with(b"OXMALLOC_") {
                    apply(&entry[..len]);
                }
                len = 0;
                overflow = false;
            } else if len < entry.len() {
                entry[len] = b;
                len += 1;
            } else {
                overflow = true;
            }
        }
    }
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
}

/// Loads the options if not done yet. Cheap after the first call.
#[inline]
pub fn ensure_loaded() {
    if STATE.load(Ordering::Acquire) == LOADED {
        return;
    }
    load_slow();
}

#[cold]
#[inline(never)]
fn load_slow() {
    // One thread loads; the others wait for it (the loader takes no lock and calls nothing
    // that allocates, so it never waits on them). A signal handler that allocates on the
    // loading thread itself loads again, nested: its writes come after or before the
    // outer ones, never at the same time. The errno of the syscalls is kept.
    // SAFETY: pthread_self has no preconditions and does not allocate.
    let me = unsafe { libc::pthread_self() } as usize;
    let nested = if STATE
        .compare_exchange(NOT_LOADED, LOADING, Ordering::Acquire, Ordering::Acquire)
        .is_ok()
    {
        LOADER.store(me, Ordering::Relaxed);
        false
    } else if LOADER.load(Ordering::Relaxed) == me {
        true
    } else {
        while STATE.load(Ordering::Acquire) != LOADED {
            core::hint::spin_loop();
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
        return;
    };
    // SAFETY: the calling thread's errno slot.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno_slot };
    if !scan_environ() {
        scan_proc_environ();
    }
    // SAFETY: as above.
    unsafe { *errno_slot = saved };
    if !nested {
        // The outer load publishes, once its own writes are done.
        STATE.store(LOADED, Ordering::Release);
    }
}

/// True in check mode (`OXMALLOC_CHECK=1`).
#[inline]
pub fn check_mode() -> bool {
    ensure_loaded();
    CHECK.load(Ordering::Relaxed) != 0
}

/// True when `OXMALLOC_STATS` asked for a report at exit.
pub fn show_stats() -> bool {
    ensure_loaded();
    STATS.load(Ordering::Relaxed) != 0
}

/// How long freed memory may stay resident unused, in milliseconds.
pub fn purge_delay_ms() -> u64 {
    ensure_loaded();
    u64::from(PURGE_DELAY_MS.load(Ordering::Relaxed))
}

/// True when the heap profiler is on (`OXMALLOC_PROF=1`).
#[inline]
pub fn prof_enabled() -> bool {
    ensure_loaded();
    PROF.load(Ordering::Relaxed) != 0
}

/// Where profiles are written (`OXMALLOC_PROF_DIR`, default "."), without a terminator.
pub fn prof_dir() -> &'static [u8] {
    ensure_loaded();
    PROF_DIR.get(b".")
}

/// Mean bytes allocated between two samples (`OXMALLOC_PROF_INTERVAL`, default 524288).
pub fn prof_interval_bytes() -> u64 {
    ensure_loaded();
    PROF_INTERVAL_BYTES.load(Ordering::Relaxed)
}

/// The signal that asks for a dump (`OXMALLOC_PROF_SIGNAL`); 0 for none.
pub fn prof_signal() -> i32 {
    ensure_loaded();
    PROF_SIGNAL.load(Ordering::Relaxed)
}

/// A dump every this many bytes allocated (`OXMALLOC_PROF_DUMP_BYTES`); 0 for never.
pub fn prof_dump_bytes() -> u64 {
    ensure_loaded();
    PROF_DUMP_BYTES.load(Ordering::Relaxed)
}

/// True when each new peak of live memory is dumped (`OXMALLOC_PROF_DUMP_PEAK=1`).
pub fn prof_dump_peak() -> bool {
    ensure_loaded();
    PROF_DUMP_PEAK.load(Ordering::Relaxed) != 0
}

/// Sets the check mode (tests only: the process allocator reads the environment).
#[cfg(test)]
pub fn set_check_mode_for_tests(on: bool) {
    ensure_loaded();
    CHECK.store(u8::from(on), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_strictly() {
        assert_eq!(parse_u32(b"250"), Some(250));
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32(b"12x"), None);
        assert_eq!(parse_u32(b"99999999999"), None);
        assert_eq!(parse_u64(b"99999999999"), Some(99_999_999_999));
        assert_eq!(parse_u64(b"1k"), None);
    }

    #[test]
    fn signals_parse_by_number_and_name() {
        assert_eq!(parse_signal(b"SIGUSR1"), Some(libc::SIGUSR1));
        assert_eq!(parse_signal(b"USR2"), Some(libc::SIGUSR2));
        assert_eq!(parse_signal(b"12"), Some(12));
        assert_eq!(parse_signal(b"0"), Some(0));
        assert_eq!(parse_signal(b"65"), None);
        assert_eq!(parse_signal(b"SIGFOO"), None);
    }

    #[test]
    fn proc_environ_scan_finds_nothing_unexpected() {
        // The test process has no OXMALLOC_CHECK unless the runner set it; both scans
        // must agree.
        let before = CHECK.load(Ordering::Relaxed);
        scan_proc_environ();
        assert_eq!(CHECK.load(Ordering::Relaxed), before);
    }
}
