//! The shadow model of oxmalloc, shared by the model test (`tests/model.rs`) and the fuzz
//! target (`fuzz/fuzz_targets/model.rs`).
//!
//! - [`Action`]: one step against the allocator. Blocks live in numbered *slots*; an
//!   allocation into a slot that holds a block frees that block first.
//! - [`decode`]: arbitrary bytes (a fuzzer's input, or a PRNG's output) to actions, with a
//!   spread of sizes over every allocator (zero, tiny, each size-class range, medium spans,
//!   huge mappings, rarely larger, and sizes no machine can serve) and of alignments
//!   (8 bytes to 4 MiB).
//! - [`Model`]: runs actions on the calling thread through the `ox_*` API and keeps a
//!   shadow of each block it holds (address, requested size, alignment, usable size, tag).
//! - [`run_lanes`]: runs one action list over up to [`LANE_COUNT`] threads in lock step
//!   ([`Action::Switch`] picks the thread), so that remote frees and hand-offs between
//!   heaps are deterministic: what the fuzzer needs.
//!
//! What is checked (a violation panics with the lane, the slot and the block):
//! - an allocation of a reasonable size returns non-NULL; a size of 2^62 bytes or more, or a
//!   `calloc` whose `count * size` overflows, returns NULL with `errno == ENOMEM` (and a
//!   failed `realloc` leaves the old block intact);
//! - the block is aligned (at least 16 bytes, or what `ox_aligned_alloc` asked);
//! - `ox_owns(p) == 1` and `ox_usable_size(p) >= size`, and the usable size stays the same
//!   for the block's life;
//! - `[p, p + usable)` overlaps no other live block of any thread (a shared registry);
//! - a `calloc` block reads as zeros;
//! - the block keeps the pattern written over it (derived from its tag) until it is freed:
//!   checked before every free, realloc and hand-off, after every trim, and `realloc` keeps
//!   the first `min(old, new)` bytes;
//! - `ox_free` preserves `errno`; `ox_heap_check() == 0`.
//!
//! The pattern is copied from a fixed table of pseudo-random bytes, starting at a phase that
//! depends on the block's tag and on each 64 KiB chunk, so filling and checking are
//! `memcpy`/`memcmp` (fast even in debug builds) and a block swapped with another, or a
//! chunk moved within a block, does not read as intact.

use oxmalloc::{
    ox_aligned_alloc, ox_calloc, ox_free, ox_heap_check, ox_malloc, ox_owns, ox_realloc, ox_trim,
    ox_usable_size,
};
use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};
use std::fmt;
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;

/// Slots per model (per thread).
pub const SLOT_COUNT: usize = 4096;
/// Most actions name one of the first slots, so that blocks are freed and replaced often.
const HOT_SLOT_COUNT: u16 = 32;
/// Threads [`run_lanes`] may use.
pub const LANE_COUNT: usize = 4;
/// The most requested bytes one model holds at once; an allocation past it is skipped.
const LIVE_BUDGET_BYTES: usize = 192 << 20;
/// The most bytes and blocks waiting in the shared mailbox; a hand-off past it is skipped.
const MAILBOX_BUDGET_BYTES: usize = 128 << 20;
const MAILBOX_BLOCK_LIMIT: usize = 512;
/// Requests this large cannot be served on any machine (x86-64 has at most 57 address
/// bits), so the allocator must return NULL.
const IMPOSSIBLE_MIN_BYTES: usize = 1 << 62;
/// The sizes [`decode`] picks for requests that must fail.
const IMPOSSIBLE_SIZES: [usize; 4] = [usize::MAX, usize::MAX - 15, isize::MAX as usize, 1 << 62];
/// The largest alignment asked for: 4 MiB, the size of oxmalloc's segments and regions
/// (2 MiB is the largest buddy span).
const MAX_ALIGN_SHIFT: u8 = 22;
/// oxmalloc's slab size: what a burst fills.
const SLAB_BYTES: usize = 64 * 1024;
/// The most actions [`decode`] returns.
const MAX_ACTIONS: usize = 1 << 16;
/// Every block is aligned at least this much.
const MIN_ALIGN: usize = 16;
/// `ENOMEM` on Linux.
const ENOMEM: c_int = 12;
/// What `errno` holds across `ox_free`, which must not change it.
const ERRNO_SENTINEL: c_int = 0x0b5e;

