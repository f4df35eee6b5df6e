//! Taking the stack of a sampled allocation.
//!
//! Programs are usually built without frame pointers, so the stack is walked from the
//! unwind tables, by one of two unwinders:
//! - libunwind's `unw_backtrace`, when `libunwind.so.8` is installed: it is loaded with
//!   `dlopen` at start-up (`RTLD_LOCAL`, so that its own `backtrace` and
//!   `_Unwind_Backtrace` interpose nothing). It keeps a per-thread cache of each return
//!   address's frame rule, so a stack it has seen before costs a few loads per frame: 870
//!   instructions for a 7-frame stack against 13,500 with glibc's `backtrace()`
//!   (callgrind, a C loop), which re-reads the unwind tables for every frame of every
//!   sample. That made the stack walk most of the profiler's cost on programs that
//!   allocate many bytes in small blocks (`xbatch-2`: 35% more instructions with
//!   profiling on, 18,000 per sample for its 11 frames).
//! - otherwise glibc's `backtrace()`, which uses the unwinder of `libgcc_s`.
//!
//! libunwind's per-thread cache costs each thread that uses it a 256 KiB mapping that it
//! fills at once (64 page faults) and unmaps at thread exit; a program that starts a
//! thread for every few samples paid more for that than it saved (`larson-1`: 8k page
//! faults with `backtrace()`, 197k with libunwind on every thread; `tchurn-2` 32k, 117k).
//! So a thread takes its first [`GLIBC_CAPTURES`] stacks with `backtrace()` and only then
//! goes over to libunwind, when it has shown that it samples often (a thread's count is a
//! word of the allocator's TLS slot). The switch costs about as much as 20 samples save;
//! at 32 it still cost `threadlife-2` (a few hundred threads of about that many samples
//! each) 19k page faults against 11–13k, at 128 12k. A thread that lives long enough to
//! take thousands of samples (`xbatch-2`'s) hardly notices where the switch is.
//!
//! The library links neither: each is loaded with `dlopen`, which allocates and takes the
//! loader's lock, at start-up ([`super::start`], from the library's constructor, outside
//! any lock of ours, with one capture by each), so a capture inside `malloc` later loads
//! nothing. A capture is never made while a lock of ours is held, and an allocation made
//! by the unwinder during a capture (libunwind's first capture on a thread sets up its
//! per-thread cache) is served as usual and not sampled (the caller's re-entrancy guard).
//!
//! The allocator's own frames are dropped: when the library is a shared object of its own
//! (`LD_PRELOAD`, `-loxmalloc`), every frame from the top down to the last one inside its
//! executable segment, which covers the entry point (`malloc`, `calloc`, ...) whatever the
//! compiler inlined or turned into tail calls. When the allocator is linked into the main
//! program (a Rust program with `oxmalloc` as its global allocator), its code cannot be told
//! from the program's by address, and only the profiler's own [`SELF_FRAMES`] frames are
//! dropped: the stack then starts in the allocator's entry path.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

/// Most frames kept per stack.
pub const MAX_DEPTH: usize = 64;
/// Frames of the profiler at the top of a capture: `capture`, `take`, and
/// `sample_with_heap` or `sample_without_heap` (all `#[inline(never)]`, none a tail call).
const SELF_FRAMES: usize = 3;
/// Room for the allocator's frames above the program's.
const ALLOCATOR_FRAMES: usize = 16;

/// Stacks a thread takes with `backtrace()` before it uses libunwind (see the module note).
const GLIBC_CAPTURES: usize = 128;

/// libunwind's `unw_backtrace` (0: not loaded; `backtrace()` is used).
static UNW_BACKTRACE: AtomicUsize = AtomicUsize::new(0);

/// `unw_backtrace`'s type (libunwind's `int unw_backtrace(void **buffer, int size)`).
type UnwBacktrace = unsafe extern "C" fn(*mut *mut c_void, c_int) -> c_int;

