//! The heap's own counters for the statistics ([`HeapStats`]): written by the heap's owner
//! with relaxed loads and stores (plain moves, slow paths only), read by the reports from
//! any thread, and linked into one list of every heap's counters.

use crate::block::size_class::CLASS_COUNT;
use crate::counter::OwnerU64;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Remote frees by threads that have no heap of their own (after their exit cleanup).
static REMOTE_FREES_WITHOUT_HEAP: AtomicU64 = AtomicU64::new(0);

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
    unsafe {
        (*stats)
            .next
            .store(ALL_HEAPS.load(Ordering::Relaxed), Ordering::Relaxed)
    };
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
