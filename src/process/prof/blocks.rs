//! Sampled blocks up to 1 MiB: slots of their own, so that `free` knows one from its
//! region-map byte. (Larger ones are ordinary huge blocks with the profiler's record in
//! their header: see the module note of `prof`.)
//!
//! Every chunk that holds sampled blocks is marked [`Kind::Sampled`]; the free fast path
//! only tests for `Kind::Slab`, so an unsampled small block pays nothing for this, and a
//! sampled one goes to `free_big` with the other non-slab kinds.
//!
//! ```text
//! slot area (4 MiB, 4 MiB-aligned; one slot size 2^k, 128 B .. 1 MiB):
//!   base: AreaHeader | ... first OS page ... | slot | slot | ...   (slots at multiples of 2^k)
//!   slot: [padding] BlockHeader (64 B) | user block ...            (user = slot + max(64, align))
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
//! stays resident for the next sampled block of its size, as freed unsampled memory does.
//! The allocator's periodic decay ([`decay`]) gives back, by age as it does the buddy
//! arena's pages, the memory of the free slots of 16 KiB or more (all but their first OS
//! page) that have been free for a whole purge delay, and unmaps the slot areas that have
//! had no live slot for as long; `malloc_trim` ([`trim`]) gives back all of it at once.
//! (Purging each slot at its free made a program that frees and allocates blocks of 64 KiB
//! to 1 MiB in a loop, nearly all sampled, fault every one in again; purging every free
//! slot at each decay round, whatever its age, still gave `tchurn-2` 17–24k page faults
//! against 2.4k with profiling off; by age, 3.1k.) A block whose slot would be larger than 1 MiB (its size, header and alignment
//! padding) is not served here: the caller makes it a huge block.
//!
//! The statistics count the live blocks of the slots ([`live_figures`]) as the small or
//! medium block each would have been: at its size class's block size, or in whole OS pages.

use crate::block::size_class::{self, SMALL_MAX_BYTES};
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
    /// log2 of the slot size.
    slot_shift: u32,
    /// Slot areas: slots handed out and not yet taken back (under the slots lock).
    live: AtomicUsize,
    /// Slot areas: the next area of the same slot size (under the slots lock).
    next_area: AtomicUsize,
    /// When a slot of the area was last freed (the OS layer's clock, ms; under the slots
    /// lock): an empty area goes back to the OS once this is a purge delay old.
    last_free_ms: AtomicU64,
}

impl AreaHeader {
    fn new(slot_shift: u32) -> Self {
        AreaHeader {
            magic: AREA_MAGIC,
            slot_shift,
            live: AtomicUsize::new(0),
            next_area: AtomicUsize::new(0),
            last_free_ms: AtomicU64::new(0),
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
pub use crate::block::SampleRecord as BlockInfo;

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
    /// Free slots (linked through their first word; the second says "purged", the third
    /// when the slot was freed, in ms of the OS layer's clock).
    free: [usize; CLASS_COUNT],
    /// The next unused slot of the current area, and the area's end.
    bump: [usize; CLASS_COUNT],
    end: [usize; CLASS_COUNT],
    /// Every area of each slot size (linked through `next_area`).
    areas: [usize; CLASS_COUNT],
    /// Live blocks and their bytes as counted by the statistics (see [`live_figures`]):
    /// those of small sizes, then those of medium sizes.
    live: LiveFigures,
}

/// What the statistics count of the live sampled blocks in slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveFigures {
    /// Blocks of small sizes, and their bytes at their size class's block size.
    pub small_blocks: usize,
    pub small_bytes: usize,
    /// Blocks of medium sizes, and their bytes in whole OS pages.
    pub medium_blocks: usize,
    pub medium_bytes: usize,
}

impl LiveFigures {
    const ZERO: LiveFigures = LiveFigures {
        small_blocks: 0,
        small_bytes: 0,
        medium_blocks: 0,
        medium_bytes: 0,
    };

