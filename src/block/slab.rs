//! Slabs: 64 KiB runs of equal blocks of one size class, and the intrusive lists that hold
//! them.
//!
//! A slab's metadata ([`Slab`]) lives in its segment's header, not in the slab, so user
//! memory holds nothing of ours but the free-list link of a free block.
//!
//! Invariants (for a slab assigned to a class, in its owner's view):
//! - `used` (without [`FULL_FLAG`]) = live blocks + blocks on the remote list not yet
//!   collected; `used + blocks on free list + (capacity - built) = capacity`.
//! - A slab is in exactly one place: its heap's `current` slot for its class, or one of its
//!   class's lists (partial, full, empty), or a spare list of its heap, as `state` says.
//! - [`FULL_FLAG`] is set in `used` exactly while `state == State::Full`, and
//!   [`CURRENT_FLAG`] exactly while `state == State::Current`, so the free fast path
//!   detects "full, or about to be empty and not current" with a single compare.
//!
//! Remote frees push onto `remote_free`, an atomic stack with its length in the top bits
//! and two flags in the low bits: [`remote_free::NOTIFY`] (the owner parked the slab on
//! its full list and asks the next remote freer to tell it) and [`remote_free::QUEUED`]
//! (the slab is on its heap's pending stack, or going onto it).

use crate::block::size_class::{SizeClass, MIN_BLOCK_BYTES};
use crate::counter::OwnerU32;
use crate::list::{Links, List, Node};
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// Bytes in a slab.
pub const SLAB_BYTES: usize = 64 * 1024;
/// log2 of [`SLAB_BYTES`].
pub const SLAB_SHIFT: u32 = 16;
/// Set in `Slab::used` while the slab is on its class's full list.
pub const FULL_FLAG: u32 = 1 << 31;
/// Set in `Slab::used` while the slab is its heap's current slab for its class: freeing
/// its last live block then needs no list move, and the fast path's single compare lets
/// it through (a loop that allocates and frees one block never leaves the fast path).
pub const CURRENT_FLAG: u32 = 1 << 30;
use crate::block::remote_free;

/// Blocks carved per extension of a slab's free list: enough to cover one OS page of small
/// blocks, so a fresh slab touches memory only as fast as it is used.
const EXTEND_BYTES: usize = 4096;
const EXTEND_MIN_BLOCKS: u32 = 4;

/// Where a slab is.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    /// Holds the segment header; never handed out.
    Metadata = 0,
    /// Not assigned to a class; on a spare list of its heap.
    Spare = 1,
    /// Its heap's current slab for its class (allocations pop from it).
    Current = 2,
    /// On its class's partial list: has free or unbuilt blocks.
    Partial = 3,
    /// On its class's full list: no free blocks when it was parked.
    Full = 4,
    /// On its class's empty list: no live blocks, class kept.
    Empty = 5,
}

/// A free block: the link is stored in the block itself, and the second word holds the
/// block's *free cookie* ([`free_cookie`]), which allocation clears. A block whose second
/// word equals its cookie is free: a second `free` of it is a double free. (User data equal
/// to the cookie by chance would need to guess a per-process random secret.)
#[repr(C)]
pub struct Block {
    /// Next free block, or null.
    pub next: *mut Block,
    /// [`free_cookie`] of this block while it is free; cleared when it is handed out.
    pub cookie: usize,
}

static COOKIE_SECRET: AtomicUsize = AtomicUsize::new(0x9e37_79b9_7f4a_7c15);

/// Seeds the free-cookie secret from the kernel's per-process random bytes (`AT_RANDOM`).
/// Called once, before the first slab is built.
pub fn init_cookie_secret() {
    // SAFETY: getauxval has no preconditions; AT_RANDOM points at 16 random bytes that the
    // kernel placed on the initial stack, valid for the process's life.
    let random = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u8;
    if random.is_null() {
        return;
    }
    // SAFETY: AT_RANDOM points at 16 random bytes on the initial stack, valid for the
    // process's life; an unaligned read of the first 8.
    let seed = unsafe { random.cast::<usize>().read_unaligned() };
    COOKIE_SECRET.store(seed | 1, Ordering::Relaxed);
}

