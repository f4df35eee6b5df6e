//! The hardened mode (`OXMALLOC_HARDEN=1`): stops the heap errors of a program with a
//! one-line report (`oxmalloc: CALL(): WHAT 0xADDRESS`) and `abort()`, at a cost meant for
//! production rather than for debugging (per-thread, no global lock).
//!
//! ```text
//! block:  [ user bytes (size) | canary bytes ... | trailer: seal(key, size) ]
//!                                                  └─ last 8 bytes of the usable block
//! ```
//! - The trailer holds the requested size sealed with a per-process secret and the block's
//!   address (`size ^ secret ^ mix(addr)`), and the bytes after the size (up to 64, before
//!   the trailer) hold a canary byte derived from the same: `free` and `realloc` check both, so a write
//!   of even one byte past the requested size is found; a freed block's trailer says
//!   FREED, so a second free is found while the block waits in the quarantine; after it,
//!   the slab's free cookie says so. `free_sized` and sized `operator delete` compare their
//!   size with the trailer's.
//! - Small blocks are zeroed at `free` and wait in a per-thread quarantine
//!   ([`SMALL_SLOTS`] blocks, at most [`SMALL_QUARANTINE_BYTES`]) before their memory goes
//!   back to the slab; when one is handed out again it must still read as zeros (but for
//!   its free-list link), or a write after free is reported. Checking there rather than
//!   when it leaves the quarantine reads the block when the program is about to use it
//!   anyway (measured: the check at eviction missed the cache on every block). Blocks are
//!   zeroed when handed out, too (`malloc` returns zeros).
//! - Medium and huge blocks are made inaccessible at `free` (all OS pages of the block but
//!   the one holding the trailer) and wait in a per-thread quarantine ([`BIG_SLOTS`]
//!   blocks, at most [`BIG_QUARANTINE_BYTES`]): a read or write after free faults. Their
//!   pages go back to the OS once they waited for the purge delay (a medium block's at
//!   once beyond [`UNPURGED_QUARANTINE_BYTES`] per thread; purging each block at its free
//!   made every reuse fault its pages in again).
//! - `malloc(0)` returns an address in a reserved inaccessible range (one 16-byte slot of
//!   [`ZERO_SLOTS`], tracked in a bitmap): any access faults; freeing it twice is reported.
//!
//! Threads get no heap pointer in the TLS slot in this mode (their per-thread state is in a
//! TLS word of its own), so the fast paths fall through to the slow paths, which route
//! every call here: the fast paths pay nothing for the mode's existence. Nothing here
//! allocates through the global allocator: the per-thread states and the `malloc(0)`
//! bitmap come from the OS layer.

use crate::block::buddy::BuddyArena;
use crate::block::large::Large;
use crate::block::segment::SegmentHeader;
use crate::block::size_class::{self, SMALL_MAX_BYTES};
use crate::block::slab::Slab;
use crate::fatal;
use crate::heap::{Heap, OwnedHeap};
use crate::os::{Os, OS_PAGE_BYTES};
use crate::process::context::MIN_ALIGN;
use crate::process::{tls, CTX};
use crate::region_map::{self, Kind};
use crate::sync::Mutex;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

const TRAILER_BYTES: usize = 8;
/// The longest canary after a block's requested size (see `canary_bytes`).
const CANARY_MAX_BYTES: usize = 64;
/// Small blocks a thread's quarantine holds.
pub const SMALL_SLOTS: usize = 256;
/// Bytes of small blocks a thread's quarantine holds at most.
pub const SMALL_QUARANTINE_BYTES: usize = 1 << 20;
/// Medium and huge blocks a thread's quarantine holds.
pub const BIG_SLOTS: usize = 16;
/// Bytes of medium and huge blocks a thread's quarantine holds at most (a larger block is
/// freed at once, after its checks).
pub const BIG_QUARANTINE_BYTES: usize = 16 << 20;
/// Bytes of quarantined medium blocks whose pages a thread keeps resident (see `free`).
pub const UNPURGED_QUARANTINE_BYTES: usize = 4 << 20;
/// `malloc(0)` blocks that can be live at once (more fall back to ordinary blocks).
pub const ZERO_SLOTS: usize = 1 << 16;
const ZERO_SLOT_BYTES: usize = 16;
const ZERO_REGION_BYTES: usize = ZERO_SLOTS * ZERO_SLOT_BYTES;
const ZERO_WORDS: usize = ZERO_SLOTS / 64;
/// The size a freed block's trailer seals (with the slab's generation: see `freed`).
const FREED: usize = usize::MAX;

const DOUBLE_FREE: &str = "double free";
const INVALID: &str = "invalid pointer";
const OVERFLOW: &str = "write past the end of the block";
const AFTER_FREE: &str = "write after free of the block";
const WRONG_SIZE: &str = "size does not match the block";

/// A FIFO of freed blocks (address and usable bytes).
struct Ring<const N: usize> {
    addr: [usize; N],
    bytes: [usize; N],
    /// When each block entered (ms, `Os::now_ms`; 0 where not needed).
    since_ms: [u64; N],
    head: usize,
    len: usize,
    total_bytes: usize,
}

impl<const N: usize> Ring<N> {
    fn push(&mut self, addr: usize, bytes: usize, since_ms: u64) {
        let i = (self.head + self.len) % N;
        if let (Some(a), Some(b), Some(t)) = (
            self.addr.get_mut(i),
            self.bytes.get_mut(i),
            self.since_ms.get_mut(i),
        ) {
            *a = addr;
            *b = bytes;
            *t = since_ms;
            self.len += 1;
            self.total_bytes += bytes;
        }
    }

    /// The oldest block, taken out, when the ring is full or over `max_bytes`.
    fn evict(&mut self, max_bytes: usize) -> Option<(usize, usize)> {
        if self.len == 0 || (self.len < N && self.total_bytes <= max_bytes) {
            return None;
        }
        self.take_oldest()
    }

