//! The buddy allocator: medium requests (above the slab limit, up to [`MEDIUM_MAX_BYTES`])
//! from 4 MiB, 4 MiB-aligned regions, in whole OS pages.
//!
//! ```text
//! region base (4 MiB aligned), 1024 slots of one OS page
//! ├── slots 0-7: RegionHeader { slot metadata[1024] }
//! ├── slots 8-15 (32 KiB), 16-31, 32-63, 64-127, 128-255, 256-511 (1 MiB), 512-1023 (2 MiB)
//! ```
//! A *span* of order `k` is `2^k` slots starting at a slot index that is a multiple of
//! `2^k`; its buddy starts at `index ^ 2^k`. Free spans sit on one list per order.
//!
//! Allocation of `n` pages takes the smallest free span of order `k >= ceil(log2 n)`,
//! splits it down to order `ceil(log2 n)`, and then gives back the unused tail as free
//! spans (at most one per order): a 40 KiB request uses 40 KiB, not 64. The block starts a
//! span of its order, so it is aligned to that order's size, which serves aligned requests.
//! Free cuts `[start, start + n)` into aligned power-of-two pieces and frees each, merging
//! with free buddies. Both are O(orders).
//!
//! Invariant: every slot is `Interior` except the header slots (`Header`), the first slot of
//! each free span (`Free`, with its order) and the first slot of each allocated block
//! (`Allocated`, or `Cached` while parked in a thread's medium cache, with its page count).
//! Metadata lives in the region header, never in free spans, so free spans can be purged.
//!
//! # Dirty OS pages, and their age
//! The header keeps, per OS page, since when it has been free and possibly resident
//! (`dirty_since`, a millisecond stamp; 0 for a page that is allocated, or free and known to
//! read as zeros). A free stamps the block's pages; an allocation clears them and knows from
//! them whether the block reads as zeros (so `calloc` can skip zeroing). Because the state
//! is per OS page, split and merge change nothing about it: a span merged from a dirty half
//! and a clean half stays exactly half dirty, and a purge touches only the dirty pages.
//! (A dirty flag per span was the old way: a merge had to call the whole span dirty, and a
//! purge then purged clean pages and the next allocation zeroed them needlessly.) A stamp
//! per page rather than a bit: it costs 4 KiB of the 32 KiB header, and it gives the age
//! that the decay needs without a second structure; a bitmap per age cohort would be
//! smaller but coarser.
//!
//! Pages go back to the OS by age only ([`BuddyArena::decay`]): those dirty for longer than
//! the purge delay, in runs (one `madvise` per run of adjacent old pages in a free span).
//! Never because a free crossed a threshold, nor at a thread's exit: a purge that the next
//! allocation faults back in costs more than it saves. Completely free regions are unmapped
//! by the decay too, once all their pages have aged out, and by `trim` at once.
//!
//! One arena under one lock, as the design allows to start with; the per-thread medium
//! cache (`medium_cache.rs`) keeps most frees and re-allocations away from the lock.

use crate::list::{Links, List, Node};
use crate::os::{Os, OS_PAGE_BYTES};
use crate::region_map::{self, Kind, CHUNK_BYTES};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, Ordering};

/// Bytes in a region.
pub const REGION_BYTES: usize = CHUNK_BYTES;
/// log2 of a slot (one OS page).
pub const SLOT_SHIFT: u32 = 12;
/// Slots per region.
pub const SLOT_COUNT: usize = REGION_BYTES >> SLOT_SHIFT;
/// Slots holding the region header.
const HEADER_SLOTS: usize = 8;
/// Largest order: half a region (the header takes the first slots, so no span is larger).
pub const MAX_ORDER: usize = 9;
/// Largest request served by the buddy allocator.
pub const MEDIUM_MAX_BYTES: usize = 1 << 20;
/// Completely free regions kept mapped.
const FREE_REGIONS_KEEP: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum SlotState {
    /// Inside a span or a block.
    Interior = 0,
    /// The first slot of a free span.
    Free = 1,
    /// The first slot of an allocated block.
    Allocated = 2,
    /// The region header.
    Header = 3,
    /// The first slot of an allocated block parked in a thread's medium cache.
    Cached = 4,
}

impl SlotState {
    fn from_u8(v: u8) -> SlotState {
        match v {
            1 => SlotState::Free,
            2 => SlotState::Allocated,
            3 => SlotState::Header,
            4 => SlotState::Cached,
            _ => SlotState::Interior,
        }
    }
}

/// Metadata of one slot, meaningful at the first slot of a span or block. `state` is
/// atomic because the thread caches move blocks between Allocated and Cached without the
/// arena lock.
#[repr(C)]
struct SlotMeta {
    /// Order of a free span.
    order: u8,
    state: AtomicU8,
    /// Pages of an allocated block.
    pages: u16,
    /// Links on the free list of its order (a free span's head slot only).
    links: Links<SlotMeta>,
}

// SAFETY: the links are a field of the slot's metadata, found by address arithmetic alone;
// each slot has its own.
unsafe impl Node for SlotMeta {
    fn links(meta: *mut SlotMeta) -> *mut Links<SlotMeta> {
        meta.cast::<u8>()
            .wrapping_add(core::mem::offset_of!(SlotMeta, links))
            .cast()
    }
}

/// The header in the first slots of a region.
#[repr(C)]
struct RegionHeader {
    free_bytes: usize,
    /// Links on the arena's list of regions.
    links: Links<RegionHeader>,
    /// Per OS page: the stamp ([`stamp_of`]) of the time it became free and possibly
    /// resident; 0 when allocated, or free and reading as zeros.
    dirty_since: [u32; SLOT_COUNT],
    slots: [SlotMeta; SLOT_COUNT],
}

// SAFETY: the links are a field of the region header, found by address arithmetic alone;
// each region has its own header.
unsafe impl Node for RegionHeader {
    fn links(region: *mut RegionHeader) -> *mut Links<RegionHeader> {
        region
            .cast::<u8>()
            .wrapping_add(core::mem::offset_of!(RegionHeader, links))
            .cast()
    }
}

