//! Sampled blocks: memory of their own, so that `free` knows one from its region-map byte.
//!
//! Every chunk that holds sampled blocks is marked [`Kind::Sampled`]; the free fast path
//! only tests for `Kind::Slab`, so an unsampled small block pays nothing for this, and a
//! sampled one goes to `free_big` with the other non-slab kinds.
//!
//! ```text
//! slot area (4 MiB, 4 MiB-aligned; one slot size 2^k, 128 B .. 1 MiB):
//!   base: AreaHeader | ... first OS page ... | slot | slot | ...   (slots at multiples of 2^k)
//!   slot: [padding] BlockHeader (64 B) | user block ...            (user = slot + max(64, align))
//!
//! single area (requests that need more than 1 MiB): one mapping, 4 MiB-aligned
//!   base: AreaHeader | ... | BlockHeader | user block ...          (user = base + max(128, align))
//! ```
//!
//! The block header sits just below the user pointer and ends with the block's state: the
//! address mixed with a per-process secret while the block is live, another value once it
//! is freed. `free` claims a block by swapping that word, so a double free (even two at
//! once in two threads) or a pointer into the middle of a block is reported, never
//! followed. The area header at the chunk base gives the slot size, so a header is found
//! without a search and only read inside the mapping.
//!
//! Slots are served from per-size free lists (links in the slot's first word) and carved
//! from the current area of their size, under one lock: sampling is rare. A freed slot
//! stays resident for the next sampled block of its size, as freed unsampled memory does;
//! `malloc_trim` and the allocator's periodic decay ([`trim`]) give back the memory of the
//! free slots of 16 KiB or more (all but their first OS page), unmap the slot areas that
//! have no live slot, and unmap the freed single areas kept for reuse. (Purging each slot
//! at its free made a program that frees and allocates blocks of 64 KiB to 1 MiB in a loop,
//! nearly all sampled, fault every one in again.) Alignments above
//! 2 MiB are not served here (the caller then does not sample).

use crate::os::{Os, RealOs, OS_PAGE_BYTES};
use crate::region_map::{self, Kind, CHUNK_BYTES};
use crate::sync::Mutex;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bytes of the header below every sampled block.
pub const HEADER_BYTES: usize = 64;
/// Largest alignment served (the user pointer must lie in the first chunk of its area).
pub const MAX_ALIGN_BYTES: usize = CHUNK_BYTES / 2;
const AREA_MAGIC: u64 = 0x6f78_7361_6d70_6c65; // "oxsample"
const MIN_SLOT_SHIFT: u32 = 7;
const MAX_SLOT_SHIFT: u32 = 20;
const CLASS_COUNT: usize = (MAX_SLOT_SHIFT - MIN_SLOT_SHIFT + 1) as usize;
/// Free slots at least this large return their memory to the OS at the decay (all but the
/// first OS page). Smaller ones stay resident for reuse: blocks that small are sampled
/// with probability below 3.1% at the default interval, so their slots hold a small share
/// of what the program once had live.
const PURGE_MIN_SLOT_BYTES: usize = 16 << 10;

#[repr(C)]
struct AreaHeader {
    magic: u64,
    /// log2 of the slot size; 0 for a single area.
    slot_shift: u32,
    /// Bytes mapped (changes when a single area is resized, by the block's owner).
    map_bytes: AtomicUsize,
    /// Single areas: the user pointer's offset from the base.
    user_offset: usize,
    /// Slot areas: slots handed out and not yet taken back (under the slots lock).
    live: AtomicUsize,
    /// Slot areas: the next area of the same slot size (under the slots lock).
    next_area: AtomicUsize,
}

impl AreaHeader {
    fn new(slot_shift: u32, map_bytes: usize, user_offset: usize) -> Self {
        AreaHeader {
            magic: AREA_MAGIC,
            slot_shift,
            map_bytes: AtomicUsize::new(map_bytes),
            user_offset,
            live: AtomicUsize::new(0),
            next_area: AtomicUsize::new(0),
        }
    }
}