    fn take_oldest(&mut self) -> Option<(usize, usize)> {
        if self.len == 0 {
            return None;
        }
        let out = (*self.addr.get(self.head)?, *self.bytes.get(self.head)?);
        self.head = (self.head + 1) % N;
        self.len -= 1;
        self.total_bytes -= out.1;
        Some(out)
    }

    /// The `k`-th oldest block: its address (to update), bytes and entry time.
    fn nth_mut(&mut self, k: usize) -> Option<(&mut usize, usize, u64)> {
        let i = (self.head + k) % N;
        if k >= self.len {
            return None;
        }
        Some((
            self.addr.get_mut(i)?,
            *self.bytes.get(i)?,
            *self.since_ms.get(i)?,
        ))
    }

    fn contains(&self, addr: usize) -> bool {
        (0..self.len).any(|k| self.addr.get((self.head + k) % N) == Some(&addr))
    }
}

/// A thread's state in this mode (mapped from the OS; reused through the spare list).
struct ThreadState {
    heap: *mut Heap,
    spare_next: *mut ThreadState,
    small: Ring<SMALL_SLOTS>,
    /// Big blocks, their addresses tagged with 1 once their pages were purged.
    big: Ring<BIG_SLOTS>,
    /// Bytes of the big quarantine's pages that were not purged yet (huge blocks' too).
    big_unpurged: usize,
    /// When the oldest unpurged big block is due to be purged (ms; 0: none is waiting).
    big_purge_at_ms: u64,
    /// Small allocations counted while a big block waits (see `count_towards_purge`).
    purge_ticks: u32,
}

impl ThreadState {
    /// Takes the oldest big block out of the quarantine when it is over its bounds (`all`:
    /// in any case): its address (untagged) and usable bytes; keeps the count of unpurged
    /// bytes.
    fn pop_big(&mut self, all: bool) -> Option<(usize, usize)> {
        let (tagged, bytes) = if all {
            self.big.take_oldest()?
        } else {
            self.big.evict(BIG_QUARANTINE_BYTES)?
        };
        if tagged & 1 == 0 {
            self.big_unpurged -= protectable(tagged, bytes).1;
        }
        Some((tagged & !1, bytes))
    }
}

const STATE_BYTES: usize = core::mem::size_of::<ThreadState>().next_multiple_of(OS_PAGE_BYTES);

/// Process-wide state: spare thread states and the `malloc(0)` slots (taken before fork
/// like every global lock).
pub struct Globals {
    spare: *mut ThreadState,
    /// One bit per `malloc(0)` slot (set: live); null until first used.
    zero_bits: *mut u64,
    zero_cursor: usize,
}

// SAFETY: the pointers are only followed under the mutex that holds them (spare states
// and the bitmap are memory of ours that nothing else reaches).
unsafe impl Send for Globals {}

/// The hardened mode's global lock.
pub static GLOBALS: Mutex<Globals> = Mutex::new(Globals {
    spare: ptr::null_mut(),
    zero_bits: ptr::null_mut(),
    zero_cursor: 0,
});

/// Base of the `malloc(0)` range (0 until reserved).
static ZERO_BASE: AtomicUsize = AtomicUsize::new(0);
static SECRET: AtomicUsize = AtomicUsize::new(0);

/// The per-process secret (random from the kernel's `AT_RANDOM` bytes, mixed with ASLR).
fn secret() -> usize {
    let s = SECRET.load(Ordering::Relaxed);
    if s != 0 {
        return s;
    }
    init_secret()
}

#[cold]
fn init_secret() -> usize {
    // SAFETY: getauxval has no preconditions; AT_RANDOM points at 16 random bytes the
    // kernel put on the initial stack, readable for the process's life.
    let random = unsafe {
        let at = libc::getauxval(libc::AT_RANDOM) as *const u8;
        if at.is_null() {
            0
        } else {
            at.add(8).cast::<usize>().read_unaligned()
        }
    };
    let s = (random ^ (&SECRET as *const AtomicUsize as usize).rotate_left(29)) | 1;
    match SECRET.compare_exchange(0, s, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => s,
        Err(first) => first,
    }
}

fn mix(addr: usize) -> usize {
    addr.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31)
}

/// The block at `addr`'s key: what its trailer word is sealed with, and its canary's source.
fn block_key(addr: usize) -> usize {
    secret() ^ mix(addr)
}

/// The trailer word of the block whose key is `key`, holding `size` bytes.
fn seal(key: usize, size: usize) -> usize {
    size ^ key
}

/// What a freed block's trailer holds: FREED sealed, with the generation of its slab (0
/// for medium and huge blocks), so that a trailer left in the memory by an earlier
/// assignment of the slab, to another size class, is not taken for one of this one.
fn freed_word(key: usize, generation: u32) -> usize {
    seal(key, FREED ^ generation as usize)
}

/// The generation of the slab holding the small block at `addr`.
fn generation_of(addr: usize) -> u32 {
    let slab = SegmentHeader::slab_of(SegmentHeader::of(addr), addr);
    // SAFETY: `addr` is a block of a live slab (callers); `generation` is atomic.
    unsafe { (*slab).generation.load(Ordering::Relaxed) }
}

/// The canary byte of the block whose key is `key` (never zero).
fn canary_of(key: usize) -> u8 {
    (key >> 40) as u8 | 1
}

/// The calling thread's state, null when it has none (no memory, or past its exit).
fn state() -> *mut ThreadState {
    let s = tls::hardened() as *mut ThreadState;
    if !s.is_null() || tls::state() == tls::STATE_EXITED {
        return s;
    }
    start_thread()
}

