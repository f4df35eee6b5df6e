//! Model check of the remote-free protocol with loom: the very code of `src/remote_free.rs`,
//! compiled here against loom's atomics, in every interleaving of a small model of the race
//! that crashed oxmalloc 0.1 (see that file's invariants).
//!
//! The model: a slab with two live blocks is parked on its owner's full list (NOTIFY set).
//! A remote freer frees one block; the owner frees the other, collects remote frees,
//! processes its pending stack and retires the slab if it may, which releases its segment.
//! A remote freer that touches the slab's metadata after the release is the bug.
//!
//! `old_protocol_is_caught` runs 0.1's rule (retire whenever the slab is empty) and
//! requires loom to find the use-after-release; the other tests run the rule the allocator
//! uses now ([`remote_free::may_unassign`]) and require no failure in any interleaving.
//! The batched tests at the end model a chain of blocks published with one
//! compare-and-swap (`src/heap/remote_batch.rs`), the same way.

mod sync {
    pub mod atomic {
        pub use loom::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
    }
}

#[allow(dead_code)]
#[path = "../src/block/remote_free.rs"]
mod remote_free;

use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Fake block addresses (16-byte aligned, so the two flag bits are clear).
const BLOCK_A: usize = 0x1000;
const BLOCK_B: usize = 0x2000;

struct Slab {
    word: AtomicUsize,
    next_pending: AtomicPtr<Slab>,
    /// Set when the owner retires the slab and releases its segment.
    released: AtomicBool,
}

struct Heap {
    pending: AtomicPtr<Slab>,
}

struct World {
    slab: Slab,
    heap: Heap,
}

/// A remote freer frees `block`; if it must queue the slab, it does (touching the slab's
/// metadata, which must still be alive).
fn remote_free(world: &World, block: usize) {
    let notify = remote_free::push_block(&world.slab.word, block, 1, |_| {});
    if notify {
        assert!(
            !world.slab.released.load(Ordering::SeqCst),
            "remote freer queued a slab whose segment was released"
        );
        let slab = &world.slab as *const Slab as *mut Slab;
        // SAFETY: this thread set QUEUED; in the model the slab lives as long as `world`.
        unsafe { remote_free::push_pending(&world.heap.pending, slab, &world.slab.next_pending) };
    }
}

/// The owner's view of the slab.
struct Owner {
    live: usize,
    retired: bool,
}

impl Owner {
    /// Collects remote frees (following each collected block with `next`; 0 ends a chain)
    /// and processes the pending stack, then retires the slab if it is empty and the rule
    /// allows.
    fn settle_with(&mut self, world: &World, old_rule: bool, next: impl Fn(usize) -> usize) {
        let (mut head, count) = remote_free::take_blocks(&world.slab.word);
        let mut walked = 0;
        while head != 0 {
            self.live -= 1;
            walked += 1;
            head = next(head);
        }
        // The owner takes the count from the word without walking: it must be exact.
        assert_eq!(
            walked, count,
            "the remote word's count is not its stack's length"
        );
        let mut cur = remote_free::take_pending(&world.heap.pending);
        while !cur.is_null() {
            // SAFETY: the only slab in the model, alive for the whole model.
            let slab = unsafe { &*cur };
            cur = slab.next_pending.load(Ordering::Relaxed);
            remote_free::clear_queued(&slab.word);
        }
        if !self.retired
            && self.live == 0
            && (old_rule || remote_free::may_unassign(&world.slab.word))
        {
            self.retired = true;
            world.slab.released.store(true, Ordering::SeqCst);
        }
    }
}

/// A slab with live blocks, parked by its owner on its full list (NOTIFY set).
fn parked_slab() -> World {
    let world = World {
        slab: Slab {
            word: AtomicUsize::new(0),
            next_pending: AtomicPtr::new(std::ptr::null_mut()),
            released: AtomicBool::new(false),
        },
        heap: Heap {
            pending: AtomicPtr::new(std::ptr::null_mut()),
        },
    };
    assert!(remote_free::request_notify(&world.slab.word));
    world
}

fn world() -> Arc<World> {
    Arc::new(parked_slab())
}

/// The model both protocols run: the slab has `live` blocks, one freer thread runs
/// `remote`, the owner frees one block itself (the slab leaves its full list), settles,
/// joins the freer and settles again (its next slow path); at the end every block is
/// accounted for and the slab is retirable, off the pending stack, its word clear.
fn owner_model<W: 'static>(
    live: usize,
    old_rule: bool,
    make: fn() -> Arc<W>,
    world: fn(&W) -> &World,
    remote: fn(&W),
    next: fn(&W, usize) -> usize,
) {
    loom::model(move || {
        let w = make();
        let freer = {
            let w = w.clone();
            thread::spawn(move || remote(&w))
        };
        let mut owner = Owner {
            live,
            retired: false,
        };
        owner.live -= 1;
        remote_free::cancel_notify(&world(&w).slab.word);
        owner.settle_with(world(&w), old_rule, |b| next(&w, b));
        freer.join().unwrap();
        owner.settle_with(world(&w), old_rule, |b| next(&w, b));
        assert_eq!(owner.live, 0, "a block was lost or counted twice");
        assert!(
            owner.retired,
            "an empty slab must become retirable once settled"
        );
        assert!(world(&w).heap.pending.load(Ordering::SeqCst).is_null());
        assert_eq!(world(&w).slab.word.load(Ordering::SeqCst), 0);
    });
}