/// The header of the slot area holding `slot`.
///
/// # Safety
/// `slot` must lie in a slot area of ours.
unsafe fn area_header(slot: usize) -> &'static AreaHeader {
    // SAFETY: a slot area starts with its header, mapped as long as the area.
    unsafe { &*(region_map::chunk_base(slot) as *const AreaHeader) }
}

/// What a sampled block stands for, kept below it until it is freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Its stack in the stack table.
    pub stack: u32,
    /// Requested size.
    pub size: usize,
    /// Its weight (see `sampler::Weight`).
    pub objects_fixed: u64,
    /// Its weight in bytes.
    pub bytes: u64,
    /// When it was allocated (the profiler's clock, nanoseconds).
    pub born_ns: u64,
}

#[repr(C)]
struct BlockHeader {
    info: BlockInfo,
    _reserved: [u64; 2],
    /// `live_state(user)` while allocated, `freed_state(user)` after. Last, so that it is
    /// the word just below the user block.
    state: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<BlockHeader>() == HEADER_BYTES);
const _: () = assert!(core::mem::size_of::<AreaHeader>() <= HEADER_BYTES);

static SECRET: AtomicU64 = AtomicU64::new(0x5eed_0f0c_a11e_d0ff);

/// Sets the per-process secret mixed into block states (start-up, before any sample).
pub fn init_secret(secret: u64) {
    SECRET.store(secret, Ordering::Relaxed);
}

fn live_state(user: usize) -> u64 {
    SECRET.load(Ordering::Relaxed) ^ user as u64
}

fn freed_state(user: usize) -> u64 {
    !live_state(user)
}

/// Where slots of each size come from.
pub struct SlotClasses {
    /// Free slots (linked through their first word; the second says "purged").
    free: [usize; CLASS_COUNT],
    /// The next unused slot of the current area, and the area's end.
    bump: [usize; CLASS_COUNT],
    end: [usize; CLASS_COUNT],
    /// Every area of each slot size (linked through `next_area`).
    areas: [usize; CLASS_COUNT],
    /// Freed single-block areas (base, mapped bytes), kept for the next large sampled
    /// block: blocks above the slot sizes are nearly all sampled (p = 1 - exp(-s/interval)),
    /// and a fresh mapping each time made a program that frees and allocates big buffers
    /// in a loop four times slower with profiling on. Still marked in the region map (a
    /// stale pointer finds a freed header); unmapped by `trim`.
    single: [(usize, usize); SINGLE_CACHE_SLOTS],
    single_len: usize,
    single_bytes: usize,
}

/// Freed single-block areas kept (see `SlotClasses::single`), and their bytes at most.
const SINGLE_CACHE_SLOTS: usize = 16;
const SINGLE_CACHE_MAX_BYTES: usize = 128 << 20;

impl SlotClasses {
    const fn new() -> Self {
        SlotClasses {
            free: [0; CLASS_COUNT],
            bump: [0; CLASS_COUNT],
            end: [0; CLASS_COUNT],
            areas: [0; CLASS_COUNT],
            single: [(0, 0); SINGLE_CACHE_SLOTS],
            single_len: 0,
            single_bytes: 0,
        }
    }

    /// A cached single-block area of at least `need` bytes and at most twice that:
    /// (base, mapped bytes).
    fn take_single(&mut self, need: usize) -> Option<(usize, usize)> {
        let cached = self.single.get_mut(..self.single_len)?;
        let i = cached
            .iter()
            .position(|&(_, bytes)| bytes >= need && bytes / 2 <= need)?;
        let (last, rest) = cached.split_last_mut()?;
        if let Some(other) = rest.get_mut(i) {
            core::mem::swap(other, last);
        }
        let found = *last;
        self.single_len -= 1;
        self.single_bytes -= found.1;
        Some(found)
    }

    /// Keeps a freed single-block area; false when the cache is full (the caller unmaps).
    fn put_single(&mut self, base: usize, bytes: usize) -> bool {
        if self.single_bytes + bytes > SINGLE_CACHE_MAX_BYTES {
            return false;
        }
        let Some(slot) = self.single.get_mut(self.single_len) else {
            return false;
        };
        *slot = (base, bytes);
        self.single_len += 1;
        self.single_bytes += bytes;
        true
    }

