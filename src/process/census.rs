//! The census: every figure of the statistics, gathered at the moment it is asked for.
//!
//! Small blocks are counted from the slabs themselves: the region map lists every slab
//! segment, and each slab's metadata in its segment header holds its block size and live
//! count (`Slab::used`, written by the owner with plain stores on relaxed atomics). The walk
//! holds the segment pool's lock, the only lock under which segments are mapped or unmapped,
//! so every header it reads stays mapped; it takes no other lock meanwhile. The buddy arena
//! and the huge allocator are counted under their own locks, one after the other, so the
//! figures are each exact but not one atomic snapshot: a program that allocates while it
//! asks may see them disagree by what it did in between.
//!
//! Live counts include blocks freed by other threads that their owner has not collected
//! yet (a remote free is collected at the owner's next slow path), and the blocks the heap
//! profiler sampled: huge ones are huge blocks; the others, in the profiler's slots, count
//! as the small or medium block each would have been (`prof::blocks::live_figures`).

use crate::block::segment::{SegmentHeader, SLABS_PER_SEGMENT};
use crate::block::size_class::{self, CLASS_COUNT, SMALL_MAX_BYTES};
use crate::block::slab::{CURRENT_FLAG, FULL_FLAG, SLAB_BYTES};
use crate::os::OS_PAGE_BYTES;
use crate::process::CTX;
use crate::region_map::{self, Kind, CHUNK_BYTES};
use core::sync::atomic::Ordering;

/// Figures about the allocator, filled in by `ox_stats_get` (C) and returned by
/// `oxmalloc::stats()` (Rust, as `oxmalloc::Stats`).
///
/// They are gathered when asked for: small blocks are counted by walking every slab, medium
/// and huge ones under their allocators' locks. Each figure is exact when taken, but a
/// program that allocates in other threads meanwhile may see them disagree slightly. Live
/// counts include blocks freed by other threads that their owner has not collected yet.
/// Fields are only ever added at the end.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct OxStats {
    /// Bytes of address space mapped by the allocator.
    pub mapped_bytes: usize,
    /// The most bytes ever mapped at once.
    pub peak_mapped_bytes: usize,
    /// Bytes in allocated medium (buddy) blocks, live or parked in a thread's cache.
    pub medium_allocated_bytes: usize,
    /// Bytes mapped for live huge blocks (whole mappings: the header OS page included).
    pub huge_live_bytes: usize,
    /// Bytes of freed huge mappings kept for reuse.
    pub huge_cached_bytes: usize,
    /// Thread heaps created so far.
    pub heaps_created: usize,
    /// Heaps of exited threads waiting to be adopted.
    pub heaps_abandoned: usize,
    /// Bytes in live blocks: small blocks at their size class's block size, medium blocks
    /// in whole OS pages, huge blocks as `huge_live_bytes`.
    pub live_bytes: usize,
    /// Live blocks.
    pub live_blocks: usize,
    /// Bytes in live small blocks (up to 16 KiB).
    pub small_live_bytes: usize,
    /// Live small blocks.
    pub small_live_blocks: usize,
    /// Bytes in live medium blocks (up to 1 MiB).
    pub medium_live_bytes: usize,
    /// Live medium blocks.
    pub medium_live_blocks: usize,
    /// Live huge blocks.
    pub huge_live_blocks: usize,
    /// Bytes mapped and not in live blocks (free blocks, spare slabs, free spans, caches,
    /// the allocator's metadata): `mapped_bytes - live_bytes`.
    pub free_bytes: usize,
    /// Bytes held for blocks now: slabs assigned to a size class, allocated medium blocks,
    /// live huge mappings.
    pub held_bytes: usize,
    /// The most bytes ever held at once: an upper bound of the peak of live bytes (small
    /// blocks count by whole 64 KiB slabs; counting them one by one would cost every
    /// `malloc`).
    pub peak_held_bytes: usize,
    /// Bytes of the allocator's mappings resident in memory (by `mincore`).
    pub resident_bytes: usize,
    /// Bytes given back to the OS with `madvise` so far (still mapped).
    pub purged_bytes: usize,
    /// `madvise` calls that gave memory back.
    pub purge_count: usize,
    /// 4 MiB slab segments mapped (pooled ones included).
    pub segments: usize,
    /// Unused segments kept for reuse.
    pub pooled_segments: usize,
    /// 64 KiB slabs assigned to a size class.
    pub slabs: usize,
    /// Medium blocks freed and parked in threads' caches.
    pub medium_cached_blocks: usize,
    /// Their bytes.
    pub medium_cached_bytes: usize,
    /// Bytes in free medium spans.
    pub medium_free_bytes: usize,
    /// 4 MiB medium regions mapped.
    pub medium_regions: usize,
    /// Freed huge mappings kept for reuse.
    pub huge_cached_count: usize,
    /// Abandoned heaps adopted by new threads.
    pub heaps_adopted: usize,
    /// Threads that got a heap (a thread gets one at its first small allocation).
    pub threads_started: usize,
    /// Of those, threads that exited (and handed their heap back).
    pub threads_exited: usize,
    /// Frees of a block by a thread other than its owner.
    pub remote_frees: usize,
    /// Allocating calls that returned NULL for lack of memory.
    pub failed_requests: usize,
}