const _: () = assert!(core::mem::size_of::<RegionHeader>() <= HEADER_SLOTS << SLOT_SHIFT);
const USABLE_REGION_BYTES: usize = REGION_BYTES - (HEADER_SLOTS << SLOT_SHIFT);

/// Bytes in a span of `order`.
#[inline]
pub const fn span_bytes(order: usize) -> usize {
    1 << (SLOT_SHIFT as usize + order)
}

/// The stamp of `now_ms` in [`RegionHeader::dirty_since`]: the time modulo 2^32 ms (ages
/// are told apart up to 24 days), never 0, which means clean.
#[inline]
fn stamp_of(now_ms: u64) -> u32 {
    (now_ms as u32).max(1)
}

/// A validated medium request: the pages it takes and the order of the span it starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MediumRequest {
    /// Pages of the block.
    pub pages: usize,
    /// Order of the span the block starts (its alignment is that span's size).
    pub order: usize,
}

impl MediumRequest {
    /// The request for `size` bytes at `align_bytes`, if the buddy allocator serves it.
    pub fn new(size: usize, align_bytes: usize) -> Option<MediumRequest> {
        if size > MEDIUM_MAX_BYTES || align_bytes > MEDIUM_MAX_BYTES {
            return None;
        }
        let pages = size.max(1).div_ceil(OS_PAGE_BYTES);
        let span_pages = pages
            .next_power_of_two()
            .max(align_bytes >> SLOT_SHIFT)
            .max(1);
        Some(MediumRequest {
            pages,
            order: span_pages.trailing_zeros() as usize,
        })
    }

    /// Bytes of the block.
    pub fn bytes(self) -> usize {
        self.pages << SLOT_SHIFT
    }
}

/// Why a free was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FreeError {
    /// Not the start of an allocated block (interior pointer, double free, garbage).
    InvalidPointer,
}

/// What [`BuddyArena::census`] counts.
#[derive(Clone, Copy, Default, Debug)]
pub struct BuddyCensus {
    /// Regions mapped.
    pub regions: usize,
    /// Blocks allocated to the program.
    pub live_blocks: usize,
    /// Their bytes (whole OS pages).
    pub live_bytes: usize,
    /// Blocks freed by the program and parked in a thread's medium cache.
    pub cached_blocks: usize,
    /// Their bytes.
    pub cached_bytes: usize,
    /// Bytes in free spans.
    pub free_bytes: usize,
}

/// The buddy arena: free lists per order across all regions.
pub struct BuddyArena {
    free: [List<SlotMeta>; MAX_ORDER + 1],
    regions: List<RegionHeader>,
    /// Free OS pages that may be resident (the pages with a stamp), across all regions.
    dirty_pages: usize,
    allocated_bytes: usize,
}

// SAFETY: the arena only holds addresses of regions it manages; it is used under a Mutex.
unsafe impl Send for BuddyArena {}

impl Default for BuddyArena {
    fn default() -> Self {
        Self::new()
    }
}

/// The state of a slot.
///
/// # Safety
/// `meta` must be a slot of a live region.
#[inline]
unsafe fn state_of(meta: *mut SlotMeta) -> SlotState {
    // SAFETY: the caller guarantees a live slot; the field is atomic.
    SlotState::from_u8(unsafe { (*meta).state.load(Ordering::Acquire) })
}

/// Sets the state of a slot.
///
/// # Safety
/// `meta` must be a slot of a live region.
#[inline]
unsafe fn set_state(meta: *mut SlotMeta, state: SlotState) {
    // SAFETY: the caller guarantees a live slot; the field is atomic.
    unsafe { (*meta).state.store(state as u8, Ordering::Release) };
}

/// A slot's state, span order and block pages, as the region walks read them.
///
/// # Safety
/// `meta` must be a slot of a live region.
unsafe fn slot_fields(meta: *mut SlotMeta) -> (SlotState, usize, usize) {
    // SAFETY: the caller guarantees a live slot.
    unsafe {
        (
            state_of(meta),
            (*meta).order as usize,
            (*meta).pages as usize,
        )
    }
}

#[inline]
fn region_of(meta: *mut SlotMeta) -> *mut RegionHeader {
    region_map::chunk_base(meta as usize) as *mut RegionHeader
}

#[inline]
fn slot_index(meta: *mut SlotMeta) -> usize {
    let first = region_of(meta) as usize + core::mem::offset_of!(RegionHeader, slots);
    (meta as usize - first) / core::mem::size_of::<SlotMeta>()
}

#[inline]
fn slot_meta(region: *mut RegionHeader, index: usize) -> *mut SlotMeta {
    (region as usize
        + core::mem::offset_of!(RegionHeader, slots)
        + index * core::mem::size_of::<SlotMeta>()) as *mut SlotMeta
}

#[inline]
fn slot_address(region: *mut RegionHeader, index: usize) -> *mut u8 {
    (region as usize + (index << SLOT_SHIFT)) as *mut u8
}

/// The head slot of the allocated (or cached) block at `ptr`, if there is one.
fn block_meta(ptr: usize, wanted: SlotState) -> Option<*mut SlotMeta> {
    if ptr & (OS_PAGE_BYTES - 1) != 0 {
        return None;
    }
    let region = region_map::chunk_base(ptr) as *mut RegionHeader;
    let index = (ptr - region as usize) >> SLOT_SHIFT;
    let meta = slot_meta(region, index);
    // SAFETY: callers checked the region map: `region` is a live region header.
    (unsafe { state_of(meta) } == wanted).then_some(meta)
}

impl BuddyArena {
    /// An empty arena.
    pub const fn new() -> Self {
        BuddyArena {
            free: [const { List::new() }; MAX_ORDER + 1],
            regions: List::new(),
            dirty_pages: 0,
            allocated_bytes: 0,
        }
    }