    /// Unmaps the cached single-block areas; returns their bytes.
    fn release_singles(&mut self) -> usize {
        let released = self.single_bytes;
        for &(base, bytes) in self.single.iter().take(self.single_len) {
            region_map::clear(base);
            // SAFETY: a cached area is a whole mapping of ours with no live block.
            unsafe { RealOs.unmap(NonNull::new_unchecked(base as *mut u8), bytes) };
        }
        self.single_len = 0;
        self.single_bytes = 0;
        released
    }
}

/// The slot lists (a fork lock: see `process::fork_locks`).
pub static SLOTS: Mutex<SlotClasses> = Mutex::new(SlotClasses::new());

/// How the memory of a slot reads when handed out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// All zeros (fresh from the OS).
    Zero,
    /// Zeros past its first OS page (purged when freed).
    ZeroAfterFirstPage,
    /// Anything.
    Dirty,
}

/// Offset of the first slot of an area of `slot_bytes` slots (after the area header page).
const fn first_slot_offset(slot_bytes: usize) -> usize {
    if slot_bytes > OS_PAGE_BYTES {
        slot_bytes
    } else {
        OS_PAGE_BYTES
    }
}

impl SlotClasses {
    /// A slot of `1 << shift` bytes.
    fn pop(&mut self, shift: u32) -> Option<(usize, Fill)> {
        let i = shift.checked_sub(MIN_SLOT_SHIFT)? as usize;
        let slot_bytes = 1usize.checked_shl(shift)?;
        let head = *self.free.get(i)?;
        if head != 0 {
            // SAFETY: a free slot is ours and mapped; its first two words hold the link and
            // the purged flag (written by `push`).
            let (next, purged) =
                unsafe { (*(head as *const usize), *((head + 8) as *const usize)) };
            *self.free.get_mut(i)? = next;
            let fill = if purged != 0 {
                Fill::ZeroAfterFirstPage
            } else {
                Fill::Dirty
            };
            // SAFETY: the slot lies in one of our slot areas.
            unsafe { area_header(head) }
                .live
                .fetch_add(1, Ordering::Relaxed);
            return Some((head, fill));
        }
        let (bump, end) = (*self.bump.get(i)?, *self.end.get(i)?);
        let slot = if bump != 0 && bump + slot_bytes <= end {
            bump
        } else {
            let areas = self.areas.get_mut(i)?;
            let base = RealOs.map(CHUNK_BYTES, CHUNK_BYTES)?.as_ptr() as usize;
            let header = AreaHeader::new(shift, CHUNK_BYTES, 0);
            header.next_area.store(*areas, Ordering::Relaxed);
            // SAFETY: a fresh, exclusive mapping; its first OS page holds the header.
            unsafe { (base as *mut AreaHeader).write(header) };
            *areas = base;
            region_map::set(base, Kind::Sampled);
            *self.end.get_mut(i)? = base + CHUNK_BYTES;
            base + first_slot_offset(slot_bytes)
        };
        *self.bump.get_mut(i)? = slot + slot_bytes;
        // SAFETY: the slot lies in one of our slot areas.
        unsafe { area_header(slot) }
            .live
            .fetch_add(1, Ordering::Relaxed);
        Some((slot, Fill::Zero))
    }

    /// Takes back a slot of `1 << shift` bytes.
    ///
    /// # Safety
    /// `slot` must be a slot of that size that no block uses any more.
    unsafe fn push(&mut self, shift: u32, slot: usize, purged: bool) {
        let Some(head) = shift
            .checked_sub(MIN_SLOT_SHIFT)
            .and_then(|i| self.free.get_mut(i as usize))
        else {
            return;
        };
        // SAFETY: the slot is ours and unused (caller); its first OS page is resident.
        unsafe {
            (slot as *mut usize).write(*head);
            ((slot + 8) as *mut usize).write(usize::from(purged));
            area_header(slot).live.fetch_sub(1, Ordering::Relaxed);
        }
        *head = slot;
    }

