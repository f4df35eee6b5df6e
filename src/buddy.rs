//! The buddy allocator: medium requests (above the slab limit, up to [`MEDIUM_MAX_BYTES`])
//! as power-of-two *spans* carved from 4 MiB, 4 MiB-aligned regions.
//!
//! ```text
//! region base (4 MiB aligned)
//! ├── span slot 0 (32 KiB): RegionHeader { spans[128] metadata }
//! ├── slot 1 (32 KiB), slots 2-3 (64 KiB), 4-7, 8-15, 16-31, 32-63 (1 MiB), 64-127 (2 MiB)
//! ```
//! A span of order `k` is `32 KiB << k` bytes and starts at a slot index that is a multiple
//! of `2^k`; its buddy is at `index ^ 2^k`. Allocation pops the smallest free span that fits
//! and splits it down (O(orders)); free merges with the buddy while the buddy is a free span
//! of the same order (O(orders)). Spans are aligned to their size, which serves aligned
//! requests for free.
//!
//! Metadata (order, state, links) lives in the region header, never in free spans, so free
//! spans can be purged. A span remembers whether it may be resident (`dirty`); a clean span
//! reads as zeros, which lets `calloc` skip zeroing.
//!
//! One arena under one lock, as the design allows to start with: medium requests are rarer
//! than small ones by orders of magnitude in the programs we measure.

use crate::os::Os;
use crate::region_map::{self, Kind, CHUNK_BYTES};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, Ordering};

/// Bytes in a region.
pub const REGION_BYTES: usize = CHUNK_BYTES;
/// log2 of the smallest span.
pub const MIN_SPAN_SHIFT: u32 = 15;
/// Slots (smallest spans) per region.
pub const SLOT_COUNT: usize = REGION_BYTES >> MIN_SPAN_SHIFT;
/// Largest order (a span of half a region: slot 0 holds the header, so no span is larger).
pub const MAX_ORDER: usize = 6;
/// Largest request served by the buddy allocator.
pub const MEDIUM_MAX_BYTES: usize = 1 << 20;
/// Free dirty bytes tolerated before free spans are purged.
const DIRTY_LIMIT_BYTES: usize = 16 << 20;
/// Completely free regions kept mapped.
const FREE_REGIONS_KEEP: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum SlotState {
    /// Inside a larger span, or not yet part of any.
    Interior = 0,
    /// The first slot of a free span.
    Free = 1,
    /// The first slot of an allocated span.
    Allocated = 2,
    /// The region header.
    Header = 3,
    /// The first slot of an allocated span parked in a thread's medium cache.
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

/// Metadata of one slot; meaningful at the first slot of a span. `state` is atomic because
/// the thread caches move spans between Allocated and Cached without the arena lock.
#[repr(C)]
struct SlotMeta {
    order: u8,
    state: AtomicU8,
    dirty: bool,
    next: *mut SlotMeta,
    prev: *mut SlotMeta,
}

/// The header in slot 0 of a region.
#[repr(C)]
struct RegionHeader {
    free_bytes: usize,
    next: *mut RegionHeader,
    prev: *mut RegionHeader,
    slots: [SlotMeta; SLOT_COUNT],
}

const _: () = assert!(core::mem::size_of::<RegionHeader>() <= 1 << MIN_SPAN_SHIFT);
const USABLE_REGION_BYTES: usize = REGION_BYTES - (1 << MIN_SPAN_SHIFT);

/// Bytes in a span of `order`.
#[inline]
pub const fn span_bytes(order: usize) -> usize {
    1 << (MIN_SPAN_SHIFT as usize + order)
}

/// The order serving `size` bytes at `align_bytes`, if the buddy allocator can.
pub fn order_for(size: usize, align_bytes: usize) -> Option<usize> {
    let need = size.max(align_bytes).max(1 << MIN_SPAN_SHIFT);
    if need > MEDIUM_MAX_BYTES {
        return None;
    }
    let bits = need.next_power_of_two().trailing_zeros();
    Some((bits - MIN_SPAN_SHIFT) as usize)
}

/// Why a free was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FreeError {
    /// Not the start of an allocated span (interior pointer, double free, garbage).
    InvalidPointer,
}

