//! The heap checker behind `ox_heap_check`: walks a heap's segments and slab lists and the
//! buddy arena, and reports the first broken invariant.
//!
//! What it verifies for a heap:
//! - every segment names the heap as owner; its `assigned_slabs` matches its slabs;
//! - every assigned slab: free-list links stay inside the slab at block starts, without a
//!   cycle; `live + free + unbuilt = capacity`; the full flag matches the state;
//!   remote-free links are block starts of the slab and no more than the live count;
//! - every list holds slabs of the right state and class, and its length is right; every
//!   slab of the heap is in exactly one place (current, a class list, or a spare list).

use crate::block::segment::{SegmentHeader, SLABS_PER_SEGMENT};
use crate::block::size_class::CLASS_COUNT;
use crate::block::slab::{sentinel, Slab, SlabList, State, CURRENT_FLAG, FULL_FLAG, SLAB_BYTES};
use crate::heap::{Heap, OwnedHeap};
use core::sync::atomic::Ordering;

/// Result of a check: the first violation found.
pub type CheckResult = Result<(), &'static str>;

/// Checks one slab's counts and links.
///
/// # Safety
/// The caller must own the slab's heap.
unsafe fn check_slab(shared: &Slab) -> CheckResult {
    // SAFETY: the caller owns the slab; nothing else references its owner-only part now.
    let slab = unsafe { shared.local_ref() };
    let block_bytes = shared.block_bytes.load(Ordering::Relaxed) as usize;
    if block_bytes != slab.block_bytes as usize {
        return Err("slab: the owner's block size differs from the shared one");
    }
    if block_bytes == 0 {
        return if slab.state == State::Spare || slab.state == State::Metadata {
            Ok(())
        } else {
            Err("slab: in use but has no block size")
        };
    }
    if slab.capacity as usize != SLAB_BYTES / block_bytes || slab.built > slab.capacity {
        return Err("slab: capacity or built count is wrong");
    }
    if (shared.used.get() & FULL_FLAG != 0) != (slab.state == State::Full) {
        return Err("slab: full flag does not match the slab's state");
    }
    if (shared.used.get() & CURRENT_FLAG != 0) != (slab.state == State::Current) {
        return Err("slab: current flag does not match the slab's state");
    }
    let mut free_count = 0u32;
    let mut cur = slab.free;
    while !cur.is_null() {
        if !shared.is_block_start(cur as usize)
            || (cur as usize) & !(SLAB_BYTES - 1) != slab.start as usize
        {
            return Err("slab: free-list link outside the slab or inside a block");
        }
        // SAFETY: a block start of this slab.
        if !unsafe { Slab::is_free_block(cur.cast()) } {
            return Err("slab: a block on the free list lacks its free cookie (live and free?)");
        }
        free_count += 1;
        if free_count > slab.built {
            return Err("slab: free list longer than the built blocks (cycle or double free)");
        }
        // SAFETY: a free block of this slab holds its link in its first word.
        cur = unsafe { (*cur).next };
    }
    if shared.live_count() + free_count + (slab.capacity - slab.built) != slab.capacity {
        return Err("slab: live + free + unbuilt blocks do not add up to the capacity");
    }
    // Remote frees: pushed blocks are immutable below the head, so walking a snapshot is
    // safe while other threads push.
    let (head, held) = crate::block::remote_free::peek(&shared.remote_free);
    let mut remote = head as *mut crate::block::slab::Block;
    let mut remote_count = 0u32;
    while !remote.is_null() {
        if !shared.is_block_start(remote as usize) {
            return Err("slab: remote-free link outside the slab or inside a block");
        }
        remote_count += 1;
        if remote_count > shared.live_count() {
            return Err("slab: more remote frees than live blocks (double free)");
        }
        // SAFETY: a remotely freed block holds its link in its first word.
        remote = unsafe { (*remote).next };
    }
    // Pushes after the snapshot only add blocks above the snapshot's head.
    if remote_count as usize != held {
        return Err("slab: the remote-free count differs from the blocks on the stack");
    }
    Ok(())
}

fn check_list(list: &SlabList, state: State, class: Option<usize>) -> Result<usize, &'static str> {
    let mut count = 0;
    let mut bad = None;
    list.for_each(|slab| {
        count += 1;
        // SAFETY: slabs on a heap's list are valid and the checker's caller owns them.
        let s = unsafe { (*slab).local_ref() };
        if s.state != state {
            bad = Some("list: slab state does not match its list");
        } else if class.is_some_and(|c| s.class.index() != c) {
            bad = Some("list: slab of another size class");
        }
    });
    if let Some(b) = bad {
        return Err(b);
    }
    if count != list.len() {
        return Err("list: length is wrong");
    }
    Ok(count)
}

