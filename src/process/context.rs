//! The allocator core: dispatch by size on allocation and by pointer kind on free, over a
//! context of global structures.
//!
//! Fast paths (what they cost, x86-64):
//! - `alloc` of a small size: read the TLS heap pointer (2 loads), the class from a table,
//!   the current slab, pop its free list: about 15 instructions, no atomic, no call.
//! - `free` of a small block by its owner: one region-map byte, the segment's owner, the
//!   slab's count and free head, a push: about 20 instructions, no atomic, no call.
//!
//! Everything else (`*_slow`) is `#[cold]` and out of line.
//!
//! [`Context`] holds the global structures, generic over the OS layer so that tests run a
//! separate context over [`crate::os::fake::FakeOs`]; the process uses
//! [`crate::process::CTX`] over the real OS and the calling thread's TLS heap.

use crate::block::buddy::{self, BuddyArena, MediumRequest};
use crate::block::large::Large;
use crate::block::segment::{SegmentHeader, SegmentPool};
use crate::block::size_class::{self, SizeClass, SMALL_MAX_BYTES};
use crate::block::slab::{free_cookie, Block, Slab, FULL_FLAG};
use crate::block::SampleRecord;
use crate::fatal;
use crate::heap::pool::HeapPool;
use crate::heap::{Heap, HeapPtr, OwnedHeap};
use crate::os::Os;
use crate::region_map::{self, Kind};
use crate::sync::Mutex;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

/// Every block is aligned at least this much (`max_align_t`).
pub const MIN_ALIGN: usize = 16;

/// The allocator's global structures.
pub struct Context<O: Os> {
    /// The OS layer.
    pub os: O,
    /// Unused segments.
    pub segments: Mutex<SegmentPool>,
    /// Medium blocks.
    pub buddy: Mutex<BuddyArena>,
    /// Huge blocks.
    pub large: Mutex<Large>,
    /// Heaps without a thread.
    pub heaps: Mutex<HeapPool>,
    /// The heap used, under its lock, by threads whose own heap was handed back at exit.
    pub global_heap: Mutex<HeapPtr>,
    /// Where frees by threads without a heap go in check mode (the process's checker).
    checked_free: Option<CheckedFree>,
}

/// A free handed to the check mode's quarantine.
///
/// # Safety
/// As for [`Context::free_with`].
pub type CheckedFree = unsafe fn(*mut u8, &str);

impl<O: Os> Context<O> {
    /// A context with nothing mapped yet.
    pub const fn new(os: O) -> Self {
        Context {
            os,
            segments: Mutex::new(SegmentPool::new()),
            buddy: Mutex::new(BuddyArena::new()),
            large: Mutex::new(Large::new()),
            heaps: Mutex::new(HeapPool::new()),
            global_heap: Mutex::new(HeapPtr(ptr::null_mut())),
            checked_free: None,
        }
    }

    /// A context whose frees by threads without a heap go to `checked_free` in check mode.
    pub const fn with_checked_free(os: O, checked_free: CheckedFree) -> Self {
        let mut ctx = Self::new(os);
        ctx.checked_free = Some(checked_free);
        ctx
    }

    /// Allocates a small block of `class` from `heap`.
    #[inline(always)]
    pub fn alloc_small(&self, mut heap: OwnedHeap, class: SizeClass) -> *mut u8 {
        let slab = heap.local().current[class.index()];
        let local = Slab::local_ptr(slab);
        // SAFETY: `current` slots always hold a valid slab of this heap (the sentinel when
        // none, whose `free` is null and is never written), and its free list holds free
        // blocks of that slab, whose first word is the link.
        unsafe {
            let block = (*local).free;
            if block.is_null() {
                return self.alloc_small_slow(heap, class);
            }
            (*local).free = (*block).next;
            (*block).cookie = 0;
            (*slab).used.set((*slab).used.get() + 1);
            block.cast()
        }
    }

    /// The slow path of [`Context::alloc_small`]: the heap by value (one register), so
    /// that the fast path keeps it out of memory.
    #[cold]
    #[inline(never)]
    fn alloc_small_slow(&self, mut heap: OwnedHeap, class: SizeClass) -> *mut u8 {
        // The frees this thread made into other heaps go out now: their owners may be
        // short of blocks too.
        heap.local().remote.flush();
        let p = heap.alloc_slow(class, &self.os, &self.segments);
        self.decay_tick(&mut heap);
        p
    }