/// The value the second word of the free block at `addr` holds.
#[inline(always)]
pub fn free_cookie(addr: usize) -> usize {
    COOKIE_SECRET.load(Ordering::Relaxed) ^ addr
}

/// Metadata of one slab: an owner-only part, and a part other threads touch (atomics only).
///
/// No `&mut Slab` is ever made: remote freers read and write the shared atomics while the
/// owner updates its part, so the owner reaches its part through [`Slab::local`], a
/// `&mut` that covers only the owner-only fields.
///
/// Layout: two cache lines. The first holds what the owner's fast paths read and write on
/// every call (the owner-only part and `used`); the second what remote freers touch
/// (`block_bytes`, `remote_free`, `next_pending`). With both in one line (an 88-byte
/// stride, neighbours sharing lines), every remote free's compare-and-swap took the line
/// away from the owner, whose next `malloc` or `free` on that slab missed in its cache.
#[repr(C, align(64))]
pub struct Slab {
    /// Owner-only state (offset 0: the fast path reads `free` first).
    local: UnsafeCell<SlabLocal>,
    /// Blocks not free, with [`FULL_FLAG`] while full and [`CURRENT_FLAG`] while current.
    /// Written by the owner only (relaxed load and store: plain moves); the statistics read
    /// it from other threads, which is why it is not in the owner-only part.
    pub used: OwnerU32,
    /// Fills the first cache line.
    _line: [u8; LINE_PAD_BYTES],
    /// Block size; 0 when the slab holds no class. Read by remote freers to validate.
    pub block_bytes: AtomicU32,
    /// Remote frees: an atomic stack of blocks, flags in the low bits (`remote_free.rs`).
    pub remote_free: AtomicUsize,
    /// Link on the heap's pending stack (written by the remote freer that queues the slab).
    pub next_pending: AtomicPtr<Slab>,
    /// While a dirty spare: its heap's clock (ms, modulo 2^32) when it became one, for the
    /// decay's age. Written by the owner only; on the second line, off the fast paths.
    pub spare_since_ms: OwnerU32,
    /// How many times the slab was assigned to a class (the hardened mode tells blocks
    /// it freed in this assignment from what an earlier one left in the memory).
    pub generation: AtomicU32,
}

/// Padding that puts the fields remote freers touch on the second cache line.
const LINE_PAD_BYTES: usize = 64 - core::mem::size_of::<SlabLocal>() - 4;

const _: () = assert!(core::mem::size_of::<Slab>() == 128);
const _: () = assert!(core::mem::offset_of!(Slab, used) < 64);
const _: () = assert!(core::mem::offset_of!(Slab, block_bytes) == 64);

/// The owner-only part of a slab's metadata.
#[repr(C)]
pub struct SlabLocal {
    /// Free list that allocation pops and owner frees push.
    pub free: *mut Block,
    /// Blocks in the slab.
    pub capacity: u32,
    /// Blocks carved into the free list so far (lazy building).
    pub built: u32,
    /// The owner's copy of the block size (0 when unassigned).
    pub block_bytes: u32,
    /// Size class (valid while `block_bytes != 0`).
    pub class: SizeClass,
    /// Where the slab is.
    pub state: State,
    /// The unbuilt part of the slab reads as zeros (fresh or purged memory).
    pub zeroed: bool,
    /// `ceil(2^48 / block_bytes)`: `(offset * recip) >> 48` is `offset / block_bytes` for
    /// every offset inside a slab, so the free path checks block starts without a division.
    pub recip: u64,
    /// Links on the owner's slab lists.
    pub links: Links<Slab>,
    /// First byte of the slab's memory.
    pub start: *mut u8,
}

// SAFETY: the shared fields are atomics; the owner-only part is reached only through
// `Slab::local`, whose contract is that the caller owns the slab's heap (one thread at a
// time), so no two threads ever touch it at once.
unsafe impl Sync for Slab {}

