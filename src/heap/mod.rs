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
//! block; only slabs still queued for their owner wait here). Across classes: `dirty_spare`
//! (unassigned slabs whose memory may be resident) and `clean_spare` (purged slabs).
//!
//! A heap is never unmapped: a dead thread's heap is *abandoned* with its segments and
//! later adopted whole by a new thread, so remote freers can always follow a segment's
//! owner pointer.
//!
//! # Ownership
//! A [`Heap`] has three parts, so that no `&mut` ever covers memory another thread may
//! touch: [`HeapLocal`] (owner only: the slab lists, the fast path's `current` slots),
//! `pending` (remote freers push onto it: atomic), and [`PoolLinks`] (the heap pool's,
//! under its lock). Ownership is a type: an [`OwnedHeap`] is the only way to reach the
//! owner-only part, and making one is the single `unsafe` step ([`OwnedHeap::claim`]),
//! taken where a thread gets its heap (from its TLS slot, the pool, or the global heap's
//! lock). It is neither `Send` nor `Copy`. Everything a heap's owner does is a method
//! of `OwnedHeap` or of `HeapLocal`; the owner-only part of each slab of the heap is
//! reached through it too (`Slab::local`), since the heap owns its slabs.

pub(crate) mod counters;
pub(crate) mod medium_cache;
pub(crate) mod pool;
pub(crate) mod remote_batch;
pub(crate) mod sampler;
pub(crate) mod validate;

use crate::block::buddy::BuddyArena;
use crate::block::remote_free;
use crate::block::segment::{SegmentHeader, SegmentPool, SLABS_PER_SEGMENT};
use crate::block::size_class::{SizeClass, CLASS_COUNT};
use crate::block::slab::{sentinel, Slab, SlabList, State, FULL_FLAG, SLAB_BYTES};
use crate::heap::medium_cache::MediumCache;
use crate::heap::remote_batch::RemoteBatch;
use crate::heap::sampler::HeapSampler;
use crate::list::{Links, List, Node};
use crate::os::Os;
use crate::sync::Mutex;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

/// Unassigned slabs a heap keeps resident before purging the oldest (64 MiB), or twice as
/// many as it has slabs in use when that is more (see [`HeapLocal::dirty_spare_limit`]).
/// Purging at every slab that empties costs a `madvise` now and page faults on reuse: a
/// program that frees a batch and allocates again (most do) pays both for nothing. Below
/// this bound, idle spares are purged by the time-based decay instead
/// (`OXMALLOC_PURGE_DELAY_MS`).
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

/// A thread's heap: an owner-only part, the pending stack, and the pool's links.
#[repr(C)]
pub struct Heap {
    /// Owner-only state (offset 0: the fast path's `current` slots).
    local: UnsafeCell<HeapLocal>,
    /// Full slabs that received a remote free (stack through `Slab::next_pending`).
    pub pending: AtomicPtr<Slab>,
    /// The heap pool's links and marks (under the pool's lock).
    pool: UnsafeCell<PoolLinks>,
    /// Counters for the statistics: written by the owner with relaxed loads and stores
    /// (slow paths only), read by the reports from any thread.
    pub stats: counters::HeapStats,
}

/// The owner-only part of a heap.
#[repr(C)]
pub struct HeapLocal {
    /// The heap profiler's countdown (read and written by the `malloc` fast path) and the
    /// sampler's state.
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
    pub segments: List<SegmentHeader>,
    /// Medium spans freed by this thread, kept for its next medium allocations.
    pub medium: MediumCache,
    /// Blocks this thread freed into other heaps' slabs, not yet published to them.
    pub remote: RemoteBatch,
    /// Slow-path calls since the heap was made (the decay clock is read every 64).
    pub slow_ticks: u32,
    /// When the heap last returned its idle memory (ms, monotonic coarse clock).
    pub last_decay_ms: u64,
    /// The heap's clock: the time (ms) read at its last decay check (every 64 slow-path
    /// calls). Spare slabs are stamped with it, so their ages are counted in decay checks,
    /// never more than the real age plus the time between two checks.
    pub clock_ms: u64,
}