/// One step against the allocator. Slot numbers are taken modulo [`SLOT_COUNT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `ox_malloc(size)` into `slot`.
    Malloc { slot: u16, size: usize },
    /// `ox_calloc(count, size)` into `slot`.
    Calloc {
        slot: u16,
        count: usize,
        size: usize,
    },
    /// `ox_realloc` of the block in `slot` (NULL when the slot is empty) to `size`.
    Realloc { slot: u16, size: usize },
    /// `ox_aligned_alloc(1 << align_shift, size)` into `slot` (shifts above 22, 4 MiB, are
    /// taken as 22: larger alignments would make "must succeed" depend on the machine).
    AlignedAlloc {
        slot: u16,
        align_shift: u8,
        size: usize,
    },
    /// `count` times `ox_malloc(size)` into the slots from `slot` on: fills slabs.
    Burst { slot: u16, count: u16, size: usize },
    /// `ox_free` of the block in `slot` (of NULL when the slot is empty).
    Free { slot: u16 },
    /// Frees the blocks in `count` slots from `slot` on: empties slabs.
    FreeRange { slot: u16, count: u16 },
    /// Checks `ox_usable_size`, then writes the pattern over the whole usable size.
    UsableSize { slot: u16 },
    /// Moves the block in `slot` to the shared mailbox, for another thread.
    HandOff { slot: u16 },
    /// Takes a block another thread handed off into `slot`, to be resized or freed here.
    Adopt { slot: u16 },
    /// Runs the following actions on thread `lane` (modulo [`LANE_COUNT`]); only
    /// [`run_lanes`] acts on it.
    Switch { lane: u8 },
    /// `ox_heap_check() == 0`.
    HeapCheck,
    /// `ox_trim()`, then every block of the model is checked.
    Trim,
}

/// Turns arbitrary bytes into actions (at most 65,536). Every input decodes; a short input
/// reads as if padded with zeros.
pub fn decode(bytes: &[u8]) -> Vec<Action> {
    let mut input = Input { bytes, pos: 0 };
    let mut actions = Vec::new();
    while input.pos < bytes.len() && actions.len() < MAX_ACTIONS {
        actions.push(input.action());
    }
    actions
}

/// A cursor over the decoder's input.
struct Input<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// Weights out of 256: allocation 45%, realloc 16%, free 20%, the rest rarer.
    fn action(&mut self) -> Action {
        match self.byte() {
            0..=69 => Action::Malloc {
                slot: self.slot(),
                size: self.size(),
            },
            70..=89 => self.calloc(),
            90..=129 => Action::Realloc {
                slot: self.slot(),
                size: self.size(),
            },
            130..=154 => Action::AlignedAlloc {
                slot: self.slot(),
                align_shift: self.align_shift(),
                size: self.size(),
            },
            155..=199 => Action::Free { slot: self.slot() },
            200..=209 => Action::UsableSize { slot: self.slot() },
            210..=219 => Action::HandOff { slot: self.slot() },
            220..=229 => Action::Adopt { slot: self.slot() },
            230..=236 => self.burst(),
            237..=243 => Action::FreeRange {
                slot: self.slot(),
                count: self.range_count(),
            },
            244..=249 => Action::Switch { lane: self.byte() },
            250..=252 => Action::HeapCheck,
            _ => Action::Trim,
        }
    }

    /// Three slots in four are hot ones.
    fn slot(&mut self) -> u16 {
        let b = self.byte();
        if b < 192 {
            u16::from(b) % HOT_SLOT_COUNT
        } else {
            self.u16() % SLOT_COUNT as u16
        }
    }

    /// A size; weights out of 256.
    fn size(&mut self) -> usize {
        match self.byte() {
            0..=5 => 0,
            6..=35 => 1 + usize::from(self.byte() % 16),
            // Each size-class range, log-uniform: [16 B, 16 KiB).
            36..=161 => self.log_uniform(4, 14),
            // Next to a size-class edge (eight per power of two), up to the slab limit.
            162..=185 => self.near_edge(4, 14, 8),
            // Medium: [16 KiB, 1 MiB).
            186..=231 => self.log_uniform(14, 20),
            // Next to a buddy span size, 16 KiB to 1 MiB (so the medium/huge edge too).
            232..=247 => self.near_edge(14, 20, 1),
            // Huge: [1 MiB, 8 MiB). Rarer than the others: every huge block costs fresh OS
            // pages to fill, which would set the fuzzer's pace.
            248..=250 => self.log_uniform(20, 23),
            // Larger: [8 MiB, 32 MiB) one time in four, else huge again.
            251 => match self.byte() {
                0..=63 => self.log_uniform(23, 25),
                _ => self.log_uniform(20, 21),
            },
            _ => IMPOSSIBLE_SIZES[usize::from(self.byte()) % IMPOSSIBLE_SIZES.len()],
        }
    }

    /// A size for a burst: small (a burst is there to fill slabs), rarely medium.
    fn burst_size(&mut self) -> usize {
        match self.byte() {
            0..=63 => 1 + usize::from(self.byte() % 16),
            64..=199 => self.log_uniform(4, 14),
            200..=247 => self.near_edge(4, 13, 8),
            _ => self.log_uniform(14, 17),
        }
    }

    /// A size in `[2^low_shift, 2^high_shift)`, its power of two uniform.
    fn log_uniform(&mut self, low_shift: u32, high_shift: u32) -> usize {
        let shift = low_shift + u32::from(self.byte()) % (high_shift - low_shift);
        let base = 1usize << shift;
        base + self.u32() as usize % base
    }

    /// `edge - 1`, `edge` or `edge + 1`, where `edge` is `2^k` plus a multiple of
    /// `2^k / steps` (at least 16), for `k` in `low_shift..=high_shift`.
    fn near_edge(&mut self, low_shift: u32, high_shift: u32, steps: usize) -> usize {
        let shift = low_shift + u32::from(self.byte()) % (high_shift - low_shift + 1);
        let base = 1usize << shift;
        let step = (base / steps).max(16);
        let edge = base + step * (usize::from(self.byte()) % steps);
        match self.byte() % 3 {
            0 => edge - 1,
            1 => edge,
            _ => edge + 1,
        }
    }

    /// An alignment shift: 8 B to 4 KiB mostly, up to 128 KiB often, up to 4 MiB rarely.
    fn align_shift(&mut self) -> u8 {
        match self.byte() {
            b @ 0..=175 => 3 + b % 10,
            b @ 176..=239 => 12 + b % 6,
            b => 17 + b % (MAX_ALIGN_SHIFT - 16),
        }
    }

    /// Many blocks of one size: enough to fill one or two slabs (64 KiB each; at most
    /// [`SLOT_COUNT`] blocks), or one time in four just a few.
    fn burst(&mut self) -> Action {
        let slot = self.slot();
        let size = self.burst_size();
        let count = match self.byte() {
            b @ 0..=63 => 1 + usize::from(b % 16),
            b => {
                let per_slab = (SLAB_BYTES / size.max(16)).max(1);
                let slabs = 1 + usize::from(b % 2);
                per_slab * slabs + usize::from(self.byte()) % per_slab
            }
        };
        Action::Burst {
            slot,
            count: count.min(SLOT_COUNT) as u16,
            size,
        }
    }

    /// 1 to 4096 slots, the power of two uniform.
    fn range_count(&mut self) -> u16 {
        let shift = self.byte() % 13;
        let count = (1u16 << shift) + self.u16() % (1u16 << shift);
        count.min(SLOT_COUNT as u16)
    }

    /// `count * size` near a size from [`Input::size`]; rarely a zero count, or a product
    /// that overflows.
    fn calloc(&mut self) -> Action {
        let slot = self.slot();
        let total = self.size();
        let (count, size) = match self.byte() {
            0..=7 => (0, total),
            shape @ 8..=249 => {
                let count = 1 + usize::from(shape % 16);
                (count, total / count)
            }
            shape => (1usize << (32 + shape % 8), 1usize << 33),
        };
        Action::Calloc { slot, count, size }
    }
}

