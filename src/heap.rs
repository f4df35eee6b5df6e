//! Heaps: one per thread, each with a size-class allocator per class.
//!
//! The fast paths (in `allocator`) touch only the thread's own heap: `malloc` pops the
//! current slab's free list, `free` by the owner pushes onto it. Everything else is here:
//! the slow path that finds the next slab for a class, the moves of slabs between the
//! partial / full / empty lists, remote-free collection, spare slabs and segments, and the
//! end of a thread's heap.
//!
//! Per class (the "SCAllocator"): `current[class]` (allocations pop here), and the lists
//! `partial` (room left), `full` (no room when parked; waiting for frees), `empty` (no live
//! block; class kept, up to [`EMPTY_KEEP`] per class). Across classes: `dirty_spare`
//! (unassigned slabs whose memory may be resident) and `clean_spare` (purged slabs).
//!
//! A heap is never unmapped: a dead thread's heap is *abandoned* with its segments and
//! later adopted whole by a new thread, so remote freers can always follow a segment's
//! owner pointer.

use crate::buddy::BuddyArena;
use crate::medium_cache::MediumCache;
use crate::os::Os;
use crate::prof::sample::HeapSampler;
use crate::segment::{SegmentHeader, SegmentPool, SLABS_PER_SEGMENT};
use crate::size_class::{SizeClass, CLASS_COUNT};
use crate::slab::{Slab, SlabList, State, FULL_FLAG, SENTINEL, SLAB_BYTES};
use crate::sync::Mutex;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

/// Empty slabs a class keeps assigned (reused without re-initialisation).
const EMPTY_KEEP: usize = 1;
/// Unassigned slabs a heap keeps resident before purging the oldest (64 MiB). Purging at
/// every slab that empties costs a `madvise` now and page faults on reuse: a program that
/// frees a batch and allocates again (most do) pays both for nothing. Below this bound,
/// idle spares are purged by the time-based decay instead (`OXMALLOC_PURGE_DELAY_MS`).
const DIRTY_SPARE_KEEP: usize = 1024;

/// The slab lists of one size class.
pub struct ClassSlabs {
    /// Slabs with room (free or unbuilt blocks).
    pub partial: SlabList,
    /// Slabs that had no room when parked.
    pub full: SlabList,
    /// Slabs with no live block, still cut for this class.
    pub empty: SlabList,
}

impl ClassSlabs {
    const fn new() -> Self {
        ClassSlabs {
            partial: SlabList::new(),
            full: SlabList::new(),
            empty: SlabList::new(),
        }
    }
}

/// A thread's heap.
#[repr(C)]
pub struct Heap {
    /// The heap profiler's countdown (fast path) and sampler state.
    pub prof: HeapSampler,
    /// The slab each class allocates from (the sentinel when none): the fast path.
    pub current: [*mut Slab; CLASS_COUNT],
    /// Per-class lists.
    pub classes: [ClassSlabs; CLASS_COUNT],
    /// Unassigned slabs, possibly resident.
    pub dirty_spare: SlabList,
    /// Unassigned slabs, purged.
    pub clean_spare: SlabList,
    /// The heap's segments (linked through their headers).
    pub segments: *mut SegmentHeader,
    /// Number of segments.
    pub segment_count: usize,
    /// Full slabs that received a remote free (stack through `Slab::next_pending`).
    pub pending: AtomicPtr<Slab>,
    /// Medium spans freed by this thread, kept for its next medium allocations.
    pub medium: MediumCache,
    /// Slow-path calls since the heap was made (the decay clock is read every 64).
    pub slow_ticks: u32,
    /// When the heap last returned its idle memory (ms, monotonic coarse clock).
    pub last_decay_ms: u64,
    /// Link in the heap pool's lists.
    pub pool_next: *mut Heap,
}

// SAFETY: a heap is used by one thread at a time: its owner, or whoever holds the lock
// of the pool or the global heap it sits in. Remote threads touch only `pending` (atomic).
unsafe impl Send for Heap {}

