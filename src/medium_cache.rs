//! A per-thread cache of medium spans, so that a thread that frees and re-allocates medium
//! blocks (16 KiB – 1 MiB) does not take the buddy arena's lock every time.
//!
//! A freed span is *parked* (its state in the region header goes from Allocated to Cached
//! with one compare-and-swap, which also catches double frees) and pushed on a small stack
//! per order; an allocation of that order pops it. The cache is bounded (a few spans per
//! order, about 2.75 MiB per thread at most) and flushed back to the arena at thread exit
//! and by `malloc_trim`.

use crate::buddy::{BuddyArena, FreeError, MAX_ORDER};
use crate::os::Os;
use crate::sync::Mutex;
use core::ptr::{self, NonNull};

/// Spans kept per order: more of the small ones, fewer of the large.
const SLOTS_PER_ORDER: [usize; MAX_ORDER + 1] = [8, 4, 2, 2, 1, 1, 0];
const MAX_SLOTS: usize = 8;

/// The parked spans of one thread.
pub struct MediumCache {
    spans: [[*mut u8; MAX_SLOTS]; MAX_ORDER + 1],
    counts: [u8; MAX_ORDER + 1],
}

impl Default for MediumCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MediumCache {
    /// An empty cache.
    pub const fn new() -> Self {
        MediumCache {
            spans: [[ptr::null_mut(); MAX_SLOTS]; MAX_ORDER + 1],
            counts: [0; MAX_ORDER + 1],
        }
    }

    /// A parked span of `order`, allocated again, if the cache has one.
    #[inline]
    pub fn pop(&mut self, order: usize) -> Option<NonNull<u8>> {
        let count = self.counts.get_mut(order)?;
        if *count == 0 {
            return None;
        }
        *count -= 1;
        let p = self.spans[order][*count as usize];
        // SAFETY: spans in the cache were parked by this thread and belong to it.
        unsafe { BuddyArena::unpark_from_cache(p as usize) };
        NonNull::new(p)
    }

    /// Parks the span at `ptr` if there is room for its order. `Ok(true)` when parked,
    /// `Ok(false)` when the cache is full (the caller frees it to the arena), `Err` when
    /// `ptr` is not an allocated span (a bad or double free).
    pub fn push(&mut self, ptr: usize) -> Result<bool, FreeError> {
        let order = BuddyArena::allocated_order(ptr).ok_or(FreeError::InvalidPointer)?;
        let count = self.counts[order] as usize;
        if count >= SLOTS_PER_ORDER[order] {
            return Ok(false);
        }
        BuddyArena::park_in_cache(ptr).ok_or(FreeError::InvalidPointer)?;
        self.spans[order][count] = ptr as *mut u8;
        self.counts[order] += 1;
        Ok(true)
    }

    /// Frees every parked span to the arena; returns the bytes given back.
    pub fn flush<O: Os>(&mut self, os: &O, arena: &Mutex<BuddyArena>) -> usize {
        let mut bytes = 0;
        for order in 0..=MAX_ORDER {
            while let Some(p) = self.pop(order) {
                if arena.lock().free(os, p.as_ptr() as usize).is_err() {
                    crate::fatal::fatal("medium cache: a parked span was not allocated");
                }
                bytes += crate::buddy::span_bytes(order);
            }
        }
        bytes
    }

    /// Spans parked now.
    pub fn len(&self) -> usize {
        self.counts.iter().map(|&c| c as usize).sum()
    }

    /// True when nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
