//! The heap pool: where heaps come from and where dead threads' heaps go.
//!
//! Heaps are carved from OS mappings and never unmapped, so a pointer to a heap (kept in
//! every segment header it owns) stays valid forever. A thread that exits hands its heap
//! back: *abandoned* if it still owns segments (live blocks survive their thread), *free*
//! otherwise. A new thread adopts an abandoned heap first, taking over its slabs whole, so
//! a dead thread's memory is reused rather than leaked.

use crate::heap::Heap;
use crate::os::Os;
use core::ptr;

/// Bytes mapped at a time for new heaps.
const HEAP_CHUNK_BYTES: usize = 256 * 1024;
const HEAP_STRIDE_BYTES: usize = core::mem::size_of::<Heap>().next_multiple_of(64);

/// Heaps not owned by a thread, and the bump area new heaps come from.
pub struct HeapPool {
    abandoned: *mut Heap,
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
            abandoned: ptr::null_mut(),
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
        if let Some(heap) = self.take_abandoned() {
            self.adopted += 1;
            return Some(heap);
        }
        if !self.free.is_null() {
            let heap = self.free;
            // SAFETY: heaps on the free list are valid and unowned.
            self.free = unsafe { (*heap).pool_next };
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
    pub fn take_abandoned(&mut self) -> Option<*mut Heap> {
        if self.abandoned.is_null() {
            return None;
        }
        let heap = self.abandoned;
        // SAFETY: heaps on the abandoned list are valid and unowned.
        self.abandoned = unsafe { (*heap).pool_next };
        self.abandoned_count -= 1;
        Some(heap)
    }

    /// Takes back a heap no thread owns any more.
    ///
    /// # Safety
    /// `heap` must come from this pool, and no thread may use it after this call.
    pub unsafe fn release(&mut self, heap: *mut Heap) {
        // SAFETY: the caller hands the heap over.
        unsafe {
            if (*heap).is_unused() {
                (*heap).pool_next = self.free;
                self.free = heap;
            } else {
                (*heap).pool_next = self.abandoned;
                self.abandoned = heap;
                self.abandoned_count += 1;
            }
        }
    }
}