/// A raw heap pointer that may sit in a static (e.g. the global heap under its lock).
#[derive(Clone, Copy)]
pub struct HeapPtr(pub *mut Heap);

// SAFETY: heaps are never freed, and access to the heap behind the pointer is serialised by
// whatever lock guards the HeapPtr.
unsafe impl Send for HeapPtr {}

impl Heap {
    /// Writes an empty heap at `place`.
    ///
    /// # Safety
    /// `place` must be valid for writing a `Heap` and not in use.
    pub unsafe fn init(place: *mut Heap) {
        // SAFETY: the caller gives us the memory.
        unsafe {
            place.write(Heap {
                prof: HeapSampler::new(),
                current: [SENTINEL.as_ptr(); CLASS_COUNT],
                classes: [const { ClassSlabs::new() }; CLASS_COUNT],
                dirty_spare: SlabList::new(),
                clean_spare: SlabList::new(),
                segments: ptr::null_mut(),
                segment_count: 0,
                pending: AtomicPtr::new(ptr::null_mut()),
                medium: MediumCache::new(),
                slow_ticks: 0,
                last_decay_ms: 0,
                pool_next: ptr::null_mut(),
            })
        };
    }

    /// Allocates a block of `class` when the current slab has no free block.
    ///
    /// # Safety
    /// The caller must own `heap` (its thread, or the lock that guards it).
    #[cold]
    #[inline(never)]
    pub unsafe fn alloc_slow<O: Os>(
        heap: *mut Heap,
        class: SizeClass,
        os: &O,
        pool: &Mutex<SegmentPool>,
    ) -> *mut u8 {
        // SAFETY: the caller owns the heap.
        let h = unsafe { &mut *heap };
        let c = class.index();
        let cur = h.current[c];
        if cur != SENTINEL.as_ptr() {
            // SAFETY: a current slab is a valid slab of this heap.
            let slab = unsafe { &mut *cur };
            // Reuse blocks other threads freed before carving fresh ones: carving first
            // would touch new memory while freed blocks wait.
            slab.collect_remote();
            let p = slab.pop();
            if !p.is_null() {
                return p;
            }
            h.current[c] = SENTINEL.as_ptr();
            slab.end_current();
            // SAFETY: `cur` was current, now on no list.
            unsafe { h.park_full(cur) };
        }
        h.process_pending();
        let next = h.classes[c].partial.pop_front();
        let next = if !next.is_null() {
            next
        } else {
            let empty = h.classes[c].empty.pop_front();
            if !empty.is_null() {
                empty
            } else {
                // SAFETY: the caller owns the heap.
                match unsafe { h.take_spare(os, pool) } {
                    Some(slab) => {
                        // SAFETY: a spare slab is ours and on no list.
                        unsafe {
                            (*slab).assign(c as u8, class.block_bytes());
                            (*SegmentHeader::of(slab as usize)).assigned_slabs += 1;
                        }
                        slab
                    }
                    None => return ptr::null_mut(),
                }
            }
        };
        // SAFETY: `next` came off one of our lists and is ours.
        unsafe {
            (*next).make_current();
            (*next).collect_remote();
            h.current[c] = next;
            (*next).pop()
        }
    }

    /// Parks a slab that has no room on its class's full list, asking remote freers to
    /// notify. If remote frees raced in, the slab goes to partial instead.
    ///
    /// # Safety
    /// `slab` must be ours and on no list.
    unsafe fn park_full(&mut self, slab: *mut Slab) {
        // SAFETY: the caller guarantees `slab` is ours.
        let s = unsafe { &mut *slab };
        let lists = &mut self.classes[s.class as usize];
        loop {
            if s.request_notify() {
                s.state = State::Full;
                s.used |= FULL_FLAG;
                // SAFETY: on no list.
                unsafe { lists.full.push_back(slab) };
                return;
            }
            if s.collect_remote() > 0 {
                s.state = State::Partial;
                // SAFETY: on no list.
                unsafe { lists.partial.push_front(slab) };
                return;
            }
            if s.remote_free.load(Ordering::Acquire) & crate::slab::QUEUED != 0 {
                // Already on the pending stack: processing it will settle the slab.
                s.state = State::Full;
                s.used |= FULL_FLAG;
                // SAFETY: on no list.
                unsafe { lists.full.push_back(slab) };
                return;
            }
        }
    }