/// The buddy arena: free lists per order across all regions.
pub struct BuddyArena {
    free: [*mut SlotMeta; MAX_ORDER + 1],
    regions: *mut RegionHeader,
    region_count: usize,
    dirty_free_bytes: usize,
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

#[inline]
fn region_of(meta: *mut SlotMeta) -> *mut RegionHeader {
    region_map::chunk_base(meta as usize) as *mut RegionHeader
}

#[inline]
fn slot_index(meta: *mut SlotMeta) -> usize {
    let region = region_of(meta);
    // SAFETY (arithmetic only): `meta` points into `region`'s slot array.
    let first = unsafe { ptr::addr_of_mut!((*region).slots) }.cast::<SlotMeta>();
    (meta as usize - first as usize) / core::mem::size_of::<SlotMeta>()
}

#[inline]
fn slot_meta(region: *mut RegionHeader, index: usize) -> *mut SlotMeta {
    // SAFETY (arithmetic only): callers pass index < SLOT_COUNT.
    unsafe {
        ptr::addr_of_mut!((*region).slots)
            .cast::<SlotMeta>()
            .add(index)
    }
}

#[inline]
fn slot_address(region: *mut RegionHeader, index: usize) -> *mut u8 {
    (region as usize + (index << MIN_SPAN_SHIFT)) as *mut u8
}

impl BuddyArena {
    /// An empty arena.
    pub const fn new() -> Self {
        BuddyArena {
            free: [ptr::null_mut(); MAX_ORDER + 1],
            regions: ptr::null_mut(),
            region_count: 0,
            dirty_free_bytes: 0,
            allocated_bytes: 0,
        }
    }

    /// Bytes in allocated spans.
    pub fn allocated_bytes(&self) -> usize {
        self.allocated_bytes
    }

    /// Bytes of regions mapped.
    pub fn mapped_bytes(&self) -> usize {
        self.region_count * REGION_BYTES
    }

    fn push_free(&mut self, meta: *mut SlotMeta, order: usize) {
        // SAFETY: `meta` is the first slot of a free span in one of our regions; the list's
        // members are valid.
        unsafe {
            (*meta).order = order as u8;
            set_state(meta, SlotState::Free);
            (*meta).prev = ptr::null_mut();
            (*meta).next = self.free[order];
            if !self.free[order].is_null() {
                (*self.free[order]).prev = meta;
            }
        }
        self.free[order] = meta;
    }