    /// Bytes in allocated blocks (parked ones included).
    #[cfg(test)]
    pub fn allocated_bytes(&self) -> usize {
        self.allocated_bytes
    }

    /// The free list of `order`; a broken order (corrupt metadata) is fatal.
    fn free_list(&mut self, order: usize) -> &mut List<SlotMeta> {
        match self.free.get_mut(order) {
            Some(list) => list,
            None => crate::fatal::fatal("buddy: span order out of range (corrupt metadata)"),
        }
    }

    /// Bytes of free OS pages that may be resident.
    #[cfg(test)]
    pub fn dirty_bytes(&self) -> usize {
        self.dirty_pages << SLOT_SHIFT
    }

    /// Puts a free span on its list: at the front when its first OS page is dirty, at the
    /// back when clean, so that allocation takes resident pages first and leaves clean ones
    /// untouched (no page fault, no growth of the resident set while dirty pages wait).
    fn push_free(&mut self, meta: *mut SlotMeta, order: usize) {
        let index = slot_index(meta);
        // SAFETY: `meta` is a slot of a live region of ours, under the arena's lock.
        let dirty = unsafe { Self::stamps(region_of(meta), index, index + 1) }
            .first()
            .is_some_and(|&since| since != 0);
        // SAFETY: `meta` is the first slot of a free span in one of our regions, on no list.
        unsafe {
            (*meta).order = order as u8;
            set_state(meta, SlotState::Free);
            if dirty {
                self.free_list(order).push_front(meta);
            } else {
                self.free_list(order).push_back(meta);
            }
        }
    }

    fn unlink_free(&mut self, meta: *mut SlotMeta) {
        // SAFETY: `meta` is on the free list of its order.
        unsafe {
            let order = (*meta).order as usize;
            self.free_list(order).remove(meta);
            set_state(meta, SlotState::Interior);
        }
    }

    fn add_region<O: Os>(&mut self, os: &O) -> bool {
        let Some(base) = os.map(REGION_BYTES, REGION_BYTES) else {
            return false;
        };
        let region = base.as_ptr().cast::<RegionHeader>();
        // SAFETY: a fresh, exclusive, zeroed mapping large enough for the header. Zeroed
        // slot metadata is `Interior`, order 0, clean, with null links.
        unsafe {
            ptr::addr_of_mut!((*region).free_bytes).write(USABLE_REGION_BYTES);
            ptr::addr_of_mut!((*region).links).write(Links::new());
            for i in 0..HEADER_SLOTS {
                set_state(slot_meta(region, i), SlotState::Header);
            }
            self.regions.push_front(region);
        }
        // Slot 2^k starts the free span of order k, for k from log2(HEADER_SLOTS): they
        // tile the slots after the header.
        for order in HEADER_SLOTS.trailing_zeros() as usize..=MAX_ORDER {
            self.push_free(slot_meta(region, 1 << order), order);
        }
        region_map::set(region as usize, Kind::Buddy);
        true
    }

    /// The smallest order `>= order` with a free span, and that span.
    fn first_free_order(&self, order: usize) -> Option<(usize, *mut SlotMeta)> {
        self.free
            .iter()
            .enumerate()
            .skip(order)
            .find(|(_, list)| !list.is_empty())
            .map(|(o, list)| (o, list.head()))
    }

    /// Allocates a block for `request`. Returns its address and whether it reads as zeros.
    pub fn alloc<O: Os>(&mut self, os: &O, request: MediumRequest) -> Option<(NonNull<u8>, bool)> {
        let order = request.order;
        let mut found = self.first_free_order(order);
        if found.is_none() {
            if !self.add_region(os) {
                return None;
            }
            found = self.first_free_order(order);
        }
        let (mut j, meta) = found?;
        self.unlink_free(meta);
        let region = region_of(meta);
        let index = slot_index(meta);
        // Split down to the block's order: the upper halves become free spans.
        while j > order {
            j -= 1;
            self.push_free(slot_meta(region, index + (1 << j)), j);
        }
        self.give_back_tail(region, index, order, index + request.pages);
        let zeroed = self.take_pages(region, index, index + request.pages);
        // SAFETY: `meta` is ours and no longer on a list.
        unsafe {
            (*meta).pages = request.pages as u16;
            set_state(meta, SlotState::Allocated);
            (*region).free_bytes -= request.bytes();
        }
        self.allocated_bytes += request.bytes();
        crate::stats::held_add(request.bytes());
        NonNull::new(slot_address(region, index)).map(|p| (p, zeroed))
    }

    /// The pages' stamps, `[first, end)` of `region`.
    ///
    /// # Safety
    /// `region` must be a live region of this arena (whose lock the caller holds through
    /// `&mut self`); only the arena touches the stamps.
    unsafe fn stamps<'r>(region: *mut RegionHeader, first: usize, end: usize) -> &'r mut [u32] {
        // SAFETY: the caller guarantees a live region; the stamps are a field of its header
        // that only the arena's lock holder reads or writes.
        let all = unsafe { &mut *ptr::addr_of_mut!((*region).dirty_since) };
        match all.get_mut(first..end) {
            Some(pages) => pages,
            None => crate::fatal::fatal("buddy: page range out of the region (corrupt metadata)"),
        }
    }

    /// True when no page of `region` (a live region of ours) is dirty.
    fn is_clean(region: *mut RegionHeader) -> bool {
        // SAFETY: a live region of ours, read under the arena's lock (the callers hold it).
        unsafe { Self::stamps(region, 0, SLOT_COUNT) }
            .iter()
            .all(|&s| s == 0)
    }

    /// Pages `[first, end)` of `region` leave the free state (allocated, or taken by a
    /// growing block): their stamps are cleared. True when none was dirty (they read as
    /// zeros).
    fn take_pages(&mut self, region: *mut RegionHeader, first: usize, end: usize) -> bool {
        let mut dirty = 0;
        // SAFETY: pages of a live region of ours, under the arena's lock.
        for since in unsafe { Self::stamps(region, first, end) } {
            if *since != 0 {
                dirty += 1;
                *since = 0;
            }
        }
        self.dirty_pages -= dirty;
        dirty == 0
    }

