//! Guarded sampling (`OXMALLOC_GUARD=1`): GWP-ASan's idea on top of the profiler's sampler.
//!
//! About one allocation per `OXMALLOC_GUARD_INTERVAL` bytes (a Poisson process over the
//! bytes allocated, like the profiler's, drawn independently of it) is served from a slot of
//! the guard pool instead of the heap: right before an inaccessible OS page (an overflow
//! faults) or right after one (an underflow faults), alternately. At `free` the block's OS
//! pages are made inaccessible and given back to the OS, and the slot waits behind every
//! other freed slot before it is used again (oldest first), so a use after free faults too.
//! The `SIGSEGV` handler (`report`) finds the slot from the fault address and writes a
//! report: the error, the address and offset, the block's size, the allocation stack and,
//! after a free, the free stack; then the signal goes on to the handler that was there
//! before ours, or to the default action (the program dies by `SIGSEGV` as it would have).
//! A double free of a guarded block, and bytes written next to it inside its accessible OS
//! pages (the slack up to the OS page boundary holds a canary checked at `free`), are
//! reported by `free` the same way, then `abort()`.
//!
//! ```text
//! pool: one 4 MiB chunk, 4 MiB-aligned, reserved inaccessible at the first guarded block,
//!       marked Kind::Guarded in the region map
//!   [slot table: SLOT_COUNT x Slot, read-write] [guard][data x4][guard][data x4]...[guard]
//!   a live block: its OS pages read-write, the rest of its data pages inaccessible;
//!                 the bytes of those pages around it hold the canary
//! ```
//!
//! The countdown (the choice written down in `HeapSampler`): the heap keeps one countdown,
//! the nearer of the profiler's and the guard's, and `prof_extra` / `guard_extra` say how
//! far each one's own point lies beyond it. The fast path is unchanged (one subtraction and
//! a branch); when it runs out, `prof::countdown_ran_out` charges both, redraws whichever
//! ran out, and re-arms the nearer. With both off the countdown is `isize::MAX`, as before
//! this mode existed. The guard's countdown counts only the bytes of allocations the pool
//! can take (up to a slot's 16 KiB, alignments up to an OS page, not `realloc`): the other
//! paths give their bytes back to it (`prof::pick_point`), so a program of big blocks pays
//! for no guard points. A guard point that falls on an allocation the profiler samples
//! moves to the next allocation; when the pool is full the allocation is served as usual
//! and the point is lost.
//!
//! Modes: the guard is off in check mode and in hardened mode (they route every call
//! through their own paths and catch these errors their own way); with the profiler on,
//! both sample, each its own points, and an allocation both pick is the profiler's (the
//! guard takes the next one).
//!
//! Fixed cost: 4 MiB of address space, reserved at the first guarded block (none before),
//! of which the slot table (SLOT_COUNT x 568 bytes, 108 KiB) becomes resident as slots are
//! used, and each live block's OS pages (1 to 5). Freed blocks hold no memory.
//!
//! Locks: [`POOL`] (a fork lock, taken after the profiler's, never around a stack capture).
//! The fault handler reads the slot table without it (atomics only).

pub(crate) mod report;

use crate::fatal;
use crate::heap::sampler;
use crate::os::real::keep_errno;
use crate::os::{Os, RealOs, OS_PAGE_BYTES};
use crate::process::prof::capture;
use crate::region_map::{self, Kind, CHUNK_BYTES};
use crate::sync::Mutex;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// OS pages of data per slot: every small size fits.
const DATA_PAGES: usize = 4;
/// Largest block a slot serves.
pub const DATA_BYTES: usize = DATA_PAGES * OS_PAGE_BYTES;
/// A slot: its guard page, then its data pages.
const STRIDE_BYTES: usize = OS_PAGE_BYTES + DATA_BYTES;
/// Frames kept per stack.
pub const STACK_DEPTH: usize = capture::SHORT_DEPTH;
/// Slots in the pool: at most this many guarded blocks are live at once.
pub const SLOT_COUNT: usize = 192;
/// The slot table's size, in whole OS pages.
const TABLE_BYTES: usize =
    (SLOT_COUNT * core::mem::size_of::<Slot>()).div_ceil(OS_PAGE_BYTES) * OS_PAGE_BYTES;