/// A slab with no free block: heaps point their `current` slots here until a real slab is
/// needed, so the fast path needs no null check. Never written: the fast path only reads
/// `free` (null) and falls to the slow path, which recognises the sentinel by address
/// before touching it.
pub static SENTINEL: Slab = Slab::new_unassigned(ptr::null_mut());

/// The sentinel's address, as the `*mut Slab` the heaps store (never written through).
#[inline(always)]
pub fn sentinel() -> *mut Slab {
    ptr::addr_of!(SENTINEL).cast_mut()
}

impl Slab {
    /// Metadata for a slab at `start` that holds no class yet.
    pub const fn new_unassigned(start: *mut u8) -> Slab {
        Slab {
            local: UnsafeCell::new(SlabLocal {
                free: ptr::null_mut(),
                capacity: 0,
                built: 0,
                block_bytes: 0,
                recip: 0,
                class: SizeClass::FIRST,
                state: State::Spare,
                zeroed: true,
                links: Links::new(),
                start,
            }),
            used: OwnerU32::new(0),
            _line: [0; LINE_PAD_BYTES],
            block_bytes: AtomicU32::new(0),
            remote_free: AtomicUsize::new(0),
            next_pending: AtomicPtr::new(ptr::null_mut()),
            spare_since_ms: OwnerU32::new(0),
            generation: AtomicU32::new(0),
        }
    }