/// Loads libunwind's `unw_backtrace` if the library is installed (start-up only: `dlopen`
/// allocates and takes the loader's lock), and asks it for per-thread caches, so that its
/// slow path takes no global lock of its own. Returns true when loaded.
pub fn load_libunwind() -> bool {
    // SAFETY: a library name literal; `RTLD_LOCAL` keeps its symbols out of the global
    // scope (it defines `backtrace` and `_Unwind_Backtrace` too).
    let handle = unsafe {
        libc::dlopen(
            c"libunwind.so.8".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        )
    };
    if handle.is_null() {
        return false;
    }
    // SAFETY: a symbol name literal in a library just loaded (and never unloaded).
    let backtrace = unsafe { libc::dlsym(handle, c"unw_backtrace".as_ptr()) };
    if backtrace.is_null() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as above.
        let (set_policy, space) = unsafe {
            (
                libc::dlsym(handle, c"_ULx86_64_set_caching_policy".as_ptr()),
                libc::dlsym(handle, c"_ULx86_64_local_addr_space".as_ptr()),
            )
        };
        if !set_policy.is_null() && !space.is_null() {
            // libunwind's `unw_set_caching_policy(unw_addr_space_t, unw_caching_policy_t)`
            // and its `unw_local_addr_space` variable (an address-space pointer).
            type SetPolicy = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
            const UNW_CACHE_PER_THREAD: c_int = 2;
            // SAFETY: the symbols have these types in libunwind 1.x; the variable is
            // initialised when the library is loaded.
            unsafe {
                let set_policy: SetPolicy = core::mem::transmute(set_policy);
                set_policy(*space.cast::<*mut c_void>(), UNW_CACHE_PER_THREAD);
            }
        }
    }
    UNW_BACKTRACE.store(backtrace as usize, Ordering::Release);
    true
}

/// The executable segment holding this code, when it is a shared object of its own.
static TEXT_START: AtomicUsize = AtomicUsize::new(0);
static TEXT_END: AtomicUsize = AtomicUsize::new(0);

struct Search {
    marker: usize,
    visited: usize,
    found: Option<(usize, usize, bool)>,
}