/// The heap pool's part of a heap: only the pool touches it, under its lock.
pub struct PoolLinks {
    /// Links on the pool list the heap is on.
    pub links: Links<Heap>,
    /// Which list that is.
    pub list: PoolList,
    /// The heap belonged to a thread that does not exist in this process: a `fork` child
    /// inherited it. It may have been in the middle of an update when the parent forked,
    /// so it is checked before anyone adopts it.
    pub orphaned_by_fork: bool,
    /// The pool's decay round in which the heap was last abandoned.
    pub abandoned_round: u64,
}

/// The heap pool's lists.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PoolList {
    /// On none (being handed over).
    None,
    /// Owned by a live thread, or by the global heap.
    Active,
    /// Owns segments; no thread.
    Abandoned,
    /// Owns nothing; no thread.
    Free,
    /// Inherited by a fork child in an inconsistent state: never used again.
    Broken,
}

// SAFETY: the links are in the heap's pool part, found by address arithmetic alone (the
// `UnsafeCell` is `repr(transparent)`); each heap has its own.
unsafe impl Node for Heap {
    fn links(heap: *mut Heap) -> *mut Links<Heap> {
        heap.cast::<u8>()
            .wrapping_add(core::mem::offset_of!(Heap, pool))
            .wrapping_add(core::mem::offset_of!(PoolLinks, links))
            .cast()
    }
}

// SAFETY: `pending` is atomic; the owner-only part is reached only through an `OwnedHeap`
// (one per heap at a time, by `OwnedHeap::claim`'s contract), and the pool's part only
// under the pool's lock (`Heap::pool_links`'s contract). No field is touched by two
// threads without one of those.
unsafe impl Sync for Heap {}

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
                local: UnsafeCell::new(HeapLocal {
                    prof: HeapSampler::new(),
                    current: [sentinel(); CLASS_COUNT],
                    classes: [const { ClassSlabs::new() }; CLASS_COUNT],
                    dirty_spare: SlabList::new(),
                    clean_spare: SlabList::new(),
                    segments: List::new(),
                    medium: MediumCache::new(),
                    remote: RemoteBatch::new(),
                    slow_ticks: 0,
                    last_decay_ms: 0,
                    clock_ms: 0,
                }),
                pending: AtomicPtr::new(ptr::null_mut()),
                pool: UnsafeCell::new(PoolLinks {
                    links: Links::new(),
                    list: PoolList::None,
                    orphaned_by_fork: false,
                    abandoned_round: 0,
                }),
                stats: counters::HeapStats::new(),
            })
        };
    }

    /// The address of the heap's sampler (in its owner-only part), for the profiler, which
    /// must not hold an `OwnedHeap` while it captures a stack (the capture may allocate
    /// from this very heap).
    #[inline(always)]
    pub fn sampler_ptr(heap: *mut Heap) -> *mut HeapSampler {
        // Address arithmetic only (`UnsafeCell` is `repr(transparent)`): nothing is read.
        heap.cast::<u8>()
            .wrapping_add(core::mem::offset_of!(Heap, local))
            .wrapping_add(core::mem::offset_of!(HeapLocal, prof))
            .cast()
    }

    /// The pool's part of the heap.
    ///
    /// # Safety
    /// The caller must hold the heap pool's lock (or be a `fork` child's only thread), and
    /// hold no other reference to this part.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn pool_links(&self) -> &mut PoolLinks {
        // SAFETY: the caller's guarantee makes this the only reference to the part.
        unsafe { &mut *self.pool.get() }
    }

    /// Queues a full slab that received a remote free (called by the remote freer).
    ///
    /// # Safety
    /// `heap` must be the owner of `slab`'s segment; `slab` must have been marked queued by
    /// the caller's `push_remote`.
    pub unsafe fn push_pending(heap: *mut Heap, slab: *mut Slab) {
        // SAFETY: heaps are never freed (`pending` is atomic), and the QUEUED mark this
        // thread set keeps the slab assigned and its segment mapped (remote-free invariant
        // 2), so its `next_pending` is ours to write until the owner pops it.
        unsafe { remote_free::push_pending(&(*heap).pending, slab, &(*slab).next_pending) }
    }
}