/// What a model did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Actions applied.
    pub actions: u64,
    /// Blocks allocated (`Burst` counts each block; `Realloc` of an empty slot counts).
    pub allocations: u64,
    /// Bytes requested by those allocations.
    pub allocated_bytes: u64,
    /// `ox_realloc` calls on a live block.
    pub reallocs: u64,
    /// `ox_free` calls (NULL included) and `ox_realloc(p, 0)`.
    pub frees: u64,
    /// Blocks moved to the mailbox.
    pub hand_offs: u64,
    /// Blocks taken from the mailbox (at `Adopt` and when the mailbox is drained).
    pub adoptions: u64,
    /// Calls that had to return NULL, and did.
    pub expected_nulls: u64,
    /// Allocations skipped because the model held too many bytes.
    pub skipped: u64,
}

impl Stats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Stats) {
        self.actions += other.actions;
        self.allocations += other.allocations;
        self.allocated_bytes += other.allocated_bytes;
        self.reallocs += other.reallocs;
        self.frees += other.frees;
        self.hand_offs += other.hand_offs;
        self.adoptions += other.adoptions;
        self.expected_nulls += other.expected_nulls;
        self.skipped += other.skipped;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} actions: {} allocations ({} MiB), {} reallocs, {} frees, {} hand-offs, \
             {} adoptions, {} expected NULLs, {} skipped over budget",
            self.actions,
            self.allocations,
            self.allocated_bytes >> 20,
            self.reallocs,
            self.frees,
            self.hand_offs,
            self.adoptions,
            self.expected_nulls,
            self.skipped
        )
    }
}

/// The shadow of one live block.
#[derive(Clone, Copy, Debug)]
struct Block {
    addr: usize,
    /// Bytes requested.
    size: usize,
    /// The alignment the block must keep.
    align: usize,
    /// `ox_usable_size` when the block was made.
    usable: usize,
    /// Bytes from the start that hold the pattern (`size`, or `usable` after `UsableSize`).
    filled: usize,
    /// Picks the pattern; unique among the blocks of a run.
    tag: u64,
    /// The lane (thread) that holds the block.
    holder: usize,
}

impl Block {
    fn ptr(&self) -> *mut c_void {
        self.addr as *mut c_void
    }

    /// The bytes no other block may touch (a zero-size block still owns one byte).
    fn end(&self) -> usize {
        self.addr + self.usable.max(1)
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block {:#x} at {:#x} ({} bytes requested, usable {}, align {}, held by lane {})",
            self.tag, self.addr, self.size, self.usable, self.align, self.holder
        )
    }
}

