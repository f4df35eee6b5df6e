//! Tests of the core (heaps, slab list moves, remote frees, adoption, failure injection)
//! through a private [`Context`] over the failure-injecting [`FakeOs`].
//!
//! Each test makes its own context and heaps, so they do not touch the process allocator
//! (which the test harness itself runs on).

use crate::block::segment::SegmentHeader;
use crate::block::size_class::{class_of, SizeClass};
use crate::block::slab::{sentinel, State};
use crate::heap::validate::check_heap;
use crate::heap::{Heap, OwnedHeap};
use crate::os::fake::FakeOs;
use crate::os::Os;
use crate::process::context::Context;
use std::boxed::Box;
use std::vec::Vec;

fn new_context() -> &'static Context<FakeOs> {
    Box::leak(Box::new(Context::new(FakeOs::new())))
}

fn new_heap(ctx: &Context<FakeOs>) -> *mut Heap {
    ctx.heaps.lock().acquire(&ctx.os).expect("heap")
}

fn slab_of(p: *mut u8) -> *mut crate::block::slab::Slab {
    SegmentHeader::slab_of(SegmentHeader::of(p as usize), p as usize)
}

/// The test's ownership of a heap it made, for one call at a time.
fn own(heap: *mut Heap) -> OwnedHeap<'static> {
    // SAFETY: each test owns the heaps it made and claims each one once per call.
    unsafe { OwnedHeap::claim(heap) }.expect("a heap")
}

fn alloc(ctx: &Context<FakeOs>, heap: *mut Heap, size: usize) -> *mut u8 {
    ctx.alloc_with(own(heap), size, 16)
        .map_or(std::ptr::null_mut(), |(p, _)| p.as_ptr())
}

/// Frees `p` as the owner of `heap` (null: a thread without a heap, a remote free).
fn free(ctx: &Context<FakeOs>, heap: *mut Heap, p: *mut u8) {
    // SAFETY: `p` is a live block of this context.
    unsafe { ctx.free_with(OwnedHeap::claim(heap), p, "free") }
}

fn check(heap: *mut Heap) {
    if let Err(e) = check_heap(&own(heap)) {
        panic!("heap check: {e}");
    }
}

#[test]
fn a_slab_moves_current_full_partial_spare() {
    let ctx = new_context();
    let heap = new_heap(ctx);
    let class: SizeClass = class_of(1024);
    let per_slab = crate::block::slab::SLAB_BYTES / 1024;
    // Fill one slab and start a second: the first is parked on the full list.
    let blocks: Vec<*mut u8> = (0..per_slab + 1).map(|_| alloc(ctx, heap, 1000)).collect();
    let first = slab_of(blocks[0]);
    // SAFETY: the test owns the heap and its slabs.
    unsafe {
        assert_eq!((*first).local_ref().state, State::Full);
        assert_eq!(own(heap).local_ref().classes[class.index()].full.len(), 1);
        check(heap);
        // One free by the owner makes it partial.
        free(ctx, heap, blocks[0]);
        assert_eq!((*first).local_ref().state, State::Partial);
        assert_eq!(own(heap).local_ref().classes[class.index()].full.len(), 0);
        check(heap);
        // Freeing the rest makes it empty: it goes back to the spares, for any class.
        for &p in &blocks[1..per_slab] {
            free(ctx, heap, p);
        }
        assert_eq!((*first).local_ref().state, State::Spare);
        assert_eq!(
            own(heap).local_ref().classes[class.index()].partial.len(),
            0
        );
        assert_eq!(own(heap).local_ref().classes[class.index()].empty.len(), 0);
        check(heap);
        // The current slab stays current even when empty.
        free(ctx, heap, blocks[per_slab]);
        assert_eq!(
            (*slab_of(blocks[per_slab])).local_ref().state,
            State::Current
        );
        check(heap);
    }
}

