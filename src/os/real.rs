//! The real OS: anonymous private mappings from Linux.
//!
//! Aligned mappings are made by mapping `bytes + align` and unmapping the unaligned head and
//! tail (three syscalls; they are paid once per 4 MiB segment or per huge block, next to
//! which the page faults of touching the memory dominate).

use super::{Os, OS_PAGE_BYTES};
use crate::stats;
use core::ptr::NonNull;

/// Linux `mmap`/`munmap`/`mremap`/`madvise`.
#[derive(Clone, Copy, Default)]
pub struct RealOs;

/// Runs `f` and restores `errno` afterwards: syscalls inside the allocator must not leak
/// their `errno` to the program (C requires `free` to keep `errno`).
#[inline]
pub fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, valid for the
    // thread's whole life.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: the slot is this thread's errno, an aligned int valid for the thread's life.
    let saved = unsafe { *slot };
    let out = f();
    // SAFETY: the slot is this thread's errno, an aligned int valid for the thread's life.
    unsafe { *slot = saved };
    out
}

/// Maps `bytes` of fresh anonymous memory anywhere.
fn map_anywhere(bytes: usize) -> Option<NonNull<u8>> {
    map_anonymous(bytes, libc::PROT_READ | libc::PROT_WRITE)
}

/// Maps `bytes` of fresh anonymous memory anywhere, with access rights `prot`.
fn map_anonymous(bytes: usize, prot: libc::c_int) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with a null hint touches no existing memory.
    let ptr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            bytes,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(ptr.cast())
    }
}

/// Unmaps a range; failure (only possible for a wrong range, a bug) is fatal.
fn unmap_range(ptr: usize, bytes: usize) {
    if bytes == 0 {
        return;
    }
    // SAFETY: callers pass page-aligned ranges of mappings they own and no longer use.
    let rc = unsafe { libc::munmap(ptr as *mut libc::c_void, bytes) };
    if rc != 0 {
        crate::fatal::fatal("munmap failed: inconsistent mapping bookkeeping");
    }
}

// SAFETY: mappings come fresh from the kernel (zeroed, exclusive), aligned as asked; no
// method allocates.
unsafe impl Os for RealOs {
    fn now_ms(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
    }

    fn map(&self, bytes: usize, align_bytes: usize) -> Option<NonNull<u8>> {
        keep_errno(|| {
            let bytes = super::round_up(bytes, OS_PAGE_BYTES)?;
            if align_bytes <= OS_PAGE_BYTES {
                let ptr = map_anywhere(bytes)?;
                stats::add_mapped(bytes);
                return Some(ptr);
            }
            // Try the cheap way first: the kernel often places a new mapping right after
            // the previous one, which is aligned when all our mappings are aligned.
            let ptr = map_anywhere(bytes)?;
            if (ptr.as_ptr() as usize) & (align_bytes - 1) == 0 {
                stats::add_mapped(bytes);
                return Some(ptr);
            }
            unmap_range(ptr.as_ptr() as usize, bytes);
            let over = bytes.checked_add(align_bytes)?;
            let raw = map_anywhere(over)?.as_ptr() as usize;
            let start = (raw + align_bytes - 1) & !(align_bytes - 1);
            unmap_range(raw, start - raw);
            unmap_range(start + bytes, raw + over - (start + bytes));
            stats::add_mapped(bytes);
            NonNull::new(start as *mut u8)
        })
    }

    unsafe fn unmap(&self, ptr: NonNull<u8>, bytes: usize) {
        keep_errno(|| unmap_range(ptr.as_ptr() as usize, bytes));
        stats::sub_mapped(bytes);
    }

    unsafe fn purge(&self, ptr: NonNull<u8>, bytes: usize) {
        keep_errno(|| {
            // SAFETY: the caller guarantees the range is inside our mapping and holds no
            // live block; MADV_DONTNEED on a private anonymous mapping makes it read back
            // as zeros, which the allocator relies on to skip zeroing in calloc.
            unsafe { libc::madvise(ptr.as_ptr().cast(), bytes, libc::MADV_DONTNEED) };
        });
        stats::add_purged(bytes);
    }

    unsafe fn resize_in_place(&self, ptr: NonNull<u8>, old_bytes: usize, new_bytes: usize) -> bool {
        let done = keep_errno(|| {
            // SAFETY: the caller guarantees `[ptr, ptr + old_bytes)` is memory of
            // ours; without MREMAP_MAYMOVE the kernel either resizes in place or fails.
            let out = unsafe { libc::mremap(ptr.as_ptr().cast(), old_bytes, new_bytes, 0) };
            out != libc::MAP_FAILED
        });
        if done {
            if new_bytes >= old_bytes {
                stats::add_mapped(new_bytes - old_bytes);
            } else {
                stats::sub_mapped(old_bytes - new_bytes);
            }
        }
        done
    }

    unsafe fn move_mapping(
        &self,
        ptr: NonNull<u8>,
        old_bytes: usize,
        target: NonNull<u8>,
        new_bytes: usize,
    ) -> bool {
        let done = keep_errno(|| {
            // SAFETY: the caller guarantees both ranges are ours and unused elsewhere;
            // MREMAP_FIXED replaces the reservation at `target` with the moved pages.
            let out = unsafe {
                libc::mremap(
                    ptr.as_ptr().cast(),
                    old_bytes,
                    new_bytes,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    target.as_ptr() as *mut libc::c_void,
                )
            };
            out != libc::MAP_FAILED
        });
        if done {
            // The reservation at `target` (new_bytes) was replaced; the old range is gone.
            stats::sub_mapped(old_bytes);
        }
        done
    }
}

/// Access control for the hardened mode (not part of [`Os`]: only the process's own
/// allocator over the real OS uses it).
impl RealOs {
    /// Reserves `bytes` (a multiple of [`OS_PAGE_BYTES`]) of address space that faults on
    /// every access; no memory is committed. `None` when the OS refuses.
    pub fn reserve_inaccessible(&self, bytes: usize) -> Option<NonNull<u8>> {
        keep_errno(|| map_anonymous(bytes, libc::PROT_NONE))
    }

    /// Reserves `bytes` of inaccessible address space aligned to `align_bytes` (both
    /// multiples of [`OS_PAGE_BYTES`], `align_bytes` a power of two): the guard pool's
    /// chunk. `None` when the OS refuses.
    pub fn reserve_inaccessible_aligned(
        &self,
        bytes: usize,
        align_bytes: usize,
    ) -> Option<NonNull<u8>> {
        let over = bytes.checked_add(align_bytes)?;
        let raw = self.reserve_inaccessible(over)?.as_ptr() as usize;
        let start = (raw + align_bytes - 1) & !(align_bytes - 1);
        keep_errno(|| {
            unmap_range(raw, start - raw);
            unmap_range(start + bytes, raw + over - (start + bytes));
        });
        NonNull::new(start as *mut u8)
    }

    /// Makes `[ptr, ptr + bytes)` inaccessible (`accessible` false: every access faults) or
    /// readable and writable again. False when the OS refuses (out of mapping slots).
    ///
    /// # Safety
    /// The range must be page-aligned and inside a mapping of ours that holds no block in
    /// use by anything but the caller.
    pub unsafe fn set_accessible(&self, ptr: usize, bytes: usize, accessible: bool) -> bool {
        let prot = if accessible {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        // SAFETY: the caller guarantees the range is ours and page-aligned; mprotect
        // changes only its access rights.
        keep_errno(|| unsafe { libc::mprotect(ptr as *mut libc::c_void, bytes, prot) } == 0)
    }
}