/// Offset of the first slot's guard page in the pool.
const SLOTS_OFFSET: usize = TABLE_BYTES;
/// End of the last slot's trailing guard page.
const SLOTS_END: usize = SLOTS_OFFSET + SLOT_COUNT * STRIDE_BYTES + OS_PAGE_BYTES;
const _: () = assert!(SLOTS_END <= CHUNK_BYTES);
/// Written around a live block, inside its accessible OS pages; checked at its free.
const CANARY: u8 = 0xbd;
/// Blocks are 16-byte aligned, like every other block.
const MIN_ALIGN: usize = 16;

/// A slot that never held a block.
const UNUSED: usize = 0;
/// A slot holding a live block.
const LIVE: usize = 1;
/// A slot whose block was freed (its pages are inaccessible).
const FREED: usize = 2;

/// What the pool remembers of a slot's block, for `free` and for the fault handler (which
/// reads it without a lock, hence atomics).
#[repr(C)]
pub struct Slot {
    state: AtomicUsize,
    user: AtomicUsize,
    size: AtomicUsize,
    alloc_thread: AtomicUsize,
    free_thread: AtomicUsize,
    alloc_depth: AtomicUsize,
    free_depth: AtomicUsize,
    alloc_stack: [AtomicUsize; STACK_DEPTH],
    free_stack: [AtomicUsize; STACK_DEPTH],
}

impl Slot {
    fn record(stack: &[AtomicUsize; STACK_DEPTH], depth: &AtomicUsize, frames: &[usize]) {
        let mut n = 0;
        for (slot, &pc) in stack.iter().zip(frames) {
            slot.store(pc, Ordering::Relaxed);
            n += 1;
        }
        depth.store(n, Ordering::Relaxed);
    }

    /// Calls `f` for each frame of the allocation (`free`: false) or free stack.
    fn for_each_frame(&self, free: bool, mut f: impl FnMut(usize, usize)) {
        let (stack, depth) = if free {
            (&self.free_stack, &self.free_depth)
        } else {
            (&self.alloc_stack, &self.alloc_depth)
        };
        let depth = depth.load(Ordering::Relaxed).min(STACK_DEPTH);
        for (i, pc) in stack.iter().take(depth).enumerate() {
            f(i, pc.load(Ordering::Relaxed));
        }
    }
}

const NOT_STARTED: u8 = 0;
const READY: u8 = 1;
const OFF: u8 = 2;
/// Where the mode is: guard points are drawn only when READY (after the constructor).
static STATE: AtomicU8 = AtomicU8::new(NOT_STARTED);
/// Seed material for the guard's generators (the constructor).
static PROCESS_SEED: AtomicU64 = AtomicU64::new(0);
/// The pool's base once reserved (0 before): the fault handler and `usable_size` read it
/// without the lock.
static POOL_BASE: AtomicUsize = AtomicUsize::new(0);

/// The pool's bookkeeping, under [`POOL`].
pub struct Pool {
    /// Slots never used yet are `next_unused..SLOT_COUNT`.
    next_unused: usize,
    /// Freed slots, oldest first: a ring of `freed_len` entries from `freed_head`.
    freed: [u16; SLOT_COUNT],
    freed_head: usize,
    freed_len: usize,
    /// The next block goes at the start of its slot (after the guard page) when true, at
    /// the end (before the next guard page) when false.
    at_start: bool,
    /// The reservation failed: the mode turned itself off.
    failed: bool,
}

