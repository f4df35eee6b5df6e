//! Process-wide statistics counters, kept off the fast paths (every layer may count here;
//! this module uses nothing above the OS layer).
//!
//! What is counted where, and what it costs:
//! - Nothing on the `malloc`/`free` fast paths. Live small blocks are not counted one by one:
//!   the census (`process::census`) reads each slab's live count (`Slab::used`, which the
//!   owner already keeps) at report time, walking the segments through the region map.
//! - Per heap (`heap::counters::HeapStats`, written by the heap's owner with a relaxed load
//!   and store, so readers race with nothing): slow-path allocations per size class
//!   ("refills") and remote frees done by the heap's thread.
//! - Process-wide atomics (here), touched only where the allocator already pays for a
//!   syscall or a global lock: bytes mapped, bytes purged, bytes *held* (assigned slabs,
//!   allocated medium spans, huge mappings) and their peak, threads started and exited,
//!   failed requests.
//!
//! The census gathers the figures (taking the global locks one at a time); the report
//! (`process::report`) prints them at exit (`OXMALLOC_STATS`) and for `malloc_stats`.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);
static PURGED_BYTES: AtomicU64 = AtomicU64::new(0);
static PURGE_COUNT: AtomicU64 = AtomicU64::new(0);
static HELD_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_HELD_BYTES: AtomicUsize = AtomicUsize::new(0);
static THREADS_STARTED: AtomicU64 = AtomicU64::new(0);
static THREADS_EXITED: AtomicU64 = AtomicU64::new(0);
static FAILED_REQUESTS: AtomicU64 = AtomicU64::new(0);

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
    // Never below the current count, which a mapping thread raises before the peak.
    PEAK_MAPPED_BYTES
        .load(Ordering::Relaxed)
        .max(MAPPED_BYTES.load(Ordering::Relaxed))
}

/// Records `bytes` purged (given back to the OS with `madvise`, still mapped).
pub fn add_purged(bytes: usize) {
    PURGED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    PURGE_COUNT.fetch_add(1, Ordering::Relaxed);
}

/// Bytes purged so far, and in how many calls.
pub fn purged() -> (u64, u64) {
    (
        PURGED_BYTES.load(Ordering::Relaxed),
        PURGE_COUNT.load(Ordering::Relaxed),
    )
}

/// Records `bytes` more held for blocks: a slab assigned to a size class, a medium span
/// allocated, a huge block mapped. Keeps the peak.
pub fn held_add(bytes: usize) {
    let now = HELD_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
    if now > PEAK_HELD_BYTES.load(Ordering::Relaxed) {
        PEAK_HELD_BYTES.fetch_max(now, Ordering::Relaxed);
    }
}

/// Records `bytes` no longer held for blocks.
pub fn held_sub(bytes: usize) {
    HELD_BYTES.fetch_sub(bytes, Ordering::Relaxed);
}

/// Records a held range that changed size from `old` to `new` bytes.
pub fn held_resize(old: usize, new: usize) {
    if new >= old {
        held_add(new - old);
    } else {
        held_sub(old - new);
    }
}

/// Bytes held now, and the most ever held at once. Small blocks count by whole slabs, so
/// the peak is an upper bound of the peak of live bytes, tight when slabs are well used.
///
/// A thread raises the count before it raises the peak, so a reader in between could see a
/// peak below the count: the peak returned is never below the count returned.
pub fn held_bytes() -> (usize, usize) {
    let held = HELD_BYTES.load(Ordering::Relaxed);
    (held, PEAK_HELD_BYTES.load(Ordering::Relaxed).max(held))
}

/// A thread got its first heap.
pub fn thread_started() {
    THREADS_STARTED.fetch_add(1, Ordering::Relaxed);
}

/// A thread handed its heap back at exit.
pub fn thread_exited() {
    THREADS_EXITED.fetch_add(1, Ordering::Relaxed);
}

/// Threads started and exited so far (threads that allocated).
pub fn threads() -> (u64, u64) {
    (
        THREADS_STARTED.load(Ordering::Relaxed),
        THREADS_EXITED.load(Ordering::Relaxed),
    )
}

/// An allocating call returned null for lack of memory.
#[cold]
pub fn failed_request() {
    FAILED_REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// Allocating calls that failed for lack of memory.
pub fn failed_requests() -> u64 {
    FAILED_REQUESTS.load(Ordering::Relaxed)
}
