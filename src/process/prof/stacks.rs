//! The stack table: every distinct allocation stack seen in a sample, with its counters.
//!
//! Fixed size, in memory of its own mapped through the OS layer the first time a sample
//! is recorded (never from `malloc`): an index of `INDEX_SLOTS` stack ids, open-addressed
//! by a hash of the return addresses, over a dense array of at most `ENTRY_CAPACITY`
//! entries (576 bytes each: the counters and up to 64 addresses). The index is never more
//! than half full, so a probe always ends at an empty slot. Only the entries in use are
//! touched, so resident memory grows with the number of stacks, not the capacity.
//!
//! Stack id 0 is the depth-0 "[other stacks]" stack, kept outside the mapping: it counts
//! the samples of new stacks once the table is full (or could not be mapped), and those
//! whose stack could not be taken.
//!
//! The table lives under one lock (`super::PROFILE`); sampling is rare enough for that.

use super::capture::MAX_DEPTH;
use crate::heap::sampler::Weight;
use crate::os::{Os, RealOs, OS_PAGE_BYTES};
use core::ptr;

/// Entries the table can hold besides the depth-0 stack.
const ENTRY_CAPACITY: usize = 8192;
/// Index slots (a power of two, twice the entries: the index stays at most half full).
const INDEX_SLOTS: usize = 2 * ENTRY_CAPACITY;
const INDEX_BYTES: usize = INDEX_SLOTS * core::mem::size_of::<u32>();

/// Identifies a stack in the table (kept in the header of each sampled block).
pub type StackId = u32;
/// The depth-0 stack.
pub const OTHER: StackId = 0;
/// Not counted anywhere: a block in sampled memory that a `realloc` left unsampled.
pub const UNCOUNTED: StackId = StackId::MAX;

/// Per-stack counters. Objects are in 1/65536ths (see [`super::sampler::OBJECT_FIXED_SHIFT`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Samples taken.
    pub alloc_samples: u64,
    /// Estimated allocations.
    pub alloc_objects_fixed: u64,
    /// Estimated bytes allocated.
    pub alloc_bytes: u64,
    /// Sampled blocks still live.
    pub inuse_samples: u64,
    /// Estimated live blocks.
    pub inuse_objects_fixed: u64,
    /// Estimated live bytes.
    pub inuse_bytes: u64,
}

impl Counters {
    fn add(&mut self, w: Weight) {
        self.alloc_samples += 1;
        self.alloc_objects_fixed = self.alloc_objects_fixed.saturating_add(w.objects_fixed);
        self.alloc_bytes = self.alloc_bytes.saturating_add(w.bytes);
        self.inuse_samples += 1;
        self.inuse_objects_fixed = self.inuse_objects_fixed.saturating_add(w.objects_fixed);
        self.inuse_bytes = self.inuse_bytes.saturating_add(w.bytes);
    }

    fn remove(&mut self, w: Weight) {
        self.inuse_samples = self.inuse_samples.saturating_sub(1);
        self.inuse_objects_fixed = self.inuse_objects_fixed.saturating_sub(w.objects_fixed);
        self.inuse_bytes = self.inuse_bytes.saturating_sub(w.bytes);
    }
}

#[repr(C)]
struct Entry {
    hash: u64,
    depth: usize,
    counters: Counters,
    pcs: [usize; MAX_DEPTH],
}

/// The table.
pub struct StackTable {
    /// `INDEX_SLOTS` ids (0: empty), then the entries; null until first used.
    index: *mut u32,
    entries: *mut Entry,
    len: usize,
    map_failed: bool,
    other: Counters,
}

// SAFETY: the table owns its mapping; it is only reached through the profile lock, so one
// thread at a time uses the pointers.
unsafe impl Send for StackTable {}

impl Default for StackTable {
    fn default() -> Self {
        Self::new()
    }
}