#[test]
fn remote_frees_reach_a_full_slab_through_the_pending_stack() {
    let ctx = new_context();
    let owner = new_heap(ctx);
    let per_slab = crate::block::slab::SLAB_BYTES / 256;
    let blocks: Vec<*mut u8> = (0..per_slab + 1).map(|_| alloc(ctx, owner, 256)).collect();
    let first = slab_of(blocks[0]);
    // SAFETY: the test owns `owner`; the other "thread" only uses the remote path.
    unsafe {
        assert_eq!((*first).local_ref().state, State::Full);
        // Free from another thread (no heap): remote push, and the first one notifies.
        let remote = std::thread::spawn({
            let addrs: Vec<usize> = blocks[..per_slab].iter().map(|&p| p as usize).collect();
            move || {
                for a in addrs {
                    free(ctx, std::ptr::null_mut(), a as *mut u8);
                }
            }
        });
        remote.join().unwrap();
        assert!(!(*owner)
            .pending
            .load(std::sync::atomic::Ordering::Relaxed)
            .is_null());
        assert_eq!(
            (*first).live_count() as usize,
            per_slab,
            "not collected yet"
        );
        own(owner).process_pending();
        assert!((*owner)
            .pending
            .load(std::sync::atomic::Ordering::Relaxed)
            .is_null());
        assert_eq!((*first).live_count(), 0);
        assert_ne!((*first).local_ref().state, State::Full);
        check(owner);
        // The memory is reused.
        let again: Vec<*mut u8> = (0..per_slab).map(|_| alloc(ctx, owner, 256)).collect();
        assert!(again.iter().any(|&p| slab_of(p) == first));
        check(owner);
    }
}

#[test]
fn a_dead_heap_is_adopted_with_its_blocks() {
    let ctx = new_context();
    let heap = new_heap(ctx);
    let keep: Vec<*mut u8> = (0..1000).map(|i| alloc(ctx, heap, 16 + i % 3000)).collect();
    for &p in &keep {
        // SAFETY: each block is at least 16 bytes.
        unsafe { p.write_bytes(0x3C, 16) };
    }
    // The "thread" gives its heap back and never uses it again.
    ctx.retire_heap(own(heap));
    assert_eq!(ctx.heaps.lock().abandoned_count(), 1);
    let adopter = new_heap(ctx);
    assert_eq!(adopter, heap, "a new thread adopts the abandoned heap");
    check(adopter);
    for &p in &keep {
        // SAFETY: blocks survived their thread.
        assert_eq!(unsafe { *p }, 0x3C);
        free(ctx, adopter, p);
    }
    check(adopter);
    ctx.retire_heap(own(adopter));
    // With no live block left, the heap still waits for adoption: its thread left it
    // its segments and resident spare slabs for the next thread.
    assert_eq!(ctx.heaps.lock().abandoned_count(), 1);
    assert!(ctx.os.live_bytes() > 256 * 1024);
    // Cleaning it up (as the decay does once it waited a whole delay, or a trim) empties it.
    ctx.trim(None);
    assert_eq!(
        ctx.heaps.lock().abandoned_count(),
        0,
        "an empty heap is not abandoned"
    );
    ctx.segments.lock().drain(&ctx.os);
    // Only the heap chunk stays mapped: every segment went back to the OS.
    assert_eq!(ctx.os.live_bytes(), 256 * 1024);
}

#[test]
fn a_thread_exit_purges_nothing() {
    let ctx = new_context();
    let heap = new_heap(ctx);
    // 10 MiB of small blocks (three segments) and 8 MiB of medium ones, all freed: the
    // heap holds spare slabs, unused segments and parked medium blocks.
    let small: Vec<*mut u8> = (0..10_000).map(|_| alloc(ctx, heap, 1000)).collect();
    let medium: Vec<*mut u8> = (0..40).map(|_| alloc(ctx, heap, 200 * 1024)).collect();
    for &p in small.iter().chain(&medium) {
        // SAFETY: each block is at least 1000 bytes.
        unsafe { p.write_bytes(0x5A, 1000) };
        free(ctx, heap, p);
    }
    let (purges, mapped) = (ctx.os.purge_calls(), ctx.os.live_bytes());
    ctx.retire_heap(own(heap));
    assert_eq!(ctx.os.purge_calls(), purges, "the exit purged memory");
    assert_eq!(ctx.os.live_bytes(), mapped, "the exit unmapped memory");
    // The next thread adopts it all, resident.
    let adopter = new_heap(ctx);
    assert_eq!(adopter, heap);
    check(adopter);
    // A trim still returns everything.
    ctx.trim(Some(own(adopter)));
    ctx.segments.lock().drain(&ctx.os);
    assert!(ctx.os.live_bytes() <= (256 + 4096) as isize * 1024);
}