/// A live block in the registry.
struct Extent {
    end: usize,
    tag: u64,
    lane: usize,
}

/// Blocks handed off between threads.
#[derive(Default)]
struct Mailbox {
    blocks: Vec<Block>,
    bytes: usize,
}

/// What the models of one run share: every live block's extent, and the mailbox.
#[derive(Default)]
pub struct Shared {
    registry: Mutex<BTreeMap<usize, Extent>>,
    mailbox: Mutex<Mailbox>,
}

/// Locks `mutex`, also after another thread panicked with it held (that panic is the
/// failure to report, not this one).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Records a new block; panics if it overlaps a live one.
    fn claim(&self, block: &Block) {
        let mut registry = lock(&self.registry);
        // Extents do not overlap, so the one that starts last below the new end is the
        // only one that can reach into the new block.
        if let Some((&start, other)) = registry.range(..block.end()).next_back() {
            if other.end > block.addr {
                panic!(
                    "lane {}: new {block} overlaps live block {:#x} at {start:#x}..{:#x} \
                     held by lane {}",
                    block.holder, other.tag, other.end, other.lane
                );
            }
        }
        registry.insert(
            block.addr,
            Extent {
                end: block.end(),
                tag: block.tag,
                lane: block.holder,
            },
        );
    }

    /// Forgets a block that is about to be freed (before the call: once freed, another
    /// thread may get the same address).
    fn release(&self, block: &Block) {
        let removed = lock(&self.registry).remove(&block.addr);
        match removed {
            Some(extent) if extent.tag == block.tag && extent.end == block.end() => {}
            _ => panic!("model: {block} is not in the registry as recorded"),
        }
    }

    /// Panics unless every block was freed.
    pub fn assert_empty(&self) {
        let registry = lock(&self.registry);
        if let Some((start, extent)) = registry.iter().next() {
            panic!(
                "model: {} blocks still registered after the run, first {:#x} at {start:#x}",
                registry.len(),
                extent.tag
            );
        }
        assert!(
            lock(&self.mailbox).blocks.is_empty(),
            "model: mailbox not drained"
        );
    }
}

/// The calling thread's `errno`.
mod errno {
    use std::ffi::c_int;

    unsafe extern "C" {
        fn __errno_location() -> *mut c_int;
    }

    pub fn get() -> c_int {
        // SAFETY: glibc's `__errno_location` returns the calling thread's errno slot, valid
        // for reading for the thread's life.
        unsafe { *__errno_location() }
    }

    pub fn set(value: c_int) {
        // SAFETY: as in `get`; the slot is also valid for writing.
        unsafe { *__errno_location() = value };
    }
}

/// Bytes per pattern chunk: each has its own phase in the table.
const CHUNK_BYTES: usize = 64 * 1024;
/// Phases a chunk's pattern may start at.
const PHASE_COUNT: usize = 64 * 1024;
/// A chunk of zeros to compare `calloc` blocks with.
static ZEROS: [u8; CHUNK_BYTES] = [0; CHUNK_BYTES];

/// SplitMix64's output function: a good 64-bit mix.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Pseudo-random bytes, `CHUNK_BYTES + PHASE_COUNT` of them.
fn pattern_table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..(CHUNK_BYTES + PHASE_COUNT) / 8)
            .flat_map(|i| mix64(i as u64 ^ 0x6f78_6d61_6c6c_6f63).to_le_bytes())
            .collect()
    })
}

/// Calls `f(offset, expected)` for the pieces of `[from, to)` of block `tag`'s pattern,
/// cut at chunk edges, until `f` returns false.
fn for_each_piece(tag: u64, from: usize, to: usize, mut f: impl FnMut(usize, &[u8]) -> bool) {
    let table = pattern_table();
    let mut offset = from;
    while offset < to {
        let chunk = offset / CHUNK_BYTES;
        let within = offset % CHUNK_BYTES;
        let len = (CHUNK_BYTES - within).min(to - offset);
        let phase = (mix64(tag ^ (chunk as u64).rotate_left(40)) % PHASE_COUNT as u64) as usize;
        if !f(offset, &table[phase + within..phase + within + len]) {
            return;
        }
        offset += len;
    }
}

/// Writes block `tag`'s pattern over `[from, to)` of the block at `base`.
///
/// # Safety
/// `base + from .. base + to` must be valid for writing and not aliased.
unsafe fn fill(base: *mut u8, tag: u64, from: usize, to: usize) {
    for_each_piece(tag, from, to, |offset, expected| {
        // SAFETY: the piece lies in `[from, to)`, writable (caller); the table is not in it.
        unsafe {
            std::ptr::copy_nonoverlapping(expected.as_ptr(), base.add(offset), expected.len())
        };
        true
    });
}