/// Figures of one size class.
#[derive(Clone, Copy, Default, Debug)]
pub struct ClassFigures {
    /// Block size of the class.
    pub block_bytes: usize,
    /// Slabs assigned to the class.
    pub slabs: usize,
    /// Live blocks in those slabs.
    pub live_blocks: usize,
    /// Allocations of the class that took the slow path, over the process's life.
    pub refills: u64,
}

impl ClassFigures {
    /// Bytes in live blocks.
    pub fn live_bytes(&self) -> usize {
        self.live_blocks * self.block_bytes
    }

    /// Bytes of the class's slabs.
    pub fn held_bytes(&self) -> usize {
        self.slabs * SLAB_BYTES
    }

    /// Bytes of the class's slabs not in live blocks: free blocks, blocks never handed out,
    /// and the tail of each slab too small for a block.
    pub fn waste_bytes(&self) -> usize {
        self.held_bytes().saturating_sub(self.live_bytes())
    }
}

/// Everything the reports print.
#[derive(Clone, Copy, Debug)]
pub struct Census {
    /// The flat figures (what `ox_stats_get` and `oxmalloc::stats()` return).
    pub stats: OxStats,
    /// Per size class.
    pub classes: [ClassFigures; CLASS_COUNT],
}

/// Bytes of `[base, base + bytes)` resident in memory, by `mincore(2)` (which only reads
/// page tables: a range unmapped meanwhile gives an error, never a fault).
fn resident_in(base: usize, bytes: usize) -> usize {
    const STEP_PAGES: usize = 1024;
    let mut flags = [0u8; STEP_PAGES];
    let mut total = 0;
    let mut at = base;
    let end = base.saturating_add(bytes);
    while at < end {
        let len = (end - at).min(STEP_PAGES * OS_PAGE_BYTES);
        let pages = len.div_ceil(OS_PAGE_BYTES);
        // SAFETY: mincore only reads the page tables of the range and writes one byte per
        // OS page of it into `flags`, which has room for `STEP_PAGES >= pages` bytes.
        let rc = unsafe { libc::mincore(at as *mut libc::c_void, len, flags.as_mut_ptr()) };
        if rc == 0 {
            total += flags.iter().take(pages).filter(|&&f| f & 1 != 0).count() * OS_PAGE_BYTES;
        }
        at += len;
    }
    total
}

/// Gathers every figure. With `resident`, also measures resident memory with `mincore`
/// (one system call per 4 MiB mapped); otherwise `resident_bytes` is 0.
pub fn take(resident: bool) -> Census {
    // mincore must not change the program's errno.
    crate::os::real::keep_errno(|| take_now(resident))
}