    /// Counts a live block of `size` requested bytes (`add`), or stops counting it, in the
    /// live figures and in the bytes held for blocks.
    fn count(&mut self, size: usize, add: bool) {
        let (blocks, bytes, block_bytes) = match counted_bytes(size) {
            (true, b) => (&mut self.small_blocks, &mut self.small_bytes, b),
            (false, b) => (&mut self.medium_blocks, &mut self.medium_bytes, b),
        };
        if add {
            *blocks += 1;
            *bytes += block_bytes;
            crate::stats::held_add(block_bytes);
        } else {
            *blocks = blocks.saturating_sub(1);
            *bytes = bytes.saturating_sub(block_bytes);
            crate::stats::held_sub(block_bytes);
        }
    }
}

/// How the statistics count a block of `size` requested bytes: (small?, bytes) with small
/// blocks at their size class's block size and the others in whole OS pages.
fn counted_bytes(size: usize) -> (bool, usize) {
    use crate::block::size_class::{self, SMALL_MAX_BYTES};
    if size <= SMALL_MAX_BYTES {
        (true, size_class::class_of(size).block_bytes())
    } else {
        (false, size.div_ceil(OS_PAGE_BYTES) * OS_PAGE_BYTES)
    }
}

/// The live sampled blocks in slots, for the statistics.
pub fn live_figures() -> LiveFigures {
    SLOTS.lock().live
}

impl SlotClasses {
    const fn new() -> Self {
        SlotClasses {
            free: [0; CLASS_COUNT],
            bump: [0; CLASS_COUNT],
            end: [0; CLASS_COUNT],
            areas: [0; CLASS_COUNT],
            live: LiveFigures::ZERO,
        }
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
            let header = AreaHeader::new(shift);
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
        let now = RealOs.now_ms();
        // SAFETY: the slot is ours and unused (caller); its first OS page is resident, and
        // the smallest slot (128 bytes) has room for the three words.
        unsafe {
            (slot as *mut usize).write(*head);
            ((slot + 8) as *mut usize).write(usize::from(purged));
            ((slot + 16) as *mut u64).write(now);
            let area = area_header(slot);
            area.live.fetch_sub(1, Ordering::Relaxed);
            area.last_free_ms.store(now, Ordering::Relaxed);
        }
        *head = slot;
    }