#[cold]
#[inline(never)]
fn start_thread() -> *mut ThreadState {
    let st = {
        let mut g = GLOBALS.lock();
        let spare = g.spare;
        if spare.is_null() {
            None
        } else {
            // SAFETY: spare states are valid and ours under the lock.
            g.spare = unsafe { (*spare).spare_next };
            Some(spare)
        }
    };
    let st = match st {
        Some(st) => st,
        None => match CTX.os.map(STATE_BYTES, OS_PAGE_BYTES) {
            // Fresh mappings read as zeros: empty rings, null pointers.
            Some(p) => p.as_ptr().cast::<ThreadState>(),
            None => return ptr::null_mut(),
        },
    };
    let Some(heap) = CTX.heaps.lock().acquire(&CTX.os) else {
        let mut g = GLOBALS.lock();
        // SAFETY: `st` is ours (fresh or taken from the spare list).
        unsafe { (*st).spare_next = g.spare };
        g.spare = st;
        return ptr::null_mut();
    };
    // SAFETY: `st` is ours: fresh zeroed memory, or a spare state whose rings were drained.
    unsafe {
        (*st).heap = heap;
        (*st).spare_next = ptr::null_mut();
    }
    tls::set_hardened(st as usize);
    tls::set_state(tls::STATE_ACTIVE);
    crate::stats::thread_started();
    crate::process::process_start();
    crate::process::register_thread_exit(st.cast());
    st
}

/// The calling thread's heap in this mode (null when it has none): kept by a fork child.
pub fn thread_heap() -> *mut Heap {
    let s = tls::hardened() as *mut ThreadState;
    if s.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: the TLS word holds this thread's own live state.
    unsafe { (*s).heap }
}

/// The heap of the thread whose state is `st` (null for none).
fn heap_of(st: *mut ThreadState) -> *mut Heap {
    // SAFETY: `st` is null or the calling thread's own live state.
    unsafe { st.as_ref() }.map_or(ptr::null_mut(), |st| st.heap)
}

/// Runs `f` with `heap`, the calling thread's, or with the global heap under its lock for
/// a thread without one (`heap` null).
fn with_heap<T>(heap: *mut Heap, f: impl FnOnce(OwnedHeap) -> Option<T>) -> Option<T> {
    if !heap.is_null() {
        // SAFETY: the thread's own heap; no other `OwnedHeap` of it is live (this module
        // never holds one across a call that allocates).
        return f(unsafe { OwnedHeap::claim(heap) }?);
    }
    let mut global = CTX.global_heap.lock();
    if global.0.is_null() {
        global.0 = CTX.heaps.lock().acquire(&CTX.os)?;
    }
    // SAFETY: the global heap is ours while its lock is held.
    f(unsafe { OwnedHeap::claim(global.0) }?)
}

/// Allocates a hardened block of `size` bytes at `align_bytes` (a power of two); null when
/// memory is short. Small blocks read as zeros; `zero` zeroes the others.
pub fn alloc(size: usize, align_bytes: usize, zero: bool) -> *mut u8 {
    // The common case first, with one reading of the thread's state: a small block at the
    // default alignment, no big block due for its purge.
    if size.wrapping_sub(1) < SMALL_MAX_BYTES - TRAILER_BYTES && align_bytes <= MIN_ALIGN {
        let st = tls::hardened() as *mut ThreadState;
        // SAFETY: the TLS word holds null or this thread's own live state; the reference
        // ends before anything else reaches it.
        if let Some(st_ref) = unsafe { st.as_mut() } {
            if st_ref.big_purge_at_ms != 0 {
                count_towards_purge(st_ref);
            }
            // SAFETY: the thread's own heap; no other `OwnedHeap` of it is live.
            if let Some(h) = unsafe { OwnedHeap::claim(st_ref.heap) } {
                let class = size_class::class_of(size + TRAILER_BYTES);
                let p = CTX.alloc_small(h, class);
                if !p.is_null() {
                    // SAFETY: `p` is a fresh small block of `class`'s size, at least
                    // `size + 8` bytes.
                    unsafe { hand_out_small(p, size, class.block_bytes()) };
                }
                return p;
            }
        }
    }
    alloc_general(size, align_bytes, zero)
}

/// A small allocation while quarantined big blocks wait for their purge: every 64th reads
/// the clock and purges those that are due (a clock reading on every one cost more than
/// the rest of the allocation).
#[cold]
#[inline(never)]
fn count_towards_purge(st: &mut ThreadState) {
    st.purge_ticks = st.purge_ticks.wrapping_add(1);
    if st.purge_ticks % 64 == 0 {
        purge_due(st, CTX.os.now_ms());
    }
}

/// [`alloc`]'s other cases: `malloc(0)`, alignments, medium and huge sizes, threads
/// without a state.
#[inline(never)]
fn alloc_general(size: usize, align_bytes: usize, zero: bool) -> *mut u8 {
    if size == 0 && align_bytes <= ZERO_SLOT_BYTES {
        if let Some(p) = zero_alloc() {
            return p;
        }
    }
    let Some(total) = size.checked_add(TRAILER_BYTES) else {
        return ptr::null_mut();
    };
    let st = state();
    // SAFETY: the thread's own state; the reference ends here.
    if let Some(st_ref) = unsafe { st.as_mut() } {
        if st_ref.big_purge_at_ms != 0 {
            purge_due(st_ref, CTX.os.now_ms());
        }
    }
    if let Some(class) = size_class::class_for_aligned(total, align_bytes) {
        let p =
            with_heap(heap_of(st), |h| Some(CTX.alloc_small(h, class))).unwrap_or(ptr::null_mut());
        if p.is_null() {
            return p;
        }
        // SAFETY: `p` is a fresh small block of `class`'s size, at least `size + 8` bytes.
        unsafe { hand_out_small(p, size, class.block_bytes()) };
        return p;
    }
    let Some((p, zeroed)) = with_heap(heap_of(st), |h| CTX.alloc_big(Some(h), total, align_bytes))
    else {
        return ptr::null_mut();
    };
    let p = p.as_ptr();
    let usable = CTX.usable_size(p, "malloc");
    // SAFETY: `p` is a fresh block of `usable >= size + 8` bytes.
    unsafe {
        if zero && !zeroed {
            p.write_bytes(0, size);
        }
        seal_block(p, size, usable);
    }
    p
}