    /// Gives back the memory of the free slots of [`PURGE_MIN_SLOT_BYTES`] or more not
    /// purged yet (all but each slot's first OS page); returns the bytes purged.
    fn purge_free_slots(&mut self) -> usize {
        let mut purged = 0;
        for (i, &head) in self.free.iter().enumerate() {
            let slot_bytes = 1usize << (MIN_SLOT_SHIFT as usize + i);
            if slot_bytes < PURGE_MIN_SLOT_BYTES {
                continue;
            }
            let mut slot = head;
            while slot != 0 {
                // SAFETY: a free slot is ours and mapped; its first OS page (never purged)
                // holds the link and the purged flag (written by `push`). Slots this large
                // are page-aligned, and no block uses the memory past the first page.
                unsafe {
                    let flag = (slot + 8) as *mut usize;
                    if *flag == 0 {
                        RealOs.purge(
                            NonNull::new_unchecked((slot + OS_PAGE_BYTES) as *mut u8),
                            slot_bytes - OS_PAGE_BYTES,
                        );
                        *flag = 1;
                        purged += slot_bytes - OS_PAGE_BYTES;
                    }
                    slot = *(slot as *const usize);
                }
            }
        }
        purged
    }

    /// Unmaps the slot areas without a live block; returns the bytes given back.
    fn release_empty_areas(&mut self) -> usize {
        let mut released = 0;
        for i in 0..CLASS_COUNT {
            let is_empty = |slot: usize| {
                // SAFETY: free slots lie in our slot areas, still mapped here.
                unsafe { area_header(slot) }.live.load(Ordering::Relaxed) == 0
            };
            // Drop the free slots of empty areas from the list (before any area goes).
            let (Some(free), Some(bump), Some(end), Some(areas)) = (
                self.free.get_mut(i),
                self.bump.get_mut(i),
                self.end.get_mut(i),
                self.areas.get_mut(i),
            ) else {
                continue;
            };
            let mut link: *mut usize = free;
            // SAFETY: `link` is the list head or the first word of a free slot (resident:
            // the first OS page of a slot is never purged), and each slot's first word
            // links to the next.
            unsafe {
                while *link != 0 {
                    let slot = *link;
                    if is_empty(slot) {
                        *link = *(slot as *const usize);
                    } else {
                        link = slot as *mut usize;
                    }
                }
            }
            // Unmap the empty areas.
            let mut area_link: *mut usize = areas;
            // SAFETY: `area_link` is the list head or the `next_area` word of a live area
            // header; an area is unlinked before it is unmapped.
            unsafe {
                while *area_link != 0 {
                    let base = *area_link;
                    let header = area_header(base);
                    if header.live.load(Ordering::Relaxed) != 0 {
                        area_link = header.next_area.as_ptr();
                        continue;
                    }
                    *area_link = header.next_area.load(Ordering::Relaxed);
                    if *end == base + CHUNK_BYTES {
                        *bump = 0;
                        *end = 0;
                    }
                    region_map::clear(base);
                    RealOs.unmap(NonNull::new_unchecked(base as *mut u8), CHUNK_BYTES);
                    released += CHUNK_BYTES;
                }
            }
        }
        released
    }
}

/// Gives back to the OS the memory of free slots, the slot areas without a live sampled
/// block and the freed single areas (from `malloc_trim` and the allocator's periodic
/// decay); returns the bytes released or purged.
pub fn trim() -> usize {
    let mut slots = SLOTS.lock();
    // Empty areas go first: their free slots need no purge.
    slots.release_empty_areas() + slots.purge_free_slots() + slots.release_singles()
}

