//! Remote frees in batches: a run of consecutive frees a thread makes into one slab of
//! another heap waits in the freeing thread's heap as a chain, and the chain is published to
//! the slab with one compare-and-swap (`remote_free::push_block` with the chain's first
//! block, the last block's link written before each attempt) instead of one per block.
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
//! The chain is published when a free into another slab comes, when it reaches
//! [`CHAIN_MAX`] blocks, on the freeing thread's small-allocation slow path (where its decay
//! also runs), in `malloc_trim`, and at thread exit (before the heap is abandoned). So a
//! thread that stops freeing holds back at most [`CHAIN_MAX`] blocks of one slab, until its
//! next slow path or its exit.
//!
//! A heap inherited by a `fork` child from a thread that does not exist there may have been
//! mid-update: its chain is dropped, unpublished, when the child orphans the heap (the
//! blocks in it stay counted as live in their slab: a bounded leak in that child only).

use crate::block::segment::SegmentHeader;
use crate::block::slab::{free_cookie, Block, Slab};
use crate::heap::Heap;
use core::ptr;

/// Blocks a chain gathers before it is published.
///
/// One chain, for one slab at a time, is what measured best
/// (`scripts/bench --workloads xthread-2,prodcons-2,xbatch-2 --rounds 5`, against the build
/// with one compare-and-swap per free, in the same run): prodcons-2 from ×0.50 to ×0.32 of
/// glibc's time, xthread-2 (×0.72 against ×0.71) and peak RSS as they were. A direct-mapped
/// table of 64 chains (one per slab) also gave ×0.30 on prodcons-2 but ×0.95 on xthread-2,
/// whose frees scatter over ~30 slabs (chains of 1–2 blocks held back while their owners build
/// new slabs), and +4% peak RSS; 8 chains searched in order were slower still. Frees that
/// scatter need batching per owner heap (the owner sorting blocks into its slabs), which a
/// per-slab chain does not do.
pub const CHAIN_MAX: u32 = 64;

/// The chain of blocks waiting for one slab (in a heap's owner-only part).
pub struct RemoteBatch {
    /// The slab (null: no chain).
    slab: *mut Slab,
    /// Newest block; blocks link through `Block::next` towards `last`.
    first: *mut Block,
    /// Oldest block: its link is written when the chain is published.
    last: *mut Block,
    count: u32,
}

impl RemoteBatch {
    pub const fn new() -> RemoteBatch {
        RemoteBatch {
            slab: ptr::null_mut(),
            first: ptr::null_mut(),
            last: ptr::null_mut(),
            count: 0,
        }
    }

    /// Adds the block at `ptr` of `slab` (a slab of another heap) to the chain, publishing
    /// the chain first if it is for another slab, and after if it is full.
    ///
    /// # Safety
    /// `ptr` must be a live block start of `slab`, which must be a slab of a live segment
    /// not owned by the calling thread's heap, and the block must not be used again by the
    /// program (it is being freed).
    pub unsafe fn add(&mut self, slab: *mut Slab, ptr: *mut u8) {
        if self.slab != slab {
            self.flush();
            self.slab = slab;
            self.last = ptr.cast();
        }
        let block = ptr.cast::<Block>();
        // SAFETY: the block is being freed and is at least 16 bytes: its first two words are
        // ours until the chain is published. The cookie marks it free (double-free check).
        unsafe {
            (*block).cookie = free_cookie(block as usize);
            (*block).next = self.first;
        }
        self.first = block;
        self.count += 1;
        if self.count >= CHAIN_MAX {
            self.flush();
        }
    }

    /// Publishes the chain, if any.
    #[inline]
    pub fn flush(&mut self) {
        if self.slab.is_null() {
            return;
        }
        let (slab, first, last, count) = (self.slab, self.first, self.last, self.count);
        *self = RemoteBatch::new();
        // SAFETY: the slab is alive and its segment mapped while our blocks are counted in
        // it (the file's note); `first..=last` is a chain of its blocks, each added under
        // `add`'s contract and linked there.
        unsafe {
            if (*slab).push_remote_chain(first, last, count) {
                let seg = SegmentHeader::of(slab as usize);
                race_window();
                Heap::push_pending(SegmentHeader::owner(seg) as *mut Heap, slab);
            }
        }
    }

    /// Drops the chain without publishing it (a heap a `fork` child inherited from a thread
    /// that is gone: the chain may be torn).
    pub fn forget(&mut self) {
        *self = RemoteBatch::new();
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
