//! Options from `OXMALLOC_*` environment variables, read once at process start.
//!
//! The environment is scanned through `environ` directly: `getenv` does not allocate in
//! glibc, but Rust's `std::env` does, and this runs inside `malloc`.
//!
//! Options:
//! - `OXMALLOC_STATS=1`: print the `malloc_stats` report to fd 2 when the process exits.

use core::sync::atomic::{AtomicBool, Ordering};

static SHOW_STATS: AtomicBool = AtomicBool::new(false);

extern "C" {
    static environ: *const *const libc::c_char;
}

/// The value of environment variable `name` (bytes without the terminator), if set.
pub fn env_value(name: &[u8]) -> Option<&'static [u8]> {
    // SAFETY: `environ` is the process's environment, a null-terminated array of
    // null-terminated strings that libc keeps alive; we only read it.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return None;
        }
        while !(*entry).is_null() {
            let s = core::ffi::CStr::from_ptr(*entry).to_bytes();
            if s.len() > name.len() && s.starts_with(name) && s[name.len()] == b'=' {
                return Some(&s[name.len() + 1..]);
            }
            entry = entry.add(1);
        }
    }
    None
}

fn flag(name: &[u8]) -> bool {
    matches!(env_value(name), Some(v) if !v.is_empty() && v != b"0")
}

/// Reads the options (once, from `allocator::process_start`).
pub fn load() {
    if flag(b"OXMALLOC_STATS") {
        SHOW_STATS.store(true, Ordering::Relaxed);
        extern "C" fn print_at_exit() {
            crate::abi::glibc::print_stats();
        }
        // SAFETY: registering a plain function; atexit may allocate, which is fine here
        // (the calling thread's heap is already set up).
        unsafe { libc::atexit(print_at_exit) };
    }
}

/// True when `OXMALLOC_STATS` asked for a report at exit.
pub fn show_stats() -> bool {
    SHOW_STATS.load(Ordering::Relaxed)
}
