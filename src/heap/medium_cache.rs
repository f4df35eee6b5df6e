//! A per-thread cache of medium blocks, so that a thread that frees and re-allocates medium
//! blocks (16 KiB – 1 MiB) does not take the buddy arena's lock every time.
//!
//! A freed block is *parked* (its state in the region header goes from Allocated to Cached
//! with one compare-and-swap, which also catches double frees) and kept in a small bin by
//! its size; an allocation that fits (enough pages, aligned) takes it back. The cache is
//! bounded (about 2.75 MiB per thread at most), flushed back to the arena at thread exit,
//! by `malloc_trim`, and by the time-based decay.

use crate::block::buddy::{BuddyArena, FreeError, MediumRequest, MAX_ORDER};
use crate::os::Os;
use crate::sync::Mutex;
use core::ptr::NonNull;

/// Blocks kept per bin (bin `k` holds blocks of `2^(k-1) + 1 ..= 2^k` pages): more of the
/// small ones, fewer of the large. Medium blocks start above 4 pages (bin 3).
const SLOTS_PER_BIN: [usize; MAX_ORDER + 1] = [0, 0, 0, 8, 4, 4, 2, 1, 1, 0];
const MAX_SLOTS: usize = 8;

#[derive(Clone, Copy)]
struct Parked {
    addr: usize,
    pages: usize,
}

/// The parked blocks of one thread.
pub struct MediumCache {
    bins: [[Parked; MAX_SLOTS]; MAX_ORDER + 1],
    counts: [u8; MAX_ORDER + 1],
}

impl Default for MediumCache {
    fn default() -> Self {
        Self::new()
    }
}

fn bin_of(pages: usize) -> usize {
    pages.next_power_of_two().trailing_zeros() as usize
}

impl MediumCache {
    /// An empty cache.
    pub const fn new() -> Self {
        MediumCache {
            bins: [[Parked { addr: 0, pages: 0 }; MAX_SLOTS]; MAX_ORDER + 1],
            counts: [0; MAX_ORDER + 1],
        }
    }

    /// A parked block that serves `request` (enough pages, aligned), allocated again.
    #[inline]
    pub fn pop(&mut self, request: MediumRequest) -> Option<NonNull<u8>> {
        let bin = bin_of(request.pages);
        let slots = self.bins.get_mut(bin)?;
        let count = self.counts.get_mut(bin)?;
        // `count` never exceeds the bin's slots (`push` checks), but the slice keeps that
        // from being a proof obligation here.
        let parked = slots.get_mut(..*count as usize)?;
        let align = crate::block::buddy::span_bytes(request.order);
        let slot = parked
            .iter()
            .rposition(|p| p.pages >= request.pages && p.addr & (align - 1) == 0)?;
        // Move the found block to the end, then drop the end.
        let (last, rest) = parked.split_last_mut()?;
        if let Some(other) = rest.get_mut(slot) {
            core::mem::swap(other, last);
        }
        let found = *last;
        *count -= 1;
        // SAFETY: blocks in the cache were parked by this thread and belong to it.
        unsafe { BuddyArena::unpark_from_cache(found.addr) };
        NonNull::new(found.addr as *mut u8)
    }

    /// Parks the block at `ptr` if there is room in its bin. `Ok(true)` when parked,
    /// `Ok(false)` when the bin is full (the caller frees it to the arena), `Err` when
    /// `ptr` is not an allocated block (a bad or double free).
    pub fn push(&mut self, ptr: usize) -> Result<bool, FreeError> {
        let pages = BuddyArena::allocated_pages(ptr).ok_or(FreeError::InvalidPointer)?;
        let bin = bin_of(pages);
        let (Some(slots), Some(count), Some(&room)) = (
            self.bins.get_mut(bin),
            self.counts.get_mut(bin),
            SLOTS_PER_BIN.get(bin),
        ) else {
            return Ok(false);
        };
        let Some(slot) = slots
            .get_mut(*count as usize)
            .filter(|_| (*count as usize) < room)
        else {
            return Ok(false);
        };
        BuddyArena::park_in_cache(ptr).ok_or(FreeError::InvalidPointer)?;
        *slot = Parked { addr: ptr, pages };
        *count += 1;
        Ok(true)
    }

    /// Frees every parked block to the arena; returns the bytes given back.
    pub fn flush<O: Os>(&mut self, os: &O, arena: &Mutex<BuddyArena>) -> usize {
        let mut bytes = 0;
        for (slots, count) in self.bins.iter().zip(self.counts.iter_mut()) {
            while *count > 0 {
                *count -= 1;
                let Some(&parked) = slots.get(*count as usize) else {
                    crate::fatal::fatal("medium cache: count out of range");
                };
                // SAFETY: parked by this thread; it is allocated again, then freed.
                unsafe { BuddyArena::unpark_from_cache(parked.addr) };
                if arena.lock().free(os, parked.addr).is_err() {
                    crate::fatal::fatal("medium cache: a parked block was not allocated");
                }
                bytes += parked.pages * crate::os::OS_PAGE_BYTES;
            }
        }
        bytes
    }

    /// Blocks parked now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.counts.iter().map(|&c| c as usize).sum()
    }
}