    /// Allocates a medium or huge block, medium ones from `heap`'s cache first. Returns the
    /// block and whether it reads as zeros.
    #[cold]
    #[inline(never)]
    pub fn alloc_big(
        &self,
        heap: Option<OwnedHeap>,
        size: usize,
        align_bytes: usize,
    ) -> Option<(NonNull<u8>, bool)> {
        if let Some(request) = MediumRequest::new(size, align_bytes) {
            if let Some(mut heap) = heap {
                if let Some(p) = heap.local().medium.pop(request) {
                    return Some((p, false));
                }
            }
            return self.buddy.lock().alloc(&self.os, request);
        }
        if size > isize::MAX as usize || align_bytes > isize::MAX as usize / 2 {
            return None;
        }
        self.large.lock().alloc(&self.os, size, align_bytes, None)
    }

    /// Allocates a huge block (of any size: one mapping, from the huge cache when it can)
    /// that carries the heap profiler's `record` in its header. Returns the block and
    /// whether it reads as zeros.
    #[cold]
    #[inline(never)]
    pub fn alloc_huge_sampled(
        &self,
        size: usize,
        align_bytes: usize,
        record: SampleRecord,
    ) -> Option<(NonNull<u8>, bool)> {
        if size > isize::MAX as usize || align_bytes > isize::MAX as usize / 2 {
            return None;
        }
        self.large
            .lock()
            .alloc(&self.os, size, align_bytes, Some(record))
    }

    /// Allocates `size` bytes aligned to `align_bytes` (a power of two) from `heap` or the
    /// medium and huge allocators. Returns the block and whether it reads as zeros.
    pub fn alloc_with(
        &self,
        heap: OwnedHeap,
        size: usize,
        align_bytes: usize,
    ) -> Option<(NonNull<u8>, bool)> {
        if let Some(class) = size_class::class_for_aligned(size, align_bytes) {
            return NonNull::new(self.alloc_small(heap, class)).map(|p| (p, false));
        }
        self.alloc_big(Some(heap), size, align_bytes)
    }

    /// Frees `ptr` on behalf of the owner of `heap` (None: a thread without a heap).
    ///
    /// # Safety
    /// `ptr` must be null or a pointer the program got from this context (anything else is
    /// detected where possible and reported as fatal).
    #[inline(always)]
    pub unsafe fn free_with(&self, heap: Option<OwnedHeap>, ptr: *mut u8, call: &str) {
        let addr = ptr as usize;
        if region_map::raw_kind_of(addr) != Kind::Slab as u8 {
            if !ptr.is_null() {
                // SAFETY: forwarded contract.
                unsafe { self.free_big(heap, addr, call) };
            }
            return;
        }
        let seg = SegmentHeader::of(addr);
        let slab = SegmentHeader::slab_of(seg, addr);
        // SAFETY: the region map says `seg` is a live segment.
        let owner = unsafe { SegmentHeader::owner(seg) };
        let heap = match heap {
            Some(heap) if heap.as_ptr() as usize == owner => heap,
            _ => {
                // SAFETY: a live segment; `slab` is the metadata of the slab holding `ptr`.
                unsafe { self.free_remote(heap, seg, slab, ptr, call) };
                return;
            }
        };
        let local = Slab::local_ptr(slab);
        // SAFETY: `heap` owns the segment, so the slab's owner-only part is ours to update.
        // The checks, folded into one branch to the slow path:
        // - `used - 2` as unsigned catches "slab full" (FULL_FLAG), "about to be empty" and
        //   "not in use" (used 0 or 1), except in the current slab (CURRENT_FLAG keeps it
        //   above 2: its emptiness needs no list move);
        // - `index * block_bytes != offset` or `index >= built`: not a block start (an
        //   interior pointer, or a block never handed out);
        // - the free cookie in the block's second word: a double free.
        unsafe {
            let used = (*slab).used.get();
            let block = ptr.cast::<Block>();
            let cookie = free_cookie(addr);
            // The `unchecked-free` feature drops the pointer checks (kept for measuring
            // what they cost; see README).
            let bad_pointer = !cfg!(feature = "unchecked-free")
                && (!(*local).is_built_block(addr) || (*block).cookie == cookie);
            if used.wrapping_sub(2) >= FULL_FLAG - 2 || bad_pointer {
                self.free_local_slow(heap, slab, ptr, call);
                return;
            }
            (*block).next = (*local).free;
            (*block).cookie = cookie;
            (*local).free = block;
            (*slab).used.set(used - 1);
        }
    }