/// The pool (a fork lock).
pub static POOL: Mutex<Pool> = Mutex::new(Pool {
    next_unused: 0,
    freed: [0; SLOT_COUNT],
    freed_head: 0,
    freed_len: 0,
    at_start: false,
    failed: false,
});

impl Pool {
    /// A slot for a new block, the oldest freed one once every slot has been used.
    fn take_slot(&mut self) -> Option<usize> {
        if self.next_unused < SLOT_COUNT {
            self.next_unused += 1;
            return Some(self.next_unused - 1);
        }
        if self.freed_len == 0 {
            return None;
        }
        let index = usize::from(*self.freed.get(self.freed_head)?);
        self.freed_head = (self.freed_head + 1) % SLOT_COUNT;
        self.freed_len -= 1;
        Some(index)
    }

    /// Queues a freed slot (or one whose block could not be set up) behind the others.
    fn push_freed(&mut self, index: usize) {
        let tail = (self.freed_head + self.freed_len) % SLOT_COUNT;
        if let (Some(entry), Ok(index)) = (self.freed.get_mut(tail), u16::try_from(index)) {
            *entry = index;
            self.freed_len += 1;
        }
    }

    /// The pool's base, reserving it on first use.
    fn base(&mut self) -> Option<usize> {
        let base = POOL_BASE.load(Ordering::Relaxed);
        if base != 0 {
            return Some(base);
        }
        if self.failed {
            return None;
        }
        let Some(base) = RealOs.reserve_inaccessible_aligned(CHUNK_BYTES, CHUNK_BYTES) else {
            self.failed = true;
            STATE.store(OFF, Ordering::Release);
            return None;
        };
        let base = base.as_ptr() as usize;
        // SAFETY: the table's pages are the head of the reservation just made, used by
        // nothing else.
        if !unsafe { RealOs.set_accessible(base, TABLE_BYTES, true) } {
            self.failed = true;
            STATE.store(OFF, Ordering::Release);
            return None;
        }
        region_map::set(base, Kind::Guarded);
        POOL_BASE.store(base, Ordering::Release);
        Some(base)
    }
}

/// The slot table (None before the pool exists).
fn table() -> Option<&'static [Slot; SLOT_COUNT]> {
    let base = POOL_BASE.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    // SAFETY: the pool's first TABLE_BYTES are mapped read-write for the process's life
    // (published by the release store of POOL_BASE), zero-filled when made: a valid table
    // of atomics.
    Some(unsafe { &*(base as *const [Slot; SLOT_COUNT]) })
}

/// The start of slot `index`'s data pages.
fn data_start(base: usize, index: usize) -> usize {
    base + SLOTS_OFFSET + index * STRIDE_BYTES + OS_PAGE_BYTES
}

/// The slot whose data pages hold `addr`, and the slot.
fn slot_of(addr: usize) -> Option<(usize, &'static Slot)> {
    let base = POOL_BASE.load(Ordering::Acquire);
    let offset = addr.checked_sub(base.checked_add(SLOTS_OFFSET)?)?;
    let index = offset / STRIDE_BYTES;
    if offset % STRIDE_BYTES < OS_PAGE_BYTES {
        return None;
    }
    table()?.get(index).map(|slot| (index, slot))
}

/// The OS pages a block at `user` of `size` bytes makes accessible.
fn block_pages(user: usize, size: usize) -> (usize, usize) {
    let first = user & !(OS_PAGE_BYTES - 1);
    let end = (user + size.max(1)).next_multiple_of(OS_PAGE_BYTES);
    (first, end)
}

/// The calling thread's kernel id.
fn thread_id() -> usize {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as usize }
}

/// True when guard points are drawn (the mode is on and started).
#[inline]
pub fn ready() -> bool {
    STATE.load(Ordering::Relaxed) == READY
}

/// True when the pool can take a block of `size` bytes at `align_bytes`.
#[inline]
pub fn fits(size: usize, align_bytes: usize) -> bool {
    size <= DATA_BYTES && align_bytes <= OS_PAGE_BYTES
}

