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
//! yet (a remote free is collected at the owner's next slow path).

use crate::abi::extended::OxStats;
use crate::os::OS_PAGE_BYTES;
use crate::process::CTX;
use crate::region_map::{self, Kind, CHUNK_BYTES};
use crate::segment::{SegmentHeader, SLABS_PER_SEGMENT};
use crate::size_class::{self, CLASS_COUNT, SMALL_MAX_BYTES};
use crate::slab::{CURRENT_FLAG, FULL_FLAG, SLAB_BYTES};
use core::sync::atomic::Ordering;

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

    // Medium blocks.
    {
        let buddy = CTX.buddy.lock();
        let m = buddy.census();
        s.medium_live_blocks = m.live_blocks;
        s.medium_live_bytes = m.live_bytes;
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
    crate::stats::for_each_heap(|h| {
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
    s.remote_frees = crate::stats::remote_frees() as usize;
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
