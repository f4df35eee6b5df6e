//! Huge blocks (above the buddy limit): one mapping per block.
//!
//! ```text
//! mapping base (4 MiB aligned)                      user pointer
//! ├── OS page: HugeHeader { magic, map_bytes, user_offset, sample }
//! ├── (padding up to the alignment)
//! └── user block ...  ───────────────────────────── base + user_offset
//! ```
//! The mapping is 4 MiB-aligned so the header of a block is found from the user pointer in
//! O(1): at the chunk base when the user pointer lies in the first chunk (`Kind::Huge`), or
//! in the OS page just below it when the alignment is 4 MiB or more (`Kind::HugeFar`). Only
//! the chunk holding the user pointer is marked in the region map.
//!
//! `realloc` grows a block in place with `mremap` when the address space after it is free,
//! and otherwise moves the pages (no copy) to a new aligned mapping with
//! `mremap(MREMAP_FIXED)`.
//!
//! A cache keeps recently freed mappings (bounded in count and bytes), because programs
//! that free and re-allocate big buffers in a loop would otherwise pay a map, an unmap and
//! a page fault per OS page every time. A cached mapping serves a smaller request by
//! splitting: the request takes the front (rounded up to whole chunks, so the rest still
//! starts on a chunk) and the rest stays cached, resident pages and all. A request larger
//! than every cached mapping takes the largest and grows it with `mremap` (in place, or
//! moved without copying), so its resident pages are reused too. Freed neighbours merge
//! again. The decay unmaps a cached mapping once it has waited a whole purge delay unused
//! ([`Large::decay`]); a merged mapping is as young as its youngest part (a merge makes one
//! range of two, and a cached range is unmapped whole), which keeps the older part up to a
//! delay longer, within the cache's bound in bytes.
//!
//! A block sampled by the heap profiler is an ordinary huge block whose header also holds
//! the profiler's [`SampleRecord`]: it comes from the cache and goes back to it like any
//! other, and [`Large::free`] hands the record back. The header's OS page is read by every
//! free anyway, so an unsampled free pays one more load from the same cache line.

use super::SampleRecord;
use crate::os::{Os, OS_PAGE_BYTES};
use crate::region_map::{self, Kind, CHUNK_BYTES};
use core::ptr::NonNull;

const MAGIC: usize = 0x6f78_6875_6765_2121; // "oxhuge!!"
/// Mappings the cache keeps.
const CACHE_SLOTS: usize = 16;
/// Bytes the cache keeps.
const CACHE_MAX_BYTES: usize = 128 << 20;
/// Largest mapping the cache keeps.
const CACHE_MAX_BLOCK_BYTES: usize = 32 << 20;

#[repr(C)]
struct HugeHeader {
    magic: usize,
    map_bytes: usize,
    user_offset: usize,
    /// The heap profiler's record, when the block is sampled.
    sample: Option<SampleRecord>,
}

/// Why a huge-block operation was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HugeError {
    /// The pointer is not the user pointer of a live huge block.
    InvalidPointer,
}

/// Offset of the user block from the mapping base for `align_bytes`.
fn user_offset(align_bytes: usize) -> usize {
    align_bytes.max(OS_PAGE_BYTES)
}

/// The header of the live huge block at `ptr`, if `ptr` is one.
fn header_of(ptr: usize) -> Option<*mut HugeHeader> {
    let kind = region_map::kind_of(ptr);
    let header = match kind {
        Kind::Huge => region_map::chunk_base(ptr),
        Kind::HugeFar if ptr & (CHUNK_BYTES - 1) == 0 => ptr - OS_PAGE_BYTES,
        _ => return None,
    } as *mut HugeHeader;
    // SAFETY: the region map says a huge mapping of ours holds `header` (the base of its
    // first chunk, or the OS page below a far user pointer), so it is mapped and readable.
    let (magic, offset) = unsafe { ((*header).magic, (*header).user_offset) };
    let far = offset >= CHUNK_BYTES;
    let user = if far {
        header as usize + OS_PAGE_BYTES
    } else {
        header as usize + offset
    };
    (magic == MAGIC && user == ptr && far == (kind == Kind::HugeFar)).then_some(header)
}