/// The guard's part of `prof::countdown_ran_out`: `left` (its own countdown, negative) is
/// reset; true when this allocation (of `size` bytes; `fits`: the pool may take it) is to
/// be guarded. `salt` tells heaps apart when the generator is seeded.
pub fn ran_out(left: &mut isize, rng: &mut u64, salt: u64, size: usize, fits: bool) -> bool {
    let state = STATE.load(Ordering::Acquire);
    if state != READY {
        // Off: never again. Not started yet: ask again at the next allocation.
        *left = if state == OFF { isize::MAX } else { 0 };
        return false;
    }
    let interval = crate::config::guard_interval_bytes();
    if *rng == 0 {
        // First use: the countdown held no draw yet.
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u64;
        *rng = sampler::seed(PROCESS_SEED.load(Ordering::Relaxed) ^ salt ^ pid.rotate_left(29));
        let size = isize::try_from(size).unwrap_or(isize::MAX);
        let drawn = sampler::draw_countdown(rng, interval).saturating_sub(size);
        if drawn >= 0 {
            *left = drawn;
            return false;
        }
    }
    if !fits {
        // The point moves to the next allocation.
        *left = 0;
        return false;
    }
    *left = sampler::draw_countdown(rng, interval);
    true
}

// The library's constructor: loads the unwinder (it allocates: never inside `malloc`) and
// lets guard points be drawn.
#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;

extern "C" fn constructor() {
    if !crate::config::guard_enabled() || crate::config::routed_mode() {
        STATE.store(OFF, Ordering::Release);
        return;
    }
    // SAFETY: getauxval has no preconditions; AT_RANDOM, when present, is the address of
    // 16 random bytes the kernel put on the initial stack for the process's life.
    let random = unsafe { libc::getauxval(libc::AT_RANDOM) } as usize;
    let mut seed = 0x6775_6172_645f_7365; // "guard_se"
    if random != 0 {
        // SAFETY: AT_RANDOM's 16 bytes (above); an unaligned read of the last 8.
        seed ^= unsafe { ((random + 8) as *const u64).read_unaligned() };
    }
    PROCESS_SEED.store(sampler::seed(seed), Ordering::Relaxed);
    capture::locate_own_code();
    let mut frames = [0usize; capture::MAX_DEPTH];
    capture::capture(&mut frames);
    STATE.store(READY, Ordering::Release);
}

/// A guarded block of `size` bytes at `align_bytes` (at most an OS page), allocated at the
/// stack `frames`; zero-filled. `None` when the pool is full or the OS refuses (the caller
/// then allocates as usual).
pub fn alloc(size: usize, align_bytes: usize, frames: &[usize]) -> Option<NonNull<u8>> {
    if !fits(size, align_bytes) {
        return None;
    }
    keep_errno(|| {
        let thread = thread_id();
        let mut pool = POOL.lock();
        let base = pool.base()?;
        report::ensure_handler();
        let index = pool.take_slot()?;
        let slot = table()?.get(index)?;
        let data = data_start(base, index);
        let align = align_bytes.max(MIN_ALIGN);
        let rounded = size.max(1).next_multiple_of(MIN_ALIGN);
        let at_start = pool.at_start;
        pool.at_start = !at_start;
        let user = if at_start {
            data
        } else {
            (data + DATA_BYTES - rounded) & !(align - 1)
        };
        let (first, end) = block_pages(user, size);
        // SAFETY: the block's OS pages lie in this slot's data pages, which no live block
        // uses (the slot came from the unused or the freed ones).
        if !unsafe { RealOs.set_accessible(first, end - first, true) } {
            pool.push_freed(index);
            return None;
        }
        // SAFETY: [first, end) was just made accessible and belongs to this slot; the
        // block's own bytes stay zero (fresh or purged pages).
        unsafe {
            core::ptr::write_bytes(first as *mut u8, CANARY, user - first);
            core::ptr::write_bytes((user + size) as *mut u8, CANARY, end - (user + size));
        }
        slot.user.store(user, Ordering::Relaxed);
        slot.size.store(size, Ordering::Relaxed);
        slot.alloc_thread.store(thread, Ordering::Relaxed);
        slot.free_depth.store(0, Ordering::Relaxed);
        Slot::record(&slot.alloc_stack, &slot.alloc_depth, frames);
        slot.state.store(LIVE, Ordering::Release);
        NonNull::new(user as *mut u8)
    })
}