    fn unlink_free(&mut self, meta: *mut SlotMeta) {
        // SAFETY: `meta` is on the free list of its order; neighbours are valid.
        unsafe {
            let order = (*meta).order as usize;
            let (prev, next) = ((*meta).prev, (*meta).next);
            if prev.is_null() {
                self.free[order] = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            set_state(meta, SlotState::Interior);
        }
    }

    fn add_region<O: Os>(&mut self, os: &O) -> bool {
        let Some(base) = os.map(REGION_BYTES, REGION_BYTES) else {
            return false;
        };
        let region = base.as_ptr().cast::<RegionHeader>();
        // SAFETY: a fresh, exclusive mapping large enough for the header.
        unsafe {
            ptr::addr_of_mut!((*region).free_bytes).write(USABLE_REGION_BYTES);
            ptr::addr_of_mut!((*region).prev).write(ptr::null_mut());
            ptr::addr_of_mut!((*region).next).write(self.regions);
            if !self.regions.is_null() {
                (*self.regions).prev = region;
            }
            for i in 0..SLOT_COUNT {
                slot_meta(region, i).write(SlotMeta {
                    order: 0,
                    state: AtomicU8::new(SlotState::Interior as u8),
                    dirty: false,
                    next: ptr::null_mut(),
                    prev: ptr::null_mut(),
                });
            }
            set_state(slot_meta(region, 0), SlotState::Header);
        }
        self.regions = region;
        self.region_count += 1;
        // Slot 2^k starts the free span of order k, for every k: they tile slots 1..128.
        for order in 0..=MAX_ORDER {
            self.push_free(slot_meta(region, 1 << order), order);
        }
        region_map::set(region as usize, Kind::Buddy);
        true
    }

    /// Allocates a span of `order`. Returns its address and whether it reads as zeros.
    pub fn alloc<O: Os>(&mut self, os: &O, order: usize) -> Option<(NonNull<u8>, bool)> {
        let mut found = (order..=MAX_ORDER).find(|&o| !self.free[o].is_null());
        if found.is_none() {
            if !self.add_region(os) {
                return None;
            }
            found = (order..=MAX_ORDER).find(|&o| !self.free[o].is_null());
        }
        let mut j = found?;
        let meta = self.free[j];
        self.unlink_free(meta);
        let region = region_of(meta);
        let index = slot_index(meta);
        // SAFETY: `meta` was a free span head in `region`.
        let dirty = unsafe { (*meta).dirty };
        while j > order {
            j -= 1;
            let half = slot_meta(region, index + (1 << j));
            // SAFETY: the upper half of the span being split lies in the same region.
            unsafe { (*half).dirty = dirty };
            self.push_free(half, j);
        }
        // SAFETY: `meta` is ours and no longer on a list.
        unsafe {
            (*meta).order = order as u8;
            set_state(meta, SlotState::Allocated);
            (*region).free_bytes -= span_bytes(order);
        }
        if dirty {
            self.dirty_free_bytes = self.dirty_free_bytes.saturating_sub(span_bytes(order));
        }
        self.allocated_bytes += span_bytes(order);
        NonNull::new(slot_address(region, index)).map(|p| (p, !dirty))
    }

    /// The allocated span starting at `ptr`, if there is one.
    fn allocated_meta(ptr: usize) -> Option<*mut SlotMeta> {
        if ptr & ((1 << MIN_SPAN_SHIFT) - 1) != 0 {
            return None;
        }
        let region = region_map::chunk_base(ptr) as *mut RegionHeader;
        let index = (ptr - region as usize) >> MIN_SPAN_SHIFT;
        let meta = slot_meta(region, index);
        // SAFETY: callers checked the region map: `region` is a live region header.
        (unsafe { state_of(meta) } == SlotState::Allocated).then_some(meta)
    }

    /// The order of the allocated span at `ptr`, or `None` if `ptr` is not one.
    pub fn allocated_order(ptr: usize) -> Option<usize> {
        // SAFETY: `allocated_meta` returned a valid slot of a live region.
        Self::allocated_meta(ptr).map(|m| unsafe { (*m).order } as usize)
    }

    /// Usable bytes of the span at `ptr`, or `None` if `ptr` is not an allocated span.
    pub fn usable_size(ptr: usize) -> Option<usize> {
        Self::allocated_order(ptr).map(span_bytes)
    }

    /// Moves the allocated span at `ptr` into a thread cache, without the arena lock.
    /// Returns its order, or `None` when `ptr` is not an allocated span (a bad or double
    /// free: the compare-and-swap lets only one of two racing frees through).
    pub fn park_in_cache(ptr: usize) -> Option<usize> {
        let meta = Self::allocated_meta(ptr)?;
        // SAFETY: `allocated_meta` returned a slot of a live region.
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
            Some((*meta).order as usize)
        }
    }

    /// Takes a span out of a thread cache for reuse: it is allocated again.
    ///
    /// # Safety
    /// `ptr` must be a span parked by [`BuddyArena::park_in_cache`] and owned by the caller.
    pub unsafe fn unpark_from_cache(ptr: usize) {
        let region = region_map::chunk_base(ptr) as *mut RegionHeader;
        let meta = slot_meta(region, (ptr - region as usize) >> MIN_SPAN_SHIFT);
        // SAFETY: the caller guarantees a parked span of a live region.
        unsafe { set_state(meta, SlotState::Allocated) };
    }

    /// Frees the span at `ptr`, merging it with free buddies.
    pub fn free<O: Os>(&mut self, os: &O, ptr: usize) -> Result<(), FreeError> {
        let meta = Self::allocated_meta(ptr).ok_or(FreeError::InvalidPointer)?;
        let region = region_of(meta);
        let mut index = slot_index(meta);
        // SAFETY: `meta` is an allocated span head of a live region.
        let mut order = unsafe { (*meta).order } as usize;
        let bytes = span_bytes(order);
        // SAFETY: as above.
        unsafe {
            set_state(meta, SlotState::Interior);
            (*region).free_bytes += bytes;
        }
        self.allocated_bytes -= bytes;
        self.dirty_free_bytes += bytes;
        let mut dirty = true;
        while order < MAX_ORDER {
            let buddy = slot_meta(region, index ^ (1 << order));
            // SAFETY: the buddy index is < SLOT_COUNT and in the same region.
            let (state, buddy_order, buddy_dirty) =
                unsafe { (state_of(buddy), (*buddy).order as usize, (*buddy).dirty) };
            if state != SlotState::Free || buddy_order != order {
                break;
            }
            self.unlink_free(buddy);
            dirty |= buddy_dirty;
            index &= !(1 << order);
            order += 1;
        }
        let head = slot_meta(region, index);
        // SAFETY: `head` is the first slot of the merged span in our region.
        unsafe { (*head).dirty = dirty };
        self.push_free(head, order);
        // SAFETY: live region header.
        if unsafe { (*region).free_bytes } == USABLE_REGION_BYTES {
            self.maybe_release_region(os, region);
        }
        if self.dirty_free_bytes > DIRTY_LIMIT_BYTES {
            self.purge(os);
        }
        Ok(())
    }

