//! The sampling heap profiler (`OXMALLOC_PROF=1`).
//!
//! About once per `OXMALLOC_PROF_INTERVAL` bytes allocated (512 KiB by default), an
//! allocation is *sampled*: its stack is taken, counted in the stack table, and the block
//! is served so that it remembers the stack until it is freed (below: where).
//! Profiles (the raw format of `docs/prof-format.md`) are written at exit, on request
//! (`ox_prof_dump`, [`prof_dump`]), on a signal, every N bytes allocated, and at new
//! peaks of live memory.
//!
//! What it costs:
//! - `malloc` fast path: one subtraction from the heap's countdown and a branch, taken
//!   once per sample when profiling is on and never when it is off (the countdown then
//!   stays near `isize::MAX`). No atomic, no call. The countdown is shared with guarded
//!   sampling (`process::guard`): it is the nearer of the two points, and
//!   [`countdown_ran_out`] charges both (see `HeapSampler::prof_extra`).
//! - `free` fast path: nothing. Sampled blocks are never in slabs: small and medium ones
//!   live in chunks marked `Kind::Sampled` in the region map, which the fast path already
//!   sends to `free_big` with every non-slab kind; huge ones are huge blocks.
//! - Other allocation paths (medium, huge, aligned, `calloc`, `realloc` past its fast
//!   path) count their size against the same countdown in [`sample_point`]. A `realloc`
//!   of a block in a slot resizes it where it can ([`resize_sampled`]), one of a huge block
//!   resizes it as the huge allocator does and replaces its record ([`resize_huge`]).
//!
//! Where a sampled block lives, and why:
//! - **Huge** (more than 1 MiB with its header; any block a slot cannot hold): an ordinary
//!   huge block, whose header (`block::large`, the OS page below the block) also holds the
//!   profiler's record. It comes from the huge cache and goes back to it, is unmapped by
//!   the same decay, and counts in the statistics as the huge block it is; `free` already
//!   reads that header, so an unsampled huge free pays one load more. It used to get a
//!   mapping of its own each time (with a small cache of freed mappings that fit within
//!   2×): `large` (blocks of 64 KiB – 32 MiB, nearly all the big ones sampled) took 421k
//!   page faults and 2.5 s against 44k and 0.34 s with profiling off; now 40k and 0.39 s.
//! - **Up to 1 MiB**: slots of the profiler's own (`blocks`), marked `Kind::Sampled`. The
//!   alternative, an ordinary slab block or buddy span with the record kept aside (a table
//!   keyed by address, or a bit per slab), was rejected for small blocks: the owner's free
//!   of a small block is the fast path (81 instructions per `malloc`/`free` pair), and
//!   telling a sampled block from the others there costs a load and a branch on every free,
//!   where the region-map kind costs nothing (the fast path tests for `Kind::Slab` anyway).
//!   A medium block could have taken a buddy span with a header page in front, but the
//!   thread's medium cache, usable size, resizing in place and the heap checker would all
//!   have to know; slots reuse memory the same way (per-size free lists, purged by age at
//!   the decay), so that was not done. The statistics count live slot blocks as the small
//!   or medium blocks they would have been (`blocks::live_figures`).
//! - **A medium block that a sampled `realloc` resized**: it stays in the buddy arena,
//!   where the `realloc` left it (often in place), and its record goes in a table keyed by
//!   address (`resized`), looked up by the `free` and `realloc` of medium blocks while it
//!   holds records. Moving such a block into a slot cost a copy of it at every sample
//!   where the arena would have grown it in place. The block is an ordinary medium block
//!   for the statistics. When the table is full (768 records) the block moves into a slot.
//!
//! Parts: `sample` (the countdown and the weights), `capture` (stacks), `stacks` (the
//! table), `blocks` (the memory of sampled blocks), `resized` (the records of resized
//! medium blocks), `dump` (writing profiles).
//!
//! Start-up runs in the library's constructor (before `main`, after libc is up, on one
//! thread, outside any lock of ours): it loads the stack unwinder by taking one stack,
//! registers the exit dump with `atexit` and installs the signal handler. Allocations made
//! before it (the dynamic loader's, a few KiB) are not sampled. In check mode
//! (`OXMALLOC_CHECK=1`) the profiler stays off.
//!
//! Locks: [`PROFILE`] (the table and the dump triggers), `blocks::SLOTS`,
//! `resized::TABLE` and [`WITHOUT_HEAP`]; none is held while another lock is taken, a
//! stack is taken, or a block is served by the normal allocator. All four are in the fork
//! lock list.