    /// Takes the full slabs that received remote frees off the full lists.
    pub fn process_pending(&mut self) {
        if self.pending.load(Ordering::Relaxed).is_null() {
            return;
        }
        let mut cur = self.pending.swap(ptr::null_mut(), Ordering::Acquire);
        while !cur.is_null() {
            // SAFETY: slabs on our pending stack are slabs of our segments.
            let s = unsafe { &mut *cur };
            cur = s.next_pending.load(Ordering::Relaxed);
            s.clear_queued();
            if s.state != State::Full {
                // Already moved by a local free; the queued mark was all that was left.
                continue;
            }
            let lists = &mut self.classes[s.class as usize];
            // SAFETY: a Full slab is on its class's full list.
            unsafe { lists.full.remove(s) };
            s.used &= !FULL_FLAG;
            s.collect_remote();
            if s.free.is_null() && s.built >= s.capacity {
                // SAFETY: on no list now.
                unsafe { self.park_full(s) };
            } else {
                // SAFETY: on no list now.
                unsafe { self.place_with_room(s) };
            }
        }
    }

    /// Puts a slab with room on its class's partial list, or on the empty list (or back to
    /// the spares) when it holds no live block.
    ///
    /// # Safety
    /// `slab` must be ours, assigned, on no list, not current.
    unsafe fn place_with_room(&mut self, slab: *mut Slab) {
        // SAFETY: the caller guarantees `slab` is ours.
        let s = unsafe { &mut *slab };
        let lists = &mut self.classes[s.class as usize];
        if s.live_count() == 0 {
            if lists.empty.len() < EMPTY_KEEP {
                s.state = State::Empty;
                // SAFETY: on no list.
                unsafe { lists.empty.push_front(slab) };
            } else {
                // SAFETY: ours, empty, on no list.
                unsafe { self.retire_slab(slab) };
            }
        } else {
            s.state = State::Partial;
            // SAFETY: on no list.
            unsafe { lists.partial.push_front(slab) };
        }
    }

    /// Handles a free by the owner that the fast path could not finish: a double free, a
    /// free into a full slab, or the slab becoming empty.
    ///
    /// # Safety
    /// The caller must own `heap`; `slab` must be a slab of one of its segments, and `ptr` an
    /// address inside that slab.
    #[cold]
    #[inline(never)]
    pub unsafe fn free_local_slow<O: Os>(
        heap: *mut Heap,
        slab: *mut Slab,
        ptr: *mut u8,
        call: &str,
        os: &O,
    ) {
        // SAFETY: the caller owns the heap and the slab.
        let (h, s) = unsafe { (&mut *heap, &mut *slab) };
        if !s.is_built_block(ptr as usize) {
            crate::fatal::bad_pointer(call, "invalid pointer", ptr as usize);
        }
        // SAFETY: a block start of an assigned slab.
        if s.live_count() == 0 || unsafe { Slab::is_free_block(ptr) } {
            crate::fatal::bad_pointer(call, "double free or corruption", ptr as usize);
        }
        // SAFETY: a block start of an assigned slab with live blocks, freed by its owner.
        unsafe { s.push_local(ptr) };
        match s.state {
            State::Full => {
                let lists = &mut h.classes[s.class as usize];
                // SAFETY: a Full slab is on its class's full list.
                unsafe { lists.full.remove(slab) };
                s.used &= !FULL_FLAG;
                s.cancel_notify();
                // SAFETY: on no list now, with room.
                unsafe { h.place_with_room(slab) };
            }
            State::Partial if s.live_count() == 0 => {
                // SAFETY: a Partial slab is on its class's partial list.
                unsafe { h.classes[s.class as usize].partial.remove(slab) };
                // SAFETY: on no list now.
                unsafe { h.place_with_room(slab) };
            }
            // Current slabs stay put even when empty: the next allocation reuses them.
            _ => {}
        }
        if h.dirty_spare.len() > DIRTY_SPARE_KEEP {
            // Purge down to half, so the syscalls come in batches.
            h.purge_spares(os, DIRTY_SPARE_KEEP / 2);
        }
    }