    /// The owner-only part.
    ///
    /// # Safety
    /// The caller must own the slab's heap (its thread, or the lock that guards it), must
    /// not hold another reference to this slab's owner-only part while it uses this one,
    /// and `self` must not be the sentinel.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn local(&self) -> &mut SlabLocal {
        // SAFETY: the caller's guarantee makes this the only reference to the part.
        unsafe { &mut *self.local.get() }
    }

    /// Read-only view of the owner-only part (the heap checker, the sentinel test).
    ///
    /// # Safety
    /// The caller must own the slab's heap, and no `&mut` to the part may be live.
    #[inline(always)]
    pub unsafe fn local_ref(&self) -> &SlabLocal {
        // SAFETY: the caller's guarantee.
        unsafe { &*self.local.get() }
    }

    /// Raw pointer to the owner-only part (for the fast paths, which read and write single
    /// fields through it).
    #[inline(always)]
    pub fn local_ptr(slab: *mut Slab) -> *mut SlabLocal {
        // Address arithmetic only (`UnsafeCell` is `repr(transparent)`): nothing is read.
        slab.cast::<u8>()
            .wrapping_add(core::mem::offset_of!(Slab, local))
            .cast()
    }

    /// Assigns the slab to a class; all blocks unbuilt.
    ///
    /// # Safety
    /// The caller must own the slab's heap; the slab must hold no live block.
    pub unsafe fn assign(&self, class: SizeClass) {
        let block_bytes = class.block_bytes();
        // SAFETY: the caller owns the slab.
        let l = unsafe { self.local() };
        l.free = ptr::null_mut();
        self.used.set(0);
        // Every class's block is at least 16 bytes: the divisor is never zero.
        l.capacity = (SLAB_BYTES / block_bytes.max(MIN_BLOCK_BYTES)) as u32;
        l.built = 0;
        l.class = class;
        l.block_bytes = block_bytes as u32;
        l.recip = (1u64 << 48).div_ceil(block_bytes.max(MIN_BLOCK_BYTES) as u64);
        self.block_bytes
            .store(block_bytes as u32, Ordering::Relaxed);
        self.remote_free.store(0, Ordering::Relaxed);
        // Only the owner assigns: a plain increment, no read-modify-write.
        let generation = self.generation.load(Ordering::Relaxed);
        self.generation
            .store(generation.wrapping_add(1), Ordering::Relaxed);
        crate::stats::held_add(SLAB_BYTES);
    }

    /// Takes the slab out of its class (it must hold no live block and not be queued).
    ///
    /// # Safety
    /// The caller must own the slab's heap.
    pub unsafe fn unassign(&self) {
        crate::stats::held_sub(SLAB_BYTES);
        self.block_bytes.store(0, Ordering::Relaxed);
        // SAFETY: the caller owns the slab.
        let l = unsafe { self.local() };
        l.block_bytes = 0;
        l.recip = 0;
        l.free = ptr::null_mut();
        self.used.set(0);
        l.built = 0;
        l.capacity = 0;
    }

    /// Moves every remotely freed block onto the local free list. Returns how many were
    /// collected. The flags are kept.
    ///
    /// # Safety
    /// The caller must own the slab's heap.
    pub unsafe fn collect_remote(&self) -> u32 {
        let (head, count) = remote_free::take_blocks(&self.remote_free);
        let head = head as *mut Block;
        if head.is_null() {
            return 0;
        }
        // SAFETY: the caller owns the slab.
        let l = unsafe { self.local() };
        // A slab holds at most 4096 blocks.
        let count = count as u32;
        if self.live_count() == count && !l.free.is_null() {
            // Every block is free: rather than walk the stack to splice it, every block goes
            // back to unbuilt (carved again by `extend`, whose links and cookies replace
            // what is there). The memory is not known to read as zeros any more.
            l.free = ptr::null_mut();
            l.built = 0;
            l.zeroed = false;
        } else {
            if !l.free.is_null() {
                // Spliced in front of the local list: the stack's last block links to it.
                let mut tail = head;
                // SAFETY: the stack holds blocks of this slab pushed by `push_remote`
                // (Release), which the Acquire exchange in `take_blocks` synchronised with;
                // we own them all.
                unsafe {
                    while !(*tail).next.is_null() {
                        tail = (*tail).next;
                    }
                    (*tail).next = l.free;
                }
            }
            // With the local list empty (a refill of the current slab, the common case)
            // the stack becomes the list as it is, its blocks untouched until handed out.
            l.free = head;
        }
        self.used.set(self.used.get() - count);
        count
    }

    /// [`Slab::collect_remote`] when it needs no walk of the stack: the local list is empty
    /// (the stack becomes the list) or every block is free (the slab goes back to unbuilt).
    /// Otherwise the remote frees wait, counted as live, until the local list runs dry.
    ///
    /// # Safety
    /// The caller must own the slab's heap.
    pub unsafe fn collect_remote_unless_walk(&self) -> u32 {
        // SAFETY: the caller owns the slab.
        let local_empty = unsafe { self.local() }.free.is_null();
        let (head, count) = remote_free::peek(&self.remote_free);
        // More blocks may arrive after the peek, never fewer: a count equal to the live
        // blocks stays equal (no more blocks can be freed than are live).
        if head == 0 || !(local_empty || count == self.live_count() as usize) {
            return 0;
        }
        // SAFETY: forwarded contract.
        unsafe { self.collect_remote() }
    }

    /// Pushes a block freed by a thread that does not own the slab. Returns true when the
    /// owner asked to be told ([`NOTIFY`] was set): the caller must then queue the slab on
    /// its heap's pending stack.
    ///
    /// # Safety
    /// `block` must be a live block of this slab.
    pub unsafe fn push_remote(&self, block: *mut u8) -> bool {
        let block = block.cast::<Block>();
        remote_free::push_block(&self.remote_free, block as usize, 1, |next| {
            // SAFETY: the block is live and being freed: its first words are ours until the
            // push publishes it.
            unsafe {
                (*block).next = next as *mut Block;
                (*block).cookie = free_cookie(block as usize);
            }
        })
    }

    /// Pushes a chain of `count` blocks freed by a thread that does not own the slab, `first`
    /// to `last` linked through `next` (the last link is written here), with one
    /// compare-and-swap. Returns true as [`Slab::push_remote`] does.
    ///
    /// # Safety
    /// Every block of the chain must be a live block of this slab, being freed, carrying its
    /// free cookie, and the chain must end at `last` and hold `count` blocks.
    pub unsafe fn push_remote_chain(
        &self,
        first: *mut Block,
        last: *mut Block,
        count: u32,
    ) -> bool {
        remote_free::push_block(&self.remote_free, first as usize, count as usize, |next| {
            // SAFETY: the chain's blocks are ours until the push publishes them.
            unsafe { (*last).next = next as *mut Block };
        })
    }

    /// Asks the next remote freer to notify the owner. Returns false (and sets nothing) when
    /// remote frees are already waiting or the slab is already queued: the caller should
    /// then collect instead of parking the slab.
    pub fn request_notify(&self) -> bool {
        remote_free::request_notify(&self.remote_free)
    }

    /// Clears [`NOTIFY`] (the owner took the slab off its full list by itself).
    pub fn cancel_notify(&self) {
        remote_free::cancel_notify(&self.remote_free)
    }

    /// Clears [`QUEUED`] (the owner took the slab off its pending stack).
    pub fn clear_queued(&self) {
        remote_free::clear_queued(&self.remote_free)
    }

    /// True when the slab is on (or going onto) its heap's pending stack.
    pub fn is_queued(&self) -> bool {
        remote_free::is_queued(&self.remote_free)
    }

    /// True when the slab may be unassigned: not queued (the remote-free protocol's
    /// invariant 2, see `remote_free.rs`).
    pub fn may_unassign(&self) -> bool {
        remote_free::may_unassign(&self.remote_free)
    }

    /// True when `ptr` (an address inside this slab) is the start of a block: not inside
    /// one, not in the slab's unusable tail. Reads only the atomic `block_bytes`, so remote
    /// freers may call it.
    pub fn is_block_start(&self, ptr: usize) -> bool {
        let block_bytes = self.block_bytes.load(Ordering::Relaxed);
        // Below 2^16 both: a 32-bit division, several times cheaper than a 64-bit one on
        // the remote-free path, which runs this on every call.
        let offset = (ptr & (SLAB_BYTES - 1)) as u32;
        match offset.checked_rem(block_bytes) {
            Some(rem) => rem == 0 && offset as usize + block_bytes as usize <= SLAB_BYTES,
            None => false,
        }
    }

    /// True when the block at `ptr` carries its free cookie: it is free, not live.
    ///
    /// # Safety
    /// `ptr` must be a block start of this slab.
    #[inline]
    pub unsafe fn is_free_block(ptr: *mut u8) -> bool {
        // SAFETY: a block start of an assigned slab has at least 16 readable bytes.
        unsafe { (*ptr.cast::<Block>()).cookie == free_cookie(ptr as usize) }
    }
}