/// `dl_iterate_phdr` callback: finds the object whose executable segment holds the marker.
///
/// # Safety
/// Called by `dl_iterate_phdr` with a valid `info` and our `Search` as `data`.
unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Search` that `locate_own_code` passed; `info` and its program
    // headers are valid during the callback (dl_iterate_phdr's contract).
    let (search, info) = unsafe { (&mut *data.cast::<Search>(), &*info) };
    let first = search.visited == 0;
    search.visited += 1;
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    for i in 0..usize::from(info.dlpi_phnum) {
        // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_X == 0 {
            continue;
        }
        let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
        let end = start.wrapping_add(ph.p_memsz as usize);
        if (start..end).contains(&search.marker) {
            // The first object reported is the main program.
            search.found = Some((start, end, first));
            return 1;
        }
    }
    0
}

/// Finds the executable segment of the object holding this code (start-up only: it takes
/// the loader's lock).
pub fn locate_own_code() {
    let mut search = Search {
        marker: locate_own_code as *const () as usize,
        visited: 0,
        found: None,
    };
    // SAFETY: `visit` has the callback signature and only reads what it is given; `search`
    // outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut search).cast()) };
    if let Some((start, end, false)) = search.found {
        TEXT_START.store(start, Ordering::Relaxed);
        TEXT_END.store(end, Ordering::Relaxed);
    }
}

/// Takes one stack with libunwind (start-up, after [`load_libunwind`]), so that it sets up
/// its global state outside `malloc`.
pub fn warm_libunwind() {
    let unw = UNW_BACKTRACE.load(Ordering::Acquire);
    if unw == 0 {
        return;
    }
    let mut raw = [core::ptr::null_mut::<c_void>(); 8];
    // SAFETY: `unw` is `unw_backtrace` (see `load_libunwind`), which writes at most
    // `raw.len()` addresses into the buffer.
    unsafe {
        let unw: UnwBacktrace = core::mem::transmute(unw);
        unw(raw.as_mut_ptr(), raw.len() as c_int);
    }
}

/// Fills `out` with the calling stack, innermost frame first, without the allocator's own
/// frames; returns the depth.
#[inline(never)]
pub fn capture(out: &mut [usize; MAX_DEPTH]) -> usize {
    capture_into::<{ SELF_FRAMES + ALLOCATOR_FRAMES + MAX_DEPTH }>(out)
}

/// [`capture`] of the innermost `SHORT_DEPTH` frames only (in the first entries of `out`):
/// the unwinder's cost grows with the frames it walks, and the guard keeps no more.
#[inline(never)]
pub fn capture_short(out: &mut [usize; MAX_DEPTH]) -> usize {
    capture_into::<{ SELF_FRAMES + ALLOCATOR_FRAMES + SHORT_DEPTH }>(out)
}

/// Frames [`capture_short`] keeps.
pub const SHORT_DEPTH: usize = 32;

/// The body of both captures (inlined: the frames above the program's stay the same).
#[inline(always)]
fn capture_into<const RAW: usize>(out: &mut [usize; MAX_DEPTH]) -> usize {
    let mut raw = [core::ptr::null_mut::<c_void>(); RAW];
    let unw = UNW_BACKTRACE.load(Ordering::Acquire);
    let captures = crate::process::tls::prof_captures();
    crate::process::tls::set_prof_captures(captures.saturating_add(1));
    let mut n = 0;
    if unw != 0 && captures >= GLIBC_CAPTURES {
        // SAFETY: `unw` is `unw_backtrace` (see `load_libunwind`), which writes at most
        // `raw.len()` addresses into the buffer.
        n = unsafe {
            let unw: UnwBacktrace = core::mem::transmute(unw);
            unw(raw.as_mut_ptr(), raw.len() as c_int)
        };
    }
    if n <= 0 {
        // SAFETY: backtrace writes at most `raw.len()` return addresses into the buffer; the
        // unwinder is loaded already (start-up), so it does not load anything.
        n = unsafe { libc::backtrace(raw.as_mut_ptr(), raw.len() as c_int) };
    }
    let frames = raw.get(..usize::try_from(n).unwrap_or(0)).unwrap_or(&[]);
    let skip = frames_to_drop(
        frames,
        TEXT_START.load(Ordering::Relaxed),
        TEXT_END.load(Ordering::Relaxed),
    );
    let mut depth = 0;
    for (slot, &pc) in out.iter_mut().zip(frames.iter().skip(skip)) {
        *slot = pc as usize;
        depth += 1;
    }
    depth
}

/// How many frames at the top of `frames` belong to the allocator: down to the last one in
/// `[start, end)` (its own code) when that range is known and holds a top frame, else the
/// profiler's own frames.
fn frames_to_drop(frames: &[*mut c_void], start: usize, end: usize) -> usize {
    let ours = |pc: &&*mut c_void| (start..end).contains(&(**pc as usize));
    if start < end {
        if let Some(first) = frames.iter().position(|pc| ours(&pc)) {
            return first + frames.iter().skip(first).take_while(ours).count();
        }
    }
    SELF_FRAMES.min(frames.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pcs: &[usize]) -> Vec<*mut c_void> {
        pcs.iter().map(|&p| p as *mut c_void).collect()
    }

    /// Both unwinders' stacks from one function: (libunwind's, glibc's).
    #[inline(never)]
    fn both_stacks() -> (Vec<usize>, Vec<usize>) {
        let unw: UnwBacktrace =
            // SAFETY: loaded by the caller: `unw_backtrace`.
            unsafe { core::mem::transmute(UNW_BACKTRACE.load(Ordering::Acquire)) };
        let mut a = [core::ptr::null_mut::<c_void>(); 64];
        let mut b = [core::ptr::null_mut::<c_void>(); 64];
        // SAFETY: each writes at most 64 addresses into its buffer.
        let (n, m) = unsafe { (unw(a.as_mut_ptr(), 64), libc::backtrace(b.as_mut_ptr(), 64)) };
        let take = |v: &[*mut c_void], k: c_int| {
            v.iter()
                .take(usize::try_from(k).unwrap_or(0))
                .map(|&p| p as usize)
                .collect()
        };
        (take(&a, n), take(&b, m))
    }

    #[test]
    fn libunwind_gives_the_frames_backtrace_gives() {
        if !load_libunwind() {
            eprintln!("skipped: libunwind.so.8 is not installed (backtrace() is used then)");
            return;
        }
        let (unw, glibc) = both_stacks();
        assert!(unw.len() > 3, "{unw:x?}");
        assert_eq!(unw.len(), glibc.len(), "{unw:x?} against {glibc:x?}");
        // The top frame is `both_stacks` for both, at two different calls; the callers are
        // the same return addresses.
        assert_eq!(unw.get(1..), glibc.get(1..));
        let top = both_stacks as fn() -> (Vec<usize>, Vec<usize>) as usize;
        for pc in [unw[0], glibc[0]] {
            assert!(
                pc > top && pc < top + 4096,
                "{pc:x} is not in both_stacks at {top:x}"
            );
        }
    }

    #[test]
    fn own_frames_are_dropped_by_address() {
        // Our code at [100, 200): a libc frame above ours, ours, then the program's.
        assert_eq!(frames_to_drop(&f(&[150, 120, 110, 900, 950]), 100, 200), 3);
        assert_eq!(frames_to_drop(&f(&[50, 150, 120, 900]), 100, 200), 3);
        // Unknown range: only the profiler's frames.
        assert_eq!(frames_to_drop(&f(&[1, 2, 3, 4, 5]), 0, 0), SELF_FRAMES);
        assert_eq!(frames_to_drop(&f(&[1]), 0, 0), 1);
        // Known range but no frame in it: the profiler's frames.
        assert_eq!(frames_to_drop(&f(&[1, 2, 3, 4, 5]), 100, 200), SELF_FRAMES);
    }
}