    /// Unassigns an empty slab and puts it on the dirty spare list, purging the oldest dirty
    /// spare beyond [`DIRTY_SPARE_KEEP`].
    ///
    /// # Safety
    /// `slab` must be ours, assigned, with no live block, on no list.
    unsafe fn retire_slab(&mut self, slab: *mut Slab) {
        // SAFETY: the caller guarantees `slab` is ours.
        unsafe {
            (*slab).unassign();
            (*slab).state = State::Spare;
            (*slab).zeroed = false;
            (*SegmentHeader::of(slab as usize)).assigned_slabs -= 1;
            self.dirty_spare.push_front(slab);
        }
    }

    /// Purges dirty spare slabs beyond `keep`, moving them to the clean list.
    pub fn purge_spares<O: Os>(&mut self, os: &O, keep: usize) -> usize {
        let mut purged = 0;
        while self.dirty_spare.len() > keep {
            let slab = self.dirty_spare.pop_back();
            // SAFETY: spare slabs are ours, unassigned, and hold no live block.
            unsafe {
                os.purge(NonNull::new_unchecked((*slab).start), SLAB_BYTES);
                (*slab).zeroed = true;
                self.clean_spare.push_back(slab);
            }
            purged += SLAB_BYTES;
        }
        purged
    }

    /// A spare slab: dirty first (likely resident and cached), then clean, then a new
    /// segment.
    ///
    /// # Safety
    /// The caller must own the heap.
    unsafe fn take_spare<O: Os>(&mut self, os: &O, pool: &Mutex<SegmentPool>) -> Option<*mut Slab> {
        let slab = self.dirty_spare.pop_front();
        if !slab.is_null() {
            return Some(slab);
        }
        let slab = self.clean_spare.pop_front();
        if !slab.is_null() {
            return Some(slab);
        }
        let seg = pool.lock().acquire(os, self)?;
        self.link_segment(seg);
        // Slabs 1.. go to the clean list in address order; slab 0 is the header.
        for i in 1..SLABS_PER_SEGMENT {
            // SAFETY: `seg` is a fresh segment of this heap.
            let slab = SegmentHeader::slab_of(seg, seg as usize + i * SLAB_BYTES);
            // SAFETY: fresh spare slabs are on no list.
            unsafe { self.clean_spare.push_back(slab) };
        }
        Some(self.clean_spare.pop_front())
    }

    fn link_segment(&mut self, seg: *mut SegmentHeader) {
        // SAFETY: `seg` is a segment header of ours; the list's segments are ours.
        unsafe {
            (*seg).prev = ptr::null_mut();
            (*seg).next = self.segments;
            if !self.segments.is_null() {
                (*self.segments).prev = seg;
            }
        }
        self.segments = seg;
        self.segment_count += 1;
    }