/// Hands out the small block at `p` (`usable` bytes, just taken from its slab) for `size`
/// bytes: its first `size` bytes read as zeros, then come the canary and the trailer.
///
/// A block this mode freed before (its trailer still says FREED: the same size class, the
/// same trailer position) was zeroed then, and only its free-list link and cookie (the
/// first 16 bytes) were written since: any other byte that is not zero was written after
/// free, which is reported. Other blocks (never handed out, or from a slab of another
/// class before) are zeroed.
///
/// # Safety
/// `p` must be a small block just taken from its slab, with `usable >= size + 8` bytes.
#[inline(always)]
unsafe fn hand_out_small(p: *mut u8, size: usize, usable: usize) {
    let addr = p as usize;
    let key = block_key(addr);
    // SAFETY: the trailer, the words checked, the zeroed range and the canary lie inside
    // the block (caller).
    unsafe {
        let trailer = p.add(usable - TRAILER_BYTES).cast::<usize>();
        if trailer.read_unaligned() != freed_word(key, generation_of(addr)) {
            p.write_bytes(0, size);
        } else {
            // Words 0 and 1 are the free-list link and cookie (a 16-byte block has no
            // more, and its cookie overwrote its trailer, so it never gets here).
            let words = (usable - TRAILER_BYTES) / 8;
            let body =
                core::slice::from_raw_parts(p.cast::<usize>().add(2), words.saturating_sub(2));
            if body.iter().fold(0, |acc, &w| acc | w) != 0 {
                fatal::bad_pointer("malloc", AFTER_FREE, addr);
            }
            p.cast::<[usize; 2]>().write([0, 0]);
        }
        seal_with(p, size, usable, key);
    }
}

/// Zeroes the `len` bytes at `p` (a multiple of 8, at most [`CANARY_MAX_BYTES`]) with
/// word stores: a call to `memset` cost more than the whole range. The stores are volatile
/// only so that the compiler does not turn the loop back into that call.
///
/// # Safety
/// `[p, p + len)` must be writable and used by the caller only.
#[inline(always)]
unsafe fn zero_short(p: *mut u8, len: usize) {
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: `i + 8 <= len`: the 8 bytes lie inside the caller's range ([u8; 8] has
        // alignment 1).
        unsafe { ptr::write_volatile(p.add(i).cast::<[u8; 8]>(), [0; 8]) };
        i += 8;
    }
}

/// Writes the canary and the trailer of the block at `p` (`usable` bytes) holding `size`.
///
/// # Safety
/// `p` must be a block of ours with `usable >= size + 8` bytes, used by the caller only.
unsafe fn seal_block(p: *mut u8, size: usize, usable: usize) {
    // SAFETY: forwarded contract.
    unsafe { seal_with(p, size, usable, block_key(p as usize)) }
}

/// [`seal_block`] with the block's key already at hand.
///
/// # Safety
/// As for [`seal_block`]; `key` must be the block's.
#[inline(always)]
unsafe fn seal_with(p: *mut u8, size: usize, usable: usize, key: usize) {
    // SAFETY: the canary (rounded up to whole words, up to the trailer or into the unused
    // rest of the block) and the trailer lie inside the block (caller).
    unsafe {
        write_canary(p.add(size), canary_bytes(size, usable), canary_of(key));
        p.add(usable - TRAILER_BYTES)
            .cast::<usize>()
            .write_unaligned(seal(key, size));
    }
}

/// How many bytes of canary follow the `size` bytes of a block of `usable` bytes: the gap
/// up to the trailer, at most [`CANARY_MAX_BYTES`]. A big block's gap can be most of its
/// pages (a buddy block is a power of two); filling it made every quarantined block's pages
/// resident, and every reuse touch them again. A write past the canary and before the
/// trailer is not seen by the canary (in a small block, it is seen as a write after free
/// when the block is handed out again, since the gap was zeroed at free).
fn canary_bytes(size: usize, usable: usize) -> usize {
    (usable - TRAILER_BYTES - size).min(CANARY_MAX_BYTES)
}

/// The usable bytes of the medium or huge block at `addr`; reports a pointer that is not
/// the start of one of ours.
fn big_block_of(addr: usize, call: &str) -> usize {
    let found = match region_map::kind_of(addr) {
        Kind::Buddy => BuddyArena::usable_size(addr),
        Kind::Huge | Kind::HugeFar => Large::usable_size(addr),
        // Small blocks are verified by `verify_small`; no sampled or guarded blocks in this
        // mode (the profiler and the guard are off).
        Kind::Slab | Kind::Sampled | Kind::Guarded | Kind::None => None,
    };
    match found {
        Some(usable) if usable >= TRAILER_BYTES + 8 => usable,
        _ => fatal::bad_pointer(call, INVALID, addr),
    }
}

/// The requested size sealed in the trailer of the live block at `addr` (`usable` bytes,
/// key `key`, `freed` the word its trailer takes when freed); reports a freed block, an
/// overwritten trailer or canary.
#[inline(always)]
fn check_trailer(addr: usize, usable: usize, key: usize, freed: usize, call: &str) -> usize {
    let p = addr as *const u8;
    // SAFETY: the trailer lies in the block's last OS page, never made inaccessible.
    let word = unsafe {
        p.add(usable - TRAILER_BYTES)
            .cast::<usize>()
            .read_unaligned()
    };
    if word == freed {
        fatal::bad_pointer(call, DOUBLE_FREE, addr);
    }
    let size = word ^ key;
    if size > usable - TRAILER_BYTES {
        fatal::bad_pointer(call, OVERFLOW, addr);
    }
    // SAFETY: the canary, rounded up to whole words, lies inside the live block.
    if !unsafe { all_bytes_are(p.add(size), canary_bytes(size, usable), canary_of(key)) } {
        fatal::bad_pointer(call, OVERFLOW, addr);
    }
    size
}