    /// The slow path of an owner's free (see [`OwnedHeap::free_local_slow`]), with the
    /// heap by value so that the fast path keeps it in a register.
    ///
    /// # Safety
    /// `slab` must be a slab of one of `heap`'s segments, and `ptr` an address inside it.
    #[cold]
    #[inline(never)]
    unsafe fn free_local_slow(
        &self,
        mut heap: OwnedHeap,
        slab: *mut Slab,
        ptr: *mut u8,
        call: &str,
    ) {
        // SAFETY: forwarded contract.
        unsafe { heap.free_local_slow(slab, ptr, call, &self.os) };
        self.decay_tick(&mut heap);
    }

    /// Frees a medium or huge block (medium ones into `heap`'s cache when it has room), or
    /// reports a pointer that is not ours.
    ///
    /// # Safety
    /// As for [`Context::free_with`].
    #[cold]
    #[inline(never)]
    unsafe fn free_big(&self, heap: Option<OwnedHeap>, addr: usize, call: &str) {
        if heap.is_none() && crate::config::routed_mode() {
            if let Some(checked_free) = self.checked_free {
                // SAFETY: forwarded contract of `free_with`.
                return unsafe { checked_free(addr as *mut u8, call) };
            }
        }
        let mut heap = heap;
        let ok = match region_map::kind_of(addr) {
            Kind::Buddy => {
                // A record kept on the side for the block (see `prof::keep_resized`) ends
                // before the block can be handed out again.
                crate::process::prof::resized_freed(addr);
                match heap.as_mut().map(|h| h.local().medium.push(addr)) {
                    Some(Ok(true)) => true,
                    Some(Err(_)) => false,
                    Some(Ok(false)) | None => self.buddy.lock().free(&self.os, addr).is_ok(),
                }
            }
            Kind::Huge | Kind::HugeFar => {
                // The lock goes before the profiler is told.
                let freed = self.large.lock().free(&self.os, addr);
                match freed {
                    Ok(Some(record)) => {
                        crate::process::prof::huge_sampled_freed(record);
                        true
                    }
                    Ok(None) => true,
                    Err(_) => false,
                }
            }
            Kind::Sampled => {
                crate::process::prof::free_sampled(addr, call);
                true
            }
            Kind::Guarded => {
                // Called through an opaque pointer: with a direct call, what LLVM inferred
                // about this function from the guard's `free` changed the register use of
                // `free`'s fast path, which tail-calls it (84 instructions per
                // `malloc(32)`/`free` pair against 81, `scripts/fastpath-cost`).
                let guard_free: fn(usize, &str) = crate::process::guard::free;
                core::hint::black_box(guard_free)(addr, call);
                true
            }
            Kind::Slab | Kind::None => false,
        };
        if !ok {
            fatal::bad_pointer(call, "invalid pointer", addr);
        }
        if let Some(mut heap) = heap {
            self.decay_tick(&mut heap);
        }
    }