#[test]
fn spare_slabs_are_purged_by_age_oldest_first() {
    let ctx = new_context();
    let heap = new_heap(ctx);
    // The heap's clock follows the OS clock (read at its decay checks); set it here too, so
    // the stamps do not wait for the next check.
    let at = |ms: u64| {
        ctx.os.advance_ms(ms);
        own(heap).local().clock_ms = ctx.os.now_ms();
    };
    // Two batches of slabs, emptied 600 ms apart.
    let batch = |n: usize| -> Vec<*mut u8> { (0..n).map(|_| alloc(ctx, heap, 1024)).collect() };
    let first = batch(64 * 8);
    let second = batch(64 * 8);
    at(0);
    for &p in &first {
        free(ctx, heap, p);
    }
    at(600);
    for &p in &second {
        free(ctx, heap, p);
    }
    let spares = own(heap).local().dirty_spare.len();
    assert!(spares >= 14, "both batches' slabs are spares: {spares}");
    // 900 ms after the first batch, no slab has been a spare for 1000 ms.
    at(300);
    assert_eq!(own(heap).local().purge_old_spares(&ctx.os, 1000), 0);
    // At 1000 ms the first batch has: only it goes.
    at(100);
    let purged = own(heap).local().purge_old_spares(&ctx.os, 1000);
    assert!(
        (7 * 64 * 1024..=8 * 64 * 1024).contains(&purged),
        "{purged}"
    );
    let left = own(heap).local().dirty_spare.len();
    assert!(left >= 7, "the young ones stay: {left}");
    at(600);
    own(heap).local().purge_old_spares(&ctx.os, 1000);
    assert_eq!(own(heap).local().dirty_spare.len(), 0);
    check(heap);
}

#[test]
fn spare_slabs_up_to_twice_those_in_use_wait_for_the_decay() {
    let ctx = new_context();
    let heap = new_heap(ctx);
    let batch = |n: usize| -> Vec<*mut u8> { (0..n).map(|_| alloc(ctx, heap, 1024)).collect() };
    // About 1,500 slabs in use, then a batch of about 1,400 more allocated and freed:
    // more spares than the 1,024 kept in any case, fewer than twice the slabs in use.
    let kept = batch(1500 * 64);
    let freed = batch(1400 * 64);
    for &p in &freed {
        free(ctx, heap, p);
    }
    let spares = own(heap).local().dirty_spare.len();
    assert!(spares > 1300, "the batch's slabs are spares: {spares}");
    assert_eq!(ctx.os.purged_bytes(), 0, "nothing purged at a free");
    // With nothing in use, a free that leaves more than 1,024 spares purges down to 512.
    for &p in &kept {
        free(ctx, heap, p);
    }
    let spares = own(heap).local().dirty_spare.len();
    assert!(spares <= 1024, "spares beyond 64 MiB purged: {spares} left");
    assert!(ctx.os.purged_bytes() > 0);
    check(heap);
}

#[test]
fn map_failure_gives_null_and_the_heap_keeps_working() {
    let ctx = new_context();
    let heap = new_heap(ctx);
    // The first small allocation needs a segment: make that mapping fail.
    ctx.os.fail_nth_map(1);
    assert!(alloc(ctx, heap, 64).is_null());
    assert_eq!(
        own(heap).local_ref().current[class_of(64).index()],
        sentinel()
    );
    check(heap);
    let p = alloc(ctx, heap, 64);
    assert!(!p.is_null());
    // Medium and huge requests fail cleanly too, and recover.
    ctx.os.set_exhausted(true);
    assert!(alloc(ctx, heap, 100_000).is_null());
    assert!(alloc(ctx, heap, 10 << 20).is_null());
    // Small requests still work from the segment already mapped.
    let q = alloc(ctx, heap, 64);
    assert!(!q.is_null());
    ctx.os.set_exhausted(false);
    let m = alloc(ctx, heap, 100_000);
    let h = alloc(ctx, heap, 10 << 20);
    assert!(!m.is_null() && !h.is_null());
    for x in [p, q, m, h] {
        free(ctx, heap, x);
    }
    check(heap);
    assert!(ctx.buddy.lock().check().is_ok());
}