    /// Unmaps a completely free region unless it is one of the few kept.
    fn maybe_release_region<O: Os>(&mut self, os: &O, region: *mut RegionHeader) {
        let mut free_regions = 0;
        let mut r = self.regions;
        while !r.is_null() {
            // SAFETY: regions on our list are live.
            unsafe {
                if (*r).free_bytes == USABLE_REGION_BYTES {
                    free_regions += 1;
                }
                r = (*r).next;
            }
        }
        if free_regions > FREE_REGIONS_KEEP {
            // SAFETY: the region is completely free and ours.
            unsafe { self.release_region(os, region) };
        }
    }

    /// Unmaps a completely free region.
    ///
    /// # Safety
    /// `region` must be one of ours with no allocated span.
    unsafe fn release_region<O: Os>(&mut self, os: &O, region: *mut RegionHeader) {
        for order in 0..=MAX_ORDER {
            let meta = slot_meta(region, 1 << order);
            // SAFETY: a fully free region holds exactly the spans 2^k of order k.
            if unsafe { (*meta).dirty } {
                self.dirty_free_bytes = self.dirty_free_bytes.saturating_sub(span_bytes(order));
            }
            self.unlink_free(meta);
        }
        // SAFETY: region links are valid.
        unsafe {
            let (prev, next) = ((*region).prev, (*region).next);
            if prev.is_null() {
                self.regions = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
        }
        self.region_count -= 1;
        region_map::clear(region as usize);
        // SAFETY: the whole region mapping is ours and unused.
        unsafe { os.unmap(NonNull::new_unchecked(region.cast()), REGION_BYTES) };
    }

    /// Purges every dirty free span; returns the bytes purged.
    pub fn purge<O: Os>(&mut self, os: &O) -> usize {
        let mut purged = 0;
        for order in 0..=MAX_ORDER {
            let mut meta = self.free[order];
            while !meta.is_null() {
                // SAFETY: free-list members are valid slot heads of live regions.
                unsafe {
                    if (*meta).dirty {
                        let addr = slot_address(region_of(meta), slot_index(meta));
                        os.purge(NonNull::new_unchecked(addr), span_bytes(order));
                        (*meta).dirty = false;
                        purged += span_bytes(order);
                    }
                    meta = (*meta).next;
                }
            }
        }
        self.dirty_free_bytes = 0;
        purged
    }

    /// Releases completely free regions beyond the kept ones and purges the rest.
    pub fn trim<O: Os>(&mut self, os: &O) -> usize {
        let mut released = 0;
        let mut r = self.regions;
        let mut kept = 0;
        while !r.is_null() {
            // SAFETY: regions on our list are live.
            let (next, free) = unsafe { ((*r).next, (*r).free_bytes == USABLE_REGION_BYTES) };
            if free {
                if kept < FREE_REGIONS_KEEP {
                    kept += 1;
                } else {
                    // SAFETY: completely free region of ours.
                    unsafe { self.release_region(os, r) };
                    released += REGION_BYTES;
                }
            }
            r = next;
        }
        released + self.purge(os)
    }

    /// Checks the arena's invariants; `Err` names the first violation.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut r = self.regions;
        let mut count = 0;
        while !r.is_null() {
            count += 1;
            let mut index = 1;
            let mut free_bytes = 0;
            while index < SLOT_COUNT {
                let meta = slot_meta(r, index);
                // SAFETY: a live region's slot array.
                let (state, order) = unsafe { (state_of(meta), (*meta).order as usize) };
                if order > MAX_ORDER || index % (1 << order) != 0 {
                    return Err("buddy: span misaligned for its order");
                }
                match state {
                    SlotState::Free => free_bytes += span_bytes(order),
                    SlotState::Allocated | SlotState::Cached => {}
                    _ => return Err("buddy: a span does not start where the previous ended"),
                }
                index += 1 << order;
            }
            if index != SLOT_COUNT {
                return Err("buddy: spans overrun the region");
            }
            // SAFETY: live region header.
            if free_bytes != unsafe { (*r).free_bytes } {
                return Err("buddy: region free byte count is wrong");
            }
            // SAFETY: as above.
            r = unsafe { (*r).next };
        }
        if count != self.region_count {
            return Err("buddy: region count is wrong");
        }
        for order in 0..=MAX_ORDER {
            let mut meta = self.free[order];
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
                    meta = (*meta).next;
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

    #[test]
    fn orders_cover_medium_sizes() {
        assert_eq!(order_for(16 * 1024 + 1, 16), Some(0));
        assert_eq!(order_for(32 * 1024, 16), Some(0));
        assert_eq!(order_for(32 * 1024 + 1, 16), Some(1));
        assert_eq!(order_for(MEDIUM_MAX_BYTES, 16), Some(5));
        assert_eq!(order_for(MEDIUM_MAX_BYTES + 1, 16), None);
        assert_eq!(order_for(100, 256 * 1024), Some(3));
    }

    #[test]
    fn split_and_coalesce_restore_the_region() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let (a, zeroed) = arena.alloc(&os, 0).unwrap();
        assert!(zeroed, "a fresh region reads as zeros");
        assert_eq!(arena.region_count, 1);
        let mut spans = Vec::new();
        for order in [0, 1, 0, 2, 3, 5] {
            let (p, _) = arena.alloc(&os, order).unwrap();
            assert_eq!(
                p.as_ptr() as usize % span_bytes(order),
                0,
                "aligned to its size"
            );
            assert_eq!(
                BuddyArena::usable_size(p.as_ptr() as usize),
                Some(span_bytes(order))
            );
            spans.push(p.as_ptr() as usize);
            arena.check().unwrap();
        }
        for p in spans.iter().rev() {
            arena.free(&os, *p).unwrap();
            arena.check().unwrap();
        }
        arena.free(&os, a.as_ptr() as usize).unwrap();
        arena.check().unwrap();
        // Everything merged back: the region is one free span per order again.
        for order in 0..=MAX_ORDER {
            assert!(
                !arena.free[order].is_null(),
                "order {order} has its span back"
            );
        }
        assert_eq!(arena.allocated_bytes(), 0);
    }

    #[test]
    fn bad_frees_are_refused() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let (p, _) = arena.alloc(&os, 1).unwrap();
        let p = p.as_ptr() as usize;
        assert_eq!(arena.free(&os, p + 4096), Err(FreeError::InvalidPointer));
        assert_eq!(
            arena.free(&os, p + (1 << MIN_SPAN_SHIFT)),
            Err(FreeError::InvalidPointer)
        );
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
        assert!(arena.alloc(&os, 0).is_none());
        let (p, _) = arena.alloc(&os, 0).unwrap();
        arena.free(&os, p.as_ptr() as usize).unwrap();
        arena.check().unwrap();
    }