/// A live small block, verified.
struct SmallBlock {
    size: usize,
    usable: usize,
    /// What its trailer takes when it is freed.
    freed: usize,
}

/// Verifies the live small block at `addr` (in a slab segment, says the region map) with
/// one lookup of its slab; reports a pointer that is not a block start, a block already
/// back in its slab or in the quarantine, an overwritten trailer or canary.
#[inline(always)]
fn verify_small(addr: usize, call: &str) -> SmallBlock {
    // SAFETY: the region map says the segment is live; `block_bytes`, `is_block_start` and
    // `generation` read atomics only.
    let slab = unsafe { &*SegmentHeader::slab_of(SegmentHeader::of(addr), addr) };
    let usable = slab.block_bytes.load(Ordering::Relaxed) as usize;
    if !slab.is_block_start(addr) || usable < TRAILER_BYTES + 8 {
        fatal::bad_pointer(call, INVALID, addr);
    }
    // SAFETY: a block start of an assigned slab has 16 readable bytes.
    if unsafe { Slab::is_free_block(addr as *mut u8) } {
        fatal::bad_pointer(call, DOUBLE_FREE, addr);
    }
    let key = block_key(addr);
    let freed = freed_word(key, slab.generation.load(Ordering::Relaxed));
    let size = check_trailer(addr, usable, key, freed, call);
    SmallBlock {
        size,
        usable,
        freed,
    }
}

/// Verifies the live block at `addr`: returns its requested size and usable bytes;
/// reports a bad pointer, a freed block, an overwritten trailer or canary.
fn verify_live(addr: usize, call: &str, st: *mut ThreadState) -> (usize, usize) {
    if region_map::kind_of(addr) == Kind::Slab {
        let b = verify_small(addr, call);
        return (b.size, b.usable);
    }
    let usable = big_block_of(addr, call);
    // SAFETY: the thread's own state, if any.
    if let Some(st) = unsafe { st.as_ref() } {
        if st.big.contains(addr) || st.big.contains(addr | 1) {
            fatal::bad_pointer(call, DOUBLE_FREE, addr);
        }
    }
    let key = block_key(addr);
    (
        check_trailer(addr, usable, key, freed_word(key, 0), call),
        usable,
    )
}

/// True when the `len` bytes at `p` all hold `byte`, compared a word at a time: a last
/// partial word is read whole and masked (comparing its bytes one by one cost more than the
/// rest of the check).
///
/// # Safety
/// `[p, p + len)` rounded up to whole words must be readable (a canary: the trailer or the
/// rest of the block follows it).
unsafe fn all_bytes_are(p: *const u8, len: usize, byte: u8) -> bool {
    let pattern = [byte; 8];
    let word_at = |i: usize| {
        // SAFETY: `i < len`: the word starting there is readable (caller).
        let w = unsafe { p.add(i).cast::<[u8; 8]>().read() };
        u64::from_le_bytes(w) ^ u64::from_le_bytes(pattern)
    };
    let mut diff = 0;
    let mut i = 0;
    while i + 8 <= len {
        diff |= word_at(i);
        i += 8;
    }
    if i < len {
        // Little-endian: the first `len - i` bytes are the low ones.
        diff |= word_at(i) & ((1u64 << ((len - i) * 8)) - 1);
    }
    diff == 0
}

/// Writes `byte` to the `len` bytes at `p` (a canary, at most [`CANARY_MAX_BYTES`]) a
/// word at a time, the last word whole: up to 7 bytes past `len` are written too.
///
/// # Safety
/// `[p, p + len)` rounded up to whole words must be writable and unused: a canary followed
/// by the trailer (written after it) or by the unused rest of the block.
#[inline(always)]
unsafe fn write_canary(p: *mut u8, len: usize, byte: u8) {
    let mut i = 0;
    while i < len {
        // SAFETY: the word starts inside the canary and ends in the rounded-up range
        // (caller); volatile only so that the loop does not become a `memset` call.
        unsafe { ptr::write_volatile(p.add(i).cast::<[u8; 8]>(), [byte; 8]) };
        i += 8;
    }
}