    /// Pages `[first, end)` of `region` (allocated until now) become free and dirty at
    /// `now` (a stamp).
    fn dirty_pages_at(&mut self, region: *mut RegionHeader, first: usize, end: usize, now: u32) {
        // SAFETY: pages of a live region of ours, under the arena's lock.
        unsafe { Self::stamps(region, first, end) }.fill(now);
        self.dirty_pages += end - first;
    }

    /// Of the span at `index` of `order` (taken off the free lists), keeps `[index, end)` and
    /// frees the rest: walks down the halves of the span, freeing every upper half that the
    /// kept part does not reach (at most one span per order).
    fn give_back_tail(
        &mut self,
        region: *mut RegionHeader,
        index: usize,
        order: usize,
        end: usize,
    ) {
        let mut start = index;
        let mut size = 1usize << order;
        while start + size > end {
            size /= 2;
            if end <= start + size {
                let half = slot_meta(region, start + size);
                self.push_free(half, size.trailing_zeros() as usize);
            } else {
                start += size;
            }
        }
    }

    /// Resizes the allocated block at `ptr` to `new_pages` without moving it: a smaller
    /// block gives back its tail; a larger one takes the free spans that follow it. False
    /// (and nothing changed) when those pages are not free or `ptr` is not a block.
    pub fn resize_in_place<O: Os>(&mut self, os: &O, ptr: usize, new_pages: usize) -> bool {
        let Some(meta) = block_meta(ptr, SlotState::Allocated) else {
            return false;
        };
        let region = region_of(meta);
        let first = slot_index(meta);
        // SAFETY: an allocated block head of a live region.
        let pages = unsafe { (*meta).pages } as usize;
        let (old_end, new_end) = (first + pages, first + new_pages);
        if new_pages == 0 || new_pages > MEDIUM_MAX_BYTES >> SLOT_SHIFT || new_end > SLOT_COUNT {
            return false;
        }
        if new_end < old_end {
            self.dirty_pages_at(region, new_end, old_end, stamp_of(os.now_ms()));
            let mut at = new_end;
            while at < old_end {
                let order = Self::piece_order(at, old_end);
                self.free_piece(region, at, order);
                at += 1 << order;
            }
        } else if new_end > old_end {
            // First look, then take: every span between the block and its new end must be
            // free (a free span that holds the slot after the block starts right there).
            let mut at = old_end;
            while at < new_end {
                let head = slot_meta(region, at);
                // SAFETY: a slot of a live region.
                if unsafe { state_of(head) } != SlotState::Free {
                    return false;
                }
                // SAFETY: `head` is a slot of a live region (checked free just above).
                at += 1 << unsafe { (*head).order };
            }
            let mut at = old_end;
            while at < new_end {
                let head = slot_meta(region, at);
                // SAFETY: a free span head of a live region (checked above).
                let order = unsafe { (*head).order as usize };
                self.unlink_free(head);
                if at + (1 << order) > new_end {
                    self.give_back_tail(region, at, order, new_end);
                }
                at += 1 << order;
            }
            self.take_pages(region, old_end, new_end);
        }
        let (old_bytes, new_bytes) = (pages << SLOT_SHIFT, new_pages << SLOT_SHIFT);
        // SAFETY: `meta` is the allocated block head of a live region (the caller's block).
        unsafe {
            (*meta).pages = new_pages as u16;
            (*region).free_bytes = (*region).free_bytes + old_bytes - new_bytes;
        }
        self.allocated_bytes = self.allocated_bytes + new_bytes - old_bytes;
        crate::stats::held_resize(old_bytes, new_bytes);
        true
    }

    /// The order of the largest aligned piece starting at slot `at` that ends by `end`.
    fn piece_order(at: usize, end: usize) -> usize {
        let mut order = (at.trailing_zeros() as usize).min(MAX_ORDER);
        while at + (1 << order) > end {
            order -= 1;
        }
        order
    }

    /// Pages of the allocated block at `ptr`, or `None` if `ptr` is not one.
    pub fn allocated_pages(ptr: usize) -> Option<usize> {
        // SAFETY: `block_meta` returned a valid slot of a live region.
        block_meta(ptr, SlotState::Allocated).map(|m| unsafe { (*m).pages } as usize)
    }

    /// Usable bytes of the block at `ptr`, or `None` if `ptr` is not an allocated block.
    pub fn usable_size(ptr: usize) -> Option<usize> {
        Self::allocated_pages(ptr).map(|pages| pages << SLOT_SHIFT)
    }