fn hash(pcs: &[usize]) -> u64 {
    let mut h = pcs.len() as u64 ^ 0x6a09_e667_f3bc_c909;
    for &pc in pcs {
        h = (h ^ pc as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    h
}

impl StackTable {
    /// An empty table (maps nothing yet).
    pub const fn new() -> Self {
        StackTable {
            index: ptr::null_mut(),
            entries: ptr::null_mut(),
            len: 0,
            map_failed: false,
            other: Counters {
                alloc_samples: 0,
                alloc_objects_fixed: 0,
                alloc_bytes: 0,
                inuse_samples: 0,
                inuse_objects_fixed: 0,
                inuse_bytes: 0,
            },
        }
    }

    /// Maps the table on first use; false when the OS refuses.
    fn ensure_mapped(&mut self) -> bool {
        if !self.index.is_null() {
            return true;
        }
        if self.map_failed {
            return false;
        }
        let bytes = INDEX_BYTES + ENTRY_CAPACITY * core::mem::size_of::<Entry>();
        match RealOs.map(bytes, OS_PAGE_BYTES) {
            Some(base) => {
                self.index = base.as_ptr().cast();
                // SAFETY: the mapping holds the index and then the entries; INDEX_BYTES is
                // a multiple of 8, so the entries are aligned.
                self.entries = unsafe { base.as_ptr().add(INDEX_BYTES) }.cast();
                true
            }
            None => {
                self.map_failed = true;
                false
            }
        }
    }

    /// The id of the stack `pcs` (innermost first), added if new; [`OTHER`] for an empty
    /// stack or when the table is full.
    pub fn find_or_insert(&mut self, pcs: &[usize]) -> StackId {
        if pcs.is_empty() || pcs.len() > MAX_DEPTH || !self.ensure_mapped() {
            return OTHER;
        }
        let h = hash(pcs);
        let mut slot = h as usize & (INDEX_SLOTS - 1);
        for _ in 0..INDEX_SLOTS {
            // SAFETY: `slot < INDEX_SLOTS` (masked), inside the mapped index.
            let cell = unsafe { self.index.add(slot) };
            // SAFETY: as above.
            let id = unsafe { *cell };
            if id == 0 {
                if self.len >= ENTRY_CAPACITY {
                    return OTHER;
                }
                // SAFETY: `len < ENTRY_CAPACITY`: a free entry inside the mapping.
                let entry = unsafe { &mut *self.entries.add(self.len) };
                entry.hash = h;
                entry.depth = pcs.len();
                entry.counters = Counters::default();
                for (dst, &src) in entry.pcs.iter_mut().zip(pcs) {
                    *dst = src;
                }
                self.len += 1;
                // `len <= ENTRY_CAPACITY` fits a u32.
                let id = self.len as StackId;
                // SAFETY: as for `cell` above.
                unsafe { *cell = id };
                return id;
            }
            if let Some(entry) = self.entry(id) {
                if entry.hash == h && entry.pcs.get(..entry.depth) == Some(pcs) {
                    return id;
                }
            }
            slot = (slot + 1) & (INDEX_SLOTS - 1);
        }
        OTHER
    }

    fn entry(&self, id: StackId) -> Option<&Entry> {
        let i = (id as usize).checked_sub(1)?;
        // SAFETY: entries below `len` are initialised, inside the mapping.
        (i < self.len).then(|| unsafe { &*self.entries.add(i) })
    }

    fn counters_mut(&mut self, id: StackId) -> Option<&mut Counters> {
        if id == OTHER {
            return Some(&mut self.other);
        }
        let i = (id as usize).checked_sub(1)?;
        // SAFETY: entries below `len` are initialised, inside the mapping; `&mut self`
        // makes the reference unique.
        (i < self.len).then(|| unsafe { &mut (*self.entries.add(i)).counters })
    }

    /// Counts a sample of stack `id`.
    pub fn add(&mut self, id: StackId, w: Weight) {
        if let Some(c) = self.counters_mut(id) {
            c.add(w);
        }
    }

    /// Takes a freed sampled block of stack `id` out of the live counts.
    pub fn remove(&mut self, id: StackId, w: Weight) {
        if let Some(c) = self.counters_mut(id) {
            c.remove(w);
        }
    }

    /// Calls `f` with the counters and the addresses of every stack with samples, the
    /// depth-0 stack first.
    pub fn for_each(&self, mut f: impl FnMut(&Counters, &[usize])) {
        if self.other.alloc_samples > 0 {
            f(&self.other, &[]);
        }
        for id in 1..=self.len {
            match self.entry(id as StackId) {
                // A stack whose block could not be served has no sample.
                Some(e) if e.counters.alloc_samples > 0 => {
                    f(&e.counters, e.pcs.get(..e.depth).unwrap_or(&[]))
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(bytes: u64) -> Weight {
        Weight {
            objects_fixed: 1 << 16,
            bytes,
        }
    }

    #[test]
    fn same_stack_same_id_and_counters_add_up() {
        let mut t = StackTable::new();
        let a = t.find_or_insert(&[1, 2, 3]);
        let b = t.find_or_insert(&[1, 2, 4]);
        assert_ne!(a, OTHER);
        assert_ne!(a, b);
        assert_eq!(t.find_or_insert(&[1, 2, 3]), a);
        assert_eq!(t.find_or_insert(&[]), OTHER);
        t.add(a, w(100));
        t.add(a, w(50));
        t.add(b, w(7));
        t.remove(a, w(100));
        let mut seen = Vec::new();
        t.for_each(|c, pcs| seen.push((pcs.to_vec(), *c)));
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, vec![1, 2, 3]);
        assert_eq!(seen[0].1.alloc_samples, 2);
        assert_eq!(seen[0].1.alloc_bytes, 150);
        assert_eq!(seen[0].1.inuse_samples, 1);
        assert_eq!(seen[0].1.inuse_bytes, 50);
        assert_eq!(seen[1].1.inuse_bytes, 7);
    }

    #[test]
    fn full_table_counts_new_stacks_as_other() {
        let mut t = StackTable::new();
        for i in 0..ENTRY_CAPACITY {
            assert_ne!(t.find_or_insert(&[i + 1, 7]), OTHER);
        }
        assert_eq!(t.find_or_insert(&[0xdead, 7]), OTHER);
        // Known stacks are still found.
        assert_eq!(t.find_or_insert(&[5, 7]), 5);
        t.add(OTHER, w(9));
        let mut first = None;
        t.for_each(|c, pcs| {
            if first.is_none() {
                first = Some((pcs.len(), c.alloc_bytes));
            }
        });
        assert_eq!(first, Some((0, 9)));
    }
}
