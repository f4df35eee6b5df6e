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
//! # Layers (dependencies point down only; `tests/layers.py` checks it)
//! ```text
//! abi/         extern "C" exports, errno, C edge cases
//! process/     the process allocator: the context (dispatch by size and pointer kind),
//!              thread start and exit, TLS, fork, check mode, census and reports, and the
//!              sampling heap profiler (process/prof/)
//! heap/        per-thread heaps: fast path, slow path, slab lists, the heap pool, the
//!              medium cache, the heap checker, counters, the profiler's sampler
//! block/       size classes, slabs and the remote-free protocol, segments, buddy, large
//! region_map   address -> kind, O(1), lock-free
//! os/          the only place that calls mmap/munmap/madvise
//! beside:      config (options), stats (counters), sync (locks), list (the intrusive
//!              list), counter, writer, fatal
//! ```
#![cfg_attr(not(any(test, feature = "portable-tls")), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub(crate) mod abi;
pub(crate) mod block;
pub(crate) mod config;
pub(crate) mod counter;
pub(crate) mod fatal;
pub(crate) mod heap;
pub(crate) mod list;
pub(crate) mod os;
pub(crate) mod process;
pub(crate) mod region_map;
pub(crate) mod stats;
pub(crate) mod sync;
pub(crate) mod writer;

pub use abi::extended::{
    ox_aligned_alloc, ox_calloc, ox_free, ox_heap_check, ox_malloc, ox_owns, ox_prof_dump,
    ox_realloc, ox_stats_get, ox_trim, ox_usable_size, ox_version, OxStats,
};
pub use process::prof::prof_dump;

/// The allocator's figures for Rust programs: the same as C's `ox_stats_get` (see
/// [`OxStats`] for what each field counts).
pub type Stats = OxStats;

/// Gathers the allocator's figures now: live bytes and blocks, memory mapped, resident and
/// purged, medium and huge blocks, threads and heaps. Walks every slab and takes the global
/// locks briefly, one at a time: meant for monitoring, not for a hot loop.
pub fn stats() -> Stats {
    process::census::take(true).stats
}

/// Returns free memory to the OS: empty slabs, free medium spans, cached huge mappings and
/// unused segments (what `malloc_trim(0)` does). Returns the bytes released or purged.
pub fn trim() -> usize {
    process::trim()
}

/// Walks the calling thread's heap, the heap of exited threads and the medium allocator,
/// and reports the first broken invariant found (what `ox_heap_check` does from C).
pub fn heap_check() -> Result<(), &'static str> {
    process::heap_check()
}

/// The library's version (`CARGO_PKG_VERSION`).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Writes `oxmalloc: fatal: <message>` to fd 2 and aborts the process: what the allocator
/// does when it finds one of its own invariants broken. For the shipped library's panic
/// handler, which no code path reaches (see `tests/library_checks.sh`).
#[doc(hidden)]
pub fn fatal_error(message: &str) -> ! {
    fatal::fatal(message)
}

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