/// Frees a hardened block; `expected_size` is the size a sized free was given.
///
/// # Safety
/// `ptr` must be null or a pointer the program got from the allocator (what it points to
/// is verified before anything is written).
pub unsafe fn free(ptr: *mut u8, call: &str, expected_size: Option<usize>) {
    if ptr.is_null() {
        return;
    }
    let addr = ptr as usize;
    if in_zero_range(addr) {
        if expected_size.is_some_and(|n| n != 0) {
            fatal::bad_pointer(call, WRONG_SIZE, addr);
        }
        return zero_free(addr, call);
    }
    let st = state();
    if region_map::raw_kind_of(addr) == Kind::Slab as u8 {
        // SAFETY: `st` is null or the thread's own state; `ptr` is in a live segment
        // (region map).
        return unsafe { free_small(st, ptr, call, expected_size) };
    }
    let (size, usable) = verify_live(addr, call, st);
    if expected_size.is_some_and(|n| n != size) {
        fatal::bad_pointer(call, WRONG_SIZE, addr);
    }
    // SAFETY: verified live above: the block is the program's to give back; its trailer
    // lies in its last OS page.
    unsafe {
        ptr.add(usable - TRAILER_BYTES)
            .cast::<usize>()
            .write_unaligned(freed_word(block_key(addr), 0));
    }
    // SAFETY: the thread's own state, reached by no one else.
    let Some(st_ref) = (unsafe { st.as_mut() }) else {
        // No quarantine for a thread past its exit: checked, then freed at once.
        return free_for_real(ptr::null_mut(), addr, 0, call);
    };
    let heap = st_ref.heap;
    let (start, len) = protectable(addr, usable);
    if len == 0
        || usable > BIG_QUARANTINE_BYTES
        // SAFETY: whole OS pages of a block the program gave back, not the last one.
        || !unsafe { CTX.os.set_accessible(start, len, false) }
    {
        return free_for_real(heap, addr, 0, call);
    }
    // The quarantine holds the block's address space. Its pages stay resident, as a
    // freed block's would outside the mode, for the purge delay (`purge_due`, from this
    // mode's `malloc` and `free`: the time-based decay never sees quarantined blocks),
    // a medium block's only up to UNPURGED_QUARANTINE_BYTES per thread: beyond that its
    // pages go back to the OS at its free. Purging every block at its free made each
    // reuse fault its pages in again (`tchurn-2`: 541k faults against 2.3k outside the
    // mode; `large`: 1.18M against 44k); keeping all medium blocks resident kept a
    // program that frees a burst and then recycles a few medium blocks (16 of them
    // circulate through the quarantine, where one would outside the mode) at 20 MiB
    // over its baseline (`c_tests/memory_return.c`). Huge blocks stay resident for the
    // delay, as the huge cache keeps them outside the mode.
    let now = CTX.os.now_ms();
    let purge_now = usable <= crate::block::buddy::MEDIUM_MAX_BYTES
        && st_ref.big_unpurged + len > UNPURGED_QUARANTINE_BYTES;
    if purge_now {
        if let Some(range) = NonNull::new(start as *mut u8) {
            // SAFETY: whole OS pages inside the block's live mapping (`protectable`),
            // whose contents the program gave up at this free; nothing of ours is in
            // them.
            unsafe { CTX.os.purge(range, len) };
        }
    } else {
        st_ref.big_unpurged += len;
        if st_ref.big_purge_at_ms == 0 {
            st_ref.big_purge_at_ms = now.saturating_add(crate::config::purge_delay_ms());
        }
    }
    st_ref.big.push(addr | usize::from(purge_now), usable, now);
    while let Some((old, bytes)) = st_ref.pop_big(false) {
        release_big(heap, old, bytes, call);
    }
    purge_due(st_ref, now);
}

/// Purges the pages of the quarantined big blocks that waited for the purge delay, when
/// one is due at `now` (ms).
fn purge_due(st: &mut ThreadState, now: u64) {
    if st.big_purge_at_ms == 0 || st.big_purge_at_ms > now {
        return;
    }
    let delay = crate::config::purge_delay_ms();
    let mut next = 0;
    for k in 0..BIG_SLOTS {
        let Some((tagged, bytes, since)) = st.big.nth_mut(k) else {
            break;
        };
        if *tagged & 1 != 0 {
            continue;
        }
        if since.saturating_add(delay) > now {
            let due = since.saturating_add(delay);
            next = if next == 0 { due } else { next.min(due) };
            continue;
        }
        let (start, len) = protectable(*tagged, bytes);
        if let Some(range) = NonNull::new(start as *mut u8) {
            // SAFETY: whole OS pages inside a quarantined block's live mapping
            // (`protectable`), whose contents the program gave up at its free; nothing of
            // ours is in them.
            unsafe { CTX.os.purge(range, len) };
        }
        *tagged |= 1;
        st.big_unpurged -= len;
    }
    st.big_purge_at_ms = next;
}

/// [`free`] of a small block: verified, zeroed, its trailer saying FREED, then into the
/// thread's quarantine (or, for a thread past its exit, back to its slab at once).
///
/// # Safety
/// `st` must be null or the calling thread's own state, and `ptr` an address in a live
/// segment (the region map says a slab segment); what it points to is verified before
/// anything is written.
#[inline(always)]
unsafe fn free_small(st: *mut ThreadState, ptr: *mut u8, call: &str, expected_size: Option<usize>) {
    let addr = ptr as usize;
    let b = verify_small(addr, call);
    if expected_size.is_some_and(|n| n != b.size) {
        fatal::bad_pointer(call, WRONG_SIZE, addr);
    }
    let body = b.usable - TRAILER_BYTES;
    // SAFETY: verified live above: the whole block is the program's to give back.
    unsafe {
        if body <= CANARY_MAX_BYTES {
            zero_short(ptr, body);
        } else {
            ptr.write_bytes(0, body);
        }
        ptr.add(body).cast::<usize>().write_unaligned(b.freed);
    }
    // SAFETY: the thread's own state (caller), reached by no one else.
    let Some(st_ref) = (unsafe { st.as_mut() }) else {
        // No quarantine for a thread past its exit: checked, then freed at once.
        return free_for_real(ptr::null_mut(), addr, b.usable, call);
    };
    st_ref.small.push(addr, b.usable, 0);
    while let Some((old, bytes)) = st_ref.small.evict(SMALL_QUARANTINE_BYTES) {
        free_for_real(st_ref.heap, old, bytes, call);
    }
}

/// Gives back the big block at `addr` (`bytes` usable) that left the quarantine of the
/// thread whose heap is `heap`: its pages become accessible again.
fn release_big(heap: *mut Heap, addr: usize, bytes: usize, call: &str) {
    let (start, len) = protectable(addr, bytes);
    // SAFETY: the range this module made inaccessible at the block's free.
    if !unsafe { CTX.os.set_accessible(start, len, true) } {
        fatal::fatal("harden: cannot make a freed block accessible again");
    }
    free_for_real(heap, addr, 0, call);
}

/// The whole OS pages of the block at `addr` (`usable` bytes) that may be made
/// inaccessible: all but the one holding the trailer.
fn protectable(addr: usize, usable: usize) -> (usize, usize) {
    let start = addr.next_multiple_of(OS_PAGE_BYTES);
    let end = (addr + usable - TRAILER_BYTES) & !(OS_PAGE_BYTES - 1);
    (start, end.saturating_sub(start))
}