/// Mapping base of the block whose header is `header`.
///
/// # Safety
/// `header` must be the header of a live huge block.
unsafe fn base_of(header: *mut HugeHeader) -> usize {
    // SAFETY: the caller guarantees a live header.
    let offset = unsafe { (*header).user_offset };
    if offset >= CHUNK_BYTES {
        header as usize + OS_PAGE_BYTES - offset
    } else {
        header as usize
    }
}

fn mark(user: usize, offset: usize) {
    let kind = if offset >= CHUNK_BYTES {
        Kind::HugeFar
    } else {
        Kind::Huge
    };
    region_map::set(user, kind);
}

/// Writes a header (with the profiler's record `sample`) for a block at `base` with
/// `offset` and returns the user pointer.
///
/// # Safety
/// `base` must be the start of a mapping of ours of `map_bytes`, with no live block.
unsafe fn install(
    base: usize,
    map_bytes: usize,
    offset: usize,
    sample: Option<SampleRecord>,
) -> NonNull<u8> {
    let user = base + offset;
    let header = if offset >= CHUNK_BYTES {
        user - OS_PAGE_BYTES
    } else {
        base
    } as *mut HugeHeader;
    // SAFETY: the header page lies inside the mapping (offset >= one OS page).
    unsafe {
        header.write(HugeHeader {
            magic: MAGIC,
            map_bytes,
            user_offset: offset,
            sample,
        })
    };
    mark(user, offset);
    // SAFETY: `user` is inside a live mapping, so it is not null.
    unsafe { NonNull::new_unchecked(user as *mut u8) }
}

#[derive(Clone, Copy)]
struct CachedMapping {
    /// Chunk-aligned start.
    base: usize,
    /// Length, a multiple of the OS page.
    map_bytes: usize,
    /// When it was freed (ms, the OS layer's clock).
    freed_ms: u64,
}

impl CachedMapping {
    const EMPTY: CachedMapping = CachedMapping {
        base: 0,
        map_bytes: 0,
        freed_ms: 0,
    };

    fn end(&self) -> usize {
        self.base + self.map_bytes
    }
}

/// Huge-block bookkeeping: the cache of freed mappings and counters.
pub struct Large {
    cache: [CachedMapping; CACHE_SLOTS],
    cache_len: usize,
    cache_bytes: usize,
    live_bytes: usize,
}

impl Default for Large {
    fn default() -> Self {
        Self::new()
    }
}

impl Large {
    /// No huge block yet.
    pub const fn new() -> Self {
        Large {
            cache: [CachedMapping::EMPTY; CACHE_SLOTS],
            cache_len: 0,
            cache_bytes: 0,
            live_bytes: 0,
        }
    }

    /// Bytes mapped for live huge blocks.
    pub fn live_bytes(&self) -> usize {
        self.live_bytes
    }

    /// Bytes held by the cache of freed mappings.
    pub fn cached_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Cached (freed, kept for reuse) mappings now.
    pub fn cached_count(&self) -> usize {
        self.cache_len
    }

    /// Calls `f(base, bytes)` for each cached mapping (for the statistics' resident count).
    pub fn for_each_cached(&self, mut f: impl FnMut(usize, usize)) {
        for m in self.cache.iter().take(self.cache_len) {
            f(m.base, m.map_bytes);
        }
    }

    /// The mapping `(base, bytes)` of the live huge block whose user pointer lies in the
    /// chunk at `chunk` (marked `kind` in the region map). Call with the huge allocator's
    /// lock held (`&self`), so that the block cannot be freed meanwhile.
    pub fn mapping_in_chunk(&self, chunk: usize, kind: Kind) -> Option<(usize, usize)> {
        let header = match kind {
            Kind::Huge => chunk,
            Kind::HugeFar => chunk.checked_sub(OS_PAGE_BYTES)?,
            _ => return None,
        } as *mut HugeHeader;
        // SAFETY: the region map marks a live huge block's chunk, whose header is at the
        // chunk base (Huge) or in the OS page below it (HugeFar); the lock keeps it mapped.
        unsafe {
            if (*header).magic != MAGIC {
                return None;
            }
            Some((base_of(header), (*header).map_bytes))
        }
    }