    fn unlink_segment(&mut self, seg: *mut SegmentHeader) {
        // SAFETY: `seg` is on our segment list, and so are its neighbours.
        unsafe {
            let (prev, next) = ((*seg).prev, (*seg).next);
            if prev.is_null() {
                self.segments = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
        }
        self.segment_count -= 1;
    }

    /// Returns segments with no assigned slab to the pool, keeping `keep_segments` of them.
    pub fn release_unused_segments<O: Os>(
        &mut self,
        os: &O,
        pool: &Mutex<SegmentPool>,
        keep_segments: usize,
    ) -> usize {
        let mut released = 0;
        let mut kept = 0;
        let mut seg = self.segments;
        while !seg.is_null() {
            // SAFETY: segments on our list are valid.
            let next = unsafe { (*seg).next };
            // SAFETY: as above.
            if unsafe { (*seg).assigned_slabs } == 0 {
                if kept < keep_segments {
                    kept += 1;
                } else {
                    for i in 1..SLABS_PER_SEGMENT {
                        let slab = SegmentHeader::slab_of(seg, seg as usize + i * SLAB_BYTES);
                        // SAFETY: an unassigned slab of ours is on exactly one spare list,
                        // the one its `zeroed` flag names.
                        unsafe {
                            if (*slab).zeroed {
                                self.clean_spare.remove(slab);
                            } else {
                                self.dirty_spare.remove(slab);
                            }
                        }
                    }
                    self.unlink_segment(seg);
                    // SAFETY: no assigned slab means no live block; the segment is off
                    // every list of ours.
                    unsafe { pool.lock().release(os, seg) };
                    released += crate::segment::SEGMENT_BYTES;
                }
            }
            seg = next;
        }
        released
    }

    /// Gives back what the heap holds without need: collects remote frees, retires empty
    /// slabs, purges spares and releases unused segments. With `keep_current`, current slabs
    /// stay; otherwise (thread exit) they are parked too. Returns bytes released or purged.
    pub fn collect<O: Os>(
        &mut self,
        os: &O,
        pool: &Mutex<SegmentPool>,
        buddy: &Mutex<BuddyArena>,
        keep_current: bool,
    ) -> usize {
        self.process_pending();
        for c in 0..CLASS_COUNT {
            let cur = self.current[c];
            if !keep_current && cur != SENTINEL.as_ptr() {
                self.current[c] = SENTINEL.as_ptr();
                // SAFETY: `cur` was our current slab, now on no list.
                unsafe {
                    (*cur).end_current();
                    (*cur).collect_remote();
                    if (*cur).free.is_null() && (*cur).built >= (*cur).capacity {
                        self.park_full(cur);
                    } else {
                        self.place_with_room(cur);
                    }
                }
            }
            let mut slab = self.classes[c].partial.head();
            while !slab.is_null() {
                // SAFETY: partial slabs are ours; `next` is read before any unlinking.
                unsafe {
                    let next = (*slab).next;
                    (*slab).collect_remote();
                    if (*slab).live_count() == 0 {
                        self.classes[c].partial.remove(slab);
                        self.retire_slab(slab);
                    }
                    slab = next;
                }
            }
        }
        self.decay(os, buddy) + self.release_unused_segments(os, pool, 0)
    }

    /// Returns memory the heap kept for quick reuse but did not reuse: empty slabs kept per
    /// class, dirty spare slabs, and parked medium spans. Current slabs stay. Returns the
    /// bytes purged or given back.
    pub fn decay<O: Os>(&mut self, os: &O, buddy: &Mutex<BuddyArena>) -> usize {
        let flushed = self.medium.flush(os, buddy);
        for c in 0..CLASS_COUNT {
            loop {
                let slab = self.classes[c].empty.pop_front();
                if slab.is_null() {
                    break;
                }
                // SAFETY: empty, ours, on no list.
                unsafe { self.retire_slab(slab) };
            }
        }
        flushed + self.purge_spares(os, 0)
    }

    /// True when the heap holds no segment at all.
    pub fn is_unused(&self) -> bool {
        self.segment_count == 0
    }

    /// Queues a full slab that received a remote free (called by the remote freer).
    ///
    /// # Safety
    /// `heap` must be the owner of `slab`'s segment; `slab` must have been marked queued by
    /// the caller's `push_remote`.
    pub unsafe fn push_pending(heap: *mut Heap, slab: *mut Slab) {
        // SAFETY: heaps are never freed; `pending` is atomic.
        let pending = unsafe { &(*heap).pending };
        let mut old = pending.load(Ordering::Relaxed);
        loop {
            // SAFETY: the queued mark gives us the slab's link until the owner pops it.
            unsafe { (*slab).next_pending.store(old, Ordering::Relaxed) };
            match pending.compare_exchange_weak(old, slab, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => old = now,
            }
        }
    }
}
