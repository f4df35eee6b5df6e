//! Remote frees in batches: blocks a thread frees into slabs of other heaps wait in a small
//! buffer in the freeing thread's heap, chained per slab, and each chain is published to its
//! slab with one compare-and-swap (`remote_free::push_block` with the chain's first block,
//! the last block's link written before each attempt) instead of one per block.
//!
//! # Why it is safe to hold the blocks
//! A buffered block is still counted in its slab's `used` (the owner has not collected it),
//! so its slab is never empty while the block waits here: the slab stays assigned to its
//! class and its segment stays mapped and owned by the same heap (a segment moves or goes
//! back to the OS only when every slab of it is empty). Heaps are never unmapped. So at
//! publication the slab, its remote word and its owner heap's pending stack are what they
//! were when the block came in, and the publication is exactly a remote free of several
//! blocks at once: the remote-free protocol's invariants (`block::remote_free`) hold as they
//! do for one block. Each buffered block already carries its free cookie, so a second free
//! of it is caught as a double free, as for a published one.
//!
//! # When the blocks go out
//! A chain is published when it reaches [`CHAIN_MAX`] blocks, when its entry is needed for
//! another slab (the table is direct-mapped: see [`BATCH_SLABS`]), and the whole buffer on
//! the freeing thread's small-allocation slow path (where its decay also runs), in `malloc_trim`,
//! and at thread exit (before the heap is abandoned). So a thread that stops freeing holds
//! back at most one chain per entry ([`BATCH_SLABS`]), each at most [`CHAIN_MAX`] blocks and
//! one slab's worth (64 KiB), until its next slow path or its exit.
//!
//! A heap inherited by a `fork` child from a thread that does not exist there may have been
//! mid-update: its buffer is dropped, unpublished, when the heap is adopted (the blocks in
//! it stay counted as live in their slabs: a bounded leak in that child only).

use crate::block::segment::SegmentHeader;
use crate::block::slab::{free_cookie, Block, Slab};
use crate::heap::Heap;
use core::ptr;

/// Slabs a heap batches remote frees for at once: a direct-mapped table (a slab's entry
/// found from its address in O(1); a slab that maps onto an entry in use publishes the chain
/// there first). One entry, so a batch is a run of consecutive frees into one slab.
/// Measured (`scripts/bench --workloads xthread-2,prodcons-2,xbatch-2 --rounds 5`, against
/// the build with one compare-and-swap per free, in the same run): one entry takes
/// prodcons-2 from ×0.50 to ×0.32 of glibc's time and leaves xthread-2 (×0.72 against
/// ×0.71) and peak RSS as they were; 64 entries also ×0.30 on prodcons-2 but ×0.95 on
/// xthread-2 (whose frees scatter over ~30 slabs: chains of 1–2 blocks held back while their
/// owners build new slabs) and +4% peak RSS; 8 entries searched in order were slower still.
/// Frees that scatter need batching per owner heap, not per slab (the owner then sorts the
/// blocks into its slabs), which this table does not do.
pub const BATCH_SLABS: usize = 1;
/// Blocks a chain gathers before it is published.
pub const CHAIN_MAX: u32 = 64;

/// One slab's chain.
#[derive(Clone, Copy)]
struct Chain {
    /// The slab (null: the entry is unused).
    slab: *mut Slab,
    /// Newest block; blocks link through `Block::next` towards `last`.
    first: *mut Block,
    /// Oldest block: its link is written when the chain is published.
    last: *mut Block,
    count: u32,
}

const UNUSED: Chain = Chain {
    slab: ptr::null_mut(),
    first: ptr::null_mut(),
    last: ptr::null_mut(),
    count: 0,
};

/// The buffer (in a heap's owner-only part).
pub struct RemoteBatch {
    chains: [Chain; BATCH_SLABS],
    /// Bit i set: entry i is in use (a flush visits only those).
    used: u64,
}

const _: () = assert!(BATCH_SLABS.is_power_of_two() && BATCH_SLABS <= u64::BITS as usize);

/// The entry of `slab`: its index in its segment (slab metadata is 128 bytes apart) mixed
/// with the segment's address (4 MiB apart), so slab i of two segments seldom collide.
#[inline(always)]
fn entry_of(slab: *mut Slab) -> usize {
    let a = slab as usize;
    ((a >> 7) ^ (a >> 22)) & (BATCH_SLABS - 1)
}

