//! The heap pool: where heaps come from and where dead threads' heaps go.
//!
//! Every heap is on exactly one of the pool's lists: *active* (owned by a live thread, or
//! by the global heap), *abandoned* (owns segments, no thread), *free* (owns nothing), or
//! *broken* (inherited by a `fork` child from a thread that was in the middle of updating
//! it; never touched again).
//!
//! Heaps are carved from OS mappings and never unmapped, so a pointer to a heap (kept in
//! every segment header it owns) stays valid forever. A thread that exits hands its heap
//! back: *abandoned* if it still owns segments (live blocks survive their thread), *free*
//! otherwise. A new thread adopts an abandoned heap first, taking over its slabs whole, so
//! a dead thread's memory is reused rather than leaked.

use crate::heap::{Heap, OwnedHeap};
use crate::os::Os;
use core::ptr;

/// Bytes mapped at a time for new heaps.
const HEAP_CHUNK_BYTES: usize = 256 * 1024;
const HEAP_STRIDE_BYTES: usize = core::mem::size_of::<Heap>().next_multiple_of(64);

/// Heaps not owned by a thread, and the bump area new heaps come from.
pub struct HeapPool {
    active: *mut Heap,
    broken: *mut Heap,
    abandoned: *mut Heap,
    /// The last heap on the abandoned list (null when the list is empty).
    abandoned_tail: *mut Heap,
    abandoned_count: usize,
    free: *mut Heap,
    bump: usize,
    bump_end: usize,
    created: usize,
    adopted: usize,
}

// SAFETY: the pool holds addresses of heaps no thread owns; it is used under a Mutex.
unsafe impl Send for HeapPool {}

impl Default for HeapPool {
    fn default() -> Self {
        Self::new()
    }
}

impl HeapPool {
    /// An empty pool.
    pub const fn new() -> Self {
        HeapPool {
            active: ptr::null_mut(),
            broken: ptr::null_mut(),
            abandoned: ptr::null_mut(),
            abandoned_tail: ptr::null_mut(),
            abandoned_count: 0,
            free: ptr::null_mut(),
            bump: 0,
            bump_end: 0,
            created: 0,
            adopted: 0,
        }
    }

    /// Heaps ever created.
    pub fn created(&self) -> usize {
        self.created
    }

    /// Abandoned heaps adopted by new threads.
    pub fn adopted(&self) -> usize {
        self.adopted
    }

    /// Abandoned heaps waiting for adoption.
    pub fn abandoned_count(&self) -> usize {
        self.abandoned_count
    }

    /// A heap for a new thread: an abandoned one (adopted with its slabs), a free one, or a
    /// new one. `None` when the OS refuses memory.
    pub fn acquire<O: Os>(&mut self, os: &O) -> Option<*mut Heap> {
        let heap = self.acquire_inactive(os)?;
        // SAFETY: the heap was on no list; it is valid (pool heaps are never unmapped).
        unsafe { self.push_active(heap) };
        Some(heap)
    }

    fn acquire_inactive<O: Os>(&mut self, os: &O) -> Option<*mut Heap> {
        if let Some(heap) = self.take_abandoned() {
            self.adopted += 1;
            return Some(heap);
        }
        if !self.free.is_null() {
            let heap = self.free;
            // SAFETY: heaps on the free list are valid and unowned.
            self.free = unsafe { (*heap).pool_links().next };
            return Some(heap);
        }
        if self.bump + HEAP_STRIDE_BYTES > self.bump_end {
            let chunk = os.map(HEAP_CHUNK_BYTES, crate::os::OS_PAGE_BYTES)?;
            self.bump = chunk.as_ptr() as usize;
            self.bump_end = self.bump + HEAP_CHUNK_BYTES;
        }
        if self.created == 0 {
            // Before any slab exists: every free cookie is made with the final secret.
            crate::slab::init_cookie_secret();
        }
        let heap = self.bump as *mut Heap;
        self.bump += HEAP_STRIDE_BYTES;
        self.created += 1;
        // SAFETY: fresh, exclusive memory of at least one heap's size, 64-byte aligned; a
        // heap is never freed, so it may join the statistics' list.
        unsafe {
            Heap::init(heap);
            crate::stats::register_heap(heap);
        }
        Some(heap)
    }

