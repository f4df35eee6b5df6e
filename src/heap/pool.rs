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

use crate::heap::PoolList;
use crate::heap::{Heap, OwnedHeap};
use crate::list::List;
use crate::os::Os;

/// Bytes mapped at a time for new heaps.
const HEAP_CHUNK_BYTES: usize = 256 * 1024;
const HEAP_STRIDE_BYTES: usize = core::mem::size_of::<Heap>().next_multiple_of(64);

/// Abandoned heaps up to which the newest is adopted first (see `take_abandoned`).
const ADOPT_NEWEST_MAX: usize = 2;

/// Heaps not owned by a thread, and the bump area new heaps come from.
pub struct HeapPool {
    active: List<Heap>,
    abandoned: List<Heap>,
    free: List<Heap>,
    broken: List<Heap>,
    bump: usize,
    bump_end: usize,
    created: usize,
    adopted: usize,
    /// Rounds of the process-wide decay so far.
    decay_round: u64,
}

// SAFETY: the pool holds addresses of heaps no thread owns (or whose owners only read the
// pool's part under its lock); it is used under a Mutex.
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
            active: List::new(),
            abandoned: List::new(),
            free: List::new(),
            broken: List::new(),
            bump: 0,
            bump_end: 0,
            created: 0,
            adopted: 0,
            decay_round: 0,
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
        self.abandoned.len()
    }

    /// A heap for a new thread: an abandoned one (adopted with its slabs), a free one, or a
    /// new one. `None` when the OS refuses memory.
    pub fn acquire<O: Os>(&mut self, os: &O) -> Option<*mut Heap> {
        let heap = self.acquire_inactive(os)?;
        // The heap's clock (read every 64 slow-path calls) is set now: a slab that empties
        // before the next reading is stamped with it, and an old stamp would make the decay
        // take a young spare for an old one.
        // SAFETY: taken out of the pool just now: no thread owns it yet, and this `OwnedHeap`
        // is dropped before the heap is handed over.
        if let Some(mut h) = unsafe { OwnedHeap::claim(heap) } {
            h.local().clock_ms = os.now_ms();
        }
        // SAFETY: the heap is valid (pool heaps are never unmapped) and on no list.
        unsafe { self.active.push_front(heap) };
        // SAFETY: we hold the pool (its lock).
        unsafe { (*heap).pool_links().list = PoolList::Active };
        Some(heap)
    }

    fn acquire_inactive<O: Os>(&mut self, os: &O) -> Option<*mut Heap> {
        if let Some(heap) = self.take_abandoned() {
            self.adopted += 1;
            return Some(heap);
        }
        let heap = self.free.pop_front();
        if !heap.is_null() {
            return Some(heap);
        }
        if self.bump + HEAP_STRIDE_BYTES > self.bump_end {
            let chunk = os.map(HEAP_CHUNK_BYTES, crate::os::OS_PAGE_BYTES)?;
            self.bump = chunk.as_ptr() as usize;
            self.bump_end = self.bump + HEAP_CHUNK_BYTES;
        }
        if self.created == 0 {
            // Before any slab exists: every free cookie is made with the final secret.
            crate::block::slab::init_cookie_secret();
        }
        let heap = self.bump as *mut Heap;
        self.bump += HEAP_STRIDE_BYTES;
        self.created += 1;
        // SAFETY: fresh, exclusive memory of at least one heap's size, 64-byte aligned; a
        // heap is never freed, so it may join the statistics' list.
        unsafe {
            Heap::init(heap);
            crate::heap::counters::register_heap(core::ptr::addr_of_mut!((*heap).stats));
        }
        Some(heap)
    }

    /// Takes one abandoned heap out of the pool (to adopt it, or to clean it up).
    ///
    /// Which one: the one abandoned last while few wait, the one abandoned longest ago once
    /// more than [`ADOPT_NEWEST_MAX`] do. A new thread often frees what the thread before it
    /// made (a server handing its work on), and those frees are local, fast ones when it
    /// adopts that very heap; but always taking the newest lets the oldest wait forever in
    /// programs whose threads come and go, and the blocks other threads freed into them
    /// (remote frees, which only an owner collects) stay stranded: 21 MiB at the end of
    /// larson-4. Measured on larson (1, 2, 4 lanes): newest always, 0.55–0.85× glibc's time
    /// and up to 1.76× its peak RSS; oldest always, up to 1.36× the time and 1.09× the RSS.
    /// A heap inherited from a thread of the parent process that may have been in the
    /// middle of an update is used only when the heap checker finds it consistent, and is
    /// otherwise set aside for good (its memory stays mapped: a leak, never corruption).
    pub fn take_abandoned(&mut self) -> Option<*mut Heap> {
        loop {
            let heap = if self.abandoned.len() > ADOPT_NEWEST_MAX {
                self.abandoned.pop_back()
            } else {
                self.abandoned.pop_front()
            };
            if heap.is_null() {
                return None;
            }
            // SAFETY: heaps on the pool's lists are valid; we hold the pool.
            let links = unsafe { (*heap).pool_links() };
            links.list = PoolList::None;
            if !links.orphaned_by_fork {
                return Some(heap);
            }
            links.orphaned_by_fork = false;
            // SAFETY: taken off the list, the heap is ours to check.
            if unsafe { OwnedHeap::claim(heap) }
                .is_some_and(|h| crate::heap::validate::check_heap(&h).is_ok())
            {
                return Some(heap);
            }
            // SAFETY: on no list now.
            unsafe { self.broken.push_front(heap) };
            links.list = PoolList::Broken;
        }
    }

    /// Starts a round of the process-wide decay (see [`take_idle_abandoned`]).
    ///
    /// [`take_idle_abandoned`]: Self::take_idle_abandoned
    pub fn begin_decay_round(&mut self) {
        self.decay_round += 1;
    }

    /// Takes out an abandoned heap that has waited `min_rounds` decay rounds or more (so at
    /// least `min_rounds - 1` times the time between two rounds), for the process-wide decay
    /// to clean up.
    /// A heap released again in this round is not taken again, so a loop of take, clean
    /// and release ends. Heaps inherited through `fork` are left for adoption, which checks
    /// them first.
    pub fn take_idle_abandoned(&mut self, min_rounds: u64) -> Option<*mut Heap> {
        let mut heap = self.abandoned.head();
        while !heap.is_null() {
            // SAFETY: heaps on the pool's lists are valid; we hold the pool.
            let (next, orphaned, round) = unsafe {
                let links = (*heap).pool_links();
                (
                    List::next(heap),
                    links.orphaned_by_fork,
                    links.abandoned_round,
                )
            };
            if !orphaned && round + min_rounds <= self.decay_round {
                // SAFETY: `heap` is on the abandoned list, and we hold the pool.
                unsafe {
                    self.abandoned.remove(heap);
                    (*heap).pool_links().list = PoolList::None;
                }
                return Some(heap);
            }
            heap = next;
        }
        None
    }

    /// In a `fork` child: every active heap but `keep` (the forking thread's own heap) and
    /// `global` (the heap of exited threads) belonged to a thread that does not exist here.
    /// They are abandoned, marked so that they are checked before adoption, and new threads
    /// of the child adopt them: their blocks are not lost.
    ///
    /// # Safety
    /// Call only in a `fork` child, with the pool's lock held, before any other thread runs.
    pub unsafe fn orphan_after_fork(&mut self, keep: *mut Heap, global: *mut Heap) {
        let mut heap = self.active.head();
        while !heap.is_null() {
            // SAFETY: heaps on the active list are valid, and we hold the pool; `next` is
            // read before unlinking.
            unsafe {
                let next = List::next(heap);
                if heap != keep && heap != global {
                    self.active.remove(heap);
                    // Its thread may have been mid-way through a batched remote free: the
                    // batch is dropped, never published (see `remote_batch`), whichever list
                    // the heap goes to (a heap without segments goes to the free list, and
                    // is not checked before reuse).
                    // The child's only thread may own it: its owner does not exist here.
                    if let Some(mut h) = OwnedHeap::claim(heap) {
                        h.local().remote.forget();
                    }
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
        // SAFETY: the caller hands the heap over; a heap taken with `acquire` is on the
        // active list, one taken with `take_abandoned` on none.
        unsafe {
            if (*heap).pool_links().list == PoolList::Active {
                self.active.remove(heap);
            }
            self.release_inactive(heap);
        }
    }

    /// # Safety
    /// `heap` must be a valid heap of this pool on no list.
    unsafe fn release_inactive(&mut self, heap: *mut Heap) {
        // SAFETY: the caller hands the heap over; we hold the pool.
        unsafe {
            (*heap).pool_links().abandoned_round = self.decay_round;
            if OwnedHeap::claim(heap).is_none_or(|h| h.is_unused()) {
                self.free.push_front(heap);
                (*heap).pool_links().list = PoolList::Free;
            } else {
                self.abandoned.push_front(heap);
                (*heap).pool_links().list = PoolList::Abandoned;
            }
        }
    }
}
