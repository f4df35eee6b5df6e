//! The block allocators: the layer that cuts memory from the OS into blocks, below the
//! per-thread heaps and above the region map and the OS layer.
//!
//! - [`size_class`]: the block sizes of small requests and the O(1) map to them.
//! - [`slab`]: 64 KiB runs of equal blocks (owner-only and shared parts), and the intrusive
//!   slab lists; [`remote_free`]: the lock-free protocol of frees by other threads.
//! - [`segment`]: 4 MiB mappings of 64 slabs, each owned by one heap.
//! - [`buddy`]: medium blocks in whole OS pages, split and merged as powers of two.
//! - [`large`]: huge blocks, one mapping each.
//! - [`SampleRecord`]: what the heap profiler keeps about a sampled block; a huge block
//!   carries one in its header (the other sampled blocks keep theirs in the profiler's own
//!   slots).
//!
//! Nothing here knows about threads or heaps: a segment names its owner as an opaque
//! address, and the heap layer decides what it means.

pub(crate) mod buddy;
pub(crate) mod large;
pub(crate) mod remote_free;
pub(crate) mod segment;
pub(crate) mod size_class;
pub(crate) mod slab;

/// What the heap profiler keeps about a sampled block until it is freed: plain data that
/// the block allocators store and hand back, without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleRecord {
    /// Its stack in the profiler's stack table.
    pub stack: u32,
    /// Requested size.
    pub size: usize,
    /// Its weight in objects (fixed point; see `heap::sampler::Weight`).
    pub objects_fixed: u64,
    /// Its weight in bytes.
    pub bytes: u64,
    /// When it was allocated (the profiler's clock, nanoseconds).
    pub born_ns: u64,
}