pub mod blocks;
pub(crate) mod capture;
mod dump;
mod resized;
mod stacks;
mod timeline;

use crate::fatal;
use crate::heap::sampler::{self, HeapSampler};
use crate::heap::{Heap, OwnedHeap};
use crate::process::CTX;
use crate::sync::{ForkLock, Mutex};
use core::ffi::{c_int, CStr};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use stacks::StackTable;

const NOT_STARTED: u8 = 0;
const STARTING: u8 = 1;
const READY: u8 = 2;
const OFF: u8 = 3;
/// Where the profiler is: samples are taken only when READY.
static STATE: AtomicU8 = AtomicU8::new(NOT_STARTED);

/// Dump requests waiting for the next slow path (bits).
static PENDING: AtomicU8 = AtomicU8::new(0);
const PENDING_SIGNAL: u8 = 1;
const PENDING_BYTES: u8 = 2;
const PENDING_PEAK: u8 = 4;

/// When the next automatic dumps are due.
struct Triggers {
    /// Estimated bytes allocated at which the next `bytes` dump is due (0: not set yet).
    next_bytes_dump: u64,
    /// Estimated live bytes at the last `peak` dump.
    peak_dumped_live: u64,
    /// Running sums of the table's estimates.
    allocated: u64,
    live: u64,
}

/// The stack table, the timeline and the dump triggers, under one lock.
pub struct Profile {
    stacks: StackTable,
    triggers: Triggers,
    timeline: timeline::Timeline,
}

/// The profile (a fork lock).
pub static PROFILE: Mutex<Profile> = Mutex::new(Profile {
    stacks: StackTable::new(),
    triggers: Triggers {
        next_bytes_dump: 0,
        peak_dumped_live: 0,
        allocated: 0,
        live: 0,
    },
    timeline: timeline::Timeline::new(),
});

/// `CLOCK_MONOTONIC` at start-up, in nanoseconds: the profile's times count from there.
static START_NS: AtomicU64 = AtomicU64::new(0);

/// `CLOCK_MONOTONIC` in nanoseconds (a vDSO read, no syscall, no allocation).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec.max(0) as u64)
}

/// Nanoseconds since the profiler started.
fn now_ns() -> u64 {
    monotonic_ns().saturating_sub(START_NS.load(Ordering::Relaxed))
}

/// Resident bytes of the process, from `/proc/self/statm` (its second field, in OS
/// pages), read into a stack buffer; 0 when it cannot be read.
fn resident_bytes() -> u64 {
    let _errno = KeepErrno::new();
    // Raw system calls, not libc's wrappers: those are cancellation points, and this runs
    // from the decay, sometimes under an allocator lock that a cancelled thread would then
    // hold forever.
    let Some(mut file) = crate::os::raw::ProcFile::open(c"/proc/self/statm") else {
        return 0;
    };
    let mut buf = [0u8; 128];
    let n = file.read(&mut buf).unwrap_or(0);
    let text = buf.get(..n).unwrap_or(&[]);
    statm_resident_pages(text).saturating_mul(crate::os::OS_PAGE_BYTES as u64)
}