/// A scripted mix of small, medium and huge requests; returns the live blocks, the number
/// of nulls, and checks each block's contents before freeing it.
fn run_script(ctx: &Context<FakeOs>, heap: *mut Heap) -> usize {
    let mut live = Vec::new();
    let mut nulls = 0;
    for i in 0..160usize {
        let size = match i % 5 {
            0 => 24 + i,
            1 => 3000 + i * 7,
            2 => 40_000 + i * 1000,
            3 => 300_000 + i * 100,
            _ => (2 << 20) + i * 4096,
        };
        let p = alloc(ctx, heap, size);
        if p.is_null() {
            nulls += 1;
            continue;
        }
        let ends = size.min(4096);
        // SAFETY: a live block of at least `size` bytes: mark both ends.
        unsafe {
            p.write_bytes(i as u8, ends);
            p.add(size - ends).write_bytes(i as u8, ends);
        }
        live.push((p, size, i as u8));
        if i % 3 == 0 {
            let (q, qsize, tag) = live.swap_remove(live.len() / 2);
            free_checked(ctx, heap, q, qsize, tag);
        }
    }
    for (p, size, tag) in live {
        free_checked(ctx, heap, p, size, tag);
    }
    nulls
}

fn free_checked(ctx: &Context<FakeOs>, heap: *mut Heap, p: *mut u8, size: usize, tag: u8) {
    let ends = size.min(4096);
    // SAFETY: a live block of `size` bytes whose two ends were written with `tag`.
    let (head, tail) = unsafe {
        (
            std::slice::from_raw_parts(p, ends),
            std::slice::from_raw_parts(p.add(size - ends), ends),
        )
    };
    assert!(
        head.iter().chain(tail).all(|&b| b == tag),
        "block contents changed"
    );
    free(ctx, heap, p);
}

#[test]
fn every_nth_map_failing_is_survived() {
    // Count the mappings the script makes, then fail the n-th of them for every n: each
    // failure is one null, the heap and arena stay consistent, and the same context then
    // runs the whole script again without a null.
    let probe = new_context();
    let heap = new_heap(probe);
    let before = probe.os.map_calls();
    assert_eq!(run_script(probe, heap), 0);
    let maps = probe.os.map_calls() - before;
    assert!(
        maps >= 10,
        "the script maps segments, regions and huge blocks ({maps})"
    );
    for n in 1..=maps {
        let ctx = new_context();
        let heap = new_heap(ctx);
        ctx.os.fail_nth_map(n);
        let nulls = run_script(ctx, heap);
        assert!(
            nulls <= 1,
            "one injected failure gives at most one null (n = {n})"
        );
        check(heap);
        assert!(ctx.buddy.lock().check().is_ok());
        assert_eq!(
            run_script(ctx, heap),
            0,
            "after the failure, everything works (n = {n})"
        );
        check(heap);
    }
}

#[test]
fn trim_gives_memory_back() {
    let ctx = new_context();
    let heap = new_heap(ctx);
    let blocks: Vec<*mut u8> = (0..20_000)
        .map(|i| alloc(ctx, heap, 16 + (i % 512)))
        .collect();
    let big: Vec<*mut u8> = (0..20)
        .map(|i| alloc(ctx, heap, 50_000 + i * 1000))
        .collect();
    let mapped = ctx.os.live_bytes();
    for p in blocks.into_iter().chain(big) {
        free(ctx, heap, p);
    }
    let released = ctx.trim(Some(own(heap)));
    assert!(released > 0);
    assert!(
        ctx.os.live_bytes() < mapped,
        "{} !< {mapped}",
        ctx.os.live_bytes()
    );
    check(heap);
}

#[test]
fn medium_spans_are_cached_per_thread_and_double_frees_are_caught() {
    let ctx = new_context();
    let heap = new_heap(ctx);
    let p = alloc(ctx, heap, 100_000);
    free(ctx, heap, p);
    assert_eq!(
        own(heap).local().medium.len(),
        1,
        "freed span parked in the thread cache"
    );
    assert_eq!(
        alloc(ctx, heap, 90_000),
        p,
        "and reused by the next request of its order"
    );
    free(ctx, heap, p);
    assert_eq!(
        own(heap).local().medium.push(p as usize),
        Err(crate::block::buddy::FreeError::InvalidPointer),
        "a double free is refused"
    );
    assert!(!ctx.owns(p), "a parked span is not a live block");
    ctx.trim(Some(own(heap)));
    assert_eq!(own(heap).local().medium.len(), 0, "trim flushes the cache");
    assert!(ctx.buddy.lock().check().is_ok());
    assert_eq!(ctx.buddy.lock().allocated_bytes(), 0);
}