/// The address of the byte nearest to the live block at `user` (of `size` bytes) that lost
/// its canary, in the block's accessible OS pages; `None` when none did.
fn broken_canary(user: usize, size: usize) -> Option<usize> {
    let (first, end) = block_pages(user, size);
    // SAFETY: [first, end) is accessible while the block is live (the caller holds the pool
    // lock and saw it live); the two ranges lie inside it, around the block.
    let (before, after) = unsafe {
        (
            core::slice::from_raw_parts(first as *const u8, user - first),
            core::slice::from_raw_parts((user + size) as *const u8, end - (user + size)),
        )
    };
    // The nearest byte on each side: the one an off-by-one writes.
    before
        .iter()
        .rposition(|&b| b != CANARY)
        .map(|i| first + i)
        .or_else(|| {
            after
                .iter()
                .position(|&b| b != CANARY)
                .map(|i| user + size + i)
        })
}

/// Frees the guarded block at `addr` (the region map says `Kind::Guarded`) for `call`: its
/// OS pages become inaccessible and go back to the OS. A double free, a pointer that is not
/// a guarded block, and a block whose canary was overwritten are reported, then `abort()`.
#[cold]
#[inline(never)]
pub fn free(addr: usize, call: &str) {
    let mut frames = [0usize; capture::MAX_DEPTH];
    let depth = keep_errno(|| capture::capture_short(&mut frames));
    let frames = frames.get(..depth).unwrap_or(&[]);
    let thread = thread_id();
    let mut pool = POOL.lock();
    let found = slot_of(addr).filter(|(_, slot)| slot.user.load(Ordering::Relaxed) == addr);
    let Some((index, slot)) = found else {
        drop(pool);
        fatal::bad_pointer(call, "invalid pointer", addr)
    };
    match slot.state.load(Ordering::Acquire) {
        LIVE => {}
        FREED => {
            drop(pool);
            report::double_free(slot, call, frames, thread)
        }
        _ => {
            drop(pool);
            fatal::bad_pointer(call, "invalid pointer", addr)
        }
    }
    let size = slot.size.load(Ordering::Relaxed);
    if let Some(at) = broken_canary(addr, size) {
        drop(pool);
        report::overwritten(slot, call, at, frames, thread)
    }
    slot.free_thread.store(thread, Ordering::Relaxed);
    Slot::record(&slot.free_stack, &slot.free_depth, frames);
    slot.state.store(FREED, Ordering::Release);
    let (first, end) = block_pages(addr, size);
    keep_errno(|| {
        // SAFETY: the block's OS pages, in the pool's mapping, hold nothing live any more.
        unsafe {
            if let Some(start) = NonNull::new(first as *mut u8) {
                RealOs.purge(start, end - first);
            }
            if !RealOs.set_accessible(first, end - first, false) {
                // Out of mapping slots: the pages stay readable (zero); never reused, so a
                // later block cannot be reached through the stale pointer.
                return;
            }
        }
        pool.push_freed(index);
    });
}

/// The usable size of the live guarded block at `addr` (its requested size: the bytes past
/// it hold the canary).
pub fn usable_size(addr: usize) -> Option<usize> {
    let (_, slot) = slot_of(addr)?;
    (slot.state.load(Ordering::Acquire) == LIVE && slot.user.load(Ordering::Relaxed) == addr)
        .then(|| slot.size.load(Ordering::Relaxed))
}