/// A sampled block of `size` bytes at `align_bytes` (a power of two), zeroed if asked,
/// with `info` in its header; `None` when the OS refuses memory or the alignment is above
/// [`MAX_ALIGN_BYTES`].
pub fn alloc(size: usize, align_bytes: usize, zero: bool, info: BlockInfo) -> Option<NonNull<u8>> {
    if align_bytes > MAX_ALIGN_BYTES || size > isize::MAX as usize / 2 {
        return None;
    }
    let offset = align_bytes.max(HEADER_BYTES);
    let need = offset.checked_add(size)?;
    let shift = need
        .checked_next_power_of_two()?
        .trailing_zeros()
        .max(MIN_SLOT_SHIFT);
    let user = if shift <= MAX_SLOT_SHIFT {
        let (slot, fill) = SLOTS.lock().pop(shift)?;
        let user = slot + offset;
        if zero {
            let dirty_end = match fill {
                Fill::Zero => user,
                Fill::ZeroAfterFirstPage => (slot + OS_PAGE_BYTES).max(user).min(user + size),
                Fill::Dirty => user + size,
            };
            // SAFETY: `[user, dirty_end)` lies inside the slot, which is ours.
            unsafe { (user as *mut u8).write_bytes(0, dirty_end - user) };
        }
        user
    } else {
        let user_offset = align_bytes.max(2 * HEADER_BYTES);
        let map_bytes = crate::os::round_up(user_offset.checked_add(size)?, OS_PAGE_BYTES)?;
        let cached = SLOTS.lock().take_single(map_bytes);
        let (base, mapped) = match cached {
            Some(area) => area,
            None => {
                let base = RealOs.map(map_bytes, CHUNK_BYTES)?.as_ptr() as usize;
                region_map::set(base, Kind::Sampled);
                (base, map_bytes)
            }
        };
        // SAFETY: an exclusive mapping of `mapped` bytes: fresh, or a cached one whose block
        // was freed (still marked in the region map).
        unsafe { (base as *mut AreaHeader).write(AreaHeader::new(0, mapped, user_offset)) };
        if zero && cached.is_some() {
            // SAFETY: `[base + user_offset, + size)` lies in the mapping, which is ours.
            unsafe { ((base + user_offset) as *mut u8).write_bytes(0, size) };
        }
        base + user_offset
    };
    // SAFETY: the header lies in the block's slot or area, just below `user`, and no one
    // else knows the block yet.
    unsafe {
        ((user - HEADER_BYTES) as *mut BlockHeader).write(BlockHeader {
            info,
            _reserved: [0; 2],
            state: AtomicU64::new(live_state(user)),
        })
    };
    NonNull::new(user as *mut u8)
}

/// The area header of a sampled chunk holding `addr`.
fn area_of(addr: usize) -> Option<&'static AreaHeader> {
    if region_map::kind_of(addr) != Kind::Sampled {
        return None;
    }
    // SAFETY: a chunk marked Sampled starts with an area header, mapped while marked.
    let area = unsafe { &*(region_map::chunk_base(addr) as *const AreaHeader) };
    (area.magic == AREA_MAGIC).then_some(area)
}

/// Where a block at `addr` would have its header and memory, if `addr` can be a block
/// start in its area at all (its state is not checked).
struct Geometry {
    header: &'static BlockHeader,
    area_base: usize,
    /// Single areas: the mapping's size. Slot areas: 0.
    single_map_bytes: usize,
    /// Slot areas: the slot and log2 of its size.
    slot: usize,
    slot_shift: u32,
    /// End of the block's slot or mapping.
    end: usize,
}

fn geometry(addr: usize) -> Option<Geometry> {
    let area = area_of(addr)?;
    let area_base = area as *const AreaHeader as usize;
    let (single_map_bytes, slot, end) = if area.slot_shift == 0 {
        if addr != area_base + area.user_offset {
            return None;
        }
        let map_bytes = area.map_bytes.load(Ordering::Relaxed);
        (map_bytes, 0, area_base + map_bytes)
    } else {
        let slot_bytes = 1usize.checked_shl(area.slot_shift)?;
        let slot = addr & !(slot_bytes - 1);
        if slot < area_base + first_slot_offset(slot_bytes) || addr - slot < HEADER_BYTES {
            return None;
        }
        (0, slot, slot + slot_bytes)
    };
    // SAFETY: `addr - HEADER_BYTES` lies in the same slot or area (checked above), which is
    // mapped; the header's words are plain data or atomic.
    let header = unsafe { &*((addr - HEADER_BYTES) as *const BlockHeader) };
    Some(Geometry {
        header,
        area_base,
        single_map_bytes,
        slot,
        slot_shift: area.slot_shift,
        end,
    })
}