    /// Counts a slow-path call of `heap`; every 64 calls, reads the clock. When the purge
    /// delay has passed since the heap last did, it returns its idle memory to the OS; and
    /// [`DECAY_STEPS`] times per delay, one thread runs the process-wide decay: the buddy
    /// arena's pages and the huge cache's mappings that have been free for a whole delay go
    /// back, and abandoned heaps that waited a whole delay are cleaned up.
    #[cold]
    fn decay_tick(&self, heap: &mut OwnedHeap) {
        let h = heap.local();
        h.slow_ticks = h.slow_ticks.wrapping_add(1);
        if h.slow_ticks % 64 != 0 {
            return;
        }
        let now = self.os.now_ms();
        h.clock_ms = now;
        let delay = crate::config::purge_delay_ms();
        if now.saturating_sub(h.last_decay_ms) >= delay {
            h.last_decay_ms = now;
            h.decay(&self.os, &self.buddy, Some(delay));
        }
        let last = LAST_GLOBAL_DECAY_MS.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= delay / DECAY_STEPS
            && LAST_GLOBAL_DECAY_MS
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.decay_process(delay);
            crate::process::prof::on_decay_round();
        }
    }

    /// One step of the process-wide decay (see [`Context::decay_tick`]); returns the bytes
    /// purged or released.
    pub(crate) fn decay_process(&self, delay_ms: u64) -> usize {
        let mut released = self.buddy.lock().decay(&self.os, delay_ms);
        released += self.large.lock().decay(&self.os, delay_ms);
        self.decay_abandoned_heaps();
        released + crate::process::prof::blocks::decay(delay_ms)
    }

    /// Cleans up the heaps of exited threads that no new thread adopted for a whole purge
    /// delay: what their threads left them (see `retire_warm`) goes back to the OS. One at a time,
    /// outside the pool lock, and at most [`DECAY_HEAPS_PER_ROUND`] per round, so that a
    /// program with thousands of abandoned heaps does not pay for all of them in one call
    /// (each take walks the abandoned list); the rest wait for the next rounds.
    #[cold]
    fn decay_abandoned_heaps(&self) {
        self.heaps.lock().begin_decay_round();
        for _ in 0..DECAY_HEAPS_PER_ROUND {
            // A `let else`, not a `while let`: the pool's guard must be dropped at the end of
            // this statement, before `release` takes the lock again.
            let Some(h) = self.heaps.lock().take_idle_abandoned(DECAY_STEPS + 1) else {
                break;
            };
            // SAFETY: just taken out of the pool, by `take_idle_abandoned`.
            unsafe { self.clean_up_abandoned(h) };
        }
    }

    /// Collects an abandoned heap taken out of the pool (everything it holds without need
    /// goes back) and gives it back to the pool: free if it is now empty, abandoned again
    /// otherwise. Returns the bytes released or purged. Takes the pool's lock itself, so the
    /// caller must not hold it.
    ///
    /// # Safety
    /// `h` must have been taken out of this context's pool (it is on no list) and be used
    /// by nothing else until this returns.
    pub(crate) unsafe fn clean_up_abandoned(&self, h: *mut Heap) -> usize {
        let mut released = 0;
        // SAFETY: taken from the pool (caller), the heap is ours until released.
        if let Some(mut owned) = unsafe { OwnedHeap::claim(h) } {
            released = owned.collect(&self.os, &self.segments, &self.buddy, false);
        }
        // SAFETY: the heap came from this pool, and the `OwnedHeap` is gone.
        unsafe { self.heaps.lock().release(h) };
        released
    }

    /// Usable size of the block at `ptr` (0 for null); fatal for a pointer that is not a
    /// live block of ours.
    pub fn usable_size(&self, ptr: *const u8, call: &str) -> usize {
        let addr = ptr as usize;
        if ptr.is_null() {
            return 0;
        }
        let found = match region_map::kind_of(addr) {
            Kind::Slab => {
                let slab = SegmentHeader::slab_of(SegmentHeader::of(addr), addr);
                // SAFETY: the region map says the segment is live; `block_bytes` is atomic.
                let slab = unsafe { &*slab };
                // SAFETY: a block start of an assigned slab has 16 readable bytes.
                (slab.is_block_start(addr) && !unsafe { Slab::is_free_block(ptr.cast_mut()) })
                    .then(|| slab.block_bytes.load(Ordering::Relaxed) as usize)
            }
            Kind::Buddy => BuddyArena::usable_size(addr),
            Kind::Huge | Kind::HugeFar => Large::usable_size(addr),
            Kind::Sampled => crate::process::prof::blocks::usable_size(addr),
            Kind::Guarded => crate::process::guard::usable_size(addr),
            Kind::None => None,
        };
        match found {
            Some(n) => n,
            None => fatal::bad_pointer(call, "invalid pointer", addr),
        }
    }

    /// True when `ptr` is a block of ours (start of a block in use or free; for medium and
    /// huge blocks, allocated).
    pub fn owns(&self, ptr: *const u8) -> bool {
        let addr = ptr as usize;
        match region_map::kind_of(addr) {
            Kind::Slab => {
                let slab = SegmentHeader::slab_of(SegmentHeader::of(addr), addr);
                // SAFETY: the region map says the segment is live.
                unsafe { (*slab).is_block_start(addr) }
            }
            Kind::Buddy => BuddyArena::usable_size(addr).is_some(),
            Kind::Huge | Kind::HugeFar => Large::owns(addr),
            Kind::Sampled => crate::process::prof::blocks::usable_size(addr).is_some(),
            Kind::Guarded => crate::process::guard::usable_size(addr).is_some(),
            Kind::None => false,
        }
    }

    /// True when `ptr` is a live small block that keeps serving `new_size` bytes: the
    /// `realloc` fast path (a string growing by a byte at a time stays here), which needs
    /// no heap and no lock. Anything else, bad pointers included, answers false and takes
    /// the full path, which reports them.
    ///
    /// # Safety
    /// `ptr` must be a pointer the program passes to `realloc`; it is only read after the
    /// region map says it lies in one of our slabs.
    #[inline]
    pub unsafe fn small_block_fits(&self, ptr: *mut u8, new_size: usize) -> bool {
        let addr = ptr as usize;
        if region_map::raw_kind_of(addr) != Kind::Slab as u8 {
            return false;
        }
        let slab = SegmentHeader::slab_of(SegmentHeader::of(addr), addr);
        // SAFETY: the region map says the segment is live; `block_bytes` is atomic.
        let block_bytes = unsafe { (*slab).block_bytes.load(Ordering::Relaxed) } as usize;
        size_class::realloc_keeps(block_bytes, new_size)
            // SAFETY: the region map says the segment is live, so the slab metadata is
            // readable (atomics only); a block start of an assigned slab has 16 readable bytes.
            && unsafe { (*slab).is_block_start(addr) && !Slab::is_free_block(ptr) }
    }

    /// Resizes the block at `ptr` (not null) to `new_size` (> 0) bytes, keeping
    /// `align_bytes`; null (and the old block untouched) when memory is short.
    ///
    /// # Safety
    /// The caller must own `heap`; `ptr` must be a live block of this context.
    pub unsafe fn realloc_with(
        &self,
        mut heap: OwnedHeap,
        ptr: *mut u8,
        new_size: usize,
        align_bytes: usize,
        call: &str,
    ) -> *mut u8 {
        let addr = ptr as usize;
        let old_usable = self.usable_size(ptr, call);
        let kind = region_map::kind_of(addr);
        let keep = match kind {
            Kind::Slab => {
                new_size <= old_usable
                    && (new_size * 2 >= old_usable
                        || (new_size <= SMALL_MAX_BYTES
                            && size_class::class_of(new_size).block_bytes() == old_usable))
            }
            Kind::Buddy if new_size > SMALL_MAX_BYTES && new_size <= buddy::MEDIUM_MAX_BYTES => {
                let pages = new_size.div_ceil(crate::os::OS_PAGE_BYTES);
                pages * crate::os::OS_PAGE_BYTES == old_usable
                    || self.buddy.lock().resize_in_place(&self.os, addr, pages)
            }
            Kind::Huge | Kind::HugeFar if new_size > buddy::MEDIUM_MAX_BYTES => {
                match self.large.lock().resize(&self.os, addr, new_size) {
                    Ok(Some(p)) => return p.as_ptr(),
                    Ok(None) => false,
                    Err(_) => fatal::bad_pointer(call, "invalid pointer", addr),
                }
            }
            // A sampled or guarded block always moves: the new block is sampled or not on
            // its own (and the old one becomes inaccessible, for a guarded one).
            Kind::Sampled | Kind::Guarded => false,
            _ => false,
        };
        if keep {
            return ptr;
        }
        let Some((new, _)) = self.alloc_with(heap.reborrow(), new_size, align_bytes) else {
            return ptr::null_mut();
        };
        // SAFETY: both blocks are live, distinct, and at least this long; `ptr` is a live
        // block of ours (caller).
        unsafe {
            ptr::copy_nonoverlapping(ptr, new.as_ptr(), old_usable.min(new_size));
            self.free_with(Some(heap), ptr, call);
        }
        new.as_ptr()
    }

    /// Returns what can be returned to the OS from the global structures and `heap`.
    /// Returns the bytes released or purged.
    pub fn trim(&self, heap: Option<OwnedHeap>) -> usize {
        let mut released = 0;
        if let Some(mut heap) = heap {
            heap.local().remote.flush();
            // Current slabs are retired too (when empty): the next allocation of their class
            // takes the slow path once, and their segments can go back to the OS.
            released += heap.collect(&self.os, &self.segments, &self.buddy, false);
        }
        {
            let global = self.global_heap.lock();
            // SAFETY: the global heap is ours while its lock is held.
            if let Some(mut h) = unsafe { OwnedHeap::claim(global.0) } {
                h.local().remote.flush();
                released += h.collect(&self.os, &self.segments, &self.buddy, true);
            }
        }
        // Clean up abandoned heaps one at a time, outside the pool lock.
        let count = self.heaps.lock().abandoned_count();
        for _ in 0..count {
            let Some(h) = self.heaps.lock().take_abandoned() else {
                break;
            };
            // SAFETY: just taken out of the pool, by `take_abandoned`.
            released += unsafe { self.clean_up_abandoned(h) };
        }
        released += self.buddy.lock().trim(&self.os);
        released += self.large.lock().trim(&self.os);
        released += self.segments.lock().drain(&self.os);
        released += crate::process::prof::blocks::trim();
        released
    }

    /// A free by a thread that does not own the block's segment (`heap` is the freeing
    /// thread's own heap, if it has one).
    ///
    /// # Safety
    /// `seg` must be a live segment (region map), `slab` the metadata of the slab holding
    /// `ptr`.
    #[cold]
    #[inline(never)]
    unsafe fn free_remote(
        &self,
        heap: Option<OwnedHeap>,
        seg: *mut SegmentHeader,
        slab: *mut Slab,
        ptr: *mut u8,
        call: &str,
    ) {
        if heap.is_none() && crate::config::routed_mode() {
            if let Some(checked_free) = self.checked_free {
                // Check and hardened mode give threads no heap, so every free of a slab block
                // comes here.
                // SAFETY: forwarded contract.
                return unsafe { checked_free(ptr, call) };
            }
        }
        // SAFETY: the slab metadata lives in a live segment header; `is_block_start` and
        // `push_remote` use only its atomic fields.
        unsafe {
            if !(*slab).is_block_start(ptr as usize) {
                fatal::bad_pointer(call, "invalid pointer", ptr as usize);
            }
            if Slab::is_free_block(ptr) {
                fatal::bad_pointer(call, "double free or corruption", ptr as usize);
            }
            if let Some(mut heap) = heap {
                // Batched: published with the other frees into this slab (remote_batch).
                heap.local().remote.add(slab, ptr);
                crate::heap::counters::remote_free(Some(&heap.shared().stats));
                return;
            }
            if (*slab).push_remote(ptr) {
                crate::heap::remote_batch::race_window();
                Heap::push_pending(SegmentHeader::owner(seg) as *mut Heap, slab);
            }
        }
        crate::heap::counters::remote_free(None);
    }

    /// Hands back a thread's heap at thread exit (the ownership goes with it).
    pub fn retire_heap(&self, heap: OwnedHeap) {
        let ptr = {
            let mut heap = heap;
            heap.local().remote.flush();
            heap.retire_warm(&self.os, &self.buddy);
            heap.as_ptr()
        };
        // SAFETY: the heap came from this pool, and this thread gave up its `OwnedHeap`.
        unsafe { self.heaps.lock().release(ptr) };
    }
}

static LAST_GLOBAL_DECAY_MS: AtomicU64 = AtomicU64::new(0);

/// Steps of the process-wide decay per purge delay: free memory goes back between one and
/// `1 + 1/DECAY_STEPS` delays after it was freed, in cohorts of a quarter delay.
pub(crate) const DECAY_STEPS: u64 = 4;

/// Abandoned heaps the process-wide decay cleans up per round (see `decay_abandoned_heaps`).
const DECAY_HEAPS_PER_ROUND: usize = 8;