impl SlabLocal {
    /// Carves up to one OS page worth of unbuilt blocks onto the free list. Returns false
    /// when every block is already built.
    pub fn extend(&mut self) -> bool {
        if self.built >= self.capacity {
            return false;
        }
        let block_bytes = (self.block_bytes as usize).max(MIN_BLOCK_BYTES);
        let per_page = (EXTEND_BYTES / block_bytes) as u32;
        let count = per_page
            .max(EXTEND_MIN_BLOCKS)
            .min(self.capacity - self.built);
        let first = self.built as usize;
        // Link the new blocks in address order, ahead of the existing free list.
        let mut next = self.free;
        let mut i = first + count as usize;
        while i > first {
            i -= 1;
            let block = self.start.wrapping_add(i * block_bytes).cast::<Block>();
            // SAFETY: block `i < capacity` lies inside this slab's memory, which belongs to
            // the slab and holds no live block (it was never handed out).
            unsafe {
                (*block).next = next;
                (*block).cookie = free_cookie(block as usize);
            }
            next = block;
        }
        self.free = next;
        self.built += count;
        true
    }

    /// True when `ptr` is a block start that was handed out at least once. No division: a
    /// multiply by `recip` (the free fast path runs it). An unassigned slab has
    /// `built == 0`, so it answers false there too.
    #[inline(always)]
    pub fn is_built_block(&self, ptr: usize) -> bool {
        let offset = (ptr & (SLAB_BYTES - 1)) as u64;
        let index = (offset * self.recip) >> 48;
        index * self.block_bytes as u64 == offset && index < self.built as u64
    }
}