/// Usable bytes of the live sampled block at `addr`; `None` if it is not one.
pub fn usable_size(addr: usize) -> Option<usize> {
    let g = geometry(addr)?;
    (g.header.state.load(Ordering::Acquire) == live_state(addr)).then(|| g.end - addr)
}

/// `realloc` of the live sampled block at `addr` to `new_size` bytes at `align_bytes`,
/// without copying: where it is when its slot or mapping allows (a single area grows or
/// shrinks with `mremap`, or its pages move to a new mapping), with `info` in its header
/// from then on. Returns the block (moved or not) and what its header said before; `None`
/// when it must be copied elsewhere, or when `addr` is not a live sampled block.
pub fn resize(
    addr: usize,
    new_size: usize,
    align_bytes: usize,
    info: BlockInfo,
) -> Option<(NonNull<u8>, BlockInfo)> {
    let g = geometry(addr)?;
    if g.header.state.load(Ordering::Acquire) != live_state(addr)
        || addr & (align_bytes - 1) != 0
        || new_size > isize::MAX as usize / 2
    {
        return None;
    }
    let offset = addr
        - if g.single_map_bytes != 0 {
            g.area_base
        } else {
            g.slot
        };
    let need = offset.checked_add(new_size)?;
    let user = if g.single_map_bytes == 0 {
        // A slot keeps a block that fits and uses more than a quarter of it.
        let slot_bytes = g.end - g.slot;
        if need > slot_bytes || (need <= slot_bytes / 4 && slot_bytes > 1 << MIN_SLOT_SHIFT) {
            return None;
        }
        addr
    } else {
        let old_map = g.single_map_bytes;
        let new_map = crate::os::round_up(need, OS_PAGE_BYTES)?;
        // SAFETY: the area's mapping starts at its base.
        let base_ptr = unsafe { NonNull::new_unchecked(g.area_base as *mut u8) };
        // SAFETY: `[base, base + old_map)` is the area's whole mapping, and only this
        // block's owner (the caller) uses it.
        let base = if new_map == old_map
            || unsafe { RealOs.resize_in_place(base_ptr, old_map, new_map) }
        {
            g.area_base
        } else if new_map < old_map {
            return None;
        } else {
            // Move the pages, without copying, to a fresh aligned reservation.
            let target = RealOs.map(new_map, CHUNK_BYTES)?;
            // Clear the old chunk's mark before its pages go: another thread may map
            // something there at once and mark it (the region map's rule).
            region_map::clear(g.area_base);
            // SAFETY: both ranges are ours; on success the old one is gone.
            if !unsafe { RealOs.move_mapping(base_ptr, old_map, target, new_map) } {
                region_map::set(g.area_base, Kind::Sampled);
                // SAFETY: the reservation is ours and unused.
                unsafe { RealOs.unmap(target, new_map) };
                return None;
            }
            let base = target.as_ptr() as usize;
            region_map::set(base, Kind::Sampled);
            base
        };
        // SAFETY: the area header moved along with the pages.
        unsafe { &*(base as *const AreaHeader) }
            .map_bytes
            .store(new_map, Ordering::Relaxed);
        base + offset
    };
    let header = (user - HEADER_BYTES) as *mut BlockHeader;
    // SAFETY: the block's header, just below it, in memory the caller owns.
    let old = unsafe {
        let old = (*header).info;
        (*header).info = info;
        (*header).state.store(live_state(user), Ordering::Release);
        old
    };
    Some((NonNull::new(user as *mut u8)?, old))
}

/// Why a pointer handed to `free` is not a live sampled block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// Not the start of a sampled block.
    InvalidPointer,
    /// A block already freed.
    DoubleFree,
}