fn take_now(resident: bool) -> Census {
    let mut classes = [ClassFigures::default(); CLASS_COUNT];
    for (i, c) in classes.iter_mut().enumerate() {
        c.block_bytes = size_class::SizeClass::from_index(i).map_or(0, |s| s.block_bytes());
    }
    let mut s = OxStats::default();
    let mut covered = 0usize;
    let mut resident_bytes = 0usize;

    // Small blocks: every slab of every segment.
    {
        let pool = CTX.segments.lock();
        s.pooled_segments = pool.len();
        region_map::for_each_marked(|chunk, kind| {
            if kind != Kind::Slab {
                return;
            }
            s.segments += 1;
            let seg = chunk as *mut SegmentHeader;
            for i in 1..SLABS_PER_SEGMENT {
                let slab = SegmentHeader::slab_of(seg, chunk + i * SLAB_BYTES);
                // SAFETY: the region map marks a live segment, which stays mapped while the
                // segment pool's lock is held; `block_bytes` and `used` are atomics.
                let (block_bytes, used) = unsafe {
                    (
                        (*slab).block_bytes.load(Ordering::Relaxed) as usize,
                        (*slab).used.get() & !(FULL_FLAG | CURRENT_FLAG),
                    )
                };
                if block_bytes == 0 || block_bytes > SMALL_MAX_BYTES {
                    continue;
                }
                let class = size_class::class_of(block_bytes).index();
                if let Some(c) = classes
                    .get_mut(class)
                    .filter(|c| c.block_bytes == block_bytes)
                {
                    c.slabs += 1;
                    c.live_blocks += used as usize;
                }
            }
            if resident {
                resident_bytes += resident_in(chunk, CHUNK_BYTES);
            }
            covered += CHUNK_BYTES;
        });
    }
    for c in &classes {
        s.slabs += c.slabs;
        s.small_live_blocks += c.live_blocks;
        s.small_live_bytes += c.live_bytes();
    }
    // Blocks sampled by the heap profiler into its slots, as the small or medium blocks
    // they would have been (huge sampled blocks are ordinary huge blocks, counted below).
    // They are not in the per-class table, which counts slabs.
    let sampled = crate::process::prof::blocks::live_figures();
    s.small_live_blocks += sampled.small_blocks;
    s.small_live_bytes += sampled.small_bytes;

    // Medium blocks.
    {
        let buddy = CTX.buddy.lock();
        let m = buddy.census();
        s.medium_live_blocks = m.live_blocks + sampled.medium_blocks;
        s.medium_live_bytes = m.live_bytes + sampled.medium_bytes;
        s.medium_cached_blocks = m.cached_blocks;
        s.medium_cached_bytes = m.cached_bytes;
        s.medium_allocated_bytes = m.live_bytes + m.cached_bytes;
        s.medium_free_bytes = m.free_bytes;
        s.medium_regions = m.regions;
        covered += m.regions * CHUNK_BYTES;
        if resident {
            region_map::for_each_marked(|chunk, kind| {
                if kind == Kind::Buddy {
                    resident_bytes += resident_in(chunk, CHUNK_BYTES);
                }
            });
        }
    }

    // Huge blocks: each live one marks exactly one chunk.
    {
        let large = CTX.large.lock();
        s.huge_live_bytes = large.live_bytes();
        s.huge_cached_bytes = large.cached_bytes();
        s.huge_cached_count = large.cached_count();
        region_map::for_each_marked(|chunk, kind| {
            if kind != Kind::Huge && kind != Kind::HugeFar {
                return;
            }
            s.huge_live_blocks += 1;
            if resident {
                if let Some((base, bytes)) = large.mapping_in_chunk(chunk, kind) {
                    resident_bytes += resident_in(base, bytes);
                }
            }
        });
        if resident {
            large.for_each_cached(|base, bytes| resident_bytes += resident_in(base, bytes));
        }
        covered += s.huge_live_bytes + s.huge_cached_bytes;
    }

    {
        let heaps = CTX.heaps.lock();
        s.heaps_created = heaps.created();
        s.heaps_abandoned = heaps.abandoned_count();
        s.heaps_adopted = heaps.adopted();
    }
    crate::heap::counters::for_each_heap(|h| {
        for (c, r) in classes.iter_mut().zip(h.refills.iter()) {
            c.refills += r.get();
        }
    });

    s.mapped_bytes = crate::stats::mapped_bytes();
    s.peak_mapped_bytes = crate::stats::peak_mapped_bytes();
    (s.held_bytes, s.peak_held_bytes) = crate::stats::held_bytes();
    let (purged_bytes, purge_count) = crate::stats::purged();
    s.purged_bytes = purged_bytes as usize;
    s.purge_count = purge_count as usize;
    let (started, exited) = crate::stats::threads();
    s.threads_started = started as usize;
    s.threads_exited = exited as usize;
    s.remote_frees = crate::heap::counters::remote_frees() as usize;
    s.failed_requests = crate::stats::failed_requests() as usize;
    s.live_blocks = s.small_live_blocks + s.medium_live_blocks + s.huge_live_blocks;
    s.live_bytes = s.small_live_bytes + s.medium_live_bytes + s.huge_live_bytes;
    s.free_bytes = s.mapped_bytes.saturating_sub(s.live_bytes);
    if resident {
        // The rest of what is mapped (heaps, the allocator's own metadata) counts whole.
        s.resident_bytes = resident_bytes + s.mapped_bytes.saturating_sub(covered);
    }
    Census { stats: s, classes }
}
