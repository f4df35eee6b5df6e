//! The block allocators: the layer that cuts memory from the OS into blocks, below the
//! per-thread heaps and above the region map and the OS layer.
//!
//! - [`size_class`]: the block sizes of small requests and the O(1) map to them.
//! - [`slab`]: 64 KiB runs of equal blocks (owner-only and shared parts), and the intrusive
//!   slab lists; [`remote_free`]: the lock-free protocol of frees by other threads.
//! - [`segment`]: 4 MiB mappings of 64 slabs, each owned by one heap.
//! - [`buddy`]: medium blocks in whole OS pages, split and merged as powers of two.
//! - [`large`]: huge blocks, one mapping each.
//!
//! Nothing here knows about threads or heaps: a segment names its owner as an opaque
//! address, and the heap layer decides what it means.

pub(crate) mod buddy;
pub(crate) mod large;
pub(crate) mod remote_free;
pub(crate) mod segment;
pub(crate) mod size_class;
pub(crate) mod slab;