    /// Moves the allocated block at `ptr` into a thread cache, without the arena lock.
    /// Returns its pages, or `None` when `ptr` is not an allocated block (a bad or double
    /// free: the compare-and-swap lets only one of two racing frees through).
    pub fn park_in_cache(ptr: usize) -> Option<usize> {
        let meta = block_meta(ptr, SlotState::Allocated)?;
        // SAFETY: `block_meta` returned a slot of a live region.
        unsafe {
            (*meta)
                .state
                .compare_exchange(
                    SlotState::Allocated as u8,
                    SlotState::Cached as u8,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .ok()?;
            Some((*meta).pages as usize)
        }
    }

    /// Takes a block out of a thread cache for reuse: it is allocated again.
    ///
    /// # Safety
    /// `ptr` must be a block parked by [`BuddyArena::park_in_cache`] and owned by the caller.
    pub unsafe fn unpark_from_cache(ptr: usize) {
        let region = region_map::chunk_base(ptr) as *mut RegionHeader;
        let meta = slot_meta(region, (ptr - region as usize) >> SLOT_SHIFT);
        // SAFETY: the caller guarantees a parked block of a live region.
        unsafe { set_state(meta, SlotState::Allocated) };
    }

    /// Frees the block at `ptr`, merging its pieces with free buddies.
    pub fn free<O: Os>(&mut self, os: &O, ptr: usize) -> Result<(), FreeError> {
        let meta = block_meta(ptr, SlotState::Allocated).ok_or(FreeError::InvalidPointer)?;
        let region = region_of(meta);
        let first = slot_index(meta);
        // SAFETY: `meta` is an allocated block head of a live region.
        let pages = unsafe { (*meta).pages } as usize;
        let bytes = pages << SLOT_SHIFT;
        // SAFETY: `meta` is an allocated block head of a live region (checked above), whose
        // slots are ours under the arena's lock.
        unsafe {
            set_state(meta, SlotState::Interior);
            (*region).free_bytes += bytes;
        }
        self.allocated_bytes -= bytes;
        crate::stats::held_sub(bytes);
        let end = first + pages;
        self.dirty_pages_at(region, first, end, stamp_of(os.now_ms()));
        // Cut [first, first + pages) into aligned power-of-two pieces.
        let mut at = first;
        while at < end {
            let order = Self::piece_order(at, end);
            self.free_piece(region, at, order);
            at += 1 << order;
        }
        Ok(())
    }

    /// Frees the span at `index` of `order`, merging it with free buddies (the pages keep
    /// their own stamps).
    fn free_piece(&mut self, region: *mut RegionHeader, mut index: usize, mut order: usize) {
        while order < MAX_ORDER {
            let buddy = slot_meta(region, index ^ (1 << order));
            // SAFETY: the buddy index is < SLOT_COUNT and in the same region.
            let (state, buddy_order) = unsafe { (state_of(buddy), (*buddy).order as usize) };
            if state != SlotState::Free || buddy_order != order {
                break;
            }
            self.unlink_free(buddy);
            index &= !(1 << order);
            order += 1;
        }
        self.push_free(slot_meta(region, index), order);
    }

    /// Unmaps a completely free region.
    ///
    /// # Safety
    /// `region` must be one of ours with no allocated block.
    unsafe fn release_region<O: Os>(&mut self, os: &O, region: *mut RegionHeader) {
        self.take_pages(region, HEADER_SLOTS, SLOT_COUNT);
        for order in HEADER_SLOTS.trailing_zeros() as usize..=MAX_ORDER {
            // A fully free region holds exactly the spans 2^k of order k.
            self.unlink_free(slot_meta(region, 1 << order));
        }
        // SAFETY: the region is on our list (caller).
        unsafe { self.regions.remove(region) };
        region_map::clear(region as usize);
        // SAFETY: the whole region mapping is ours and unused.
        unsafe { os.unmap(NonNull::new_unchecked(region.cast()), REGION_BYTES) };
    }

    /// Purges every dirty free page at once (trim); returns the bytes purged.
    pub fn purge<O: Os>(&mut self, os: &O) -> usize {
        self.purge_older_than(os, None)
    }

    /// The decay: purges the free pages that have been dirty for `delay_ms` or longer, and
    /// unmaps completely free regions (beyond [`FREE_REGIONS_KEEP`]) whose pages have all
    /// gone back that way. Returns the bytes purged or released. Called a few times per
    /// delay, so the pages go back in cohorts by the time they were freed, the coldest
    /// first, each about one delay after its last use; pages reused within the delay are
    /// never purged. A delay of 2^31 ms or more (`mallopt(M_TRIM_THRESHOLD, -1)`) purges
    /// nothing.
    pub fn decay<O: Os>(&mut self, os: &O, delay_ms: u64) -> usize {
        let Ok(min_age) = u32::try_from(delay_ms) else {
            return 0;
        };
        if min_age > i32::MAX as u32 {
            return 0;
        }
        let purged = if self.dirty_pages > 0 {
            self.purge_older_than(os, Some(min_age))
        } else {
            0
        };
        purged + self.release_free_regions(os, true)
    }

    /// Purges the dirty pages of free spans, only those dirty for `min_age` ms or longer
    /// when given; one `madvise` per run of such pages. Returns the bytes purged.
    fn purge_older_than<O: Os>(&mut self, os: &O, min_age: Option<u32>) -> usize {
        let now = stamp_of(os.now_ms());
        let mut purged_pages = 0;
        for (order, list) in self.free.iter().enumerate() {
            list.for_each(|meta| {
                let (region, index) = (region_of(meta), slot_index(meta));
                // SAFETY: free-list members are span heads of live regions of ours, and the
                // caller holds the arena (`&mut self`).
                let stamps = unsafe { Self::stamps(region, index, index + (1 << order)) };
                let old =
                    |since: u32| since != 0 && min_age.is_none_or(|a| now.wrapping_sub(since) >= a);
                let mut at = 0;
                while at < stamps.len() {
                    if !stamps.get(at).is_some_and(|&s| old(s)) {
                        at += 1;
                        continue;
                    }
                    let run = stamps.get(at..).map_or(0, |rest| {
                        rest.iter().position(|&s| !old(s)).unwrap_or(rest.len())
                    });
                    if let Some(pages) = stamps.get_mut(at..at + run) {
                        pages.fill(0);
                    }
                    // SAFETY: the run lies in a free span of a live region: no live block.
                    unsafe {
                        os.purge(
                            NonNull::new_unchecked(slot_address(region, index + at)),
                            run << SLOT_SHIFT,
                        )
                    };
                    purged_pages += run;
                    at += run;
                }
            });
        }
        self.dirty_pages -= purged_pages;
        purged_pages << SLOT_SHIFT
    }

    /// Releases completely free regions beyond the kept ones and purges the rest.
    pub fn trim<O: Os>(&mut self, os: &O) -> usize {
        self.release_free_regions(os, false) + self.purge(os)
    }

    /// Unmaps completely free regions beyond [`FREE_REGIONS_KEEP`] (with `clean_only`, only
    /// those with no dirty page: all aged out); returns the bytes. Only the decay and trim
    /// do this, never a free: a program whose live medium blocks come and go (a thread per
    /// request) would otherwise unmap a region at one free and map and fault it in again
    /// at the next allocation.
    fn release_free_regions<O: Os>(&mut self, os: &O, clean_only: bool) -> usize {
        let mut released = 0;
        let mut r = self.regions.head();
        let mut kept = 0;
        while !r.is_null() {
            // SAFETY: regions on our list are live, and the arena owns their links.
            let (next, free) = unsafe { (List::next(r), (*r).free_bytes == USABLE_REGION_BYTES) };
            if free {
                if kept < FREE_REGIONS_KEEP {
                    kept += 1;
                } else if !clean_only || Self::is_clean(r) {
                    // SAFETY: completely free region of ours.
                    unsafe { self.release_region(os, r) };
                    released += REGION_BYTES;
                }
            }
            r = next;
        }
        released
    }

    /// Counts the arena's blocks for the statistics: walks every region's slots (under the
    /// arena's lock, which the caller holds through `&self`).
    pub fn census(&self) -> BuddyCensus {
        let mut c = BuddyCensus {
            regions: self.regions.len(),
            ..BuddyCensus::default()
        };
        let mut r = self.regions.head();
        while !r.is_null() {
            let mut index = HEADER_SLOTS;
            while index < SLOT_COUNT {
                let meta = slot_meta(r, index);
                // SAFETY: a live region's slot array; the arena's lock is held.
                let (state, order, pages) = unsafe { slot_fields(meta) };
                let len = match state {
                    SlotState::Free => {
                        c.free_bytes += span_bytes(order);
                        1 << order
                    }
                    SlotState::Allocated => {
                        c.live_blocks += 1;
                        c.live_bytes += pages << SLOT_SHIFT;
                        pages
                    }
                    SlotState::Cached => {
                        c.cached_blocks += 1;
                        c.cached_bytes += pages << SLOT_SHIFT;
                        pages
                    }
                    SlotState::Interior | SlotState::Header => 1,
                };
                index += len.max(1);
            }
            // SAFETY: a live region header on our list.
            r = unsafe { List::next(r) };
        }
        c
    }

    /// Checks the arena's invariants; `Err` names the first violation.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut r = self.regions.head();
        let mut count = 0;
        while !r.is_null() {
            count += 1;
            if region_map::kind_of(r as usize) != Kind::Buddy {
                return Err("buddy: a region is not marked in the region map");
            }
            let mut index = HEADER_SLOTS;
            let mut free_bytes = 0;
            while index < SLOT_COUNT {
                let meta = slot_meta(r, index);
                // SAFETY: a live region's slot array.
                let (state, order, pages) = unsafe { slot_fields(meta) };
                let len = match state {
                    SlotState::Free => {
                        if order > MAX_ORDER || index % (1 << order) != 0 {
                            return Err("buddy: free span misaligned for its order");
                        }
                        free_bytes += span_bytes(order);
                        1 << order
                    }
                    SlotState::Allocated | SlotState::Cached if pages > 0 => pages,
                    _ => return Err("buddy: a span or block does not start where the last ended"),
                };
                for inner in index + 1..(index + len).min(SLOT_COUNT) {
                    // SAFETY: `inner < SLOT_COUNT` is a slot of the live region `r`.
                    if unsafe { state_of(slot_meta(r, inner)) } != SlotState::Interior {
                        return Err("buddy: a slot inside a span or block is not interior");
                    }
                }
                index += len;
            }
            if index != SLOT_COUNT {
                return Err("buddy: spans overrun the region");
            }
            // SAFETY: live region header.
            if free_bytes != unsafe { (*r).free_bytes } {
                return Err("buddy: region free byte count is wrong");
            }
            // SAFETY: `r` is a live region header on the arena's list.
            r = unsafe { List::next(r) };
        }
        if count != self.regions.len() {
            return Err("buddy: region count is wrong");
        }
        for (order, list) in self.free.iter().enumerate() {
            let mut meta = list.head();
            while !meta.is_null() {
                // SAFETY: free-list members are valid slot heads.
                unsafe {
                    if state_of(meta) != SlotState::Free || (*meta).order as usize != order {
                        return Err("buddy: free list holds a span of another order or state");
                    }
                    let buddy = slot_meta(region_of(meta), slot_index(meta) ^ (1 << order));
                    if order < MAX_ORDER
                        && state_of(buddy) == SlotState::Free
                        && (*buddy).order as usize == order
                    {
                        return Err("buddy: two free buddies were not merged");
                    }
                    meta = List::next(meta);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fake::FakeOs;
    use std::vec::Vec;

    fn request(size: usize, align: usize) -> MediumRequest {
        MediumRequest::new(size, align).unwrap()
    }

    #[test]
    fn requests_cover_medium_sizes() {
        assert_eq!(
            request(16 * 1024 + 1, 16),
            MediumRequest { pages: 5, order: 3 }
        );
        assert_eq!(
            request(40 * 1024, 16),
            MediumRequest {
                pages: 10,
                order: 4
            }
        );
        assert_eq!(
            request(MEDIUM_MAX_BYTES, 16),
            MediumRequest {
                pages: 256,
                order: 8
            }
        );
        assert_eq!(MediumRequest::new(MEDIUM_MAX_BYTES + 1, 16), None);
        assert_eq!(
            request(100, 256 * 1024),
            MediumRequest { pages: 1, order: 6 }
        );
    }

    #[test]
    fn split_trim_and_coalesce_restore_the_region() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let (a, zeroed) = arena.alloc(&os, request(20_000, 16)).unwrap();
        assert!(zeroed, "a fresh region reads as zeros");
        assert_eq!(arena.regions.len(), 1);
        let mut blocks = Vec::new();
        for (size, align) in [
            (40_960, 16),
            (17_000, 16),
            (300_000, 16),
            (5000, 65536),
            (1 << 20, 16),
        ] {
            let (p, _) = arena.alloc(&os, request(size, align)).unwrap();
            let addr = p.as_ptr() as usize;
            assert_eq!(addr % align.max(4096), 0, "aligned");
            assert_eq!(
                BuddyArena::usable_size(addr),
                Some(size.div_ceil(4096) * 4096)
            );
            blocks.push(addr);
            arena.check().unwrap();
        }
        assert_eq!(
            arena.regions.len(),
            1,
            "trimmed tails leave room for all of them"
        );
        for p in blocks.iter().rev() {
            arena.free(&os, *p).unwrap();
            arena.check().unwrap();
        }
        arena.free(&os, a.as_ptr() as usize).unwrap();
        arena.check().unwrap();
        for order in 3..=MAX_ORDER {
            assert!(
                !arena.free[order].is_empty(),
                "order {order} has its span back"
            );
        }
        assert_eq!(arena.allocated_bytes(), 0);
    }

    #[test]
    fn bad_frees_are_refused() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let (p, _) = arena.alloc(&os, request(64 * 1024, 16)).unwrap();
        let p = p.as_ptr() as usize;
        assert_eq!(arena.free(&os, p + 100), Err(FreeError::InvalidPointer));
        assert_eq!(arena.free(&os, p + 4096), Err(FreeError::InvalidPointer));
        arena.free(&os, p).unwrap();
        assert_eq!(
            arena.free(&os, p),
            Err(FreeError::InvalidPointer),
            "double free"
        );
        arena.check().unwrap();
    }

    #[test]
    fn map_failure_gives_none_and_the_arena_recovers() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        os.fail_nth_map(1);
        assert!(arena.alloc(&os, request(20_000, 16)).is_none());
        let (p, _) = arena.alloc(&os, request(20_000, 16)).unwrap();
        arena.free(&os, p.as_ptr() as usize).unwrap();
        arena.check().unwrap();
    }

    #[test]
    fn free_regions_beyond_the_kept_one_are_unmapped_by_trim() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        // Three 1 MiB blocks fit in a region (slots 256-511 and the two halves of 512-1023).
        let blocks: Vec<usize> = (0..6)
            .map(|_| arena.alloc(&os, request(1 << 20, 16)).unwrap().0.as_ptr() as usize)
            .collect();
        assert_eq!(arena.regions.len(), 2);
        for p in blocks {
            arena.free(&os, p).unwrap();
        }
        arena.check().unwrap();
        assert_eq!(arena.regions.len(), 2, "a free releases no region");
        arena.trim(&os);
        arena.check().unwrap();
        assert_eq!(arena.regions.len(), FREE_REGIONS_KEEP);
        assert_eq!(os.live_bytes(), (FREE_REGIONS_KEEP * REGION_BYTES) as isize);
    }

