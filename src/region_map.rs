//! The region map: for every 4 MiB-aligned chunk of the address space, what oxmalloc keeps
//! there. `free(p)` reads one byte, `MAP[p >> 22]`, to learn in O(1) and without a lock
//! whether `p` is in a slab segment, a buddy region, a huge block, a sampled block of the
//! heap profiler, or not ours at all.
//!
//! The map is a zero-initialised static of 2^25 bytes (user space is 2^47 bytes on
//! x86-64 and aarch64 Linux). It lives in `.bss`: the kernel backs only the OS pages we
//! write, so it costs 32 MiB of address space and a few KiB of memory.
//!
//! Invariant: a chunk is marked before any block in it is handed out, and cleared before
//! the chunk is unmapped. A huge block marks the chunk holding its user pointer only; the
//! header is found from the mark (see [`Kind`]).
//!
//! Alternatives rejected: a two-level radix tree costs a second dependent load on every
//! `free`; a hash of segments needs a lock or a lock-free table for no gain at 32 MiB.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// log2 of the chunk size the map is keyed by (4 MiB): the segment and region size.
pub const CHUNK_SHIFT: u32 = 22;
/// Chunk size in bytes.
pub const CHUNK_BYTES: usize = 1 << CHUNK_SHIFT;
/// Addresses at or above this are never ours.
pub const ADDRESS_LIMIT: usize = 1 << 47;
const ENTRY_COUNT: usize = ADDRESS_LIMIT >> CHUNK_SHIFT;

/// What a chunk holds.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Not ours.
    None = 0,
    /// A slab segment; its header is at the chunk base.
    Slab = 1,
    /// A buddy region; its header is at the chunk base.
    Buddy = 2,
    /// The user pointer of a huge block lies here; its header is at the chunk base.
    Huge = 3,
    /// The user pointer of a huge block with alignment ≥ 4 MiB lies at the chunk base; its
    /// header is the OS page just below.
    HugeFar = 4,
    /// Sampled blocks of the heap profiler (its slots, up to 1 MiB); an area header is at
    /// the chunk base.
    Sampled = 5,
    /// The guarded-sampling pool (`OXMALLOC_GUARD`): its slot table is at the chunk base.
    Guarded = 6,
}

struct Map([AtomicU8; ENTRY_COUNT]);

// The zeroed array is built at compile time; `AtomicU8` has the layout of `u8`.
static MAP: Map = Map([const { AtomicU8::new(0) }; ENTRY_COUNT]);

/// The kind of the chunk holding `addr`.
#[inline(always)]
pub fn kind_of(addr: usize) -> Kind {
    match MAP.0.get(addr >> CHUNK_SHIFT) {
        Some(entry) => match entry.load(Ordering::Acquire) {
            1 => Kind::Slab,
            2 => Kind::Buddy,
            3 => Kind::Huge,
            4 => Kind::HugeFar,
            5 => Kind::Sampled,
            6 => Kind::Guarded,
            _ => Kind::None,
        },
        None => Kind::None,
    }
}

/// The raw map byte of the chunk holding `addr` (0 when out of range), for fast paths that
/// compare against one kind.
#[inline(always)]
pub fn raw_kind_of(addr: usize) -> u8 {
    match MAP.0.get(addr >> CHUNK_SHIFT) {
        Some(entry) => entry.load(Ordering::Relaxed),
        None => 0,
    }
}

/// Marks the chunk holding `addr`. Publishing with Release pairs with the Acquire load in
/// [`kind_of`] so that a reader who sees the kind also sees the header written before.
pub fn set(addr: usize, kind: Kind) {
    match MAP.0.get(addr >> CHUNK_SHIFT) {
        Some(entry) => entry.store(kind as u8, Ordering::Release),
        None => crate::fatal::fatal("region map: address beyond the supported range"),
    }
    note_marked(addr >> CHUNK_SHIFT);
}

/// Lowest and highest chunk index ever marked (the statistics scan only that range).
static MARKED_LOW: AtomicUsize = AtomicUsize::new(usize::MAX);
static MARKED_HIGH: AtomicUsize = AtomicUsize::new(0);

/// Widens the marked range to `index` (a load each when it is already inside: chunks are
/// marked when mappings are made, next to a syscall).
fn note_marked(index: usize) {
    if index < MARKED_LOW.load(Ordering::Relaxed) {
        MARKED_LOW.fetch_min(index, Ordering::Relaxed);
    }
    if index > MARKED_HIGH.load(Ordering::Relaxed) {
        MARKED_HIGH.fetch_max(index, Ordering::Relaxed);
    }
}

/// Calls `f(chunk base, kind)` for every marked chunk, in address order. Marks may change
/// meanwhile; a caller that reads the memory of a chunk must hold the lock that keeps it
/// mapped (the segment pool's for slab segments, the buddy arena's, the huge allocator's).
pub fn for_each_marked(mut f: impl FnMut(usize, Kind)) {
    let low = MARKED_LOW.load(Ordering::Relaxed);
    let high = MARKED_HIGH.load(Ordering::Relaxed);
    if low > high {
        return;
    }
    for (i, entry) in MAP.0.iter().enumerate().take(high + 1).skip(low) {
        if entry.load(Ordering::Relaxed) != 0 {
            f(i << CHUNK_SHIFT, kind_of(i << CHUNK_SHIFT));
        }
    }
}

/// Clears the chunk holding `addr` (before it is unmapped).
pub fn clear(addr: usize) {
    if let Some(entry) = MAP.0.get(addr >> CHUNK_SHIFT) {
        entry.store(Kind::None as u8, Ordering::Release);
    }
}

/// The base address of the chunk holding `addr`.
#[inline(always)]
pub const fn chunk_base(addr: usize) -> usize {
    addr & !(CHUNK_BYTES - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmarked_and_out_of_range_addresses_are_not_ours() {
        assert_eq!(kind_of(0), Kind::None);
        assert_eq!(kind_of(usize::MAX), Kind::None);
        assert_eq!(kind_of(ADDRESS_LIMIT), Kind::None);
        assert_eq!(raw_kind_of(usize::MAX), 0);
    }

    #[test]
    fn set_and_clear_round_trip() {
        // An address far from anything the process maps (just below the limit).
        let addr = ADDRESS_LIMIT - CHUNK_BYTES + 12345;
        set(addr, Kind::Buddy);
        assert_eq!(kind_of(addr), Kind::Buddy);
        assert_eq!(kind_of(chunk_base(addr)), Kind::Buddy);
        assert_eq!(kind_of(chunk_base(addr) - 1), Kind::None);
        clear(addr);
        assert_eq!(kind_of(addr), Kind::None);
    }
}