/// The first offset in `[from, to)` of the block at `base` that does not hold block
/// `tag`'s pattern, with the byte expected and the byte found.
///
/// # Safety
/// `base + from .. base + to` must be valid for reading and not written meanwhile.
unsafe fn first_mismatch(
    base: *const u8,
    tag: u64,
    from: usize,
    to: usize,
) -> Option<(usize, u8, u8)> {
    let mut found = None;
    for_each_piece(tag, from, to, |offset, expected| {
        // SAFETY: the piece lies in `[from, to)`, readable (caller).
        let actual = unsafe { std::slice::from_raw_parts(base.add(offset), expected.len()) };
        if actual == expected {
            return true;
        }
        found = actual
            .iter()
            .zip(expected)
            .position(|(a, e)| a != e)
            .map(|i| (offset + i, expected[i], actual[i]));
        false
    });
    found
}

/// The first offset in `[0, len)` of the block at `base` that is not zero.
///
/// # Safety
/// `base .. base + len` must be valid for reading.
unsafe fn first_nonzero(base: *const u8, len: usize) -> Option<usize> {
    let mut offset = 0;
    while offset < len {
        let piece = (len - offset).min(CHUNK_BYTES);
        // SAFETY: within `[0, len)`, readable (caller).
        let actual = unsafe { std::slice::from_raw_parts(base.add(offset), piece) };
        if actual != &ZEROS[..piece] {
            return actual.iter().position(|&b| b != 0).map(|i| offset + i);
        }
        offset += piece;
    }
    None
}

/// What an allocation asked for.
#[derive(Clone, Copy)]
struct Request {
    size: usize,
    align: usize,
    zeroed: bool,
}

/// The interpreter: applies actions on the calling thread and checks every result against
/// its shadow of the blocks it holds.
pub struct Model<'s> {
    shared: &'s Shared,
    lane: usize,
    slots: Vec<Option<Block>>,
    /// Requested bytes of the blocks in `slots`.
    live_bytes: usize,
    /// Tags made so far (a tag also carries the lane, so tags are unique in a run).
    tag_count: u64,
    stats: Stats,
}

impl<'s> Model<'s> {
    /// A model with empty slots for thread `lane` (which names it in messages and keeps
    /// its tags apart from other lanes').
    pub fn new(shared: &'s Shared, lane: usize) -> Self {
        Model {
            shared,
            lane,
            slots: vec![None; SLOT_COUNT],
            live_bytes: 0,
            tag_count: 0,
            stats: Stats::default(),
        }
    }

    /// Applies one action.
    pub fn apply(&mut self, action: &Action) {
        self.stats.actions += 1;
        match *action {
            Action::Malloc { slot, size } => self.malloc(slot_index(slot), size),
            Action::Calloc { slot, count, size } => self.calloc(slot_index(slot), count, size),
            Action::Realloc { slot, size } => self.realloc(slot_index(slot), size),
            Action::AlignedAlloc {
                slot,
                align_shift,
                size,
            } => {
                let align = 1usize << align_shift.min(MAX_ALIGN_SHIFT);
                self.aligned_alloc(slot_index(slot), align, size);
            }
            Action::Burst { slot, count, size } => {
                for i in 0..usize::from(count) {
                    self.malloc((slot_index(slot) + i) % SLOT_COUNT, size);
                }
            }
            Action::Free { slot } => self.free_slot(slot_index(slot)),
            Action::FreeRange { slot, count } => {
                for i in 0..usize::from(count) {
                    self.free_slot((slot_index(slot) + i) % SLOT_COUNT);
                }
            }
            Action::UsableSize { slot } => self.usable_size(slot_index(slot)),
            Action::HandOff { slot } => self.hand_off(slot_index(slot)),
            Action::Adopt { slot } => self.adopt(slot_index(slot)),
            Action::Switch { .. } => {}
            Action::HeapCheck => self.heap_check(),
            Action::Trim => self.trim(),
        }
    }

    /// Takes every block left in the mailbox, whoever handed it off, checks it and frees it.
    pub fn drain_mailbox(&mut self) {
        let blocks = {
            let mut mailbox = lock(&self.shared.mailbox);
            mailbox.bytes = 0;
            std::mem::take(&mut mailbox.blocks)
        };
        for mut block in blocks {
            self.stats.adoptions += 1;
            block.holder = self.lane;
            self.check_block(&block, "after its hand-off");
            self.free_block(&block);
        }
    }

    /// Frees every block the model holds (checking each), checks the heap, and returns
    /// what the model did.
    pub fn finish(mut self) -> Stats {
        for slot in 0..SLOT_COUNT {
            if let Some(block) = self.take(slot) {
                self.check_block(&block, "at the end");
                self.free_block(&block);
            }
        }
        self.heap_check();
        self.stats
    }

    fn new_tag(&mut self) -> u64 {
        self.tag_count += 1;
        ((self.lane as u64) << 48) | self.tag_count
    }

    fn take(&mut self, slot: usize) -> Option<Block> {
        let block = self.slots[slot].take()?;
        self.live_bytes -= block.size;
        Some(block)
    }

    fn put(&mut self, slot: usize, block: Block) {
        debug_assert!(self.slots[slot].is_none());
        self.live_bytes += block.size;
        self.slots[slot] = Some(block);
    }