/// What a fault in the pool hit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultKind {
    /// A freed block's pages.
    UseAfterFree,
    /// Past the end of a live block.
    Overflow,
    /// Before the start of a live block.
    Underflow,
}

/// A fault in the pool, attributed to the nearest block.
pub struct Fault {
    /// What it was.
    pub kind: FaultKind,
    /// The block's address and requested size.
    pub user: usize,
    /// See `user`.
    pub size: usize,
    /// The block's slot.
    pub slot: &'static Slot,
}

/// The block a fault at `addr` is about, when `addr` is in the pool's slots: the block of
/// the slot it hits, or for a guard page the nearer of its two neighbours. Lock-free (the
/// fault handler calls it).
pub fn classify(addr: usize) -> Option<Fault> {
    let base = POOL_BASE.load(Ordering::Acquire);
    let offset = addr.checked_sub(base.checked_add(SLOTS_OFFSET)?)?;
    if base == 0 || offset >= SLOTS_END - SLOTS_OFFSET {
        return None;
    }
    let table = table()?;
    let index = offset / STRIDE_BYTES;
    let candidates: [Option<usize>; 2] = if offset % STRIDE_BYTES < OS_PAGE_BYTES {
        [index.checked_sub(1), Some(index)]
    } else {
        [Some(index), None]
    };
    let mut best: Option<(usize, Fault)> = None;
    for index in candidates.into_iter().flatten() {
        let Some(slot) = table.get(index) else {
            continue;
        };
        let state = slot.state.load(Ordering::Acquire);
        if state == UNUSED {
            continue;
        }
        let user = slot.user.load(Ordering::Relaxed);
        let size = slot.size.load(Ordering::Relaxed);
        let (kind, distance) = if addr < user {
            (FaultKind::Underflow, user - addr)
        } else if addr >= user + size {
            (FaultKind::Overflow, addr - (user + size))
        } else {
            (FaultKind::UseAfterFree, 0)
        };
        let kind = if state == FREED {
            FaultKind::UseAfterFree
        } else {
            kind
        };
        if state == LIVE && kind == FaultKind::UseAfterFree {
            // Inside a live block: not a guarded fault (a race with its allocation).
            continue;
        }
        if best.as_ref().is_none_or(|(d, _)| distance < *d) {
            best = Some((
                distance,
                Fault {
                    kind,
                    user,
                    size,
                    slot,
                },
            ));
        }
    }
    best.map(|(_, fault)| fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_fits_its_chunk() {
        // The module note's figures.
        assert_eq!(core::mem::size_of::<Slot>(), 568);
        assert_eq!(TABLE_BYTES, 108 << 10);
    }

    #[test]
    fn freed_slots_are_reused_oldest_first() {
        let mut pool = Pool {
            next_unused: SLOT_COUNT - 2,
            freed: [0; SLOT_COUNT],
            freed_head: 0,
            freed_len: 0,
            at_start: false,
            failed: false,
        };
        assert_eq!(pool.take_slot(), Some(SLOT_COUNT - 2));
        assert_eq!(pool.take_slot(), Some(SLOT_COUNT - 1));
        assert_eq!(pool.take_slot(), None);
        pool.push_freed(7);
        pool.push_freed(3);
        pool.push_freed(9);
        assert_eq!(pool.take_slot(), Some(7));
        pool.push_freed(7);
        assert_eq!(pool.take_slot(), Some(3));
        assert_eq!(pool.take_slot(), Some(9));
        assert_eq!(pool.take_slot(), Some(7));
        assert_eq!(pool.take_slot(), None);
    }

    #[test]
    fn block_pages_cover_the_block() {
        assert_eq!(block_pages(0x10000 + 4096 - 112, 100), (0x10000, 0x11000));
        assert_eq!(block_pages(0x10000, 0), (0x10000, 0x11000));
        assert_eq!(block_pages(0x10ff0, 32), (0x10000, 0x12000));
    }
}
