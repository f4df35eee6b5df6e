//! Process-wide counters, kept off the fast paths: they change only when memory is mapped
//! or unmapped. Per-block counts would cost an increment on every malloc and free; the
//! figures users ask for (mapped, medium, huge) are read from the structures instead.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicUsize, Ordering};

static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Records `bytes` newly mapped.
pub fn add_mapped(bytes: usize) {
    let now = MAPPED_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK_MAPPED_BYTES.fetch_max(now, Ordering::Relaxed);
}

/// Records `bytes` unmapped.
pub fn sub_mapped(bytes: usize) {
    MAPPED_BYTES.fetch_sub(bytes, Ordering::Relaxed);
}

/// Bytes currently mapped by the allocator (address space, not resident memory).
pub fn mapped_bytes() -> usize {
    MAPPED_BYTES.load(Ordering::Relaxed)
}

/// The most bytes ever mapped at once.
pub fn peak_mapped_bytes() -> usize {
    PEAK_MAPPED_BYTES.load(Ordering::Relaxed)
}