/// Gives a block that left the quarantine (or a thread without one) back to the heap.
/// A small one goes back zeroed, its trailer saying FREED: it is checked when it is
/// handed out again (`hand_out_small`), but for its first 16 bytes, which the slab's free
/// list overwrites now: those are checked here (the line is written next anyway).
/// `usable` is the small block's size, 0 for a medium or huge one; `heap` the calling
/// thread's (null for a thread without one).
#[inline(always)]
fn free_for_real(heap: *mut Heap, addr: usize, usable: usize, call: &str) {
    if usable != 0 {
        // The zeroed words among the first two (a 16-byte block has one, then its trailer).
        let words = ((usable - TRAILER_BYTES) / 8).min(2);
        // SAFETY: a small block held by the quarantine: ours, `usable` bytes.
        let head = unsafe { core::slice::from_raw_parts(addr as *const usize, words) };
        if head.iter().any(|&w| w != 0) {
            fatal::bad_pointer(call, AFTER_FREE, addr);
        }
    }
    with_heap(heap, |h| {
        // SAFETY: the block was freed by the program and is held only by us.
        unsafe { CTX.free_with(Some(h), addr as *mut u8, call) };
        Some(())
    });
}

/// The requested size of a live hardened block (0 for null).
pub fn usable_size(ptr: *const u8, call: &str) -> usize {
    if ptr.is_null() {
        return 0;
    }
    let addr = ptr as usize;
    if in_zero_range(addr) {
        zero_check_live(addr, call);
        return 0;
    }
    verify_live(addr, call, state()).0
}

/// Resizes a hardened block (`ptr` not null, `new_size` > 0).
///
/// # Safety
/// As for [`free`].
pub unsafe fn realloc(ptr: *mut u8, new_size: usize, align_bytes: usize) -> *mut u8 {
    let addr = ptr as usize;
    if in_zero_range(addr) {
        zero_check_live(addr, "realloc");
        let new = alloc(new_size, align_bytes, false);
        if !new.is_null() {
            zero_free(addr, "realloc");
        }
        return new;
    }
    let (size, usable) = verify_live(addr, "realloc", state());
    if new_size
        .checked_add(TRAILER_BYTES)
        .is_some_and(|total| total <= usable && total * 2 > usable)
    {
        // SAFETY: verified live; the new size fits the block with its trailer.
        unsafe { seal_block(ptr, new_size, usable) };
        return ptr;
    }
    if let Some(p) = resize_huge(addr, new_size) {
        return p;
    }
    let new = alloc(new_size, align_bytes, false);
    if new.is_null() {
        return new;
    }
    // SAFETY: both blocks are live and at least `min(size, new_size)` long.
    unsafe {
        ptr::copy_nonoverlapping(ptr, new, size.min(new_size));
        free(ptr, "realloc", None);
    }
    new
}

/// Resizes the live huge block at `addr` to `new_size` without copying (in place, or by
/// moving its pages, as in the default mode) and seals it again; None when it must be
/// copied instead.
fn resize_huge(addr: usize, new_size: usize) -> Option<*mut u8> {
    let total = new_size.checked_add(TRAILER_BYTES)?;
    if total <= crate::block::buddy::MEDIUM_MAX_BYTES
        || !matches!(region_map::kind_of(addr), Kind::Huge | Kind::HugeFar)
    {
        return None;
    }
    let resized = CTX.large.lock().resize(&CTX.os, addr, total);
    let p = match resized {
        Ok(Some(p)) => p.as_ptr(),
        Ok(None) => return None,
        Err(_) => fatal::bad_pointer("realloc", INVALID, addr),
    };
    let usable = Large::usable_size(p as usize)?;
    // SAFETY: the resized block is live, ours, with `usable >= new_size + 8` bytes.
    unsafe { seal_block(p, new_size, usable) };
    Some(p)
}

/// The calling thread's heap in this mode, as the proof of ownership (for `malloc_trim`
/// and the heap check).
pub fn owned_heap() -> Option<OwnedHeap<'static>> {
    // SAFETY: the thread's own heap, used only by it; callers hold the result for the
    // call at hand only, as with `tls::owned_heap`.
    unsafe { OwnedHeap::claim(thread_heap()) }
}

/// True when `addr` is a live `malloc(0)` block of this mode.
pub fn owns_zero_block(addr: usize) -> bool {
    if !in_zero_range(addr) || (addr - ZERO_BASE.load(Ordering::Relaxed)) % ZERO_SLOT_BYTES != 0 {
        return false;
    }
    let g = GLOBALS.lock();
    let slot = (addr - ZERO_BASE.load(Ordering::Relaxed)) / ZERO_SLOT_BYTES;
    // SAFETY: `slot < ZERO_SLOTS`: the word is in the bitmap, read under the lock.
    unsafe { *g.zero_bits.add(slot / 64) & (1 << (slot % 64)) != 0 }
}

/// Gives back the calling thread's quarantined blocks (for `malloc_trim`).
pub fn drain() {
    let st = tls::hardened() as *mut ThreadState;
    if !st.is_null() {
        drain_state(st);
    }
}

fn drain_state(st: *mut ThreadState) {
    // SAFETY: the calling thread's own state.
    let st_ref = unsafe { &mut *st };
    let heap = st_ref.heap;
    while let Some((addr, bytes)) = st_ref.small.take_oldest() {
        free_for_real(heap, addr, bytes, "free");
    }
    while let Some((addr, bytes)) = st_ref.pop_big(true) {
        release_big(heap, addr, bytes, "free");
    }
}

