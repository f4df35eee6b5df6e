//! The C shell: the C standard's and glibc's edge cases, and errno.
//!
//! `exports` holds the `malloc` family's symbols, one line each, over the functions here;
//! `extended` the `ox_*` API of `include/oxmalloc.h`; `glibc` the glibc extensions
//! (`mallopt`, `mallinfo2`, `malloc_trim`, `malloc_stats`, `malloc_info`).
//!
//! Only this layer knows about errno: the core returns null, and these functions set
//! `ENOMEM` or `EINVAL` as the contract in DESIGN.md §3 says.

#[cfg(all(feature = "c-exports", target_arch = "x86_64"))]
pub mod cxx;
#[cfg(feature = "c-exports")]
pub mod exports;
pub mod extended;
pub mod glibc;

use crate::os::OS_PAGE_BYTES;
use crate::process as allocator;
use crate::process::context::MIN_ALIGN;
use core::ffi::{c_int, c_void};
use core::ptr;

fn set_errno(code: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = code };
}

/// Null with `errno = ENOMEM`, counted for the statistics. Kept out of line so that the
/// callers' fast paths hold only a call on their failure branch.
#[cold]
#[inline(never)]
fn out_of_memory() -> *mut c_void {
    crate::stats::failed_request();
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

#[inline]
fn or_enomem(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        out_of_memory()
    } else {
        p.cast()
    }
}

/// `malloc(size)`: `malloc(0)` gives a unique 16-byte block.
#[inline(always)]
pub fn malloc(size: usize) -> *mut c_void {
    let p = allocator::alloc(size);
    if p.is_null() {
        return out_of_memory();
    }
    p.cast()
}

/// `free(ptr)`: no-op for null; keeps errno.
///
/// # Safety
/// `ptr` must be null or a live block (bad pointers are reported where detected).
#[inline(always)]
pub unsafe fn free(ptr: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { allocator::free(ptr.cast(), "free") }
}

/// A sized free (`free_sized`, sized `operator delete`); `call` names it in reports.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator, of `size` requested bytes.
#[inline]
pub unsafe fn free_sized(ptr: *mut c_void, size: usize, call: &str) {
    // SAFETY: forwarded contract.
    unsafe { allocator::free_sized(ptr.cast(), size, call) }
}

/// `calloc(count, size)`: zeroed; overflow of `count * size` gives null + ENOMEM.
pub fn calloc(count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        Some(total) => or_enomem(allocator::alloc_zeroed_aligned(total, MIN_ALIGN)),
        None => out_of_memory(),
    }
}

/// `realloc(ptr, size)`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and
/// returns null (glibc's behaviour); on failure null + ENOMEM with `ptr` untouched.
///
/// # Safety
/// `ptr` must be null or a live block.
pub unsafe fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // SAFETY: forwarded contract.
        unsafe { allocator::free(ptr.cast(), "realloc") };
        return ptr::null_mut();
    }
    // SAFETY: forwarded contract.
    or_enomem(unsafe { allocator::realloc_aligned(ptr.cast(), size, MIN_ALIGN) })
}

/// `reallocarray(ptr, count, size)`: `realloc` with an overflow check.
///
/// # Safety
/// `ptr` must be null or a live block.
pub unsafe fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: forwarded contract.
        Some(total) => unsafe { realloc(ptr, total) },
        None => out_of_memory(),
    }
}

/// `posix_memalign`: EINVAL unless `align` is a power of two multiple of
/// `sizeof(void *)`; ENOMEM when memory is short; `*out` written only on success.
///
/// # Safety
/// `out` must be valid for writing a pointer.
pub unsafe fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let p = allocator::alloc_aligned(size, align);
    if p.is_null() {
        // glibc returns ENOMEM and also leaves it in errno; programs read either.
        set_errno(libc::ENOMEM);
        crate::stats::failed_request();
        return libc::ENOMEM;
    }
    // SAFETY: the caller guarantees `out` is writable.
    unsafe { *out = p.cast() };
    0
}

/// `aligned_alloc`: any power-of-two alignment; 0 or a non-power-of-two gives null +
/// EINVAL (C17, as glibc 2.38 and later).
pub fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    or_enomem(allocator::alloc_aligned(size, align))
}

/// `memalign`, as glibc: an alignment that is not a power of two is rounded up to one; an
/// alignment too large to round gives null + EINVAL.
pub fn memalign(align: usize, size: usize) -> *mut c_void {
    let align = if align <= MIN_ALIGN { MIN_ALIGN } else { align };
    let Some(align) = align
        .checked_next_power_of_two()
        .filter(|&a| a <= isize::MAX as usize / 2 + 1)
    else {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    };
    or_enomem(allocator::alloc_aligned(size, align))
}

/// `valloc`: page-aligned.
pub fn valloc(size: usize) -> *mut c_void {
    or_enomem(allocator::alloc_aligned(size, OS_PAGE_BYTES))
}

/// `pvalloc`: page-aligned, size rounded up to whole OS pages; `pvalloc(0)` is one page.
pub fn pvalloc(size: usize) -> *mut c_void {
    match crate::os::round_up(size.max(1), OS_PAGE_BYTES) {
        Some(rounded) => or_enomem(allocator::alloc_aligned(rounded, OS_PAGE_BYTES)),
        None => out_of_memory(),
    }
}

/// `malloc_usable_size`: 0 for null.
pub fn malloc_usable_size(ptr: *const c_void) -> usize {
    allocator::usable_size(ptr.cast(), "malloc_usable_size")
}
