//! oxmalloc: a general-purpose `malloc` replacement.
//!
//! # Glossary
//! - *block*: what a user gets from `malloc`.
//! - *slab*: a 64 KiB run of equal blocks of one *size class*.
//! - *segment*: a 4 MiB, 4 MiB-aligned mapping cut into 64 slabs; slab 0 holds the
//!   segment header (the metadata of all its slabs). A segment belongs to one heap.
//! - *heap*: a thread's allocator: one size-class allocator per class.
//! - *span*: a power-of-two block of the buddy allocator (medium sizes).
//! - *huge block*: one `mmap` per block (above the buddy limit).
//! - *remote free*: a free by a thread that does not own the block's slab.
//! - *OS page*: the kernel's 4 KiB unit (never just "page").
//!
//! # Layers (dependencies point down only)
//! ```text
//! abi        extern "C" exports, errno, C edge cases            (abi/)
//! process    the process allocator: thread start/exit, fork     (process.rs)
//! allocator  dispatch by size and by pointer kind; the context  (allocator.rs)
//! heap       per-thread heaps: fast path, slow path, thread life (heap.rs, heap_pool.rs)
//! slab, size_class, segment, buddy, large
//! region_map address -> kind, O(1), lock-free
//! os         the only place that calls mmap/munmap/madvise       (os/)
//! beside:    sync (locks, fork), tls, config, stats, fatal
//!            prof: the sampling heap profiler, called by process (allocations) and
//!            allocator (frees of sampled blocks)                 (prof/)
//! ```
#![cfg_attr(not(any(test, feature = "portable-tls")), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod abi;
pub mod allocator;
pub mod buddy;
pub mod check;
pub mod config;
pub mod fatal;
pub mod heap;
pub mod heap_pool;
pub mod large;
pub mod medium_cache;
pub mod os;
pub mod process;
pub mod prof;
pub mod region_map;
pub mod segment;
pub mod size_class;
pub mod slab;
pub mod stats;
pub mod sync;
pub mod tls;
pub mod validate;

#[cfg(test)]
mod core_tests;

pub use abi::extended::{
    ox_aligned_alloc, ox_calloc, ox_free, ox_heap_check, ox_malloc, ox_owns, ox_prof_dump,
    ox_realloc, ox_stats_get, ox_trim, ox_usable_size, ox_version, OxStats,
};
pub use prof::prof_dump;

use core::alloc::{GlobalAlloc, Layout};

/// The Rust global allocator: `#[global_allocator] static GLOBAL: oxmalloc::OxMalloc = oxmalloc::OxMalloc;`
pub struct OxMalloc;

// SAFETY: every method forwards to the process-wide allocator, which returns blocks of at
// least `layout.size()` bytes aligned to `layout.align()`, or null; `dealloc`/`realloc` take
// only pointers it returned (the caller's contract).
unsafe impl GlobalAlloc for OxMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        process::alloc_aligned(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        process::alloc_zeroed_aligned(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc contract).
        unsafe { process::free(ptr, "free") }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a live block of this allocator with `layout` (GlobalAlloc contract).
        unsafe { process::realloc_aligned(ptr, new_size, layout.align()) }
    }
}
