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

use crate::buddy::{self, BuddyArena, MediumRequest};
use crate::fatal;
use crate::heap::{Heap, HeapPtr};
use crate::heap_pool::HeapPool;
use crate::large::Large;
use crate::os::Os;
use crate::region_map::{self, Kind};
use crate::segment::{SegmentHeader, SegmentPool};
use crate::size_class::{self, SizeClass, SMALL_MAX_BYTES};
use crate::slab::{free_cookie, Block, Slab, FULL_FLAG};
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
}

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
        }
    }

    /// Allocates a small block of `class` from `heap`.
    ///
    /// # Safety
    /// The caller must own `heap`.
    #[inline(always)]
    pub unsafe fn alloc_small(&self, heap: *mut Heap, class: SizeClass) -> *mut u8 {
        // SAFETY: the caller owns the heap; `current` slots always hold a valid slab (the
        // sentinel when none), whose free list holds free blocks of that slab.
        unsafe {
            let slab = *(*heap).current.get_unchecked(class.index());
            let block = (*slab).free;
            if block.is_null() {
                let p = Heap::alloc_slow(heap, class, &self.os, &self.segments);
                self.decay_tick(heap);
                return p;
            }
            (*slab).free = (*block).next;
            (*block).cookie = 0;
            (*slab).used += 1;
            block.cast()
        }
    }

    /// Allocates a medium or huge block, medium ones from `heap`'s cache first (`heap` may
    /// be null). Returns the block and whether it reads as zeros.
    ///
    /// # Safety
    /// The caller must own `heap` if it is not null.
    #[cold]
    #[inline(never)]
    pub unsafe fn alloc_big(
        &self,
        heap: *mut Heap,
        size: usize,
        align_bytes: usize,
    ) -> Option<(NonNull<u8>, bool)> {
        if let Some(request) = MediumRequest::new(size, align_bytes) {
            if !heap.is_null() {
                // SAFETY: the caller owns the heap.
                if let Some(p) = unsafe { (*heap).medium.pop(request) } {
                    return Some((p, false));
                }
            }
            return self.buddy.lock().alloc(&self.os, request);
        }
        if size > isize::MAX as usize || align_bytes > isize::MAX as usize / 2 {
            return None;
        }
        self.large.lock().alloc(&self.os, size, align_bytes)
    }

    /// Allocates `size` bytes aligned to `align_bytes` (a power of two) from `heap` or the
    /// medium and huge allocators. Returns the block and whether it reads as zeros.
    ///
    /// # Safety
    /// The caller must own `heap`.
    pub unsafe fn alloc_with(
        &self,
        heap: *mut Heap,
        size: usize,
        align_bytes: usize,
    ) -> Option<(NonNull<u8>, bool)> {
        if let Some(class) = size_class::class_for_aligned(size, align_bytes) {
            // SAFETY: the caller owns the heap.
            return NonNull::new(unsafe { self.alloc_small(heap, class) }).map(|p| (p, false));
        }
        // SAFETY: the caller owns the heap.
        unsafe { self.alloc_big(heap, size, align_bytes) }
    }

    /// Frees `ptr` on behalf of the owner of `heap` (which may be null: no heap).
    ///
    /// # Safety
    /// The caller must own `heap` if it is not null; `ptr` must be null or a pointer the
    /// program got from this context (anything else is detected where possible and
    /// reported as fatal).
    #[inline(always)]
    pub unsafe fn free_with(&self, heap: *mut Heap, ptr: *mut u8, call: &str) {
        let addr = ptr as usize;
        if region_map::raw_kind_of(addr) != Kind::Slab as u8 {
            if !ptr.is_null() {
                // SAFETY: the caller owns the heap.
                unsafe { self.free_big(heap, addr, call) };
            }
            return;
        }
        let seg = SegmentHeader::of(addr);
        let slab = SegmentHeader::slab_of(seg, addr);
        // SAFETY: the region map says `seg` is a live segment.
        if unsafe { SegmentHeader::owner(seg) } != heap {
            // SAFETY: as above.
            unsafe { free_remote(seg, slab, ptr, call) };
            return;
        }
        // SAFETY: `heap` owns the segment, so the slab metadata is ours to update. The
        // checks, folded into one branch to the slow path:
        // - `used - 2` as unsigned catches "slab full" (FULL_FLAG), "about to be empty" and
        //   "not in use" (used 0 or 1), except in the current slab (CURRENT_FLAG keeps it
        //   above 2: its emptiness needs no list move);
        // - `index * block_bytes != offset` or `index >= built`: not a block start (an
        //   interior pointer, or a block never handed out);
        // - the free cookie in the block's second word: a double free.
        unsafe {
            let used = (*slab).used;
            let block = ptr.cast::<Block>();
            let cookie = free_cookie(addr);
            // The `unchecked-free` feature drops the pointer checks (kept for measuring
            // what they cost; see README).
            let bad_pointer = !cfg!(feature = "unchecked-free")
                && (!(*slab).is_built_block(addr) || (*block).cookie == cookie);
            if used.wrapping_sub(2) >= FULL_FLAG - 2 || bad_pointer {
                Heap::free_local_slow(heap, slab, ptr, call, &self.os);
                self.decay_tick(heap);
                return;
            }
            (*block).next = (*slab).free;
            (*block).cookie = cookie;
            (*slab).free = block;
            (*slab).used = used - 1;
        }
    }

    /// Frees a medium or huge block (medium ones into `heap`'s cache when it has room), or
    /// reports a pointer that is not ours.
    ///
    /// # Safety
    /// The caller must own `heap` if it is not null.
    #[cold]
    #[inline(never)]
    unsafe fn free_big(&self, heap: *mut Heap, addr: usize, call: &str) {
        if heap.is_null() && crate::config::check_mode() {
            // SAFETY: forwarded contract of `free_with`.
            return unsafe { crate::check::free(addr as *mut u8, call) };
        }
        let ok = match region_map::kind_of(addr) {
            // SAFETY: the caller owns the heap.
            Kind::Buddy if !heap.is_null() => match unsafe { (*heap).medium.push(addr) } {
                Ok(true) => true,
                Ok(false) => self.buddy.lock().free(&self.os, addr).is_ok(),
                Err(_) => false,
            },
            Kind::Buddy => self.buddy.lock().free(&self.os, addr).is_ok(),
            Kind::Huge | Kind::HugeFar => self.large.lock().free(&self.os, addr).is_ok(),
            Kind::Sampled => {
                crate::prof::free_sampled(addr, call);
                true
            }
            Kind::Slab | Kind::None => false,
        };
        if !ok {
            fatal::bad_pointer(call, "invalid pointer", addr);
        }
        if !heap.is_null() {
            // SAFETY: the caller owns the heap.
            unsafe { self.decay_tick(heap) };
        }
    }

    /// Counts a slow-path call of `heap`; every 64 calls, reads the clock, and when the
    /// purge delay has passed since the heap last did, returns its idle memory to the OS
    /// (and, once per delay for the process, the buddy arena's and the huge cache's).
    ///
    /// # Safety
    /// The caller must own `heap`.
    #[cold]
    unsafe fn decay_tick(&self, heap: *mut Heap) {
        // SAFETY: the caller owns the heap.
        let h = unsafe { &mut *heap };
        h.slow_ticks = h.slow_ticks.wrapping_add(1);
        if h.slow_ticks % 64 != 0 {
            return;
        }
        let now = now_ms();
        let delay = crate::config::purge_delay_ms();
        if now.saturating_sub(h.last_decay_ms) < delay {
            return;
        }
        h.last_decay_ms = now;
        h.decay(&self.os, &self.buddy);
        let last = LAST_GLOBAL_DECAY_MS.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= delay
            && LAST_GLOBAL_DECAY_MS
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.buddy.lock().purge(&self.os);
            self.large.lock().trim(&self.os);
            crate::prof::blocks::trim();
        }
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
            Kind::Sampled => crate::prof::blocks::usable_size(addr),
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
            Kind::Sampled => crate::prof::blocks::usable_size(addr).is_some(),
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
        new_size <= block_bytes
            && (new_size * 2 >= block_bytes
                || size_class::class_of(new_size).block_bytes() == block_bytes)
            // SAFETY: as above; a block start of an assigned slab has 16 readable bytes.
            && unsafe { (*slab).is_block_start(addr) && !Slab::is_free_block(ptr) }
    }

    /// Resizes the block at `ptr` (not null) to `new_size` (> 0) bytes, keeping
    /// `align_bytes`; null (and the old block untouched) when memory is short.
    ///
    /// # Safety
    /// The caller must own `heap`; `ptr` must be a live block of this context.
    pub unsafe fn realloc_with(
        &self,
        heap: *mut Heap,
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
                    || self.buddy.lock().resize_in_place(addr, pages)
            }
            Kind::Huge | Kind::HugeFar if new_size > buddy::MEDIUM_MAX_BYTES => {
                match self.large.lock().resize(&self.os, addr, new_size) {
                    Ok(Some(p)) => return p.as_ptr(),
                    Ok(None) => false,
                    Err(_) => fatal::bad_pointer(call, "invalid pointer", addr),
                }
            }
            // A sampled block always moves: the new block is sampled or not on its own.
            Kind::Sampled => false,
            _ => false,
        };
        if keep {
            return ptr;
        }
        // SAFETY: the caller owns the heap.
        let Some((new, _)) = (unsafe { self.alloc_with(heap, new_size, align_bytes) }) else {
            return ptr::null_mut();
        };
        // SAFETY: both blocks are live, distinct, and at least this long.
        unsafe {
            ptr::copy_nonoverlapping(ptr, new.as_ptr(), old_usable.min(new_size));
            self.free_with(heap, ptr, call);
        }
        new.as_ptr()
    }

    /// Returns what can be returned to the OS from the global structures and `heap` (may be
    /// null). Returns the bytes released or purged.
    ///
    /// # Safety
    /// The caller must own `heap` if it is not null.
    pub unsafe fn trim(&self, heap: *mut Heap) -> usize {
        let mut released = 0;
        if !heap.is_null() {
            // Current slabs are retired too (when empty): the next allocation of their class
            // takes the slow path once, and their segments can go back to the OS.
            // SAFETY: the caller owns the heap.
            released += unsafe { (*heap).collect(&self.os, &self.segments, &self.buddy, false) };
        }
        {
            let global = self.global_heap.lock();
            let h = global.0;
            if !h.is_null() {
                // SAFETY: the global heap is ours while its lock is held.
                released += unsafe { (*h).collect(&self.os, &self.segments, &self.buddy, true) };
            }
        }
        // Clean up abandoned heaps one at a time, outside the pool lock.
        let count = self.heaps.lock().abandoned_count();
        for _ in 0..count {
            let Some(h) = self.heaps.lock().take_abandoned() else {
                break;
            };
            // SAFETY: taken from the pool, the heap is ours until released.
            unsafe {
                released += (*h).collect(&self.os, &self.segments, &self.buddy, false);
                self.heaps.lock().release(h);
            }
        }
        released += self.buddy.lock().trim(&self.os);
        released += self.large.lock().trim(&self.os);
        released += self.segments.lock().drain(&self.os);
        released += crate::prof::blocks::trim();
        released
    }

    /// Hands back a thread's heap at thread exit.
    ///
    /// # Safety
    /// The caller must own `heap` and never use it again.
    pub unsafe fn retire_heap(&self, heap: *mut Heap) {
        // SAFETY: the caller owns the heap.
        unsafe {
            (*heap).collect(&self.os, &self.segments, &self.buddy, false);
            self.heaps.lock().release(heap);
        }
    }
}

static LAST_GLOBAL_DECAY_MS: AtomicU64 = AtomicU64::new(0);

/// Milliseconds on the coarse monotonic clock (a vDSO read, no syscall).
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A free by a thread that does not own the block's segment.
///
/// # Safety
/// `seg` must be a live segment (region map), `slab` the metadata of the slab holding `ptr`.
#[cold]
#[inline(never)]
unsafe fn free_remote(
    seg: *mut SegmentHeader,
    slab: *mut crate::slab::Slab,
    ptr: *mut u8,
    call: &str,
) {
    if crate::config::check_mode() {
        // Check mode gives threads no heap, so every free of a slab block comes here.
        // SAFETY: forwarded contract.
        return unsafe { crate::check::free(ptr, call) };
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
        if (*slab).push_remote(ptr) {
            Heap::push_pending(SegmentHeader::owner(seg), slab);
        }
    }
}