    /// True when a block of `size` bytes fits the budget; counts a skip otherwise. Sizes
    /// that must fail always "fit": they are asked for, to see the NULL.
    fn fits(&mut self, size: usize) -> bool {
        if size < IMPOSSIBLE_MIN_BYTES && self.live_bytes.saturating_add(size) > LIVE_BUDGET_BYTES {
            self.stats.skipped += 1;
            return false;
        }
        true
    }

    /// Frees the block in `slot`, if any, before a new one goes there.
    fn clear(&mut self, slot: usize) {
        if let Some(block) = self.take(slot) {
            self.check_block(&block, "before ox_free");
            self.free_block(&block);
        }
    }

    fn malloc(&mut self, slot: usize, size: usize) {
        self.clear(slot);
        if !self.fits(size) {
            return;
        }
        errno::set(0);
        let p = ox_malloc(size);
        let request = Request {
            size,
            align: MIN_ALIGN,
            zeroed: false,
        };
        self.accept(slot, "ox_malloc", p, request);
    }

    fn calloc(&mut self, slot: usize, count: usize, size: usize) {
        self.clear(slot);
        let Some(total) = count.checked_mul(size) else {
            errno::set(0);
            let p = ox_calloc(count, size);
            self.expect_null(&format!("ox_calloc({count}, {size}) (overflow)"), p);
            return;
        };
        if !self.fits(total) {
            return;
        }
        errno::set(0);
        let p = ox_calloc(count, size);
        let request = Request {
            size: total,
            align: MIN_ALIGN,
            zeroed: true,
        };
        self.accept(slot, "ox_calloc", p, request);
    }

    fn aligned_alloc(&mut self, slot: usize, align: usize, size: usize) {
        self.clear(slot);
        if !self.fits(size) {
            return;
        }
        errno::set(0);
        let p = ox_aligned_alloc(align, size);
        let request = Request {
            size,
            align,
            zeroed: false,
        };
        self.accept(slot, "ox_aligned_alloc", p, request);
    }

    /// Checks a NULL that the call had to return, with `errno == ENOMEM`.
    fn expect_null(&mut self, call: &str, p: *mut c_void) {
        assert!(
            p.is_null(),
            "lane {}: {call} returned {p:p}, but no machine can serve it",
            self.lane
        );
        let errno = errno::get();
        assert_eq!(
            errno, ENOMEM,
            "lane {}: {call} returned NULL with errno {errno}, not ENOMEM",
            self.lane
        );
        self.stats.expected_nulls += 1;
    }

    /// Checks a freshly allocated block, records it, writes its pattern, and puts it in
    /// `slot` (which is empty).
    fn accept(&mut self, slot: usize, call: &str, p: *mut c_void, request: Request) {
        let Request { size, align, .. } = request;
        if size >= IMPOSSIBLE_MIN_BYTES {
            self.expect_null(&format!("{call} of {size} bytes"), p);
            return;
        }
        let lane = self.lane;
        assert!(
            !p.is_null(),
            "lane {lane}: {call} returned NULL for {size} bytes (align {align}), errno {}",
            errno::get()
        );
        let addr = p as usize;
        let align = align.max(MIN_ALIGN);
        assert!(
            addr % align == 0,
            "lane {lane}: {call} returned {addr:#x} for {size} bytes, not aligned to {align}"
        );
        assert_eq!(
            ox_owns(p),
            1,
            "lane {lane}: ox_owns is false for {addr:#x}, just returned by {call}"
        );
        // SAFETY: `p` is a live block, just returned.
        let usable = unsafe { ox_usable_size(p) };
        assert!(
            usable >= size,
            "lane {lane}: ox_usable_size({addr:#x}) = {usable}, below the {size} bytes asked of {call}"
        );
        let mut block = Block {
            addr,
            size,
            align,
            usable,
            filled: 0,
            tag: self.new_tag(),
            holder: lane,
        };
        self.shared.claim(&block);
        if request.zeroed {
            // SAFETY: the block has `usable >= size` readable bytes, and only we use it.
            if let Some(offset) = unsafe { first_nonzero(p.cast(), size) } {
                panic!("lane {lane}: {call} gave {block} whose byte {offset} is not zero");
            }
        }
        // SAFETY: as above; the block is writable.
        unsafe { fill(p.cast(), block.tag, 0, size) };
        block.filled = size;
        self.stats.allocations += 1;
        self.stats.allocated_bytes += size as u64;
        self.put(slot, block);
    }