impl Slab {
    /// Live blocks (plus uncollected remote frees), without the flags.
    #[inline]
    pub fn live_count(&self) -> u32 {
        self.used.get() & !(FULL_FLAG | CURRENT_FLAG)
    }

    /// Sets `flag` ([`FULL_FLAG`] or [`CURRENT_FLAG`]) in `used` (owner only).
    #[inline]
    pub fn set_used_flag(&self, flag: u32) {
        self.used.set(self.used.get() | flag);
    }

    /// Clears `flag` in `used` (owner only).
    #[inline]
    pub fn clear_used_flag(&self, flag: u32) {
        self.used.set(self.used.get() & !flag);
    }

    /// Makes the slab its heap's current slab for its class (the caller stores it there).
    ///
    /// # Safety
    /// The caller must own the slab's heap.
    pub unsafe fn make_current(&self) {
        // SAFETY: the caller owns the slab.
        unsafe { self.local().state = State::Current };
        self.set_used_flag(CURRENT_FLAG);
    }

    /// Ends the slab's time as current slab (the caller then puts it on a list).
    pub fn end_current(&self) {
        self.clear_used_flag(CURRENT_FLAG);
    }

    /// Pops a free block, carving more if the free list is empty. Null when the slab has no
    /// room left (remote frees are not collected here).
    ///
    /// # Safety
    /// The caller must own the slab's heap.
    #[inline]
    pub unsafe fn pop(&self) -> *mut u8 {
        // SAFETY: the caller owns the slab.
        let l = unsafe { self.local() };
        if l.free.is_null() && !l.extend() {
            return ptr::null_mut();
        }
        let block = l.free;
        // SAFETY: `block` is a free block of this slab: its first word is its link.
        unsafe {
            l.free = (*block).next;
            (*block).cookie = 0;
        }
        self.used.set(self.used.get() + 1);
        block.cast()
    }

    /// Pushes a block freed by its owner.
    ///
    /// # Safety
    /// The caller must own the slab's heap; `block` must be a live block of this slab.
    #[inline]
    pub unsafe fn push_local(&self, block: *mut u8) {
        // SAFETY: the caller owns the slab.
        let l = unsafe { self.local() };
        let block = block.cast::<Block>();
        // SAFETY: the block is ours and no longer live; its first words become the link
        // and the cookie.
        unsafe {
            (*block).next = l.free;
            (*block).cookie = free_cookie(block as usize);
        }
        l.free = block;
        self.used.set(self.used.get() - 1);
    }
}

/// A list of slabs (the owner's lists only: every slab on one is owned by the list's
/// owner, who alone touches the links, which live in the slab's owner-only part).
pub type SlabList = List<Slab>;