/// Thread exit in this mode: the quarantine is emptied, the heap handed back, the state
/// kept for the next thread.
pub fn thread_exit() {
    let st = tls::hardened() as *mut ThreadState;
    if st.is_null() {
        return;
    }
    drain_state(st);
    tls::set_hardened(0);
    tls::set_state(tls::STATE_EXITED);
    crate::stats::thread_exited();
    // SAFETY: the thread's own state; its heap is the thread's, no `OwnedHeap` of it live.
    if let Some(heap) = unsafe { OwnedHeap::claim((*st).heap) } {
        CTX.retire_heap(heap);
    }
    let mut g = GLOBALS.lock();
    // SAFETY: the state is no longer reachable from the thread: ours to keep.
    unsafe {
        (*st).heap = ptr::null_mut();
        (*st).spare_next = g.spare;
    }
    g.spare = st;
}

// ---- malloc(0) ----

fn in_zero_range(addr: usize) -> bool {
    let base = ZERO_BASE.load(Ordering::Acquire);
    base != 0 && addr.wrapping_sub(base) < ZERO_REGION_BYTES
}

/// A `malloc(0)` block: a slot of the inaccessible range. None when every slot is live
/// (or the OS refused the range).
fn zero_alloc() -> Option<*mut u8> {
    let mut g = GLOBALS.lock();
    if g.zero_bits.is_null() {
        let bits = CTX.os.map(ZERO_WORDS * 8, OS_PAGE_BYTES)?;
        let base = CTX.os.reserve_inaccessible(ZERO_REGION_BYTES)?;
        g.zero_bits = bits.as_ptr().cast();
        ZERO_BASE.store(base.as_ptr() as usize, Ordering::Release);
    }
    for k in 0..ZERO_WORDS {
        let w = (g.zero_cursor + k) % ZERO_WORDS;
        // SAFETY: the bitmap has ZERO_WORDS words, ours under the lock.
        let word = unsafe { &mut *g.zero_bits.add(w) };
        if *word != u64::MAX {
            let bit = word.trailing_ones() as usize;
            *word |= 1 << bit;
            g.zero_cursor = w;
            let base = ZERO_BASE.load(Ordering::Relaxed);
            return Some((base + (w * 64 + bit) * ZERO_SLOT_BYTES) as *mut u8);
        }
    }
    None
}

/// The bitmap word and bit of the `malloc(0)` slot at `addr`; reports a pointer that is
/// not a slot start or not live.
fn zero_slot(g: &Globals, addr: usize, call: &str) -> (*mut u64, u64) {
    let offset = addr - ZERO_BASE.load(Ordering::Relaxed);
    if offset % ZERO_SLOT_BYTES != 0 {
        fatal::bad_pointer(call, INVALID, addr);
    }
    let slot = offset / ZERO_SLOT_BYTES;
    // SAFETY: `slot < ZERO_SLOTS` (the address is in the range), so the word is in the map.
    let word = unsafe { g.zero_bits.add(slot / 64) };
    let bit = 1u64 << (slot % 64);
    // SAFETY: as above, under the lock.
    if unsafe { *word } & bit == 0 {
        fatal::bad_pointer(call, DOUBLE_FREE, addr);
    }
    (word, bit)
}

fn zero_check_live(addr: usize, call: &str) {
    let g = GLOBALS.lock();
    zero_slot(&g, addr, call);
}

fn zero_free(addr: usize, call: &str) {
    let g = GLOBALS.lock();
    let (word, bit) = zero_slot(&g, addr, call);
    // SAFETY: a word of the bitmap, ours under the lock.
    unsafe { *word &= !bit };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty<const N: usize>() -> Ring<N> {
        Ring {
            addr: [0; N],
            bytes: [0; N],
            since_ms: [0; N],
            head: 0,
            len: 0,
            total_bytes: 0,
        }
    }

    #[test]
    fn ring_is_fifo_and_bounded_by_count_and_bytes() {
        let mut r = empty::<4>();
        for a in 1..=3 {
            r.push(a * 16, 100, 0);
            assert_eq!(r.evict(1000), None, "below both bounds after {a}");
        }
        r.push(64, 100, 0);
        // Full (4 of 4): the oldest leaves first.
        assert_eq!(r.evict(1000), Some((16, 100)));
        assert_eq!(r.evict(1000), None);
        assert!(r.contains(32) && r.contains(64) && !r.contains(16));
        // Over the byte bound: evicts until under it.
        r.push(80, 900, 0);
        assert_eq!(r.evict(1000), Some((32, 100)));
        assert_eq!(r.evict(1000), Some((48, 100)));
        assert_eq!(r.evict(1000), None);
        assert_eq!(r.total_bytes, 1000);
        assert_eq!(r.take_oldest(), Some((64, 100)));
        assert_eq!(r.take_oldest(), Some((80, 900)));
        assert_eq!(r.take_oldest(), None);
    }

    #[test]
    fn all_bytes_are_finds_one_different_byte_anywhere() {
        for len in 0..40 {
            let mut buf = [0xa5u8; 56];
            // What follows the canary does not count.
            buf[3 + len] = 0;
            // SAFETY: `3 + len + 8 <= 56`: the rounded-up range is inside `buf`.
            assert!(unsafe { all_bytes_are(buf.as_ptr().add(3), len, 0xa5) });
            for k in 0..len {
                buf[3 + k] = 0xa4;
                // SAFETY: as above.
                assert!(
                    !unsafe { all_bytes_are(buf.as_ptr().add(3), len, 0xa5) },
                    "{len} {k}"
                );
                buf[3 + k] = 0xa5;
            }
        }
    }

    #[test]
    fn seals_differ_by_size_address_and_generation() {
        let a = 0x7000_1000;
        let k = block_key(a);
        assert_ne!(seal(k, 100), seal(k, 101));
        assert_ne!(seal(k, 100), seal(block_key(a + 16), 100));
        assert_ne!(freed_word(k, 1), freed_word(k, 2));
        assert_ne!(freed_word(k, 1), seal(k, 0));
        // A live block's trailer decodes to its size.
        assert_eq!(seal(k, 100) ^ secret() ^ mix(a), 100);
        assert_ne!(canary_of(k), 0);
    }
}