/// Checks the heap's pending stack: no cycle, and every entry an assigned slab of one of
/// the heap's segments whose QUEUED bit is set (remote-free invariants 2 and 4). Remote
/// freers only push at the head, and the owner (the caller) is the only one to pop, so the
/// links below a snapshot of the head do not change while we walk them.
///
/// # Safety
/// The caller must own `heap`, which has `segments` segments.
unsafe fn check_pending(heap: *mut Heap, segments: usize) -> CheckResult {
    // SAFETY: heaps are never freed; `pending` is atomic.
    let mut cur = unsafe { (*heap).pending.load(Ordering::Acquire) };
    let mut count = 0usize;
    while !cur.is_null() {
        count += 1;
        if count > segments * SLABS_PER_SEGMENT {
            return Err("pending: the stack has a cycle or holds a slab twice");
        }
        let addr = cur as usize;
        if crate::region_map::kind_of(addr) != crate::region_map::Kind::Slab {
            return Err("pending: an entry is not in a slab segment");
        }
        let seg = SegmentHeader::of(addr);
        // SAFETY: the region map says the segment is live.
        if unsafe { SegmentHeader::owner(seg) } != heap as usize {
            return Err("pending: an entry belongs to another heap");
        }
        // SAFETY: `cur` points into a live segment header of ours (checked above).
        let s = unsafe { &*cur };
        if s.block_bytes.load(Ordering::Relaxed) == 0 {
            return Err("pending: an entry is a slab that is not assigned (retired while queued)");
        }
        if !s.is_queued() {
            return Err("pending: an entry's QUEUED bit is clear");
        }
        cur = s.next_pending.load(Ordering::Acquire);
    }
    Ok(())
}

/// Checks one heap.
pub fn check_heap(owned: &OwnedHeap) -> CheckResult {
    let heap = owned.as_ptr();
    let h = owned.local_ref();
    let mut placed = 0;
    for c in 0..CLASS_COUNT {
        let cur = h.current[c];
        if cur != sentinel() {
            // SAFETY: a current slab is a valid slab of this heap, which we own.
            let s = unsafe { (*cur).local_ref() };
            if s.state != State::Current || s.class.index() != c {
                return Err("heap: current slab has the wrong state or class");
            }
            placed += 1;
        }
        let lists = &h.classes[c];
        placed += check_list(&lists.partial, State::Partial, Some(c))?;
        placed += check_list(&lists.full, State::Full, Some(c))?;
        placed += check_list(&lists.empty, State::Empty, Some(c))?;
    }
    placed += check_list(&h.dirty_spare, State::Spare, None)?;
    placed += check_list(&h.clean_spare, State::Spare, None)?;
    let mut seg = h.segments.head();
    let mut segments = 0;
    while !seg.is_null() {
        segments += 1;
        // SAFETY: a segment on the heap's list is live.
        if unsafe { SegmentHeader::owner(seg) } != heap as usize {
            return Err("segment: owner is not the heap that lists it");
        }
        let mut assigned = 0;
        for i in 1..SLABS_PER_SEGMENT {
            let slab = SegmentHeader::slab_of(seg, seg as usize + i * SLAB_BYTES);
            // SAFETY: slab metadata inside a live segment header of ours.
            let s = unsafe { &*slab };
            if s.block_bytes.load(Ordering::Relaxed) != 0 {
                assigned += 1;
            }
            // SAFETY: we own the heap.
            unsafe { check_slab(s)? };
        }
        // SAFETY: a live segment header.
        if assigned != unsafe { (*seg).assigned_slabs } {
            return Err("segment: assigned slab count is wrong");
        }
        // SAFETY: `seg` is a live segment header on the heap's list, which we own.
        seg = unsafe { crate::list::List::next(seg) };
    }
    // SAFETY: the caller owns the heap; `segments` was just counted.
    unsafe { check_pending(heap, segments)? };
    if segments != h.segments.len() {
        return Err("heap: segment count is wrong");
    }
    if placed != segments * (SLABS_PER_SEGMENT - 1) {
        return Err("heap: a slab is on no list or on two");
    }
    Ok(())
}