/// The second field of a `/proc/self/statm` line (resident pages); 0 if malformed.
fn statm_resident_pages(text: &[u8]) -> u64 {
    let mut fields = text.split(|&b| b == b' ');
    let _size = fields.next();
    let mut pages = 0u64;
    for &b in fields.next().unwrap_or(&[]) {
        if !b.is_ascii_digit() {
            return 0;
        }
        pages = pages.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    pages
}

/// Adds a point to the timeline if one is due (`force`: whatever the step). Takes the
/// profile lock twice, and reads the resident bytes between, outside it.
fn timeline_tick(force: bool) {
    let now = now_ns();
    if PROFILE.lock().timeline.due(now, force) {
        push_point(now);
    }
}

/// Adds the timeline point reserved at `now` (reads the resident bytes first, outside the
/// profile lock). The point is stamped when it is added, under the lock, with the live and
/// allocated bytes of that moment (points are then added in time order even when two
/// threads reserved theirs at once).
fn push_point(now: u64) {
    let resident_bytes = resident_bytes();
    let mut profile = PROFILE.lock();
    let point = timeline::Point {
        t_ns: now_ns().max(now),
        live_bytes: profile.triggers.live,
        resident_bytes,
        allocated_bytes: profile.triggers.allocated,
    };
    profile.timeline.push(point);
}

/// The process-wide decay round (once per purge delay, from an allocation slow path with
/// no lock of ours held): a timeline point, when one is due.
pub fn on_decay_round() {
    if STATE.load(Ordering::Acquire) == READY {
        timeline_tick(false);
    }
}

/// The sampler of threads that have no heap (before their first small allocation, or
/// after their exit cleanup); its `busy` flag lets one such thread sample at a time.
pub static WITHOUT_HEAP: Mutex<HeapSampler> = Mutex::new(HeapSampler::new());

/// Seed material for the samplers: the kernel's random bytes and the pid (start-up).
static PROCESS_SEED: AtomicU64 = AtomicU64::new(0);
/// Makes each sampler's seed distinct.
static SEED_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The profiler's locks, for the fork handlers (none nests another, and they are taken
/// under the allocator's: they come last).
pub fn fork_locks() -> [&'static dyn ForkLock; 4] {
    [&PROFILE, &blocks::SLOTS, &resized::TABLE, &WITHOUT_HEAP]
}

fn enabled() -> bool {
    crate::config::prof_enabled() && !crate::config::check_mode()
}

// The library's constructor: runs before `main` (for `LD_PRELOAD`, before the program's
// own constructors), once libc is initialised.
#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;

extern "C" fn constructor() {
    if !enabled() {
        STATE.store(OFF, Ordering::Release);
        return;
    }
    if STATE
        .compare_exchange(NOT_STARTED, STARTING, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        start();
    }
}

/// Start-up (see the module note). Allocations made meanwhile, the unwinder's included,
/// are not sampled: the state is not READY yet.
fn start() {
    // SAFETY: getauxval has no preconditions; AT_RANDOM, when present, is the address of
    // 16 random bytes the kernel put on the initial stack for the process's life.
    let random = unsafe { libc::getauxval(libc::AT_RANDOM) } as usize;
    let mut seed = 0u64;
    if random != 0 {
        // SAFETY: as above; an unaligned read of 8 of those bytes.
        seed = unsafe { (random as *const u64).read_unaligned() };
    }
    // SAFETY: getpid has no preconditions.
    seed ^= unsafe { libc::getpid() } as u64;
    START_NS.store(monotonic_ns(), Ordering::Relaxed);
    PROCESS_SEED.store(sampler::seed(seed), Ordering::Relaxed);
    blocks::init_secret(sampler::seed(seed ^ 0x5a5a_5a5a));
    capture::locate_own_code();
    let mut frames = [0usize; capture::MAX_DEPTH];
    // glibc's `backtrace` first (it loads libgcc_s), then libunwind when it is installed:
    // both are loaded and have set themselves up before any sample.
    capture::capture(&mut frames);
    if capture::load_libunwind() {
        capture::warm_libunwind();
    }
    extern "C" fn at_exit() {
        timeline_tick(true);
        dump::write_or_warn(dump::Reason::Exit);
    }
    // SAFETY: registering a plain function, before `main`.
    unsafe { libc::atexit(at_exit) };
    install_signal_handler(crate::config::prof_signal());
    STATE.store(READY, Ordering::Release);
}

extern "C" fn on_signal(_signo: c_int) {
    // Async-signal-safe: one lock-free atomic. The dump is written by the next slow path.
    PENDING.fetch_or(PENDING_SIGNAL, Ordering::Relaxed);
}

fn install_signal_handler(signo: c_int) {
    if signo <= 0 {
        return;
    }
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags); the handler only
    // sets an atomic, and SA_RESTART keeps the program's interrupted calls going.
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signo, &action, core::ptr::null_mut());
    }
}

/// The fast path's test: counts `size` bytes against the heap's countdown; true when the
/// allocation must go to [`sample_slow`]. Compiles to a subtraction and a sign branch.
///
/// `size` must be at most `isize::MAX` (small sizes only).
#[inline(always)]
pub fn countdown_expired(heap: &mut OwnedHeap, size: usize) -> bool {
    // No overflow: the countdown is at least -`size` of one allocation after any reset,
    // and sizes here are small.
    let sampler = &mut heap.local().prof;
    let left = sampler.countdown.wrapping_sub(size as isize);
    sampler.countdown = left;
    left < 0
}