/// One remote freer (block B) against an owner that frees its own block (A).
fn one_remote_model(old_rule: bool) {
    owner_model(
        2,
        old_rule,
        world,
        |w| w,
        |w| remote_free(w, BLOCK_B),
        |_, _| 0,
    );
}

#[test]
fn new_protocol_never_releases_a_queued_slab() {
    one_remote_model(false);
}

#[test]
fn old_protocol_is_caught() {
    let result = std::panic::catch_unwind(|| one_remote_model(true));
    assert!(
        result.is_err(),
        "loom found no interleaving in which 0.1's rule releases a queued slab"
    );
}

/// Two remote freers race for the notification: exactly one queues the slab, once.
#[test]
fn a_slab_is_queued_once() {
    loom::model(|| {
        let w = world();
        let a = {
            let w = w.clone();
            thread::spawn(move || remote_free(&w, BLOCK_A))
        };
        let b = {
            let w = w.clone();
            thread::spawn(move || remote_free(&w, BLOCK_B))
        };
        a.join().unwrap();
        b.join().unwrap();
        let head = w.heap.pending.load(Ordering::SeqCst);
        assert!(!head.is_null(), "the notification was lost");
        // SAFETY: the model's only slab.
        let next = unsafe { (*head).next_pending.load(Ordering::SeqCst) };
        assert!(next.is_null(), "the slab was queued twice");
        let word = w.slab.word.load(Ordering::SeqCst);
        assert_eq!(word & remote_free::FLAG_MASK, remote_free::QUEUED);
        assert!(!remote_free::may_unassign(&w.slab.word));
    });
}

// ---------------------------------------------------------------------------------------
// Batched remote frees: a freer publishes a chain of blocks with one compare-and-swap
// (`src/heap/remote_batch.rs`), the chain's links written before it and the last link in
// `push_block`'s link step. The links are loom cells, so loom also checks that the owner
// reads each link only after the publication made it visible.

/// A fake block of the batched model: its link word.
struct LinkedBlock {
    next: loom::cell::UnsafeCell<usize>,
}

struct BatchWorld {
    world: World,
    /// Blocks 0, 1, 2 at addresses (i + 1) * 0x1000.
    blocks: [LinkedBlock; 3],
}

fn block_index(addr: usize) -> usize {
    addr / 0x1000 - 1
}

fn batch_world() -> Arc<BatchWorld> {
    Arc::new(BatchWorld {
        world: parked_slab(),
        blocks: [0, 1, 2].map(|_| LinkedBlock {
            next: loom::cell::UnsafeCell::new(0),
        }),
    })
}

/// A remote freer that buffered blocks 1 and 2 of the slab publishes them as one chain.
fn remote_free_chain(w: &BatchWorld) {
    let (first, last) = (2 * 0x1000, 3 * 0x1000);
    // Buffering: the chain's inner link, written while the blocks are only ours.
    // SAFETY: loom cell access, no other thread sees the block yet.
    w.blocks[1].next.with_mut(|p| unsafe { *p = last });
    let notify = remote_free::push_block(&w.world.slab.word, first, 2, |next| {
        // SAFETY: as above; this is the last block's link, written before each attempt.
        w.blocks[2].next.with_mut(|p| unsafe { *p = next });
    });
    if notify {
        assert!(
            !w.world.slab.released.load(Ordering::SeqCst),
            "remote freer queued a slab whose segment was released"
        );
        let slab = &w.world.slab as *const Slab as *mut Slab;
        // SAFETY: this thread set QUEUED; in the model the slab lives as long as `w`.
        unsafe {
            remote_free::push_pending(&w.world.heap.pending, slab, &w.world.slab.next_pending)
        };
    }
}

/// The link of a collected block: the owner's, and loom checks the read is ordered after
/// the freer's writes.
fn chain_next(w: &BatchWorld, block: usize) -> usize {
    // SAFETY: loom cell access of a block the owner collected.
    w.blocks[block_index(block)].next.with(|p| unsafe { *p })
}

/// One batching freer (blocks 1 and 2) against an owner that frees block 0 itself.
fn batched_model(old_rule: bool) {
    owner_model(
        3,
        old_rule,
        batch_world,
        |w| &w.world,
        remote_free_chain,
        chain_next,
    );
}

#[test]
fn batched_protocol_never_releases_a_queued_slab() {
    batched_model(false);
}

#[test]
fn batched_old_rule_is_caught() {
    let result = std::panic::catch_unwind(|| batched_model(true));
    assert!(
        result.is_err(),
        "loom found no interleaving in which 0.1's rule releases a queued slab (batched)"
    );
}
