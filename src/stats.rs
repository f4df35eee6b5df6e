//! Statistics: counters kept off the fast paths, and the figures built from them.
//!
//! What is counted where, and what it costs:
//! - Nothing on the `malloc`/`free` fast paths. Live small blocks are not counted one by one:
//!   [`census`] reads each slab's live count (`Slab::used`, which the owner already keeps)
//!   at report time, walking the segments through the region map.
//! - Per heap ([`HeapStats`], written by the heap's owner with a relaxed load and store, so
//!   readers race with nothing): slow-path allocations per size class ("refills") and
//!   remote frees done by the heap's thread.
//! - Process-wide atomics, touched only where the allocator already pays for a syscall or a
//!   global lock: bytes mapped, bytes purged, bytes *held* (assigned slabs, allocated medium
//!   spans, huge mappings) and their peak, threads started and exited, failed requests.
//!
//! [`census`] gathers the figures (taking the global locks one at a time), [`report`]
//! prints them at exit (`OXMALLOC_STATS`) and for `malloc_stats`.

pub mod census;
pub mod report;

use crate::counter::OwnerU64;
use crate::size_class::CLASS_COUNT;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);
static PURGED_BYTES: AtomicU64 = AtomicU64::new(0);
static PURGE_COUNT: AtomicU64 = AtomicU64::new(0);
static HELD_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_HELD_BYTES: AtomicUsize = AtomicUsize::new(0);
static THREADS_STARTED: AtomicU64 = AtomicU64::new(0);
static THREADS_EXITED: AtomicU64 = AtomicU64::new(0);
static FAILED_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Remote frees by threads that have no heap of their own (after their exit cleanup).
static REMOTE_FREES_WITHOUT_HEAP: AtomicU64 = AtomicU64::new(0);

/// Records `bytes` newly mapped.
pub fn add_mapped(bytes: usize) {
    let now = MAPPED_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK_MAPPED_BYTES.fetch_max(now, Ordering::Relaxed);
}

/// Records `bytes` unmapped.
pub fn sub_mapped(bytes: usize) {
    MAPPED_BYTES.fetch_sub(bytes, Ordering::Relaxed);
}

/// Bytes currently mapped by the allocator (address space, not resident memory).
pub fn mapped_bytes() -> usize {
    MAPPED_BYTES.load(Ordering::Relaxed)
}

/// The most bytes ever mapped at once.
pub fn peak_mapped_bytes() -> usize {
    PEAK_MAPPED_BYTES.load(Ordering::Relaxed)
}

/// Records `bytes` purged (given back to the OS with `madvise`, still mapped).
pub fn add_purged(bytes: usize) {
    PURGED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    PURGE_COUNT.fetch_add(1, Ordering::Relaxed);
}

/// Bytes purged so far, and in how many calls.
pub fn purged() -> (u64, u64) {
    (
        PURGED_BYTES.load(Ordering::Relaxed),
        PURGE_COUNT.load(Ordering::Relaxed),
    )
}

/// Records `bytes` more held for blocks: a slab assigned to a size class, a medium span
/// allocated, a huge block mapped. Keeps the peak.
pub fn held_add(bytes: usize) {
    let now = HELD_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
    if now > PEAK_HELD_BYTES.load(Ordering::Relaxed) {
        PEAK_HELD_BYTES.fetch_max(now, Ordering::Relaxed);
    }
}

/// Records `bytes` no longer held for blocks.
pub fn held_sub(bytes: usize) {
    HELD_BYTES.fetch_sub(bytes, Ordering::Relaxed);
}

/// Records a held range that changed size from `old` to `new` bytes.
pub fn held_resize(old: usize, new: usize) {
    if new >= old {
        held_add(new - old);
    } else {
        held_sub(old - new);
    }
}

