//! Taking the stack of a sampled allocation.
//!
//! Programs are usually built without frame pointers, so the stack is walked by glibc's
//! `backtrace()`, which uses the unwinder of `libgcc_s` from the unwind tables. The
//! library does not link `libgcc_s`: glibc loads it with `dlopen` on the first call, which
//! allocates and takes the loader's lock. That first call is made once at start-up
//! ([`super::start`], from the library's constructor, outside any lock of ours), so a
//! capture inside `malloc` later neither loads anything nor allocates. A capture is never
//! made while a lock of ours is held, and an allocation made by the unwinder during a
//! capture is not sampled (the caller's re-entrancy guard).
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
    // SAFETY: backtrace writes at most `raw.len()` return addresses into the buffer; the
    // unwinder is loaded already (start-up), so it does not allocate.
    let n = unsafe { libc::backtrace(raw.as_mut_ptr(), raw.len() as c_int) };
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
