//! The `malloc` family's C symbols: one line each over `abi`, with exactly libc's
//! signatures. Compiled with the `c-exports` feature (on by default, and what the cdylib
//! needs).

use core::ffi::{c_int, c_void};

/// C `malloc`.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    super::malloc(size)
}

/// C `free`.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { super::free(ptr) }
}

/// C `calloc`.
#[no_mangle]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    super::calloc(count, size)
}

/// C `realloc`.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { super::realloc(ptr, size) }
}

/// C `reallocarray`.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { super::reallocarray(ptr, count, size) }
}

/// POSIX `posix_memalign`.
///
/// # Safety
/// `out` must be valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { super::posix_memalign(out, align, size) }
}

/// C11 `aligned_alloc`.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    super::aligned_alloc(align, size)
}

/// glibc `memalign`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    super::memalign(align, size)
}

/// `valloc`.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    super::valloc(size)
}

/// glibc `pvalloc`.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    super::pvalloc(size)
}

/// glibc `malloc_usable_size`.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    super::malloc_usable_size(ptr)
}

/// C23 `free_sized`.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn free_sized(ptr: *mut c_void, size: usize) {
    // SAFETY: forwarded contract.
    unsafe { super::free_sized(ptr, size, "free_sized") }
}

/// C23 `free_aligned_sized`.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, _align: usize, size: usize) {
    // SAFETY: forwarded contract.
    unsafe { super::free_sized(ptr, size, "free_aligned_sized") }
}

/// Obsolete `cfree`, still called by a few old programs.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn cfree(ptr: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { super::free(ptr) }
}

/// glibc `mallopt`.
#[no_mangle]
pub extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    super::glibc::mallopt(param, value)
}

/// glibc `malloc_trim`.
#[no_mangle]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    super::glibc::malloc_trim(pad)
}

/// glibc `mallinfo`.
#[no_mangle]
pub extern "C" fn mallinfo() -> super::glibc::MallInfo {
    super::glibc::mallinfo()
}

/// glibc `mallinfo2`.
#[no_mangle]
pub extern "C" fn mallinfo2() -> super::glibc::MallInfo2 {
    super::glibc::mallinfo2()
}

/// glibc `malloc_stats`.
#[no_mangle]
pub extern "C" fn malloc_stats() {
    super::glibc::print_stats()
}

/// glibc `malloc_info`.
///
/// # Safety
/// `stream` must be a valid `FILE *`.
#[no_mangle]
pub unsafe extern "C" fn malloc_info(options: c_int, stream: *mut libc::FILE) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { super::glibc::malloc_info(options, stream) }
}