/// Bytes held now, and the most ever held at once. Small blocks count by whole slabs, so
/// the peak is an upper bound of the peak of live bytes, tight when slabs are well used.
pub fn held_bytes() -> (usize, usize) {
    (
        HELD_BYTES.load(Ordering::Relaxed),
        PEAK_HELD_BYTES.load(Ordering::Relaxed),
    )
}

/// A thread got its first heap.
pub fn thread_started() {
    THREADS_STARTED.fetch_add(1, Ordering::Relaxed);
}

/// A thread handed its heap back at exit.
pub fn thread_exited() {
    THREADS_EXITED.fetch_add(1, Ordering::Relaxed);
}

/// Threads started and exited so far (threads that allocated).
pub fn threads() -> (u64, u64) {
    (
        THREADS_STARTED.load(Ordering::Relaxed),
        THREADS_EXITED.load(Ordering::Relaxed),
    )
}

/// An allocating call returned null for lack of memory.
#[cold]
pub fn failed_request() {
    FAILED_REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// Allocating calls that failed for lack of memory.
pub fn failed_requests() -> u64 {
    FAILED_REQUESTS.load(Ordering::Relaxed)
}

/// A free of a block owned by another thread's heap, by a thread with the counters `own`
/// (None: a thread without a heap, after its exit cleanup).
#[cold]
pub fn remote_free(own: Option<&HeapStats>) {
    match own {
        Some(stats) => stats.remote_frees.add(1),
        None => {
            REMOTE_FREES_WITHOUT_HEAP.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counters of one heap. Only the heap's owner (its thread, or the holder of the lock that
/// guards it) writes them; any thread may read them.
pub struct HeapStats {
    /// Small allocations of each class that took the slow path (the current slab had no
    /// free block).
    pub refills: [OwnerU64; CLASS_COUNT],
    /// Frees of other heaps' blocks done by this heap's thread.
    pub remote_frees: OwnerU64,
    /// The next heap's counters in the list of every heap's (see [`register_heap`]).
    next: AtomicPtr<HeapStats>,
}

impl Default for HeapStats {
    fn default() -> Self {
        Self::new()
    }
}

impl HeapStats {
    /// Zero counters.
    pub const fn new() -> HeapStats {
        HeapStats {
            refills: [const { OwnerU64::new(0) }; CLASS_COUNT],
            remote_frees: OwnerU64::new(0),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Counts a slow-path allocation of class `class` (owner only).
    #[inline]
    pub fn count_refill(&self, class: usize) {
        if let Some(c) = self.refills.get(class) {
            c.add(1);
        }
    }
}

/// The counters of every heap ever made, newest first (heaps are never freed, so the list
/// only grows).
static ALL_HEAPS: AtomicPtr<HeapStats> = AtomicPtr::new(ptr::null_mut());

/// Adds a new heap's counters to the list the statistics walk. Called once per heap, by
/// its creator, under the heap pool's lock (so pushes never race each other).
///
/// # Safety
/// `stats` must be the counters of a freshly initialised heap, which is never freed.
pub unsafe fn register_heap(stats: *mut HeapStats) {
    // SAFETY: the caller gives valid counters; `next` is ours to set before publishing.
    unsafe { (*stats).next.store(ALL_HEAPS.load(Ordering::Relaxed), Ordering::Relaxed) };
    ALL_HEAPS.store(stats, Ordering::Release);
}

/// Calls `f` with every heap's counters.
pub fn for_each_heap(mut f: impl FnMut(&HeapStats)) {
    let mut h = ALL_HEAPS.load(Ordering::Acquire);
    while !h.is_null() {
        // SAFETY: registered counters belong to heaps that are never freed; `next` was set
        // before they were published (release/acquire above), and the counters are atomics.
        let stats = unsafe { &*h };
        f(stats);
        h = stats.next.load(Ordering::Relaxed);
    }
}

/// Remote frees by every thread so far.
pub fn remote_frees() -> u64 {
    let mut total = REMOTE_FREES_WITHOUT_HEAP.load(Ordering::Relaxed);
    for_each_heap(|s| total += s.remote_frees.get());
    total
}
