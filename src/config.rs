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

use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

const NOT_LOADED: u8 = 0;
const LOADED: u8 = 1;
static STATE: AtomicU8 = AtomicU8::new(NOT_LOADED);
static CHECK: AtomicU8 = AtomicU8::new(0);
static STATS: AtomicU8 = AtomicU8::new(0);
static PURGE_DELAY_MS: AtomicU32 = AtomicU32::new(1000);

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
        _ => {}
    }
}

fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    let mut v: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
    }
    Some(v)
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
        for &b in buf.iter().take(n as usize) {
            if b == 0 {
                let text = entry.get(..len).unwrap_or(&[]);
                if !overflow && text.starts_with(b"OXMALLOC_") {
                    apply(text);
                }
                len = 0;
                overflow = false;
            } else if let Some(slot) = entry.get_mut(len) {
                *slot = b;
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
    // Racing loaders compute the same values; the errno of the syscalls is kept.
    // SAFETY: the calling thread's errno slot.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno_slot };
    if !scan_environ() {
        scan_proc_environ();
    }
    // SAFETY: as above.
    unsafe { *errno_slot = saved };
    STATE.store(LOADED, Ordering::Release);
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