/// Proof that the calling thread owns a heap: the way to its owner-only part. It behaves
/// as a `&'a mut` to that part (one pointer, passed in a register; `reborrow` lends it for
/// a shorter call), and is neither `Send` nor `Copy`.
pub struct OwnedHeap<'a> {
    heap: NonNull<Heap>,
    _owns: PhantomData<&'a mut HeapLocal>,
}

impl<'a> OwnedHeap<'a> {
    /// Takes ownership of `heap` (None for null).
    ///
    /// # Safety
    /// The calling thread must own the heap for as long as the result lives: it is the
    /// thread's own (its TLS slot), or was taken from the heap pool, or the caller holds
    /// the lock of the global heap; and no other `OwnedHeap` for it may be live.
    #[inline(always)]
    pub unsafe fn claim(heap: *mut Heap) -> Option<OwnedHeap<'a>> {
        NonNull::new(heap).map(|heap| OwnedHeap {
            heap,
            _owns: PhantomData,
        })
    }

    /// Lends the ownership for a shorter time (as `&mut *r` does for a `&mut`).
    #[inline(always)]
    pub fn reborrow(&mut self) -> OwnedHeap<'_> {
        OwnedHeap {
            heap: self.heap,
            _owns: PhantomData,
        }
    }

    /// The heap's address (what segment headers name as owner).
    #[inline(always)]
    pub fn as_ptr(&self) -> *mut Heap {
        self.heap.as_ptr()
    }

    /// The owner-only part.
    #[inline(always)]
    pub fn local(&mut self) -> &mut HeapLocal {
        // SAFETY: `claim`'s contract: this thread owns the heap and this is its only
        // `OwnedHeap`; `&mut self` makes the returned reference the only one.
        unsafe { &mut *(*self.heap.as_ptr()).local.get() }
    }

    /// The owner-only part, read only.
    #[inline(always)]
    pub fn local_ref(&self) -> &HeapLocal {
        // SAFETY: as in `local`; `&self` excludes a live `&mut` from `local`.
        unsafe { &*(*self.heap.as_ptr()).local.get() }
    }

    /// The heap's shared part: `pending` and `stats` (atomics), and nothing owner-only.
    #[inline(always)]
    pub fn shared(&self) -> &Heap {
        // SAFETY: heaps are never freed; a `&Heap` reaches only the atomic parts without
        // unsafe code (the cells stay behind their accessors' contracts).
        unsafe { &*self.heap.as_ptr() }
    }

    /// The pending stack.
    #[inline(always)]
    pub fn pending(&self) -> &AtomicPtr<Slab> {
        &self.shared().pending
    }

    /// Allocates a block of `class` when the current slab has no free block.
    #[cold]
    #[inline(never)]
    pub fn alloc_slow<O: Os>(
        &mut self,
        class: SizeClass,
        os: &O,
        pool: &Mutex<SegmentPool>,
    ) -> *mut u8 {
        let heap = self.as_ptr();
        let c = class.index();
        self.shared().stats.count_refill(c);
        let cur = self.local().current[c];
        if cur != sentinel() {
            // SAFETY: a current slab is a valid slab of this heap, which we own.
            unsafe {
                // Reuse blocks other threads freed before carving fresh ones: carving
                // first would touch new memory while freed blocks wait.
                (*cur).collect_remote();
                let p = (*cur).pop();
                if !p.is_null() {
                    return p;
                }
                (*cur).end_current();
                self.local().current[c] = sentinel();
                // `cur` was current, now on no list.
                self.local().park_full(cur);
            }
        }
        self.process_pending();
        let h = self.local();
        let next = h.classes[c].partial.pop_front();
        let next = if !next.is_null() {
            next
        } else {
            let empty = h.classes[c].empty.pop_front();
            if !empty.is_null() {
                empty
            } else {
                match h.take_spare(heap, os, pool) {
                    Some(slab) => {
                        // SAFETY: a spare slab is ours, unassigned and on no list.
                        unsafe {
                            (*slab).assign(class);
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
            (*next).collect_remote_unless_walk();
            h.current[c] = next;
            (*next).pop()
        }
    }

    /// Takes the full slabs that received remote frees off the full lists.
    pub fn process_pending(&mut self) {
        let mut cur = remote_free::take_pending(self.pending());
        let h = self.local();
        while !cur.is_null() {
            let slab = cur;
            // SAFETY: slabs on our pending stack are assigned slabs of our segments
            // (remote-free invariant 2), which we own.
            unsafe {
                cur = (*slab).next_pending.load(Ordering::Relaxed);
                (*slab).clear_queued();
                let s = (*slab).local();
                if s.state != State::Full {
                    // Already moved by a local free; the queued mark was all that was left.
                    continue;
                }
                // A Full slab is on its class's full list.
                h.classes[s.class.index()].full.remove(slab);
                (*slab).clear_used_flag(FULL_FLAG);
                (*slab).collect_remote();
                let s = (*slab).local();
                if s.free.is_null() && s.built >= s.capacity {
                    h.park_full(slab);
                } else {
                    h.place_with_room(slab);
                }
            }
        }
    }

    /// Handles a free by the owner that the fast path could not finish: a double free, a
    /// free into a full slab, or the slab becoming empty.
    ///
    /// # Safety
    /// `slab` must be a slab of one of the heap's segments, and `ptr` an address inside it.
    #[cold]
    #[inline(never)]
    pub unsafe fn free_local_slow<O: Os>(
        &mut self,
        slab: *mut Slab,
        ptr: *mut u8,
        call: &str,
        os: &O,
    ) {
        let h = self.local();
        // SAFETY: the caller guarantees the slab is one of ours; its shared part is atomics.
        let shared = unsafe { &*slab };
        // SAFETY: the slab is ours (caller), and no other reference to its owner-only part
        // is live during this brief read.
        let (built_block, state, class) = unsafe {
            let s = shared.local_ref();
            (s.is_built_block(ptr as usize), s.state, s.class)
        };
        if !built_block {
            crate::fatal::bad_pointer(call, "invalid pointer", ptr as usize);
        }
        // SAFETY: a block start of an assigned slab.
        if shared.live_count() == 0 || unsafe { Slab::is_free_block(ptr) } {
            crate::fatal::bad_pointer(call, "double free or corruption", ptr as usize);
        }
        // SAFETY: a block start of an assigned slab with live blocks, freed by its owner.
        unsafe { shared.push_local(ptr) };
        match state {
            State::Full => {
                // SAFETY: a Full slab is on its class's full list.
                unsafe { h.classes[class.index()].full.remove(slab) };
                shared.clear_used_flag(FULL_FLAG);
                shared.cancel_notify();
                // SAFETY: on no list now, with room.
                unsafe { h.place_with_room(slab) };
            }
            State::Partial if shared.live_count() == 0 => {
                // SAFETY: a Partial slab is on its class's partial list.
                unsafe { h.classes[class.index()].partial.remove(slab) };
                // SAFETY: on no list now.
                unsafe { h.place_with_room(slab) };
            }
            // Current slabs stay put even when empty: the next allocation reuses them.
            _ => {}
        }
        if h.dirty_spare.len() > DIRTY_SPARE_KEEP {
            let limit = h.dirty_spare_limit();
            if h.dirty_spare.len() > limit {
                // Purge down to half, so the syscalls come in batches.
                h.purge_spares(os, limit / 2);
            }
        }
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
        self.settle(keep_current);
        let h = self.local();
        h.decay(os, buddy, None) + h.release_unused_segments(os, pool)
    }

    /// At thread exit: collects remote frees and parks every slab, hands the parked medium
    /// blocks to the buddy arena, and retires empty slabs to the dirty spares, but gives
    /// nothing back to the OS: the segments, spares and medium spans stay as they are,
    /// resident, for the thread that adopts the heap next. A program that starts and joins
    /// threads all the time otherwise purged memory at every exit and faulted it in again
    /// at the next start (a thread-churn stress with medium blocks: 20 times glibc's page
    /// faults). What no new thread takes, the process-wide decay returns once the heap has
    /// waited a whole purge delay (`decay_abandoned_heaps`), and the buddy arena purges the
    /// spans by their age.
    pub fn retire_warm<O: Os>(&mut self, os: &O, buddy: &Mutex<BuddyArena>) {
        self.settle(false);
        let h = self.local();
        h.medium.flush(os, buddy);
        h.retire_empty_slabs();
    }

    /// Collects remote frees and retires empty slabs; with `keep_current` false, current
    /// slabs are parked too.
    fn settle(&mut self, keep_current: bool) {
        self.process_pending();
        let h = self.local();
        for c in 0..CLASS_COUNT {
            let cur = h.current[c];
            if !keep_current && cur != sentinel() {
                h.current[c] = sentinel();
                // SAFETY: `cur` was our current slab, now on no list.
                unsafe {
                    (*cur).end_current();
                    (*cur).collect_remote();
                    let s = (*cur).local();
                    if s.free.is_null() && s.built >= s.capacity {
                        h.park_full(cur);
                    } else {
                        h.place_with_room(cur);
                    }
                }
            }
            let mut slab = h.classes[c].partial.head();
            while !slab.is_null() {
                // SAFETY: partial slabs are ours; `next` is read before any unlinking.
                unsafe {
                    let next = SlabList::next(slab);
                    (*slab).collect_remote_unless_walk();
                    if (*slab).live_count() == 0 && (*slab).may_unassign() {
                        h.classes[c].partial.remove(slab);
                        h.retire_slab(slab);
                    }
                    slab = next;
                }
            }
        }
    }

    /// True when the heap holds no segment at all.
    pub fn is_unused(&self) -> bool {
        self.local_ref().segments.is_empty()
    }
}

impl HeapLocal {
    /// Parks a slab that has no room on its class's full list, asking remote freers to
    /// notify. If remote frees raced in, the slab goes to partial instead.
    ///
    /// # Safety
    /// `slab` must be ours and on no list.
    unsafe fn park_full(&mut self, slab: *mut Slab) {
        // SAFETY: the caller guarantees `slab` is ours.
        let (shared, s) = unsafe { (&*slab, (*slab).local()) };
        let lists = &mut self.classes[s.class.index()];
        loop {
            if shared.request_notify() {
                s.state = State::Full;
                shared.set_used_flag(FULL_FLAG);
                // SAFETY: on no list.
                unsafe { lists.full.push_back(slab) };
                return;
            }
            // SAFETY: ours.
            if unsafe { shared.collect_remote() } > 0 {
                s.state = State::Partial;
                // SAFETY: on no list.
                unsafe { lists.partial.push_front(slab) };
                return;
            }
            if shared.is_queued() {
                // Already on the pending stack: processing it will settle the slab.
                s.state = State::Full;
                shared.set_used_flag(FULL_FLAG);
                // SAFETY: on no list.
                unsafe { lists.full.push_back(slab) };
                return;
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
        let (shared, s) = unsafe { (&*slab, (*slab).local()) };
        let lists = &mut self.classes[s.class.index()];
        if shared.live_count() == 0 {
            // A class keeps no empty slab: it goes back to the heap's dirty spares at once,
            // where any class can take it (still resident, so reuse costs no page fault).
            // Keeping one per class held up to a slab of resident memory in each of the 64
            // classes; with random sizes most classes had one. A queued slab stays assigned
            // (remote-free invariant 2): it waits on the empty list until its pending entry
            // has been processed.
            if !shared.may_unassign() {
                s.state = State::Empty;
                // SAFETY: on no list.
                unsafe { lists.empty.push_front(slab) };
            } else {
                // SAFETY: ours, empty, on no list.
                unsafe { self.retire_slab(slab) };
            }
        } else {
            s.state = State::Partial;
            // At the back: allocation takes partial slabs from the front, so the one taken
            // is the one that has had the longest to gather frees since it left the full
            // list (or its current slot). At the front, a program whose frees land all
            // over its slabs (a window of live blocks with random lifetimes) had its next
            // refill take the slab that had just got back a single free block: a slow
            // path per allocation and per free (`window`: 28% of calls each).
            // SAFETY: on no list.
            unsafe { lists.partial.push_back(slab) };
        }
    }

    /// Unassigns an empty slab and puts it on the dirty spare list.
    ///
    /// # Safety
    /// `slab` must be ours, assigned, with no live block, on no list.
    unsafe fn retire_slab(&mut self, slab: *mut Slab) {
        // SAFETY: the caller guarantees `slab` is ours.
        if !unsafe { (*slab).may_unassign() } {
            crate::fatal::fatal("retiring a slab that is queued for its owner");
        }
        // SAFETY: the caller guarantees `slab` is ours, empty and on no list.
        unsafe {
            (*slab).unassign();
            let s = (*slab).local();
            s.state = State::Spare;
            s.zeroed = false;
            (*slab).spare_since_ms.set(self.clock_ms as u32);
            (*SegmentHeader::of(slab as usize)).assigned_slabs -= 1;
            self.dirty_spare.push_front(slab);
        }
    }

    /// Dirty spare slabs this heap keeps before a free purges the oldest: 64 MiB, or twice
    /// as many as it has slabs in use when that is more. A program that frees a batch of
    /// many slabs and then allocates as much again (`frag`: 170 MB of 1–16 KiB blocks per
    /// cycle, mostly freed, then small blocks) then reuses the batch's pages instead of
    /// having them purged at the free that crosses a fixed bound and faulted in again
    /// (`frag`: 158k page faults and 0.94 s with 64 MiB alone, 84k and 0.54 s; glibc 59k,
    /// 0.70 s; with no bound at all 66k, but 265 MiB still held after everything was
    /// freed, against 49 MiB). Idle memory stays within twice what is in use (plus 64 MiB);
    /// the time-based decay returns what stays unused.
    fn dirty_spare_limit(&self) -> usize {
        let slabs = self.segments.len() * (SLABS_PER_SEGMENT - 1);
        let in_use = slabs.saturating_sub(self.dirty_spare.len() + self.clean_spare.len());
        DIRTY_SPARE_KEEP.max(in_use * 2)
    }

    /// Purges dirty spare slabs beyond `keep`, the oldest first, moving them to the clean
    /// list.
    pub fn purge_spares<O: Os>(&mut self, os: &O, keep: usize) -> usize {
        self.purge_spares_where(os, keep, |_| true)
    }

    /// Purges the dirty spare slabs that have been spares for `delay_ms` or longer by the
    /// heap's clock. The dirty list is in the order slabs became spares (the newest at the
    /// front, where `take_spare` takes them), so the old ones are a run at its back.
    pub fn purge_old_spares<O: Os>(&mut self, os: &O, delay_ms: u64) -> usize {
        let now = self.clock_ms as u32;
        // Ages are told apart up to 2^31 ms; a longer delay means "never" (as in the buddy).
        let min_age = match u32::try_from(delay_ms) {
            Ok(age) if age <= i32::MAX as u32 => age,
            _ => return 0,
        };
        self.purge_spares_where(os, 0, |slab| {
            // SAFETY: spare slabs are ours.
            let since = unsafe { (*slab).spare_since_ms.get() };
            now.wrapping_sub(since) >= min_age
        })
    }

    /// Purges dirty spare slabs from the back of the list (the oldest) while more than
    /// `keep` remain and `old` says yes of the last one.
    fn purge_spares_where<O: Os>(
        &mut self,
        os: &O,
        keep: usize,
        old: impl Fn(*mut Slab) -> bool,
    ) -> usize {
        let mut purged = 0;
        while self.dirty_spare.len() > keep {
            let slab = self.dirty_spare.pop_back();
            if !old(slab) {
                // SAFETY: just popped from the dirty list; it goes back where it was.
                unsafe { self.dirty_spare.push_back(slab) };
                break;
            }
            // SAFETY: spare slabs are ours, unassigned, and hold no live block.
            unsafe {
                let s = (*slab).local();
                os.purge(NonNull::new_unchecked(s.start), SLAB_BYTES);
                s.zeroed = true;
                self.clean_spare.push_back(slab);
            }
            purged += SLAB_BYTES;
        }
        purged
    }

    /// A spare slab: dirty first (likely resident and cached), then clean, then a new
    /// segment for `heap` (this part's heap).
    fn take_spare<O: Os>(
        &mut self,
        heap: *mut Heap,
        os: &O,
        pool: &Mutex<SegmentPool>,
    ) -> Option<*mut Slab> {
        let slab = self.dirty_spare.pop_front();
        if !slab.is_null() {
            return Some(slab);
        }
        let slab = self.clean_spare.pop_front();
        if !slab.is_null() {
            return Some(slab);
        }
        let seg = pool.lock().acquire(os, heap as usize)?;
        // SAFETY: a fresh segment of ours, on no list.
        unsafe { self.segments.push_front(seg) };
        // Slabs 1.. go to the clean list in address order; slab 0 is the header.
        for i in 1..SLABS_PER_SEGMENT {
            let slab = SegmentHeader::slab_of(seg, seg as usize + i * SLAB_BYTES);
            // SAFETY: fresh spare slabs of our new segment are on no list.
            unsafe { self.clean_spare.push_back(slab) };
        }
        Some(self.clean_spare.pop_front())
    }

    /// Returns segments with no assigned slab to the pool.
    pub fn release_unused_segments<O: Os>(&mut self, os: &O, pool: &Mutex<SegmentPool>) -> usize {
        let mut released = 0;
        let mut seg = self.segments.head();
        while !seg.is_null() {
            // SAFETY: segments on our list are valid, and their links are ours.
            let (next, assigned) = unsafe { (List::next(seg), (*seg).assigned_slabs) };
            if assigned == 0 {
                for i in 1..SLABS_PER_SEGMENT {
                    let slab = SegmentHeader::slab_of(seg, seg as usize + i * SLAB_BYTES);
                    // SAFETY: an unassigned slab of ours is on exactly one spare list,
                    // the one its `zeroed` flag names.
                    unsafe {
                        if (*slab).local().zeroed {
                            self.clean_spare.remove(slab);
                        } else {
                            self.dirty_spare.remove(slab);
                        }
                    }
                }
                // SAFETY: `seg` is on our segment list.
                unsafe { self.segments.remove(seg) };
                // SAFETY: no assigned slab means no live block and no queued slab
                // (remote-free invariant 2); the segment is off every list of ours.
                unsafe { pool.lock().release(os, seg) };
                released += crate::block::segment::SEGMENT_BYTES;
            }
            seg = next;
        }
        released
    }

    /// Returns memory the heap kept for quick reuse but did not reuse: empty slabs kept per
    /// class and parked medium spans go back to the spares and the buddy arena (which
    /// purges by age), and dirty spare slabs are purged: all of them with `delay_ms` None
    /// (trim, an abandoned heap's clean-up), otherwise those that have been spares for
    /// `delay_ms` or longer. Current slabs stay. Returns the bytes purged or given back.
    pub fn decay<O: Os>(
        &mut self,
        os: &O,
        buddy: &Mutex<BuddyArena>,
        delay_ms: Option<u64>,
    ) -> usize {
        let flushed = self.medium.flush(os, buddy);
        self.retire_empty_slabs();
        flushed
            + match delay_ms {
                Some(delay) => self.purge_old_spares(os, delay),
                None => self.purge_spares(os, 0),
            }
    }

    /// Moves the empty slabs kept per class (those not queued for their owner) to the
    /// dirty spares.
    fn retire_empty_slabs(&mut self) {
        for c in 0..CLASS_COUNT {
            let mut slab = self.classes[c].empty.head();
            while !slab.is_null() {
                // SAFETY: empty slabs are ours; `next` is read before any unlinking.
                unsafe {
                    let next = SlabList::next(slab);
                    // Queued slabs stay (remote-free invariant 2).
                    if (*slab).may_unassign() {
                        self.classes[c].empty.remove(slab);
                        self.retire_slab(slab);
                    }
                    slab = next;
                }
            }
        }
    }
}
