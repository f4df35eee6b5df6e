//! Segments: 4 MiB, 4 MiB-aligned mappings cut into 64 slabs of 64 KiB, owned by one heap.
//!
//! ```text
//! segment base (4 MiB aligned)
//! ├── slab 0: SegmentHeader { owner, slabs[64] ... }  (metadata; never holds blocks)
//! ├── slab 1: blocks of one size class
//! ├── ...
//! └── slab 63
//! ```
//! `free(p)` finds the header at `p & !(4 MiB - 1)` and the slab's metadata at
//! `slabs[(p >> 16) & 63]`. Only the header's first OS pages are ever touched in slab 0.
//!
//! The [`SegmentPool`] keeps a few unused segments (already purged) for reuse by any heap
//! and returns the rest to the OS.

use crate::block::slab::{Slab, State, SLAB_BYTES, SLAB_SHIFT};
use crate::list::{Links, List, Node};
use crate::os::{Os, OS_PAGE_BYTES};
use crate::region_map::{self, Kind, CHUNK_BYTES};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

/// Bytes in a segment (= the region-map chunk).
pub const SEGMENT_BYTES: usize = CHUNK_BYTES;
/// Slabs per segment, including the metadata slab 0.
pub const SLABS_PER_SEGMENT: usize = SEGMENT_BYTES / SLAB_BYTES;
/// Unused segments the pool keeps mapped for reuse.
const POOL_KEEP: usize = 4;

/// The header at the base of a segment.
#[repr(C)]
pub struct SegmentHeader {
    /// The owner: the address of the heap that owns the segment (heaps are never freed, so
    /// the heap layer may always follow it). Opaque here: this layer sits below heaps.
    pub owner: AtomicUsize,
    /// Slabs assigned to a size class (not spare, not metadata).
    pub assigned_slabs: u32,
    /// Links in the owning heap's segment list, or in the pool.
    pub links: Links<SegmentHeader>,
    /// Slab metadata; `slabs[0]` describes the header slab itself.
    pub slabs: [Slab; SLABS_PER_SEGMENT],
}

const _: () = assert!(core::mem::size_of::<SegmentHeader>() <= SLAB_BYTES);

impl SegmentHeader {
    /// The header of the segment holding `addr` (not checked against the region map).
    #[inline(always)]
    pub fn of(addr: usize) -> *mut SegmentHeader {
        region_map::chunk_base(addr) as *mut SegmentHeader
    }

    /// The metadata of the slab holding `addr`, in the segment `segment` (address
    /// arithmetic only; nothing is read).
    #[inline(always)]
    pub fn slab_of(segment: *mut SegmentHeader, addr: usize) -> *mut Slab {
        let index = (addr >> SLAB_SHIFT) & (SLABS_PER_SEGMENT - 1);
        (segment as usize
            + core::mem::offset_of!(SegmentHeader, slabs)
            + index * core::mem::size_of::<Slab>()) as *mut Slab
    }

    /// Writes a fresh header for a segment at `base` with no owner yet: slab 0 is metadata,
    /// the rest spare.
    ///
    /// # Safety
    /// `base` must be a segment mapping of ours that holds no live block.
    pub unsafe fn init(base: NonNull<u8>) -> *mut SegmentHeader {
        let seg = base.as_ptr().cast::<SegmentHeader>();
        // SAFETY: the header fits in slab 0 of the mapping (checked at compile time) and
        // nothing else uses the mapping yet.
        unsafe {
            ptr::addr_of_mut!((*seg).owner).write(AtomicUsize::new(0));
            ptr::addr_of_mut!((*seg).assigned_slabs).write(0);
            ptr::addr_of_mut!((*seg).links).write(Links::new());
            for i in 0..SLABS_PER_SEGMENT {
                let slab = Self::slab_of(seg, base.as_ptr() as usize + i * SLAB_BYTES);
                slab.write(Slab::new_unassigned(base.as_ptr().add(i * SLAB_BYTES)));
                if i == 0 {
                    (*slab).local().state = State::Metadata;
                }
            }
        }
        seg
    }