/// Frees the sampled block at `addr`; returns what its header said.
pub fn free(addr: usize) -> Result<BlockInfo, FreeError> {
    let g = geometry(addr).ok_or(FreeError::InvalidPointer)?;
    if let Err(state) = g.header.state.compare_exchange(
        live_state(addr),
        freed_state(addr),
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        return Err(if state == freed_state(addr) {
            FreeError::DoubleFree
        } else {
            FreeError::InvalidPointer
        });
    }
    // The swap made the block ours: read its header before the memory goes back.
    let info = g.header.info;
    if g.single_map_bytes != 0 {
        if SLOTS.lock().put_single(g.area_base, g.single_map_bytes) {
            return Ok(info);
        }
        region_map::clear(g.area_base);
        // SAFETY: the whole single area belonged to this block, now freed; it is no longer
        // marked, so nothing finds it.
        unsafe {
            RealOs.unmap(
                NonNull::new_unchecked(g.area_base as *mut u8),
                g.single_map_bytes,
            )
        };
        return Ok(info);
    }
    // The slot stays resident until the decay (see the module note).
    // SAFETY: the slot's block is freed and the slot has that size.
    unsafe { SLOTS.lock().push(g.slot_shift, g.slot, false) };
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(stack: u32) -> BlockInfo {
        BlockInfo {
            stack,
            size: 0,
            objects_fixed: 1,
            bytes: 2,
            born_ns: 3,
        }
    }

    #[test]
    fn blocks_round_trip_with_alignment_and_zeroing() {
        for (size, align) in [
            (1, 16),
            (100, 16),
            (3000, 4096),
            (70_000, 64),
            (5 << 20, 16),
        ] {
            let p = alloc(size, align, true, info(7)).expect("sampled block");
            let a = p.as_ptr() as usize;
            assert_eq!(a % align, 0);
            assert!(usable_size(a).expect("live") >= size);
            assert_eq!(region_map::kind_of(a), Kind::Sampled);
            // SAFETY: a live block of `size` bytes.
            let bytes = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), size) };
            assert!(bytes.iter().all(|&b| b == 0));
            bytes.fill(0xab);
            assert_eq!(usable_size(a + 16), None);
            assert_eq!(free(a + 16), Err(FreeError::InvalidPointer));
            assert_eq!(free(a).map(|i| i.stack), Ok(7));
            if size < 1 << 20 {
                // The slot stays ours: a second free is seen as such.
                assert_eq!(free(a), Err(FreeError::DoubleFree));
                assert_eq!(usable_size(a), None);
            }
            // The same size again, zeroed, whatever the slot held.
            let q = alloc(size, align, true, info(8)).expect("sampled block");
            // SAFETY: a live block of `size` bytes.
            let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), size) };
            assert!(bytes.iter().all(|&b| b == 0));
            assert!(free(q.as_ptr() as usize).is_ok());
        }
    }

    #[test]
    fn resize_keeps_contents_and_the_header() {
        // A single area growing (in place or moved) and shrinking, then a slot block.
        let p = alloc(3 << 20, 16, false, info(1)).expect("sampled block");
        // SAFETY: a live block of 3 MiB.
        unsafe { p.as_ptr().write_bytes(0x5c, 3 << 20) };
        let (q, old) = resize(p.as_ptr() as usize, 40 << 20, 16, info(2)).expect("grows");
        assert_eq!(old.stack, 1);
        let a = q.as_ptr() as usize;
        assert!(usable_size(a).expect("live") >= 40 << 20);
        // SAFETY: the first 3 MiB moved with the block.
        assert!(unsafe { core::slice::from_raw_parts(q.as_ptr(), 3 << 20) }
            .iter()
            .all(|&b| b == 0x5c));
        let (r, old) = resize(a, 2 << 20, 16, info(3)).expect("shrinks");
        assert_eq!((old.stack, r.as_ptr() as usize), (2, a));
        assert_eq!(free(a).map(|i| i.stack), Ok(3));
        let s = alloc(1000, 16, false, info(4)).expect("sampled block");
        let b = s.as_ptr() as usize;
        assert_eq!(
            resize(b, 1500, 16, info(5)).map(|(p, o)| (p.as_ptr() as usize, o.stack)),
            Some((b, 4))
        );
        assert!(resize(b, 5000, 16, info(6)).is_none(), "outgrows its slot");
        assert!(
            resize(b, 10, 16, info(6)).is_none(),
            "too small for its slot"
        );
        assert!(resize(b + 16, 1000, 16, info(6)).is_none(), "not a block");
        assert_eq!(free(b).map(|i| i.stack), Ok(5));
        assert!(resize(b, 1000, 16, info(6)).is_none(), "freed");
    }

    #[test]
    fn trim_unmaps_areas_without_live_blocks() {
        // 256 KiB slots (no other test uses them): 15 per area, so 20 blocks take two.
        let blocks: Vec<usize> = (0..20)
            .map(|_| alloc(200_000, 16, false, info(9)).expect("block").as_ptr() as usize)
            .collect();
        let last = *blocks.last().expect("blocks");
        let first = blocks[0];
        assert_ne!(region_map::chunk_base(first), region_map::chunk_base(last));
        for &b in &blocks[..19] {
            assert!(free(b).is_ok());
        }
        trim();
        // The first area had no live block left: gone. The second holds `last`.
        assert_eq!(region_map::kind_of(first), Kind::None);
        assert_eq!(region_map::kind_of(last), Kind::Sampled);
        assert!(usable_size(last).is_some());
        assert!(free(last).is_ok());
        trim();
        assert_eq!(region_map::kind_of(last), Kind::None);
        // The class still serves blocks afterwards.
        let again = alloc(200_000, 16, true, info(9)).expect("block");
        assert!(free(again.as_ptr() as usize).is_ok());
    }

    #[test]
    fn freed_slots_are_reused_resident_and_purged_by_trim() {
        // 64 KiB slots (no other test uses them); a second block keeps the area mapped.
        let size = 40_000;
        let keep = alloc(size, 16, false, info(1)).expect("block");
        let p = alloc(size, 16, false, info(2)).expect("block");
        // SAFETY: a live block of `size` bytes.
        unsafe { p.as_ptr().write_bytes(0xab, size) };
        assert!(free(p.as_ptr() as usize).is_ok());
        // The next block of that size takes the freed slot, which stays resident (a purge
        // at free would fault it in again).
        let q = alloc(size, 16, false, info(3)).expect("block");
        assert_eq!(q, p, "the freed slot is reused");
        assert!(free(q.as_ptr() as usize).is_ok());
        // The decay's trim gives back all but the slot's first OS page.
        trim();
        let r = alloc(size, 16, false, info(4)).expect("block");
        assert_eq!(r, p);
        let past_first_page = OS_PAGE_BYTES; // from the slot start, past the header
                                             // SAFETY: a live block of `size` bytes; the offset lies inside it.
        let bytes = unsafe {
            core::slice::from_raw_parts(r.as_ptr().add(past_first_page), size - past_first_page)
        };
        assert!(bytes.iter().all(|&b| b == 0), "purged by the trim");
        // calloc of a reused dirty slot is zeroed.
        assert!(free(r.as_ptr() as usize).is_ok());
        let z = alloc(size, 16, false, info(5)).expect("block");
        // SAFETY: a live block of `size` bytes.
        unsafe { z.as_ptr().write_bytes(0xcd, size) };
        assert!(free(z.as_ptr() as usize).is_ok());
        let zeroed = alloc(size, 16, true, info(6)).expect("block");
        // SAFETY: a live block of `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(zeroed.as_ptr(), size) };
        assert!(bytes.iter().all(|&b| b == 0));
        assert!(free(zeroed.as_ptr() as usize).is_ok());
        assert!(free(keep.as_ptr() as usize).is_ok());
    }

    #[test]
    fn too_large_alignment_is_refused() {
        assert!(alloc(16, 4 << 20, false, info(0)).is_none());
    }
}