    fn realloc(&mut self, slot: usize, size: usize) {
        let Some(old) = self.take(slot) else {
            // `realloc(NULL, size)` is `malloc(size)`.
            if !self.fits(size) {
                return;
            }
            errno::set(0);
            // SAFETY: NULL is a valid argument.
            let p = unsafe { ox_realloc(std::ptr::null_mut(), size) };
            let request = Request {
                size,
                align: MIN_ALIGN,
                zeroed: false,
            };
            self.accept(slot, "ox_realloc(NULL, _)", p, request);
            return;
        };
        self.check_block(&old, "before ox_realloc");
        let lane = self.lane;
        if size == 0 {
            // Frees the block and returns NULL (glibc's behaviour).
            self.shared.release(&old);
            // SAFETY: `old` is live and held by this model alone; it is forgotten here.
            let p = unsafe { ox_realloc(old.ptr(), 0) };
            assert!(
                p.is_null(),
                "lane {lane}: ox_realloc(p, 0) returned {p:p}, not NULL, for {old}"
            );
            self.stats.frees += 1;
            return;
        }
        if size >= IMPOSSIBLE_MIN_BYTES {
            errno::set(0);
            // SAFETY: `old` is live and held by this model alone.
            let p = unsafe { ox_realloc(old.ptr(), size) };
            self.expect_null(&format!("ox_realloc of {old} to {size} bytes"), p);
            self.check_block(&old, "after a failed ox_realloc");
            self.put(slot, old);
            return;
        }
        if !self.fits(size) {
            self.put(slot, old);
            return;
        }
        self.shared.release(&old);
        errno::set(0);
        // SAFETY: `old` is live and held by this model alone; from here it is `new`.
        let p = unsafe { ox_realloc(old.ptr(), size) };
        assert!(
            !p.is_null(),
            "lane {lane}: ox_realloc of {old} to {size} bytes returned NULL, errno {}",
            errno::get()
        );
        let addr = p as usize;
        assert!(
            addr % MIN_ALIGN == 0,
            "lane {lane}: ox_realloc of {old} to {size} bytes returned {addr:#x}, not 16-aligned"
        );
        assert_eq!(
            ox_owns(p),
            1,
            "lane {lane}: ox_owns is false for {addr:#x}, just returned by ox_realloc"
        );
        // SAFETY: `p` is a live block, just returned.
        let usable = unsafe { ox_usable_size(p) };
        assert!(
            usable >= size,
            "lane {lane}: ox_usable_size({addr:#x}) = {usable} after ox_realloc to {size} bytes"
        );
        let kept = old.size.min(size);
        let new = Block {
            addr,
            size,
            align: MIN_ALIGN,
            usable,
            filled: size,
            ..old
        };
        self.shared.claim(&new);
        // SAFETY: the new block has `size >= kept` bytes, readable and writable, ours alone.
        unsafe {
            if let Some((offset, expected, found)) = first_mismatch(p.cast(), old.tag, 0, kept) {
                panic!(
                    "lane {lane}: ox_realloc of {old} to {size} bytes, now at {addr:#x}, lost \
                     byte {offset} of the {kept} it must keep: {found:#04x}, not {expected:#04x}"
                );
            }
            fill(p.cast(), old.tag, kept, size);
        }
        self.stats.reallocs += 1;
        self.put(slot, new);
    }

    fn free_slot(&mut self, slot: usize) {
        match self.take(slot) {
            Some(block) => {
                self.check_block(&block, "before ox_free");
                self.free_block(&block);
            }
            None => {
                errno::set(ERRNO_SENTINEL);
                // SAFETY: freeing NULL is a no-op.
                unsafe { ox_free(std::ptr::null_mut()) };
                self.expect_errno_kept("ox_free(NULL)");
                self.stats.frees += 1;
            }
        }
    }

    /// Forgets a checked block and frees it.
    fn free_block(&mut self, block: &Block) {
        self.shared.release(block);
        errno::set(ERRNO_SENTINEL);
        // SAFETY: the block is live and held by this model alone, which forgets it here.
        unsafe { ox_free(block.ptr()) };
        self.expect_errno_kept("ox_free");
        self.stats.frees += 1;
    }

    fn expect_errno_kept(&self, call: &str) {
        let errno = errno::get();
        assert_eq!(
            errno, ERRNO_SENTINEL,
            "lane {}: {call} changed errno from {ERRNO_SENTINEL} to {errno}",
            self.lane
        );
    }

    /// Checks that a live block is still ours, of the same usable size, with its pattern.
    fn check_block(&self, block: &Block, when: &str) {
        let lane = self.lane;
        assert_eq!(
            ox_owns(block.ptr()),
            1,
            "lane {lane}: ox_owns is false for live {block} ({when})"
        );
        // SAFETY: the block is live.
        let usable = unsafe { ox_usable_size(block.ptr()) };
        assert_eq!(
            usable, block.usable,
            "lane {lane}: ox_usable_size of live {block} changed to {usable} ({when})"
        );
        // SAFETY: the block has `filled <= usable` readable bytes, and only we use it.
        if let Some((offset, expected, found)) =
            unsafe { first_mismatch(block.ptr().cast(), block.tag, 0, block.filled) }
        {
            panic!(
                "lane {lane}: {block} was overwritten ({when}): byte {offset} of {} is \
                 {found:#04x}, not {expected:#04x}",
                block.filled
            );
        }
    }