// SAFETY: the links are a field of the slab's owner-only part, found by address arithmetic
// alone; each slab has its own.
unsafe impl Node for Slab {
    fn links(slab: *mut Slab) -> *mut Links<Slab> {
        Slab::local_ptr(slab)
            .cast::<u8>()
            .wrapping_add(core::mem::offset_of!(SlabLocal, links))
            .cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// The owner-only part of a test's slab.
    #[allow(clippy::mut_from_ref)]
    fn own(slab: &Slab) -> &mut SlabLocal {
        // SAFETY: the test owns the slab and uses each returned reference briefly.
        unsafe { slab.local() }
    }

    /// A slab over a heap buffer aligned to the slab size.
    /// The test owns the slab: `local()` is the only reference to its owner-only part at
    /// each use.
    fn with_slab(block_bytes: usize, f: impl FnOnce(&Slab)) {
        let layout = std::alloc::Layout::from_size_align(SLAB_BYTES, SLAB_BYTES).unwrap();
        // SAFETY: non-zero size.
        let mem = unsafe { std::alloc::alloc(layout) };
        assert!(!mem.is_null());
        let slab = Slab::new_unassigned(mem);
        // SAFETY: the test owns the slab, which holds no block.
        unsafe { slab.assign(crate::block::size_class::class_of(block_bytes)) };
        assert_eq!(
            slab.block_bytes.load(Ordering::Relaxed) as usize,
            block_bytes
        );
        f(&slab);
        // SAFETY: allocated above with this layout.
        unsafe { std::alloc::dealloc(mem, layout) };
    }

    #[test]
    fn pops_every_block_once_then_reports_full() {
        with_slab(48, |slab| {
            let mut seen = Vec::new();
            loop {
                // SAFETY: the test's slab, owned by this thread alone (`with_slab`).
                let p = unsafe { slab.pop() };
                if p.is_null() {
                    break;
                }
                assert!(slab.is_block_start(p as usize));
                seen.push(p as usize);
            }
            assert_eq!(seen.len(), SLAB_BYTES / 48);
            assert_eq!(slab.live_count() as usize, seen.len());
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), SLAB_BYTES / 48);
        });
    }

    #[test]
    fn extension_is_lazy() {
        with_slab(16, |slab| {
            // SAFETY: the test's slab, owned by this thread alone (`with_slab`).
            let p = unsafe { slab.pop() };
            assert!(!p.is_null());
            assert_eq!(own(slab).built as usize, 4096 / 16);
        });
    }

    #[test]
    fn local_and_remote_frees_keep_counts() {
        with_slab(256, |slab| {
            // SAFETY: the test's slab, owned by this thread alone (`with_slab`).
            let a = unsafe { slab.pop() };
            // SAFETY: the test's slab, owned by this thread alone (`with_slab`).
            let b = unsafe { slab.pop() };
            // SAFETY: the test's slab, owned by this thread alone (`with_slab`).
            let c = unsafe { slab.pop() };
            assert_eq!(slab.live_count(), 3);
            // SAFETY: a is a live block of this slab.
            unsafe { slab.push_local(a) };
            assert_eq!(slab.live_count(), 2);
            // SAFETY: b and c are live blocks of this slab.
            unsafe {
                assert!(!slab.push_remote(b));
                assert!(!slab.push_remote(c));
            }
            assert_eq!(slab.live_count(), 2, "remote frees count until collected");
            assert_eq!(unsafe { slab.collect_remote() }, 2);
            assert_eq!(slab.live_count(), 0);
            assert_eq!(unsafe { slab.collect_remote() }, 0);
        });
    }

    #[test]
    fn notify_goes_to_the_first_remote_freer_only() {
        with_slab(1024, |slab| {
            // SAFETY: the test's slab, owned by this thread alone (`with_slab`).
            let a = unsafe { slab.pop() };
            // SAFETY: the test's slab, owned by this thread alone (`with_slab`).
            let b = unsafe { slab.pop() };
            assert!(slab.request_notify());
            // SAFETY: a and b are live blocks of this slab.
            unsafe {
                assert!(slab.push_remote(a), "first remote free must notify");
                assert!(!slab.push_remote(b), "second must not");
            }
            assert!(!slab.request_notify(), "queued slab cannot be parked again");
            assert_eq!(unsafe { slab.collect_remote() }, 2);
            slab.clear_queued();
            assert!(slab.request_notify());
            slab.cancel_notify();
            assert_eq!(slab.remote_free.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn block_start_check_rejects_interior_and_foreign_pointers() {
        with_slab(96, |slab| {
            // SAFETY: the test's slab, owned by this thread alone (`with_slab`).
            let p = unsafe { slab.pop() } as usize;
            assert!(slab.is_block_start(p));
            assert!(!slab.is_block_start(p + 8));
            // The tail past the last whole block is not a block.
            let last = (SLAB_BYTES / 96) * 96;
            assert!(!slab.is_block_start(own(slab).start as usize + last));
            assert!(slab.is_block_start(own(slab).start as usize + last - 96));
        });
    }
}
