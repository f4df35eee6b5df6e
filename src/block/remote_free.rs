//! The remote-free protocol: how a thread frees a block of a slab it does not own, and how
//! the owner learns of it, as free functions over the two atomic words involved. The same
//! file is compiled into the `loom` model test (`tests/loom_remote_free.rs`), where
//! `crate::sync::atomic` is loom's, so the model checks this very code.
//!
//! # The words
//! - A slab's *remote word*: a stack of remotely freed blocks (linked through their first
//!   word): the first block's address in bits 2..48, how many blocks the stack holds in
//!   bits 48..64 (so the owner takes them without walking the list: the walk missed the
//!   cache on every block, 18% of `larson-4`'s time), and two flags in the low bits:
//!   [`NOTIFY`] (the owner parked the slab on its full list and asks the next remote freer
//!   to tell it) and [`QUEUED`] (the slab is on its heap's pending stack, or a remote freer
//!   is about to put it there).
//! - A heap's *pending stack*: slabs queued by remote freers, linked through each slab's
//!   `next_pending`.
//!
//! # Transitions
//! - Owner: [`request_notify`] sets NOTIFY, only from the word 0 (no block waiting, not
//!   queued). [`cancel_notify`] clears it. [`take_blocks`] empties the stack, keeping the
//!   flags. [`take_pending`] + [`clear_queued`] take a slab off the pending stack.
//! - Remote freer: [`push_block`] pushes its block; if NOTIFY was set it clears NOTIFY and
//!   sets QUEUED in the same compare-and-swap, and must then [`push_pending`] the slab.
//!
//! # Invariants
//! 1. QUEUED goes from 0 to 1 only in a remote freer's compare-and-swap that consumes
//!    NOTIFY, and from 1 to 0 only when the owner clears it after taking the slab off the
//!    pending stack. So once the owner has cleared NOTIFY (or never set it), the QUEUED bit
//!    it reads cannot change under it: [`may_unassign`] is a stable answer.
//! 2. **A slab whose QUEUED bit is set is never unassigned** (never retired to a spare
//!    list, and so its segment is never released or given to another heap). Between its
//!    compare-and-swap and its [`push_pending`], a remote freer still writes the slab's
//!    `next_pending` and reads the segment's owner: invariant 2 keeps both alive until the
//!    owner has seen the slab come through its pending stack. (0.1 lacked it: an owner
//!    could collect the block, retire the empty slab and unmap its segment in that window.)
//! 3. Heaps are never unmapped, so a pending stack is always safe to push onto, even after
//!    its thread exited (the heap is abandoned with its segments, and adopted later).
//! 4. A slab is on a pending stack at most once: only the compare-and-swap that consumes
//!    NOTIFY queues it, and NOTIFY is set again only from the word 0, i.e. after the owner
//!    cleared QUEUED.

use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Remote word flag: the owner wants to hear of the next remote free.
pub const NOTIFY: usize = 1;
/// Remote word flag: the slab is on (or going onto) its heap's pending stack.
pub const QUEUED: usize = 2;
/// Both flags.
pub const FLAG_MASK: usize = NOTIFY | QUEUED;
/// Where the block count starts: addresses of ours are below 2^47 (the region map stops
/// there), and a slab holds at most 4096 blocks.
const COUNT_SHIFT: u32 = 48;
/// The first block's address.
const ADDR_MASK: usize = ((1 << COUNT_SHIFT) - 1) & !FLAG_MASK;

/// Pushes the block at `block` (an address below 2^47 with its two low bits clear), the
/// first of a chain of `count` blocks, onto the stack of `word`. `link` is called with the
/// current head (flags and count stripped) before each attempt and must store it in the
/// chain's last block's first word. Returns true when this push consumed NOTIFY: the caller
/// must then put the slab on its heap's pending stack with [`push_pending`].
#[inline]
pub fn push_block(
    word: &AtomicUsize,
    block: usize,
    count: usize,
    mut link: impl FnMut(usize),
) -> bool {
    let mut old = word.load(Ordering::Relaxed);
    loop {
        link(old & ADDR_MASK);
        let notify = old & NOTIFY != 0;
        let queued = if notify { QUEUED } else { old & QUEUED };
        let held = (old >> COUNT_SHIFT) + count;
        // Release: the block's link (and the user's last writes) happen before the owner's
        // Acquire in `take_blocks`.
        match word.compare_exchange_weak(
            old,
            held << COUNT_SHIFT | block | queued,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return notify,
            Err(now) => old = now,
        }
    }
}

/// Owner: takes every block off the stack, keeping the flags. Returns the first block's
/// address (0 when none; the rest follow through their links) and how many there are.
#[inline]
pub fn take_blocks(word: &AtomicUsize) -> (usize, usize) {
    let mut old = word.load(Ordering::Relaxed);
    loop {
        if old & ADDR_MASK == 0 {
            return (0, 0);
        }
        match word.compare_exchange_weak(old, old & FLAG_MASK, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => return (old & ADDR_MASK, old >> COUNT_SHIFT),
            Err(now) => old = now,
        }
    }
}

/// A snapshot of the stack (for the heap checker): its first block's address and how many
/// blocks it holds.
#[inline]
pub fn peek(word: &AtomicUsize) -> (usize, usize) {
    let w = word.load(Ordering::Acquire);
    (w & ADDR_MASK, w >> COUNT_SHIFT)
}

/// Owner: asks the next remote freer to notify. Fails (and sets nothing) unless the word is
/// 0: blocks are waiting (collect them instead) or the slab is still queued.
#[inline]
pub fn request_notify(word: &AtomicUsize) -> bool {
    word.compare_exchange(0, NOTIFY, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Owner: withdraws a notification request (the slab left its full list by a local free).
#[inline]
pub fn cancel_notify(word: &AtomicUsize) {
    word.fetch_and(!NOTIFY, Ordering::AcqRel);
}

/// Owner: the slab came off the pending stack.
#[inline]
pub fn clear_queued(word: &AtomicUsize) {
    word.fetch_and(!QUEUED, Ordering::AcqRel);
}

/// True when the slab is on (or going onto) its heap's pending stack.
#[inline]
pub fn is_queued(word: &AtomicUsize) -> bool {
    word.load(Ordering::Acquire) & QUEUED != 0
}

/// Owner: true when the slab may be unassigned (invariant 2). Stable only while NOTIFY is
/// clear, which is the case for every slab off the full list.
#[inline]
pub fn may_unassign(word: &AtomicUsize) -> bool {
    let w = word.load(Ordering::Acquire);
    w & (QUEUED | NOTIFY) == 0
}

/// Remote freer: pushes `item` onto the pending stack `head`; `link` is the item's own
/// `next_pending` field.
///
/// # Safety
/// `item` must be a slab whose QUEUED bit this thread set (so it is alive: invariant 2),
/// and `link` its `next_pending` field.
#[inline]
pub unsafe fn push_pending<T>(head: &AtomicPtr<T>, item: *mut T, link: &AtomicPtr<T>) {
    let mut old = head.load(Ordering::Relaxed);
    loop {
        link.store(old, Ordering::Relaxed);
        match head.compare_exchange_weak(old, item, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => old = now,
        }
    }
}

/// Owner: takes the whole pending stack; follow it through each item's `next_pending`.
#[inline]
pub fn take_pending<T>(head: &AtomicPtr<T>) -> *mut T {
    if head.load(Ordering::Relaxed).is_null() {
        return core::ptr::null_mut();
    }
    head.swap(core::ptr::null_mut(), Ordering::Acquire)
}