    /// The owning heap.
    ///
    /// # Safety
    /// `segment` must be a live segment header (the region map says so).
    #[inline(always)]
    pub unsafe fn owner(segment: *mut SegmentHeader) -> usize {
        // SAFETY: the caller guarantees a live segment header.
        unsafe { (*segment).owner.load(Ordering::Relaxed) }
    }
}

// SAFETY: the links are a field of the header, found by address arithmetic alone; each
// segment has its own header.
unsafe impl Node for SegmentHeader {
    fn links(seg: *mut SegmentHeader) -> *mut Links<SegmentHeader> {
        seg.cast::<u8>()
            .wrapping_add(core::mem::offset_of!(SegmentHeader, links))
            .cast()
    }
}

/// Unused segments kept for reuse (global, under a lock).
pub struct SegmentPool {
    segments: List<SegmentHeader>,
}

// SAFETY: the pool only holds addresses of segments no thread uses; it is always accessed
// under its Mutex.
unsafe impl Send for SegmentPool {}

impl Default for SegmentPool {
    fn default() -> Self {
        Self::new()
    }
}

impl SegmentPool {
    /// An empty pool.
    pub const fn new() -> Self {
        SegmentPool {
            segments: List::new(),
        }
    }

    /// Segments in the pool.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// A segment for `owner` (a heap's address): a pooled one or a new mapping. Its header
    /// is fresh; its slabs
    /// read as zeros.
    pub fn acquire<O: Os>(&mut self, os: &O, owner: usize) -> Option<*mut SegmentHeader> {
        let pooled = self.segments.pop_front();
        let base = if pooled.is_null() {
            let base = os.map(SEGMENT_BYTES, SEGMENT_BYTES)?;
            region_map::set(base.as_ptr() as usize, Kind::Slab);
            base
        } else {
            NonNull::new(pooled.cast::<u8>())?
        };
        // SAFETY: a new or pooled segment holds no live block. The header is written before
        // the heap hands out any block, and the map kind was set before any pointer into
        // the segment exists.
        let seg = unsafe { SegmentHeader::init(base) };
        // SAFETY: `seg` is the header just written.
        unsafe { (*seg).owner.store(owner, Ordering::Release) };
        Some(seg)
    }

    /// Takes back a segment none of whose slabs is assigned. Its memory is purged; beyond
    /// [`POOL_KEEP`] segments it is unmapped.
    ///
    /// # Safety
    /// `seg` must be a segment of ours with no live block, not on any list, and not used
    /// again by the caller.
    pub unsafe fn release<O: Os>(&mut self, os: &O, seg: *mut SegmentHeader) {
        let base = seg as usize;
        if self.segments.len() >= POOL_KEEP {
            region_map::clear(base);
            // SAFETY: the caller gives up the whole segment mapping.
            unsafe { os.unmap(NonNull::new_unchecked(seg.cast()), SEGMENT_BYTES) };
            return;
        }
        // Purge everything but the header's first OS page(s); slabs that were purged before
        // cost the kernel little to purge again.
        let header_bytes = core::mem::size_of::<SegmentHeader>().next_multiple_of(OS_PAGE_BYTES);
        // SAFETY: the range lies in our segment and holds no live block.
        unsafe {
            os.purge(
                NonNull::new_unchecked((base + header_bytes) as *mut u8),
                SEGMENT_BYTES - header_bytes,
            );
            // The segment is on no list: the caller gave it up.
            self.segments.push_front(seg);
        }
    }

    /// Unmaps every pooled segment (for trim). Returns the bytes given back.
    pub fn drain<O: Os>(&mut self, os: &O) -> usize {
        let mut released = 0;
        loop {
            let seg = self.segments.pop_front();
            if seg.is_null() {
                return released;
            }
            region_map::clear(seg as usize);
            // SAFETY: pooled segments are whole mappings of ours, unused.
            unsafe { os.unmap(NonNull::new_unchecked(seg.cast()), SEGMENT_BYTES) };
            released += SEGMENT_BYTES;
        }
    }
}