/// Restores errno when dropped: the profiler's syscalls must not leak theirs.
struct KeepErrno(c_int);

impl KeepErrno {
    fn new() -> Self {
        // SAFETY: the calling thread's errno slot.
        KeepErrno(unsafe { *libc::__errno_location() })
    }
}

impl Drop for KeepErrno {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

/// What a heap's countdown running out asks of one allocation.
#[derive(Clone, Copy)]
struct Due {
    /// The profiler samples it.
    prof: bool,
    /// The guard places it in a guarded slot.
    guard: bool,
}

/// Advances `sampler` past an allocation of `size` bytes whose (combined) countdown ran
/// out: charges the bytes to the profiler's and the guard's own countdowns, redraws the
/// ones that ran out, and sets the combined countdown to the nearer of the two (see
/// `HeapSampler::prof_extra`). `guard_fits`: the guard could take this allocation; when it
/// cannot, or when the profiler samples it, the guard's point moves to the next allocation.
fn countdown_ran_out(sampler: &mut HeapSampler, size: usize, state: u8, guard_fits: bool) -> Due {
    let countdown = sampler.countdown;
    let mut prof_left = countdown.saturating_add(sampler.prof_extra);
    let mut guard_left = countdown.saturating_add(sampler.guard_extra);
    let salt = sampler as *mut HeapSampler as u64;
    let prof = prof_left < 0 && prof_ran_out(&mut prof_left, &mut sampler.rng, salt, size, state);
    let guard = guard_left < 0
        && crate::process::guard::ran_out(
            &mut guard_left,
            &mut sampler.guard_rng,
            salt,
            size,
            guard_fits && !prof,
        );
    // Both are >= 0 now (each one that ran out was reset), so the differences are too.
    let next = prof_left.min(guard_left);
    sampler.countdown = next;
    sampler.prof_extra = prof_left - next;
    sampler.guard_extra = guard_left - next;
    Due { prof, guard }
}

/// The profiler's part of [`countdown_ran_out`]: `left` (its own countdown, negative) is
/// reset; true when the allocation is to be sampled.
fn prof_ran_out(left: &mut isize, rng: &mut u64, salt: u64, size: usize, state: u8) -> bool {
    if state != READY {
        // Off: never again. Not started yet: ask again at the next allocation.
        *left = if state == OFF { isize::MAX } else { 0 };
        return false;
    }
    let interval = crate::config::prof_interval_bytes();
    if *rng == 0 {
        // First use: the countdown held no draw yet.
        let counter = SEED_COUNTER.fetch_add(1, Ordering::Relaxed);
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u64;
        *rng = sampler::seed(
            PROCESS_SEED.load(Ordering::Relaxed)
                ^ salt
                ^ counter.rotate_left(32)
                ^ pid.rotate_left(17),
        );
        let size = isize::try_from(size).unwrap_or(isize::MAX);
        let drawn = sampler::draw_countdown(rng, interval).saturating_sub(size);
        if drawn >= 0 {
            *left = drawn;
            return false;
        }
    }
    // The next point is a fresh draw from the end of this block (memoryless).
    *left = sampler::draw_countdown(rng, interval);
    true
}

/// A sample: the stack of an allocation of `size` bytes and what its block will stand for.
pub struct Sample {
    frames: [usize; capture::MAX_DEPTH],
    depth: usize,
    size: usize,
    weight: sampler::Weight,
}

impl Sample {
    /// The stack, innermost frame first.
    pub fn pcs(&self) -> &[usize] {
        self.frames.get(..self.depth).unwrap_or(&[])
    }
}

/// Takes the stack of the allocation being sampled (`short`: only the innermost
/// `capture::SHORT_DEPTH` frames, all the guard keeps).
#[inline(never)]
fn take(size: usize, short: bool) -> Sample {
    let _errno = KeepErrno::new();
    let mut frames = [0usize; capture::MAX_DEPTH];
    let depth = if short {
        capture::capture_short(&mut frames)
    } else {
        capture::capture(&mut frames)
    };
    Sample {
        frames,
        depth,
        size,
        weight: sampler::weight(size, crate::config::prof_interval_bytes()),
    }
}

/// What an allocation whose countdown ran out becomes.
pub enum Pick {
    /// Served as usual.
    Usual,
    /// A sample of the profiler.
    Prof(Sample),
    /// A guarded block (`OXMALLOC_GUARD`), allocated at this stack.
    Guard(Sample),
}

impl Pick {
    /// The profiler's sample, if this is one.
    fn prof(self) -> Option<Sample> {
        match self {
            Pick::Prof(sample) => Some(sample),
            Pick::Usual | Pick::Guard(_) => None,
        }
    }
}

/// `heap`'s countdown ran out during an allocation of `size` bytes: what it becomes.
///
/// # Safety
/// The caller must own `heap` and hold no lock of ours.
#[inline(never)]
unsafe fn sample_with_heap(heap: *mut Heap, size: usize, guard_fits: bool) -> Pick {
    // The sampler is reached through the raw pointer and no reference is held across the
    // capture: an allocation made by the unwinder uses the same heap.
    // SAFETY: the caller owns the heap.
    let sampler = Heap::sampler_ptr(heap);
    // SAFETY: the caller owns the heap, so its sampler is ours; the reference ends before
    // anything may allocate.
    let (due, busy) = unsafe {
        let s = &mut *sampler;
        (
            countdown_ran_out(s, size, STATE.load(Ordering::Acquire), guard_fits),
            s.busy,
        )
    };
    if busy || !(due.prof || due.guard) {
        return Pick::Usual;
    }
    // SAFETY: the caller owns the heap; a plain store, no reference kept.
    unsafe { (*sampler).busy = true };
    let sample = take(size, !due.prof);
    // SAFETY: the caller owns the heap, and no reference to its sampler is live (the
    // capture's own allocations, if any, are done); a plain store.
    unsafe { (*sampler).busy = false };
    if due.prof {
        Pick::Prof(sample)
    } else {
        Pick::Guard(sample)
    }
}

/// The same for a thread without a heap (see [`WITHOUT_HEAP`]): counts `size` bytes.
#[inline(never)]
fn sample_without_heap(size: usize, guard_fits: bool) -> Pick {
    let due = {
        let mut sampler = WITHOUT_HEAP.lock();
        let s = isize::try_from(size).unwrap_or(isize::MAX);
        sampler.countdown = sampler.countdown.saturating_sub(s);
        if !guard_fits {
            // Not the guard's bytes (see `pick_point`).
            sampler.guard_extra = sampler.guard_extra.saturating_add(s);
        }
        if sampler.countdown >= 0 {
            return Pick::Usual;
        }
        let due = countdown_ran_out(
            &mut sampler,
            size,
            STATE.load(Ordering::Acquire),
            guard_fits,
        );
        if sampler.busy || !(due.prof || due.guard) {
            return Pick::Usual;
        }
        sampler.busy = true;
        due
    };
    let sample = take(size, !due.prof);
    WITHOUT_HEAP.lock().busy = false;
    if due.prof {
        Pick::Prof(sample)
    } else {
        Pick::Guard(sample)
    }
}

/// The sampling slow path of the `malloc` fast path: `heap`'s countdown ran out during an
/// allocation of `size` bytes at `align_bytes`. Returns the sampled or guarded block, or
/// `None` to serve the allocation as usual (not sampled, or no memory for such a block).
///
/// # Safety
/// The caller must own `heap` and hold no lock of ours.
#[cold]
#[inline(never)]
pub unsafe fn sample_slow(
    heap: *mut Heap,
    size: usize,
    align_bytes: usize,
    zero: bool,
) -> Option<NonNull<u8>> {
    let fits = crate::process::guard::fits(size, align_bytes);
    // SAFETY: forwarded contract.
    match unsafe { sample_with_heap(heap, size, fits) } {
        Pick::Usual => None,
        Pick::Prof(sample) => alloc_sampled(&sample, align_bytes, zero),
        Pick::Guard(sample) => crate::process::guard::alloc(size, align_bytes, sample.pcs()),
    }
}

/// The countdown of the allocation paths other than the small fast path (medium and
/// huge sizes, aligned, `calloc`, `realloc` that leaves its block, threads without a
/// heap): writes the dumps that are due, counts `size` bytes against the calling thread's
/// countdown, and says what the allocation becomes (`guard_fits`: the guard could take it;
/// when it could not, the bytes count for the profiler only: the guard's points fall on the
/// bytes of the allocations it can take, so that programs of big blocks do not pay for
/// guard points that would only move on to their next small block).
///
/// Call with no lock of ours held.
#[inline]
fn pick_point(size: usize, guard_fits: bool) -> Pick {
    let prof_ready = STATE.load(Ordering::Relaxed) == READY;
    if !prof_ready && !crate::process::guard::ready() {
        return Pick::Usual;
    }
    if prof_ready {
        poll();
    }
    let heap = crate::process::tls::heap();
    if heap.is_null() {
        return sample_without_heap(size, guard_fits);
    }
    let s = isize::try_from(size).unwrap_or(isize::MAX);
    // SAFETY: the TLS heap is the calling thread's own; the caller holds no lock.
    unsafe {
        let sampler = Heap::sampler_ptr(heap);
        let left = (*sampler).countdown.saturating_sub(s);
        (*sampler).countdown = left;
        if !guard_fits {
            // Not the guard's bytes: its own countdown stays where it was.
            (*sampler).guard_extra = (*sampler).guard_extra.saturating_add(s);
        }
        if left >= 0 {
            return Pick::Usual;
        }
        sample_with_heap(heap, size, guard_fits)
    }
}

/// [`pick_point`] for the profiler alone (`realloc`, which the guard does not take: its
/// point moves to the next allocation): the sample, when one falls in these bytes.
#[inline]
pub fn sample_point(size: usize) -> Option<Sample> {
    pick_point(size, false).prof()
}

/// [`pick_point`], then a sampled or guarded block when the allocation is one (`None`:
/// allocate as usual).
#[inline]
pub fn maybe_sample(size: usize, align_bytes: usize, zero: bool) -> Option<NonNull<u8>> {
    let fits = crate::process::guard::fits(size, align_bytes);
    match pick_point(size, fits) {
        Pick::Usual => None,
        Pick::Prof(sample) => alloc_sampled(&sample, align_bytes, zero),
        // Guarded blocks are always zero when handed out.
        Pick::Guard(sample) => crate::process::guard::alloc(size, align_bytes, sample.pcs()),
    }
}

/// A sampled block for `sample`, at `align_bytes`, zeroed if asked, counted in the table;
/// `None` when there is no memory for it (the allocation is then served as usual). Up to
/// 1 MiB (with its header) it takes a slot; above, it is an ordinary huge block that
/// carries its record in its header (see the module note).
pub fn alloc_sampled(sample: &Sample, align_bytes: usize, zero: bool) -> Option<NonNull<u8>> {
    alloc_sampled_with_room(sample, sample.size, align_bytes, zero)
}

/// [`alloc_sampled`] for a `realloc` that moves its block into a sampled one: a block that
/// grows gets a slot with room for twice its new size (when a slot can have it), so that
/// the next growth, sampled or not, stays where it is instead of copying the block again.
pub fn alloc_sampled_for_realloc(
    sample: &Sample,
    old_size: usize,
    align_bytes: usize,
) -> Option<NonNull<u8>> {
    let room = if sample.size > old_size {
        sample.size.saturating_mul(2)
    } else {
        sample.size
    };
    alloc_sampled_with_room(sample, room, align_bytes, false)
}

fn alloc_sampled_with_room(
    sample: &Sample,
    room: usize,
    align_bytes: usize,
    zero: bool,
) -> Option<NonNull<u8>> {
    let _errno = KeepErrno::new();
    let info = record_of(sample, sample.size);
    let block = match blocks::alloc_with_room(sample.size, room, align_bytes, zero, info) {
        Some(block) => block,
        None => {
            let (block, zeroed) = CTX.alloc_huge_sampled(sample.size, align_bytes, info)?;
            if zero && !zeroed {
                // SAFETY: a fresh block of at least `size` bytes.
                unsafe { block.as_ptr().write_bytes(0, sample.size) };
            }
            block
        }
    };
    recount(None, Some(info), false);
    poll();
    Some(block)
}

/// The record of a block of `size` bytes that `sample` stands for (its stack counted in the
/// table from now on).
fn record_of(sample: &Sample, size: usize) -> blocks::BlockInfo {
    blocks::BlockInfo {
        stack: PROFILE.lock().stacks.find_or_insert(sample.pcs()),
        size,
        objects_fixed: sample.weight.objects_fixed,
        bytes: sample.weight.bytes,
        born_ns: now_ns(),
    }
}

/// True when the profiler takes samples.
#[inline]
pub fn active() -> bool {
    STATE.load(Ordering::Relaxed) == READY
}

/// `realloc` of the huge block at `ptr` (`Kind::Huge` or `HugeFar`) to `new_size` bytes,
/// when it stays huge and can be resized without copying (in place, or its pages moved):
/// the block's profiler record is replaced by `sample`'s (by none when this realloc was
/// not sampled), and the counts follow. `None`: the block must move (or `ptr` is not a live
/// huge block, which the caller's checks then report).
pub fn resize_huge(
    ptr: *mut u8,
    new_size: usize,
    align_bytes: usize,
    sample: Option<&Sample>,
) -> Option<NonNull<u8>> {
    if new_size <= crate::block::buddy::MEDIUM_MAX_BYTES || ptr as usize & (align_bytes - 1) != 0 {
        return None;
    }
    let _errno = KeepErrno::new();
    let block = CTX
        .large
        .lock()
        .resize(&CTX.os, ptr as usize, new_size)
        .ok()??;
    // The stack goes into the table outside the huge allocator's lock; the block is the
    // caller's meanwhile.
    let info = sample.map(|s| record_of(s, new_size));
    let old = CTX
        .large
        .lock()
        .replace_sample(block.as_ptr() as usize, info)
        .ok()?;
    if old.is_some() || info.is_some() {
        recount(old, info, false);
        poll();
    }
    Some(block)
}

/// `realloc` of a block in sampled memory (`Kind::Sampled`) to `new_size` bytes: resizes
/// it without copying when its memory allows, and counts it again from then on: as
/// `sample` when this realloc was sampled, not at all otherwise (its memory stays where
/// it is; only its accounting changes). `None`: the block must move (or `ptr` is not a
/// live sampled block, which the caller's checks then report).
pub fn resize_sampled(
    ptr: *mut u8,
    new_size: usize,
    align_bytes: usize,
    sample: Option<&Sample>,
) -> Option<NonNull<u8>> {
    let _errno = KeepErrno::new();
    let info = match sample {
        Some(s) => record_of(s, new_size),
        None => blocks::BlockInfo {
            stack: stacks::UNCOUNTED,
            size: new_size,
            objects_fixed: 0,
            bytes: 0,
            born_ns: 0,
        },
    };
    let (block, old) = blocks::resize(ptr as usize, new_size, align_bytes, info)?;
    // A block counted by no stack that stays so changes no count: a string grown a byte at
    // a time in a slot (every realloc of it comes here, past the small-block fast path)
    // then costs no profile lock per byte.
    if sample.is_some() || old.stack != stacks::UNCOUNTED {
        recount(Some(old), sample.map(|_| info), false);
        poll();
    }
    Some(block)
}

/// Takes a block that was counted as `old` out of the live counts (`freed`: by a free,
/// which counts it as short-lived when it lived less than `SHORT_LIVED_NS`), and counts one
/// as `new`; asks for the dumps this makes due, and adds a timeline point when one is.
fn recount(old: Option<blocks::BlockInfo>, new: Option<blocks::BlockInfo>, freed: bool) {
    let interval = crate::config::prof_interval_bytes();
    let now = now_ns();
    let (due, point_due) = {
        let mut profile = PROFILE.lock();
        let point_due = profile.timeline.due(now, false);
        if let Some(old) = old {
            let short_lived = freed && now.saturating_sub(old.born_ns) < stacks::SHORT_LIVED_NS;
            profile
                .stacks
                .remove(old.stack, weight_of(&old), short_lived);
            profile.triggers.live = profile.triggers.live.saturating_sub(old.bytes);
        }
        match new {
            Some(new) => {
                profile.stacks.add(new.stack, weight_of(&new), now);
                let t = &mut profile.triggers;
                t.allocated = t.allocated.saturating_add(new.bytes);
                t.live = t.live.saturating_add(new.bytes);
                (dumps_due(t, interval), point_due)
            }
            None => (0, point_due),
        }
    };
    if due != 0 {
        PENDING.fetch_or(due, Ordering::Relaxed);
    }
    if point_due {
        push_point(now);
    }
}

fn weight_of(info: &blocks::BlockInfo) -> sampler::Weight {
    sampler::Weight {
        objects_fixed: info.objects_fixed,
        bytes: info.bytes,
    }
}

/// Which automatic dumps the last sample made due (`PENDING_*` bits).
fn dumps_due(t: &mut Triggers, interval: u64) -> u8 {
    let mut due = 0;
    if let Some(every) = core::num::NonZeroU64::new(crate::config::prof_dump_bytes()) {
        if t.next_bytes_dump == 0 {
            t.next_bytes_dump = every.get();
        }
        if t.allocated >= t.next_bytes_dump {
            due |= PENDING_BYTES;
            // The next multiple of `every` above what was allocated.
            t.next_bytes_dump = (t.allocated / every + 1).saturating_mul(every.get());
        }
    }
    // A new peak, 10% or one interval (whichever is more) above the last one dumped.
    if crate::config::prof_dump_peak()
        && t.live
            >= t.peak_dumped_live
                .saturating_add((t.peak_dumped_live / 10).max(interval))
    {
        due |= PENDING_PEAK;
        t.peak_dumped_live = t.live;
    }
    due
}

/// Writes the dumps that are due. Called from slow paths that hold no lock of ours.
fn poll() {
    if PENDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let due = PENDING.swap(0, Ordering::AcqRel);
    let _errno = KeepErrno::new();
    for (bit, reason) in [
        (PENDING_SIGNAL, dump::Reason::Signal),
        (PENDING_BYTES, dump::Reason::Bytes),
        (PENDING_PEAK, dump::Reason::Peak),
    ] {
        if due & bit != 0 {
            dump::write_or_warn(reason);
        }
    }
}

/// A huge block that carried `record` was freed: its counts go. Call with no lock of ours
/// held.
pub fn huge_sampled_freed(record: blocks::BlockInfo) {
    let _errno = KeepErrno::new();
    recount(Some(record), None, true);
}

/// A sampled `realloc` that left its block in the buddy arena (`ptr`, of `size` bytes
/// now): records `sample` for it on the side (see `resized`) and counts it. False when
/// there is no room for the record: the caller then moves the block into a sampled one.
pub fn keep_resized(ptr: *mut u8, size: usize, sample: &Sample) -> bool {
    let _errno = KeepErrno::new();
    let info = record_of(sample, size);
    if !resized::insert(ptr as usize, info) {
        return false;
    }
    recount(None, Some(info), false);
    poll();
    true
}

/// Before the medium block at `addr` is resized by a `realloc` (which counts as the
/// block's end, as for a block in a slot): takes its side record out of the counts, if it
/// has one.
#[inline]
pub fn forget_resized(addr: usize) {
    if let Some(old) = resized::take(addr) {
        let _errno = KeepErrno::new();
        recount(Some(old), None, false);
    }
}

/// Before the medium block at `addr` is freed: takes its side record out of the counts,
/// as a free, if it has one.
#[inline]
pub fn resized_freed(addr: usize) {
    if let Some(old) = resized::take(addr) {
        let _errno = KeepErrno::new();
        recount(Some(old), None, true);
    }
}

/// Frees the sampled block at `addr` (the region map says `Kind::Sampled`) for `call`;
/// a pointer that is not a live sampled block is reported as fatal.
pub fn free_sampled(addr: usize, call: &str) {
    match blocks::free(addr) {
        Ok(info) => recount(Some(info), None, true),
        Err(blocks::FreeError::DoubleFree) => {
            fatal::bad_pointer(call, "double free or corruption", addr)
        }
        Err(blocks::FreeError::InvalidPointer) => fatal::bad_pointer(call, "invalid pointer", addr),
    }
}

/// Writes a heap profile now (reason `api`): to `path`, or when `None` to
/// `OXMALLOC_PROF_DIR/oxprof.<pid>.<seq>.raw`. Returns the errno value of a failure;
/// `ENOTSUP` when profiling is off.
pub fn prof_dump(path: Option<&CStr>) -> Result<(), c_int> {
    if STATE.load(Ordering::Acquire) != READY {
        return Err(libc::ENOTSUP);
    }
    let _errno = KeepErrno::new();
    dump::write(dump::Reason::Api, path.map(CStr::to_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_gives_the_resident_pages() {
        assert_eq!(statm_resident_pages(b"12345 678 90 1 0 2 0\n"), 678);
        assert_eq!(statm_resident_pages(b"1 0 0 0 0 0 0\n"), 0);
        assert_eq!(statm_resident_pages(b"garbage"), 0);
        assert_eq!(statm_resident_pages(b"1 2x 3"), 0);
        assert_eq!(statm_resident_pages(b""), 0);
        // This process's: resident, and a whole number of OS pages.
        let resident = resident_bytes();
        assert!(resident > 0 && resident % crate::os::OS_PAGE_BYTES as u64 == 0);
    }
}