    fn usable_size(&mut self, slot: usize) {
        let Some(block) = self.slots[slot].as_mut() else {
            // SAFETY: NULL is a valid argument.
            let usable = unsafe { ox_usable_size(std::ptr::null()) };
            assert_eq!(
                usable, 0,
                "lane {}: ox_usable_size(NULL) = {usable}",
                self.lane
            );
            return;
        };
        let block = *block;
        self.check_block(&block, "at UsableSize");
        // The usable bytes are the program's to write: fill them all.
        // SAFETY: the block has `usable` writable bytes, and only we use it.
        unsafe { fill(block.ptr().cast(), block.tag, block.filled, block.usable) };
        if let Some(held) = self.slots[slot].as_mut() {
            held.filled = block.usable;
        }
    }

    fn hand_off(&mut self, slot: usize) {
        let Some(mut block) = self.take(slot) else {
            return;
        };
        self.check_block(&block, "before its hand-off");
        let mut mailbox = lock(&self.shared.mailbox);
        if mailbox.blocks.len() >= MAILBOX_BLOCK_LIMIT
            || mailbox.bytes + block.size > MAILBOX_BUDGET_BYTES
        {
            drop(mailbox);
            self.put(slot, block);
            return;
        }
        block.holder = self.lane;
        mailbox.bytes += block.size;
        mailbox.blocks.push(block);
        self.stats.hand_offs += 1;
    }

    fn adopt(&mut self, slot: usize) {
        let taken = {
            let mut mailbox = lock(&self.shared.mailbox);
            let position = mailbox.blocks.iter().position(|b| b.holder != self.lane);
            position.map(|i| {
                let block = mailbox.blocks.remove(i);
                mailbox.bytes -= block.size;
                block
            })
        };
        let Some(mut block) = taken else {
            return;
        };
        self.stats.adoptions += 1;
        self.clear(slot);
        self.check_block(&block, "after its hand-off");
        block.holder = self.lane;
        if self.fits(block.size) {
            self.put(slot, block);
        } else {
            self.free_block(&block);
        }
    }

    fn heap_check(&self) {
        let result = ox_heap_check();
        assert_eq!(
            result, 0,
            "lane {}: ox_heap_check() = {result} (its message is on stderr)",
            self.lane
        );
    }

    fn trim(&mut self) {
        let result = ox_trim();
        assert!(
            result == 0 || result == 1,
            "lane {}: ox_trim() = {result}",
            self.lane
        );
        for block in self.slots.iter().flatten() {
            self.check_block(block, "after ox_trim");
        }
    }
}

fn slot_index(slot: u16) -> usize {
    usize::from(slot) % SLOT_COUNT
}

/// A thread that applies the actions it is sent, one at a time, on its own model.
struct Lane<'scope> {
    index: usize,
    actions: mpsc::Sender<Action>,
    done: mpsc::Receiver<()>,
    thread: thread::ScopedJoinHandle<'scope, Stats>,
}

impl<'scope> Lane<'scope> {
    fn spawn<'env>(
        scope: &'scope thread::Scope<'scope, 'env>,
        shared: &'env Shared,
        index: usize,
    ) -> Self {
        let (actions, inbox) = mpsc::channel::<Action>();
        let (done_sender, done) = mpsc::channel();
        let thread = scope.spawn(move || {
            let mut model = Model::new(shared, index);
            for action in inbox {
                model.apply(&action);
                if done_sender.send(()).is_err() {
                    break;
                }
            }
            model.finish()
        });
        Lane {
            index,
            actions,
            done,
            thread,
        }
    }

    /// Applies `action` on the lane's thread and waits until it is done.
    fn run(&self, action: Action) {
        let sent = self.actions.send(action).is_ok();
        if !sent || self.done.recv().is_err() {
            panic!("lane {} stopped: see its panic message above", self.index);
        }
    }

    /// Ends the thread (it frees what it holds) and returns its model's figures.
    fn finish(self) -> Stats {
        drop(self.actions);
        match self.thread.join() {
            Ok(stats) => stats,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Runs `actions` in lock step over up to [`LANE_COUNT`] threads: the caller's thread is
/// lane 0, and [`Action::Switch`] sends the following actions to another lane (its thread
/// is started on first use), each applied while the others wait. At the end every lane
/// frees what it holds, lane 0 frees what is left in the mailbox, and the heap is checked.
pub fn run_lanes(actions: &[Action]) -> Stats {
    let shared = Shared::default();
    let stats = thread::scope(|scope| {
        let mut main = Model::new(&shared, 0);
        let mut lanes: Vec<Option<Lane<'_>>> = (1..LANE_COUNT).map(|_| None).collect();
        let mut current = 0;
        for action in actions {
            match *action {
                Action::Switch { lane } => current = usize::from(lane) % LANE_COUNT,
                _ if current == 0 => main.apply(action),
                _ => lanes[current - 1]
                    .get_or_insert_with(|| Lane::spawn(scope, &shared, current))
                    .run(*action),
            }
        }
        let mut stats = Stats::default();
        for lane in lanes.into_iter().flatten() {
            stats.add(&lane.finish());
        }
        main.drain_mailbox();
        stats.add(&main.finish());
        stats
    });
    shared.assert_empty();
    stats
}