    /// Mapping size for `size` bytes at `align_bytes`.
    fn map_bytes_for(size: usize, align_bytes: usize) -> Option<usize> {
        // At least one byte: a zero-byte block at a 4 MiB alignment would otherwise put its
        // user pointer at the end of the mapping, in a chunk that belongs to someone else.
        let size = size.max(1);
        crate::os::round_up(size.checked_add(user_offset(align_bytes))?, OS_PAGE_BYTES)
    }

    /// Index of the cached mapping closest in size to `need`: the smallest at least as
    /// large, else the largest.
    fn closest_cached(&self, need: usize) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, m) in self.cache.iter().take(self.cache_len).enumerate() {
            let m = m.map_bytes;
            let better = match best {
                None => true,
                Some((_, b)) if m >= need => b < need || m < b,
                Some((_, b)) => b < need && m > b,
            };
            if better {
                best = Some((i, m));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Removes cache entry `i` (moving the last one into its place) and returns it.
    fn remove_cached(&mut self, i: usize) -> Option<CachedMapping> {
        let cached = self.cache.get_mut(..self.cache_len)?;
        let (last, rest) = cached.split_last_mut()?;
        if let Some(other) = rest.get_mut(i) {
            core::mem::swap(other, last);
        }
        let found = *last;
        self.cache_len -= 1;
        self.cache_bytes -= found.map_bytes;
        Some(found)
    }

    /// A mapping of at least `need` bytes made from the cache, if it holds any: the front
    /// of the closest mapping that is large enough (the rest stays cached), or the largest
    /// one grown. Returns `(base, bytes)`.
    fn take_from_cache<O: Os>(&mut self, os: &O, need: usize) -> Option<(usize, usize)> {
        let i = self.closest_cached(need)?;
        let m = *self.cache.get(i)?;
        if m.map_bytes >= need {
            // The front, in whole chunks, so that the rest starts on a chunk boundary.
            let front = crate::os::round_up(need, CHUNK_BYTES)?;
            if front < m.map_bytes {
                if let Some(rest) = self.cache.get_mut(i) {
                    *rest = CachedMapping {
                        base: m.base + front,
                        map_bytes: m.map_bytes - front,
                        freed_ms: m.freed_ms,
                    };
                    self.cache_bytes -= front;
                    return Some((m.base, front));
                }
            }
            let m = self.remove_cached(i)?;
            return Some((m.base, m.map_bytes));
        }
        let m = self.remove_cached(i)?;
        Self::grow_cached(os, m, need)
    }

    /// Grows a cached mapping to exactly `need` bytes, in place or by moving its pages to a
    /// new aligned reservation. Its resident pages are reused either way, which is the
    /// point: no page fault for the part already touched. `None` (and the mapping given back
    /// to the OS) when the OS refuses.
    fn grow_cached<O: Os>(os: &O, m: CachedMapping, need: usize) -> Option<(usize, usize)> {
        // SAFETY: a cached mapping starts at a non-null address of ours.
        let base = unsafe { NonNull::new_unchecked(m.base as *mut u8) };
        // SAFETY: `base` starts a cached range of `m.map_bytes` that is ours and unused.
        if unsafe { os.resize_in_place(base, m.map_bytes, need) } {
            return Some((m.base, need));
        }
        if let Some(target) = os.map(need, CHUNK_BYTES) {
            // SAFETY: both ranges are ours and unused.
            if unsafe { os.move_mapping(base, m.map_bytes, target, need) } {
                return Some((target.as_ptr() as usize, need));
            }
            // SAFETY: the reservation is ours and unused.
            unsafe { os.unmap(target, need) };
        }
        // SAFETY: the cached range at `base` of `m.map_bytes` is ours and unused.
        unsafe { os.unmap(base, m.map_bytes) };
        None
    }

    /// Puts a freed mapping in the cache, merged with a cached neighbour where there is
    /// one. `false` when it does not fit (the caller unmaps it).
    fn cache_insert(&mut self, base: usize, map_bytes: usize, now_ms: u64) -> bool {
        if map_bytes > CACHE_MAX_BLOCK_BYTES || self.cache_bytes + map_bytes > CACHE_MAX_BYTES {
            return false;
        }
        let mut m = CachedMapping {
            base,
            map_bytes,
            freed_ms: now_ms,
        };
        // At most one neighbour on each side: cached ranges never overlap.
        let mut i = 0;
        while i < self.cache_len {
            let Some(&c) = self.cache.get(i) else { break };
            if c.end() == m.base || m.end() == c.base {
                if let Some(c) = self.remove_cached(i) {
                    m.base = m.base.min(c.base);
                    m.map_bytes += c.map_bytes;
                    m.freed_ms = m.freed_ms.max(c.freed_ms);
                }
                continue; // entry i is now another one
            }
            i += 1;
        }
        match self.cache.get_mut(self.cache_len) {
            Some(slot) => {
                *slot = m;
                self.cache_len += 1;
                self.cache_bytes += m.map_bytes;
                true
            }
            // Full, so nothing merged (a merge frees a slot): `m` is still just the
            // caller's range, which the caller unmaps.
            None => false,
        }
    }

    /// Allocates a huge block, with the profiler's record `sample` when it is sampled.
    /// Returns the user pointer and whether it reads as zeros.
    pub fn alloc<O: Os>(
        &mut self,
        os: &O,
        size: usize,
        align_bytes: usize,
        sample: Option<SampleRecord>,
    ) -> Option<(NonNull<u8>, bool)> {
        let offset = user_offset(align_bytes);
        let need = Self::map_bytes_for(size, align_bytes)?;
        if need > isize::MAX as usize {
            return None;
        }
        if offset < CHUNK_BYTES {
            if let Some((base, bytes)) = self.take_from_cache(os, need) {
                self.live_bytes += bytes;
                crate::stats::held_add(bytes);
                // SAFETY: a cached mapping of `bytes >= need`, ours and unused.
                return Some((unsafe { install(base, bytes, offset, sample) }, false));
            }
        }
        // Aligning the mapping to the alignment (when above a chunk) keeps `base + offset`
        // aligned.
        let base = os.map(need, CHUNK_BYTES.max(align_bytes))?;
        self.live_bytes += need;
        crate::stats::held_add(need);
        // SAFETY: a fresh mapping of `need` bytes.
        Some((
            unsafe { install(base.as_ptr() as usize, need, offset, sample) },
            true,
        ))
    }

    /// Usable bytes of the huge block at `ptr`.
    pub fn usable_size(ptr: usize) -> Option<usize> {
        let header = header_of(ptr)?;
        // SAFETY: a live header.
        unsafe { Some((*header).map_bytes - (*header).user_offset) }
    }

    /// True when `ptr` is the user pointer of a live huge block.
    pub fn owns(ptr: usize) -> bool {
        header_of(ptr).is_some()
    }

    /// Replaces the profiler's record of the live huge block at `ptr` with `sample`;
    /// returns the one it had.
    pub fn replace_sample(
        &mut self,
        ptr: usize,
        sample: Option<SampleRecord>,
    ) -> Result<Option<SampleRecord>, HugeError> {
        let header = header_of(ptr).ok_or(HugeError::InvalidPointer)?;
        // SAFETY: a live header, which only the huge allocator's lock holder (`&mut self`)
        // writes.
        Ok(unsafe { core::mem::replace(&mut (*header).sample, sample) })
    }

    /// Frees the huge block at `ptr`; returns the profiler's record when it was sampled.
    pub fn free<O: Os>(&mut self, os: &O, ptr: usize) -> Result<Option<SampleRecord>, HugeError> {
        let header = header_of(ptr).ok_or(HugeError::InvalidPointer)?;
        // SAFETY: a live header.
        let (base, map_bytes, offset, sample) = unsafe {
            (
                base_of(header),
                (*header).map_bytes,
                (*header).user_offset,
                (*header).sample,
            )
        };
        // SAFETY: `header` is the live header checked just above; clearing its magic makes a
        // second free of `ptr` fail cleanly.
        unsafe { (*header).magic = 0 };
        region_map::clear(ptr);
        self.live_bytes -= map_bytes;
        crate::stats::held_sub(map_bytes);
        if offset < CHUNK_BYTES && self.cache_insert(base, map_bytes, os.now_ms()) {
            return Ok(sample);
        }
        // SAFETY: the whole mapping is ours and no longer used.
        unsafe { os.unmap(NonNull::new_unchecked(base as *mut u8), map_bytes) };
        Ok(sample)
    }

    /// Resizes the huge block at `ptr` to `new_size` bytes without copying, if possible:
    /// in place, or by moving its pages to a new mapping. `Ok(None)` means "allocate, copy
    /// and free instead".
    pub fn resize<O: Os>(
        &mut self,
        os: &O,
        ptr: usize,
        new_size: usize,
    ) -> Result<Option<NonNull<u8>>, HugeError> {
        let header = header_of(ptr).ok_or(HugeError::InvalidPointer)?;
        // SAFETY: a live header.
        let (base, map_bytes, offset) =
            unsafe { (base_of(header), (*header).map_bytes, (*header).user_offset) };
        let Some(need) = new_size
            .checked_add(offset)
            .and_then(|n| crate::os::round_up(n, OS_PAGE_BYTES))
            .filter(|&n| n <= isize::MAX as usize)
        else {
            return Ok(None);
        };
        if need <= map_bytes && need >= map_bytes / 2 {
            // The mapping still fits and is not twice too large: keep it as it is. Shrinking
            // it would unmap pages that the next growth (a buffer grown by doubling from a
            // cached mapping) would fault in again.
            // SAFETY: `ptr` is a live user pointer.
            return Ok(Some(unsafe { NonNull::new_unchecked(ptr as *mut u8) }));
        }
        // SAFETY: `base` starts the block's memory of `map_bytes`.
        let base_ptr = unsafe { NonNull::new_unchecked(base as *mut u8) };
        // SAFETY: `base_ptr` starts the live block's memory of `map_bytes`, ours and used by nothing else.
        if unsafe { os.resize_in_place(base_ptr, map_bytes, need) } {
            // SAFETY: the header page is still mapped (need > offset).
            unsafe { (*header).map_bytes = need };
            self.live_bytes = self.live_bytes - map_bytes + need;
            crate::stats::held_resize(map_bytes, need);
            // SAFETY: `ptr` is still the live user pointer.
            return Ok(Some(unsafe { NonNull::new_unchecked(ptr as *mut u8) }));
        }
        if need < map_bytes || offset >= CHUNK_BYTES {
            return Ok(None);
        }
        // Move the pages to a fresh aligned reservation of the new size.
        let Some(target) = os.map(need, CHUNK_BYTES) else {
            return Ok(None);
        };
        // The old chunk's mark goes before its pages do: once they are unmapped, another
        // thread may map a segment or region there and mark it, and a late clear would
        // erase that mark (the map's rule: clear before unmap).
        region_map::clear(ptr);
        // SAFETY: both ranges are ours; on success the old one is gone.
        if !unsafe { os.move_mapping(base_ptr, map_bytes, target, need) } {
            mark(ptr, offset);
            // SAFETY: the reservation is ours and unused.
            unsafe { os.unmap(target, need) };
            return Ok(None);
        }
        self.live_bytes = self.live_bytes - map_bytes + need;
        crate::stats::held_resize(map_bytes, need);
        let new_base = target.as_ptr() as usize;
        // SAFETY: the moved mapping starts at `new_base` with the header (moved along).
        unsafe { (*(new_base as *mut HugeHeader)).map_bytes = need };
        mark(new_base + offset, offset);
        // SAFETY: inside a live mapping.
        Ok(Some(unsafe {
            NonNull::new_unchecked((new_base + offset) as *mut u8)
        }))
    }

    /// The decay: unmaps the cached mappings freed `delay_ms` or longer ago; returns the
    /// bytes given back.
    pub fn decay<O: Os>(&mut self, os: &O, delay_ms: u64) -> usize {
        let now = os.now_ms();
        let mut released = 0;
        let mut i = 0;
        while i < self.cache_len {
            let Some(&m) = self.cache.get(i) else { break };
            if now.saturating_sub(m.freed_ms) < delay_ms {
                i += 1;
                continue;
            }
            if let Some(m) = self.remove_cached(i) {
                // SAFETY: cached mappings are ours and unused.
                unsafe { os.unmap(NonNull::new_unchecked(m.base as *mut u8), m.map_bytes) };
                released += m.map_bytes;
            }
            // entry i is now another one
        }
        released
    }

    /// Unmaps every cached mapping; returns the bytes given back.
    pub fn trim<O: Os>(&mut self, os: &O) -> usize {
        let released = self.cache_bytes;
        for m in self.cache.iter().take(self.cache_len) {
            // SAFETY: cached mappings are ours and unused.
            unsafe { os.unmap(NonNull::new_unchecked(m.base as *mut u8), m.map_bytes) };
        }
        self.cache_len = 0;
        self.cache_bytes = 0;
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fake::FakeOs;

    #[test]
    fn a_sampled_block_keeps_its_record_through_resize_and_cache_reuse() {
        let os = FakeOs::new();
        let mut large = Large::new();
        let record = |stack| SampleRecord {
            stack,
            size: 5 << 20,
            objects_fixed: 1,
            bytes: 5 << 20,
            born_ns: 9,
        };
        let (p, _) = large.alloc(&os, 5 << 20, 16, Some(record(1))).unwrap();
        let p = p.as_ptr() as usize;
        assert_eq!(
            large.replace_sample(p, Some(record(2))),
            Ok(Some(record(1)))
        );
        // Grown (in place or moved): the header, record included, goes with the pages.
        let q = large.resize(&os, p, 20 << 20).unwrap().unwrap().as_ptr() as usize;
        assert_eq!(large.free(&os, q), Ok(Some(record(2))));
        // Its mapping serves the next block from the cache, which has no record.
        let (r, zeroed) = large.alloc(&os, 5 << 20, 16, None).unwrap();
        assert!(!zeroed, "from the cache");
        assert_eq!(large.free(&os, r.as_ptr() as usize), Ok(None));
        assert_eq!(
            large.replace_sample(r.as_ptr() as usize, None),
            Err(HugeError::InvalidPointer)
        );
        large.trim(&os);
        assert_eq!(os.live_bytes(), 0);
    }

    #[test]
    fn alloc_free_and_lookup() {
        let os = FakeOs::new();
        let mut large = Large::new();
        let (p, zeroed) = large.alloc(&os, 3 << 20, 16, None).unwrap();
        assert!(zeroed);
        let p = p.as_ptr() as usize;
        assert_eq!(p % OS_PAGE_BYTES, 0);
        assert!(Large::usable_size(p).unwrap() >= 3 << 20);
        assert!(Large::owns(p));
        assert!(!Large::owns(p + 16), "interior pointer");
        assert_eq!(large.free(&os, p + 4096), Err(HugeError::InvalidPointer));
        large.free(&os, p).unwrap();
        assert_eq!(
            large.free(&os, p),
            Err(HugeError::InvalidPointer),
            "double free"
        );
        assert!(large.cached_bytes() > 0);
        large.trim(&os);
        assert_eq!(os.live_bytes(), 0);
    }

    #[test]
    fn cache_splits_merges_and_trims() {
        let os = FakeOs::new();
        let mut large = Large::new();
        let (p, _) = large.alloc(&os, 30 << 20, 16, None).unwrap();
        large.free(&os, p.as_ptr() as usize).unwrap();
        let cached = large.cached_bytes();
        assert!(cached >= 30 << 20);
        let maps = os.map_calls();
        // Two smaller blocks come out of the one cached mapping, without a new map.
        let (a, zeroed) = large.alloc(&os, 5 << 20, 16, None).unwrap();
        assert!(!zeroed, "a reused mapping is not known to be zero");
        let (b, _) = large.alloc(&os, 3 << 20, 16, None).unwrap();
        assert_eq!(os.map_calls(), maps, "served from the cache");
        assert_eq!(large.cached_count(), 1);
        assert_eq!(large.cached_bytes(), cached - (8 << 20) - (4 << 20));
        assert!(Large::usable_size(a.as_ptr() as usize).unwrap() >= 5 << 20);
        // The second starts where the first's whole chunks end.
        assert_eq!(b.as_ptr() as usize, a.as_ptr() as usize + (8 << 20));
        // SAFETY: both blocks are ours and at least this long.
        unsafe {
            a.as_ptr().write_bytes(1, 5 << 20);
            b.as_ptr().write_bytes(2, 3 << 20);
        }
        // Freed, the pieces merge back into one mapping.
        large.free(&os, a.as_ptr() as usize).unwrap();
        large.free(&os, b.as_ptr() as usize).unwrap();
        assert_eq!(large.cached_count(), 1);
        assert_eq!(large.cached_bytes(), cached);
        // A larger request grows the cached mapping instead of mapping afresh.
        let (c, _) = large.alloc(&os, 31 << 20, 16, None).unwrap();
        assert_eq!(large.cached_count(), 0);
        // SAFETY: the block is ours and at least 31 MiB long; the front kept its bytes.
        let front = unsafe { core::slice::from_raw_parts(c.as_ptr(), 31 << 20) };
        assert!(front[..(5 << 20)].iter().all(|&x| x == 1));
        assert!(front[(8 << 20)..(11 << 20)].iter().all(|&x| x == 2));
        large.free(&os, c.as_ptr() as usize).unwrap();
        assert_eq!(large.cached_count(), 1);
        assert!(large.trim(&os) >= 31 << 20);
        assert_eq!(large.cached_count(), 0);
        assert_eq!(os.live_bytes(), 0);
    }

    #[test]
    fn huge_alignments() {
        let os = FakeOs::new();
        let mut large = Large::new();
        // A zero-byte block at a chunk alignment still lies inside its own mapping.
        let (z, _) = large.alloc(&os, 0, 1 << 22, None).unwrap();
        assert!(Large::usable_size(z.as_ptr() as usize).unwrap() >= 1);
        large.free(&os, z.as_ptr() as usize).unwrap();
        for align in [1 << 12, 1 << 16, 1 << 21, 1 << 22, 1 << 24] {
            let (p, _) = large.alloc(&os, 2 << 20, align, None).unwrap();
            let p = p.as_ptr() as usize;
            assert_eq!(p % align, 0, "align {align}");
            assert!(Large::usable_size(p).unwrap() >= 2 << 20);
            // SAFETY: the block is ours and at least 2 MiB long.
            unsafe { (p as *mut u8).write_bytes(7, 2 << 20) };
            large.free(&os, p).unwrap();
        }
        large.trim(&os);
        assert_eq!(os.live_bytes(), 0);
    }

    #[test]
    fn resize_keeps_contents_and_map_failure_is_clean() {
        let os = FakeOs::new();
        let mut large = Large::new();
        let (p, _) = large.alloc(&os, 2 << 20, 16, None).unwrap();
        // SAFETY: the block is ours and at least 2 MiB long.
        unsafe { p.as_ptr().write_bytes(0x5A, 2 << 20) };
        let q = large
            .resize(&os, p.as_ptr() as usize, 40 << 20)
            .unwrap()
            .unwrap();
        // SAFETY: the resized block is ours and at least 40 MiB long.
        let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), 40 << 20) };
        assert!(bytes[..2 << 20].iter().all(|&b| b == 0x5A));
        assert!(bytes[2 << 20..].iter().all(|&b| b == 0));
        os.set_exhausted(true);
        assert!(large.alloc(&os, 8 << 20, 16, None).is_none());
        os.set_exhausted(false);
        large.free(&os, q.as_ptr() as usize).unwrap();
        large.trim(&os);
        assert_eq!(os.live_bytes(), 0);
    }
}