    #[test]
    fn purged_spans_read_as_zeros_and_say_so() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let (p, _) = arena.alloc(&os, request(128 * 1024, 16)).unwrap();
        // SAFETY: a block of 128 KiB we own.
        unsafe { p.as_ptr().write_bytes(0xAB, 128 * 1024) };
        arena.free(&os, p.as_ptr() as usize).unwrap();
        let (q, zeroed) = arena.alloc(&os, request(128 * 1024, 16)).unwrap();
        assert_eq!(q, p);
        assert!(!zeroed, "a reused dirty span is not zero");
        arena.free(&os, q.as_ptr() as usize).unwrap();
        arena.purge(&os);
        let (r, zeroed) = arena.alloc(&os, request(128 * 1024, 16)).unwrap();
        assert!(zeroed);
        // SAFETY: a block of 128 KiB we own.
        let bytes = unsafe { core::slice::from_raw_parts(r.as_ptr(), 128 * 1024) };
        assert!(bytes.iter().all(|&b| b == 0));
        arena.free(&os, r.as_ptr() as usize).unwrap();
    }

    #[test]
    fn a_span_merged_from_dirty_and_clean_halves_purges_only_the_dirty_pages() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        // Two buddies of 64 KiB (order 4) in a fresh region (slots 32 and 48; slots 16-31
        // go first, and their buddy is the header).
        let (_first, _) = arena.alloc(&os, request(64 * 1024, 64 * 1024)).unwrap();
        let (a, _) = arena.alloc(&os, request(64 * 1024, 64 * 1024)).unwrap();
        let (b, _) = arena.alloc(&os, request(64 * 1024, 64 * 1024)).unwrap();
        let (a, b) = (a.as_ptr() as usize, b.as_ptr() as usize);
        assert_eq!(a ^ b, 64 * 1024, "buddies");
        // SAFETY: blocks of 64 KiB we own.
        unsafe {
            (a as *mut u8).write_bytes(0xA1, 64 * 1024);
            (b as *mut u8).write_bytes(0xB1, 64 * 1024);
        }
        arena.free(&os, b).unwrap();
        assert_eq!(arena.purge(&os), 64 * 1024);
        arena.free(&os, a).unwrap();
        arena.check().unwrap();
        assert_eq!(arena.dirty_bytes(), 64 * 1024, "only a's pages are dirty");
        let (calls, bytes) = (os.purge_calls(), os.purged_bytes());
        assert_eq!(
            arena.purge(&os),
            64 * 1024,
            "a purge takes only the dirty half"
        );
        assert_eq!(os.purge_calls(), calls + 1, "in one run");
        assert_eq!(os.purged_bytes(), bytes + 64 * 1024);
        assert_eq!(arena.dirty_bytes(), 0);
    }

    #[test]
    fn a_block_over_dirty_and_clean_pages_says_it_is_not_zeroed() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let (a, _) = arena.alloc(&os, request(32 * 1024, 64 * 1024)).unwrap();
        // SAFETY: a block of 32 KiB we own.
        unsafe { a.as_ptr().write_bytes(0xA1, 32 * 1024) };
        arena.free(&os, a.as_ptr() as usize).unwrap();
        // 64 KiB over the dirty 32 KiB and 32 clean ones: not zeroed.
        let (c, zeroed) = arena.alloc(&os, request(64 * 1024, 64 * 1024)).unwrap();
        assert_eq!(c, a);
        assert!(!zeroed);
        arena.free(&os, c.as_ptr() as usize).unwrap();
        arena.purge(&os);
        let (d, zeroed) = arena.alloc(&os, request(64 * 1024, 64 * 1024)).unwrap();
        assert!(zeroed);
        // SAFETY: a block of 64 KiB we own.
        let bytes = unsafe { core::slice::from_raw_parts(d.as_ptr(), 64 * 1024) };
        assert!(bytes.iter().all(|&x| x == 0));
        arena.free(&os, d.as_ptr() as usize).unwrap();
    }

    #[test]
    fn the_decay_purges_by_age_coldest_first() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let blocks: Vec<usize> = (0..4)
            .map(|_| {
                arena
                    .alloc(&os, request(256 * 1024, 16))
                    .unwrap()
                    .0
                    .as_ptr() as usize
            })
            .collect();
        // Two freed now, two 600 ms later.
        arena.free(&os, blocks[0]).unwrap();
        arena.free(&os, blocks[1]).unwrap();
        os.advance_ms(600);
        arena.free(&os, blocks[2]).unwrap();
        arena.free(&os, blocks[3]).unwrap();
        assert_eq!(arena.dirty_bytes(), 1 << 20);
        // Freed less than a delay ago: nothing goes.
        assert_eq!(arena.decay(&os, 1000), 0);
        assert_eq!(os.purge_calls(), 0);
        // 1000 ms after the first two: only they go.
        os.advance_ms(400);
        assert_eq!(arena.decay(&os, 1000), 512 * 1024);
        assert_eq!(arena.dirty_bytes(), 512 * 1024);
        // Reused pages are not purged: the third block is taken again.
        let (again, zeroed) = arena.alloc(&os, request(256 * 1024, 16)).unwrap();
        assert!(
            !zeroed || again.as_ptr() as usize == blocks[0] || again.as_ptr() as usize == blocks[1]
        );
        os.advance_ms(600);
        let left = arena.dirty_bytes();
        assert_eq!(arena.decay(&os, 1000), left, "the rest has aged out");
        assert_eq!(arena.dirty_bytes(), 0);
        arena.free(&os, again.as_ptr() as usize).unwrap();
        arena.check().unwrap();
        // A delay of "never" purges nothing; trim purges everything at once, however young.
        assert_eq!(arena.decay(&os, u64::from(u32::MAX)), 0);
        assert_eq!(arena.trim(&os), 256 * 1024);
        assert_eq!(arena.dirty_bytes(), 0);
    }

    #[test]
    fn the_decay_unmaps_a_free_region_once_its_pages_aged_out() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let blocks: Vec<usize> = (0..6)
            .map(|_| arena.alloc(&os, request(1 << 20, 16)).unwrap().0.as_ptr() as usize)
            .collect();
        assert_eq!(arena.regions.len(), 2);
        for p in blocks {
            arena.free(&os, p).unwrap();
        }
        os.advance_ms(500);
        arena.decay(&os, 1000);
        assert_eq!(arena.regions.len(), 2, "young pages keep their region");
        os.advance_ms(500);
        arena.decay(&os, 1000);
        arena.check().unwrap();
        assert_eq!(arena.regions.len(), FREE_REGIONS_KEEP);
        assert_eq!(os.live_bytes(), (FREE_REGIONS_KEEP * REGION_BYTES) as isize);
    }

    #[test]
    fn blocks_grow_and_shrink_in_place() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let (p, _) = arena.alloc(&os, request(20 * 4096, 16)).unwrap();
        let p = p.as_ptr() as usize;
        // The trimmed tail follows the block: it can grow into it, and past it.
        assert!(arena.resize_in_place(&os, p, 32));
        arena.check().unwrap();
        assert!(arena.resize_in_place(&os, p, 100));
        assert_eq!(BuddyArena::usable_size(p), Some(100 * 4096));
        arena.check().unwrap();
        // A block right after it stops the growth.
        let (q, _) = arena.alloc(&os, request(4096, 16)).unwrap();
        let q = q.as_ptr() as usize;
        if q > p {
            let room = (q - p) / 4096;
            assert!(
                !arena.resize_in_place(&os, p, room + 1),
                "cannot grow over another block"
            );
            assert_eq!(BuddyArena::usable_size(p), Some(100 * 4096), "unchanged");
        }
        assert!(arena.resize_in_place(&os, p, 7));
        arena.check().unwrap();
        arena.free(&os, q).unwrap();
        arena.free(&os, p).unwrap();
        arena.check().unwrap();
        assert_eq!(arena.allocated_bytes(), 0);
    }

    #[test]
    fn random_mix_keeps_the_invariants() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let mut live: Vec<usize> = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if live.len() > 40 || (x & 1 == 0 && !live.is_empty()) {
                let p = live.swap_remove((x >> 8) as usize % live.len());
                arena.free(&os, p).unwrap();
            } else if x & 6 == 2 && !live.is_empty() {
                let p = live[(x >> 8) as usize % live.len()];
                arena.resize_in_place(&os, p, 1 + (x >> 30) as usize % 256);
            } else {
                let size = 16_385 + (x >> 20) as usize % (MEDIUM_MAX_BYTES - 16_385);
                let align = 1usize << (4 + (x >> 50) % 14);
                let (p, _) = arena.alloc(&os, request(size, align)).unwrap();
                assert_eq!(p.as_ptr() as usize % align, 0);
                live.push(p.as_ptr() as usize);
            }
        }
        arena.check().unwrap();
        for p in live {
            arena.free(&os, p).unwrap();
        }
        arena.check().unwrap();
        assert_eq!(arena.allocated_bytes(), 0);
    }
}