impl RemoteBatch {
    pub const fn new() -> RemoteBatch {
        RemoteBatch {
            chains: [UNUSED; BATCH_SLABS],
            used: 0,
        }
    }

    /// Adds the block at `ptr` of `slab` (a slab of another heap) to its chain, publishing a
    /// chain when it fills or when its entry is needed for another slab.
    ///
    /// # Safety
    /// `ptr` must be a live block start of `slab`, which must be a slab of a live segment
    /// not owned by the calling thread's heap, and the block must not be used again by the
    /// program (it is being freed).
    pub unsafe fn add(&mut self, slab: *mut Slab, ptr: *mut u8) {
        let block = ptr.cast::<Block>();
        // SAFETY: the block is being freed and is at least 16 bytes: its first two words are
        // ours until the chain is published. The cookie marks it free (double-free check).
        unsafe { (*block).cookie = free_cookie(block as usize) };
        let index = entry_of(slab);
        let Some(c) = self.chains.get_mut(index) else {
            return;
        };
        if c.slab != slab {
            if !c.slab.is_null() {
                // SAFETY: the entry's blocks were added under this function's contract, and
                // their slab stays alive while they wait (the file's note).
                unsafe { self.publish(index) };
            }
            self.used |= 1u64.checked_shl(index as u32).unwrap_or(0);
            let Some(c) = self.chains.get_mut(index) else {
                return;
            };
            *c = Chain {
                slab,
                first: ptr::null_mut(),
                last: block,
                count: 0,
            };
        }
        let Some(c) = self.chains.get_mut(index) else {
            return;
        };
        // SAFETY: as above: the block's first word is ours.
        unsafe { (*block).next = c.first };
        c.first = block;
        c.count += 1;
        if c.count >= CHAIN_MAX {
            // SAFETY: as for the collision above.
            unsafe { self.publish(index) };
        }
    }

    /// Publishes every chain.
    #[inline]
    pub fn flush(&mut self) {
        while self.used != 0 {
            let i = self.used.trailing_zeros() as usize;
            // SAFETY: every chain's blocks were added under `add`'s contract, and their
            // slabs stay alive while the blocks wait (the file's note).
            unsafe { self.publish(i) };
        }
    }

    /// Drops every chain without publishing it (a heap a `fork` child inherited from a
    /// thread that is gone: the buffer may be torn).
    pub fn forget(&mut self) {
        *self = RemoteBatch::new();
    }

    /// Publishes chain `i` (if in use) and frees its entry.
    ///
    /// # Safety
    /// The chain's blocks must have been added under `add`'s contract.
    unsafe fn publish(&mut self, i: usize) {
        self.used &= !1u64.checked_shl(i as u32).unwrap_or(0);
        let Some(c) = self.chains.get_mut(i) else {
            return;
        };
        let chain = *c;
        if chain.slab.is_null() {
            return;
        }
        *c = UNUSED;
        // SAFETY: the slab is alive and its segment mapped while our blocks are counted in
        // it (the file's note); `first..=last` is a chain of its blocks, linked by `add`.
        unsafe {
            if (*chain.slab).push_remote_chain(chain.first, chain.last) {
                let seg = SegmentHeader::of(chain.slab as usize);
                race_window();
                Heap::push_pending(SegmentHeader::owner(seg) as *mut Heap, chain.slab);
            }
        }
    }
}

impl Default for RemoteBatch {
    fn default() -> Self {
        RemoteBatch::new()
    }
}

/// With the test-only `race-window` feature, a remote freer that must queue a slab pauses
/// between publishing its block and queueing the slab, so that stress tests hit the window
/// in which the owner may collect, empty and retire that slab. Nothing otherwise.
#[inline(always)]
pub fn race_window() {
    #[cfg(feature = "race-window")]
    {
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000,
        };
        // SAFETY: sched_yield and nanosleep have no preconditions; `pause` is valid.
        unsafe {
            libc::sched_yield();
            libc::nanosleep(&pause, core::ptr::null_mut());
        }
    }
}