    #[test]
    fn free_regions_beyond_the_kept_one_are_unmapped() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        // Two regions' worth of 1 MiB spans (three fit in a region: slots 32-63 and two
        // halves of the 2 MiB span).
        let spans: Vec<usize> = (0..6)
            .map(|_| arena.alloc(&os, 5).unwrap().0.as_ptr() as usize)
            .collect();
        assert_eq!(arena.region_count, 2);
        for p in spans {
            arena.free(&os, p).unwrap();
        }
        arena.check().unwrap();
        assert_eq!(arena.region_count, FREE_REGIONS_KEEP);
        assert_eq!(os.live_bytes(), (FREE_REGIONS_KEEP * REGION_BYTES) as isize);
        assert!(arena.trim(&os) > 0 || arena.dirty_free_bytes == 0);
    }

    #[test]
    fn purged_spans_read_as_zeros_and_say_so() {
        let os = FakeOs::new();
        let mut arena = BuddyArena::new();
        let (p, _) = arena.alloc(&os, 2).unwrap();
        // SAFETY: a span of order 2 we own.
        unsafe { p.as_ptr().write_bytes(0xAB, span_bytes(2)) };
        arena.free(&os, p.as_ptr() as usize).unwrap();
        let (q, zeroed) = arena.alloc(&os, 2).unwrap();
        assert_eq!(q, p);
        assert!(!zeroed, "reused dirty span is not zero");
        arena.free(&os, q.as_ptr() as usize).unwrap();
        arena.purge(&os);
        let (r, zeroed) = arena.alloc(&os, 2).unwrap();
        assert!(zeroed);
        // SAFETY: a span of order 2 we own.
        let bytes = unsafe { core::slice::from_raw_parts(r.as_ptr(), span_bytes(2)) };
        assert!(bytes.iter().all(|&b| b == 0));
        arena.free(&os, r.as_ptr() as usize).unwrap();
    }
}
