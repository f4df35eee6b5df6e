//! The OS layer: the only code that calls `mmap`, `munmap`, `mremap` and `madvise`.
//!
//! Operations are named by intent ("reserve and commit this many bytes", "I no longer need
//! the contents of this range"), not by syscall. The core reaches the OS only through the
//! [`Os`] trait, so tests run it over [`fake::FakeOs`], which can refuse the n-th mapping.
//!
//! Every operation preserves `errno`: `free` must not change it (C contract), and the
//! `abi` layer sets `ENOMEM` itself where a call fails.

#[cfg(test)]
pub mod fake;
pub mod raw;
pub mod real;

use core::ptr::NonNull;

pub use real::RealOs;

/// Size of an OS page on the targets we support (x86-64 and aarch64 with 4 KiB pages).
pub const OS_PAGE_BYTES: usize = 4096;

/// A source of memory for the allocator.
///
/// # Safety
/// Implementations must return mappings that are readable and writable, zero-filled when
/// new, at least `bytes` long, aligned as asked, and not in use by anything else. They must
/// never call back into the allocator (no `malloc`), since they run inside it.
pub unsafe trait Os: Sync {
    /// Milliseconds on a monotonic clock, for the ages of free memory (the decay). Cheap
    /// (no syscall on Linux: a vDSO read of the coarse clock).
    fn now_ms(&self) -> u64;

    /// Maps `bytes` of fresh zeroed memory aligned to `align_bytes` (a power of two that is
    /// a multiple of [`OS_PAGE_BYTES`]). `None` when the OS refuses.
    fn map(&self, bytes: usize, align_bytes: usize) -> Option<NonNull<u8>>;

    /// Returns a mapping (or the tail or head of one) to the OS.
    ///
    /// # Safety
    /// `[ptr, ptr + bytes)` must be a range this `Os` mapped, page-aligned, no longer used.
    unsafe fn unmap(&self, ptr: NonNull<u8>, bytes: usize);

    /// Tells the OS that the contents of `[ptr, ptr + bytes)` are no longer needed: the
    /// range stays mapped, reads back as zeros, and no longer counts toward resident memory.
    ///
    /// # Safety
    /// The range must be page-aligned and inside a live mapping of this `Os`, with no live
    /// block in it.
    unsafe fn purge(&self, ptr: NonNull<u8>, bytes: usize);

    /// Grows or shrinks a mapping in place, without moving it. `false` if the OS can't
    /// (growing also fails when the range spans two mappings that the OS did not merge).
    ///
    /// # Safety
    /// `[ptr, ptr + old_bytes)` must be live memory of this `Os`, page-aligned, used by
    /// nothing else: a whole mapping or a piece of one.
    unsafe fn resize_in_place(&self, ptr: NonNull<u8>, old_bytes: usize, new_bytes: usize) -> bool;

    /// Moves a mapping to `[target, target + new_bytes)`, which must be a mapping of this
    /// `Os` reserved for it (it is replaced); the contents move without copying.
    ///
    /// # Safety
    /// `[ptr, ptr + old_bytes)` must be live memory of this `Os`, page-aligned, used by
    /// nothing else (a whole mapping or a piece of one; `false` when it spans two mappings
    /// that the OS did not merge); `target` a fresh mapping of
    /// `new_bytes` not used by anything else. On success neither old range may be used again
    /// except through the returned mapping at `target`.
    unsafe fn move_mapping(
        &self,
        ptr: NonNull<u8>,
        old_bytes: usize,
        target: NonNull<u8>,
        new_bytes: usize,
    ) -> bool;
}

/// Rounds `bytes` up to a multiple of `align` (a power of two); `None` on overflow.
#[inline]
pub const fn round_up(bytes: usize, align: usize) -> Option<usize> {
    match bytes.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}