#[test]
fn aligned_mix_then_realloc_to_medium() {
    // Found by the C tests: a zero-byte block at 4 MiB alignment marked (and then cleared)
    // the region-map entry of the chunk after its mapping, a buddy region's.
    let ctx = new_context();
    let heap = new_heap(ctx);
    let sizes = [
        0usize,
        1,
        8,
        24,
        100,
        1000,
        4096,
        5000,
        70_000,
        1 << 20,
        5 << 20,
    ];
    let mut align = 8usize;
    while align <= 64 << 20 {
        for &n in &sizes {
            let held: Vec<*mut u8> = (0..3)
                .map(|_| {
                    ctx.alloc_with(own(heap), n, align.max(16))
                        .unwrap()
                        .0
                        .as_ptr()
                })
                .collect();
            for p in held {
                assert_eq!(p as usize % align, 0);
                free(ctx, heap, p);
            }
            assert!(ctx.buddy.lock().check().is_ok(), "align {align} size {n}");
            check(heap);
        }
        align *= 2;
    }
    let m = alloc(ctx, heap, 10_000);
    // SAFETY: the test owns the heap; `m` is live.
    let r = unsafe { ctx.realloc_with(own(heap), m, 200_000, 16, "realloc") };
    assert!(ctx.owns(r), "realloc result {r:?} is a live block");
    free(ctx, heap, r);
}

#[test]
fn an_abandoned_heap_is_cleaned_up_after_waiting_a_whole_decay() {
    let ctx = new_context();
    let heap = new_heap(ctx);
    let blocks: Vec<*mut u8> = (0..5000).map(|i| alloc(ctx, heap, 16 + i % 1000)).collect();
    for &p in &blocks {
        free(ctx, heap, p);
    }
    ctx.retire_heap(own(heap));
    let mapped = ctx.os.live_bytes();
    // The first process-wide decay round after the exit leaves it (it may have been
    // abandoned a moment ago); the next one takes it out to be cleaned.
    ctx.heaps.lock().begin_decay_round();
    assert!(ctx.heaps.lock().take_idle_abandoned(2).is_none());
    ctx.heaps.lock().begin_decay_round();
    let taken = ctx.heaps.lock().take_idle_abandoned(2);
    assert_eq!(taken, Some(heap));
    // SAFETY: just taken out of the pool; nothing else uses it.
    unsafe { ctx.clean_up_abandoned(heap) };
    assert_eq!(ctx.heaps.lock().abandoned_count(), 0, "empty now, so free");
    assert!(ctx.heaps.lock().take_idle_abandoned(2).is_none());
    ctx.segments.lock().drain(&ctx.os);
    assert!(ctx.os.live_bytes() < mapped);
    assert_eq!(ctx.os.live_bytes(), 256 * 1024);
}

#[test]
fn a_decay_round_cleans_each_idle_heap_once() {
    let ctx = new_context();
    // Two exited threads' heaps that keep live blocks, so they stay abandoned after a
    // clean-up. Taking, cleaning and releasing them must end: a heap released in this
    // round is not taken again (an earlier version alternated between two such heaps
    // forever, which hung a threaded program).
    let a = new_heap(ctx);
    let b = new_heap(ctx);
    let pa = alloc(ctx, a, 100);
    let pb = alloc(ctx, b, 100);
    ctx.retire_heap(own(a));
    ctx.retire_heap(own(b));
    assert_eq!(ctx.heaps.lock().abandoned_count(), 2);
    ctx.heaps.lock().begin_decay_round();
    ctx.heaps.lock().begin_decay_round();
    let mut cleaned = 0;
    while let Some(h) = {
        let taken = ctx.heaps.lock().take_idle_abandoned(2);
        taken
    } {
        cleaned += 1;
        assert!(cleaned <= 2, "a heap was taken twice in one round");
        // SAFETY: just taken out of the pool; nothing else uses it.
        unsafe { ctx.clean_up_abandoned(h) };
    }
    assert_eq!(cleaned, 2);
    assert_eq!(
        ctx.heaps.lock().abandoned_count(),
        2,
        "live blocks keep them"
    );
    let adopter = new_heap(ctx);
    free(ctx, adopter, pa);
    free(ctx, adopter, pb);
}