    /// Takes one abandoned heap out of the pool (to adopt it, or to clean it up).
    /// A heap inherited from a thread of the parent process that may have been in the
    /// middle of an update is used only when the heap checker finds it consistent, and is
    /// otherwise set aside for good (its memory stays mapped: a leak, never corruption).
    pub fn take_abandoned(&mut self) -> Option<*mut Heap> {
        loop {
            if self.abandoned.is_null() {
                return None;
            }
            let heap = self.abandoned;
            // SAFETY: heaps on the abandoned list are valid and unowned.
            unsafe {
                self.abandoned = (*heap).pool_links().next;
                if self.abandoned.is_null() {
                    self.abandoned_tail = ptr::null_mut();
                }
                self.abandoned_count -= 1;
                if !(*heap).pool_links().orphaned_by_fork {
                    return Some(heap);
                }
                (*heap).pool_links().orphaned_by_fork = false;
                // Taken off the list, the heap is ours to check.
                if OwnedHeap::claim(heap).is_some_and(|h| crate::validate::check_heap(&h).is_ok()) {
                    return Some(heap);
                }
                (*heap).pool_links().next = self.broken;
                self.broken = heap;
            }
        }
    }

    /// # Safety
    /// `heap` must be a valid heap of this pool on no list.
    unsafe fn push_active(&mut self, heap: *mut Heap) {
        // SAFETY: the caller's guarantee; the list's heaps are valid.
        unsafe {
            (*heap).pool_links().prev = ptr::null_mut();
            (*heap).pool_links().next = self.active;
            if !self.active.is_null() {
                (*self.active).pool_links().prev = heap;
            }
        }
        self.active = heap;
    }

    /// # Safety
    /// `heap` must be on the active list.
    unsafe fn unlink_active(&mut self, heap: *mut Heap) {
        // SAFETY: the caller's guarantee; its neighbours are on the list too.
        unsafe {
            let (prev, next) = ((*heap).pool_links().prev, (*heap).pool_links().next);
            if prev.is_null() {
                self.active = next;
            } else {
                (*prev).pool_links().next = next;
            }
            if !next.is_null() {
                (*next).pool_links().prev = prev;
            }
            (*heap).pool_links().prev = ptr::null_mut();
            (*heap).pool_links().next = ptr::null_mut();
        }
    }

    /// In a `fork` child: every active heap but `keep` (the forking thread's own heap) and
    /// `global` (the heap of exited threads) belonged to a thread that does not exist here.
    /// They are abandoned, marked so that they are checked before adoption, and new threads
    /// of the child adopt them: their blocks are not lost.
    ///
    /// # Safety
    /// Call only in a `fork` child, with the pool's lock held, before any other thread runs.
    pub unsafe fn orphan_after_fork(&mut self, keep: *mut Heap, global: *mut Heap) {
        let mut heap = self.active;
        while !heap.is_null() {
            // SAFETY: heaps on the active list are valid; `next` is read before unlinking.
            unsafe {
                let next = (*heap).pool_links().next;
                if heap != keep && heap != global {
                    self.unlink_active(heap);
                    (*heap).pool_links().orphaned_by_fork = true;
                    self.release_inactive(heap);
                }
                heap = next;
            }
        }
    }

    /// Takes back a heap no thread owns any more.
    ///
    /// # Safety
    /// `heap` must come from this pool, and no thread may use it after this call.
    pub unsafe fn release(&mut self, heap: *mut Heap) {
        // SAFETY: the caller hands the heap over; heaps it owned are on the active list
        // (taken with `acquire`), or on none (taken with `take_abandoned`).
        unsafe {
            if self.is_active(heap) {
                self.unlink_active(heap);
            }
            self.release_inactive(heap);
        }
    }

    fn is_active(&self, heap: *mut Heap) -> bool {
        // SAFETY: `heap` is a valid heap (caller of `release`).
        self.active == heap || unsafe { !(*heap).pool_links().prev.is_null() }
    }

    /// # Safety
    /// `heap` must be a valid heap of this pool on no list.
    unsafe fn release_inactive(&mut self, heap: *mut Heap) {
        // SAFETY: the caller hands the heap over.
        unsafe {
            if OwnedHeap::claim(heap).is_none_or(|h| h.is_unused()) {
                (*heap).pool_links().next = self.free;
                self.free = heap;
            } else {
                // Appended: adoption takes the oldest abandoned heap first, so that every
                // abandoned heap is adopted in turn. Remote frees into a heap with no owner
                // wait until it has one again; taking the newest first would leave the
                // oldest heaps, and the blocks other threads freed into them, stranded.
                (*heap).pool_links().next = ptr::null_mut();
                if self.abandoned_tail.is_null() {
                    self.abandoned = heap;
                } else {
                    (*self.abandoned_tail).pool_links().next = heap;
                }
                self.abandoned_tail = heap;
                self.abandoned_count += 1;
            }
        }
    }
}