    /// Gives back the memory of the free slots of [`PURGE_MIN_SLOT_BYTES`] or more not
    /// purged yet (all but each slot's first OS page) that have been free for `min_age_ms`
    /// at least (`None`: all of them); returns the bytes purged.
    fn purge_free_slots(&mut self, now_ms: u64, min_age_ms: Option<u64>) -> usize {
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
                    let freed_ms = *((slot + 16) as *const u64);
                    let old = min_age_ms.is_none_or(|age| now_ms.saturating_sub(freed_ms) >= age);
                    if *flag == 0 && old {
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

    /// Unmaps the slot areas without a live block whose last slot was freed `min_age_ms`
    /// ago at least (`None`: whenever); returns the bytes given back.
    fn release_empty_areas(&mut self, now_ms: u64, min_age_ms: Option<u64>) -> usize {
        let mut released = 0;
        let unused = |area: &AreaHeader| {
            area.live.load(Ordering::Relaxed) == 0
                && min_age_ms.is_none_or(|age| {
                    now_ms.saturating_sub(area.last_free_ms.load(Ordering::Relaxed)) >= age
                })
        };
        for i in 0..CLASS_COUNT {
            let is_empty = |slot: usize| {
                // SAFETY: free slots lie in our slot areas, still mapped here.
                unused(unsafe { area_header(slot) })
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
                    if !unused(header) {
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

/// Gives back to the OS the memory of free slots and the slot areas without a live
/// sampled block (`malloc_trim`); returns the bytes released or purged.
pub fn trim() -> usize {
    give_back(None)
}

/// The same for the allocator's periodic decay: only what has been unused for `delay_ms`
/// (as the buddy arena's pages and the huge cache's mappings), so that a slot freed just
/// before a decay round is not purged and faulted in again by the next sampled block.
pub fn decay(delay_ms: u64) -> usize {
    give_back(Some(delay_ms))
}

fn give_back(min_age_ms: Option<u64>) -> usize {
    let now = RealOs.now_ms();
    let mut slots = SLOTS.lock();
    // Empty areas go first: their free slots need no purge.
    slots.release_empty_areas(now, min_age_ms) + slots.purge_free_slots(now, min_age_ms)
}

/// A sampled block of `size` bytes at `align_bytes` (a power of two), zeroed if asked,
/// with `info` in its header; `None` when the OS refuses memory or the block with its
/// header and alignment needs a slot larger than 1 MiB. Its slot also fits `room` bytes
/// (at least `size`) when a slot of at most 1 MiB can, so that a block that `realloc`
/// moved here while growing can grow again where it is (the slot's pages past what the
/// program writes are not touched).
pub fn alloc_with_room(
    size: usize,
    room: usize,
    align_bytes: usize,
    zero: bool,
    info: BlockInfo,
) -> Option<NonNull<u8>> {
    if align_bytes > MAX_ALIGN_BYTES || size > isize::MAX as usize / 2 {
        return None;
    }
    let offset = align_bytes.max(HEADER_BYTES);
    let slot_shift = |bytes: usize| {
        offset
            .checked_add(bytes)?
            .checked_next_power_of_two()
            .map(|p| p.trailing_zeros().max(MIN_SLOT_SHIFT))
            .filter(|&shift| shift <= MAX_SLOT_SHIFT)
    };
    let shift = slot_shift(room.max(size)).or_else(|| slot_shift(size))?;
    let (slot, fill) = {
        let mut slots = SLOTS.lock();
        let found = slots.pop(shift)?;
        slots.live.count(info.size, true);
        found
    };
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
    // SAFETY: the header lies in the block's slot, just below `user` (the offset is at
    // least its size), and no one else knows the block yet.
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
    /// The slot and log2 of its size.
    slot: usize,
    slot_shift: u32,
    /// End of the block's slot.
    end: usize,
}

fn geometry(addr: usize) -> Option<Geometry> {
    let area = area_of(addr)?;
    let area_base = area as *const AreaHeader as usize;
    let slot_bytes = 1usize.checked_shl(area.slot_shift)?;
    let slot = addr & !(slot_bytes - 1);
    if slot < area_base + first_slot_offset(slot_bytes) || addr - slot < HEADER_BYTES {
        return None;
    }
    // SAFETY: `addr - HEADER_BYTES` lies in the same slot (checked above), which is mapped;
    // the header's words are plain data or atomic.
    let header = unsafe { &*((addr - HEADER_BYTES) as *const BlockHeader) };
    Some(Geometry {
        header,
        slot,
        slot_shift: area.slot_shift,
        end: slot + slot_bytes,
    })
}

/// Usable bytes of the live sampled block at `addr`; `None` if it is not one.
pub fn usable_size(addr: usize) -> Option<usize> {
    let g = geometry(addr)?;
    (g.header.state.load(Ordering::Acquire) == live_state(addr)).then(|| g.end - addr)
}

/// `realloc` of the live sampled block at `addr` to `new_size` bytes at `align_bytes`,
/// where it is, when its slot still fits it (and it uses more than a quarter of it), with
/// `info` in its header from then on. Returns what its header said before; `None` when it
/// must be copied elsewhere, or when `addr` is not a live sampled block.
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
    let need = (addr - g.slot).checked_add(new_size)?;
    let slot_bytes = g.end - g.slot;
    if need > slot_bytes || (need <= slot_bytes / 4 && slot_bytes > 1 << MIN_SLOT_SHIFT) {
        return None;
    }
    let header = (addr - HEADER_BYTES) as *mut BlockHeader;
    // SAFETY: the block's header, just below it, in memory the caller owns.
    let old = unsafe {
        let old = (*header).info;
        (*header).info = info;
        old
    };
    // The statistics' figures change only when the block counts as another size.
    if counted_bytes(old.size) != counted_bytes(info.size) {
        let mut slots = SLOTS.lock();
        slots.live.count(old.size, false);
        slots.live.count(info.size, true);
    }
    Some((NonNull::new(addr as *mut u8)?, old))
}

/// True when `realloc` of the live sampled block at `addr` to `new_size` bytes at
/// `align_bytes` leaves it where it is as the realloc fast path would leave an unsampled
/// block of its recorded size (a small block that stays in its size class's block), and
/// its slot fits the new size. Such a realloc is no allocation, for the profiler as for
/// an unsampled block: nothing is counted and the header stays as it is. (A string grown a
/// byte at a time in a slot otherwise took the profiler's realloc path at every byte.)
pub fn stays_unmoved(addr: usize, new_size: usize, align_bytes: usize) -> bool {
    let Some(g) = geometry(addr) else {
        return false;
    };
    if g.header.state.load(Ordering::Acquire) != live_state(addr) || addr & (align_bytes - 1) != 0 {
        return false;
    }
    let recorded = g.header.info.size;
    recorded <= SMALL_MAX_BYTES
        && size_class::realloc_keeps(size_class::class_of(recorded).block_bytes(), new_size)
        && new_size <= g.end - addr
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
    // The slot stays resident until the decay (see the module note).
    let mut slots = SLOTS.lock();
    slots.live.count(info.size, false);
    // SAFETY: the slot's block is freed and the slot has that size.
    unsafe { slots.push(g.slot_shift, g.slot, false) };
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(size: usize, align: usize, zero: bool, info: BlockInfo) -> Option<NonNull<u8>> {
        alloc_with_room(size, size, align, zero, info)
    }

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
        for (size, align) in [(1, 16), (100, 16), (3000, 4096), (70_000, 64)] {
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
            // The slot stays ours: a second free is seen as such.
            assert_eq!(free(a), Err(FreeError::DoubleFree));
            assert_eq!(usable_size(a), None);
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
        // Blocks that need a slot above 1 MiB are not served here.
        assert!(alloc((1 << 20) - 32, 16, false, info(1)).is_none());
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
    fn room_and_reallocs_that_stay_in_the_slot() {
        // Room for twice the size: the block can grow to it where it is.
        let s = alloc_with_room(3000, 6000, 16, false, info(2)).expect("sampled block");
        let b = s.as_ptr() as usize;
        assert!(usable_size(b).expect("live") >= 6000);
        assert!(
            resize(b, 6000, 16, info(3)).is_some(),
            "grows into its room"
        );
        assert_eq!(free(b).map(|i| i.stack), Ok(3));
        // Room past the largest slot: the slot fits the size alone.
        let s = alloc_with_room(600_000, 1_200_000, 16, false, info(2)).expect("sampled block");
        assert!(usable_size(s.as_ptr() as usize).expect("live") < 1 << 20);
        assert!(free(s.as_ptr() as usize).is_ok());

        // A realloc stays unmoved (and uncounted) as an unsampled block of the recorded
        // size would stay in its size class's block, and only then.
        let recorded = |stack, size| BlockInfo {
            size,
            ..info(stack)
        };
        let s = alloc_with_room(100, 100, 16, false, recorded(4, 100)).expect("sampled block");
        let b = s.as_ptr() as usize;
        let class = size_class::class_of(100).block_bytes();
        assert!(stays_unmoved(b, class, 16), "up to its class's block");
        assert!(!stays_unmoved(b, class + 1, 16), "past its class's block");
        assert!(
            !stays_unmoved(b, 10, 16),
            "less than half of its class's block"
        );
        assert!(!stays_unmoved(b, 100, 64) || b % 64 == 0, "alignment kept");
        assert!(!stays_unmoved(b + 16, 100, 16), "not a block start");
        assert!(free(b).is_ok());
        assert!(!stays_unmoved(b, 100, 16), "freed");
        // Recorded sizes above the small classes always take the counted path.
        let big = SMALL_MAX_BYTES + 1;
        let s = alloc_with_room(big, 0, 16, false, recorded(5, big)).expect("block");
        assert!(!stays_unmoved(s.as_ptr() as usize, big, 16));
        assert!(free(s.as_ptr() as usize).is_ok());
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
    fn the_decay_gives_back_only_slots_unused_for_a_whole_delay() {
        // 512 KiB slots (no other test uses them); a second block keeps the area mapped.
        let size = 500_000;
        let keep = alloc(size, 16, false, info(1)).expect("block");
        let p = alloc(size, 16, false, info(2)).expect("block");
        // SAFETY: a live block of `size` bytes.
        unsafe { p.as_ptr().write_bytes(0xab, size) };
        assert!(free(p.as_ptr() as usize).is_ok());
        // Freed just now: a decay with a delay of an hour leaves it resident, as it was.
        decay(3_600_000);
        let q = alloc(size, 16, false, info(3)).expect("block");
        assert_eq!(q, p, "the freed slot is reused");
        // SAFETY: a live block of `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), size) };
        assert!(bytes.iter().all(|&b| b == 0xab), "not purged by a decay");
        assert!(free(q.as_ptr() as usize).is_ok());
        // With no delay, the decay purges it (all but its first OS page).
        decay(0);
        let r = alloc(size, 16, false, info(4)).expect("block");
        assert_eq!(r, p);
        // SAFETY: a live block of `size` bytes; the offset lies inside it.
        let bytes = unsafe {
            core::slice::from_raw_parts(r.as_ptr().add(OS_PAGE_BYTES), size - OS_PAGE_BYTES)
        };
        assert!(bytes.iter().all(|&b| b == 0), "purged by the decay");
        assert!(free(r.as_ptr() as usize).is_ok());
        assert!(free(keep.as_ptr() as usize).is_ok());
    }

    #[test]
    fn too_large_alignment_is_refused() {
        assert!(alloc(16, 4 << 20, false, info(0)).is_none());
    }
}
