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
//!
//! The peak snapshot: what each stack held live at the moment the table's live bytes were
//! highest, kept as the peak moves at O(1) per sample, without copying the table. The
//! table numbers its peaks (`peak_gen`, one more at each new high); a stack's counters
//! remember the generation at which they last saved their live counts (`saved_gen`).
//! Before a stack's live counts change, a stack whose `saved_gen` is not the current one
//! copies its live counts into its peak counts (they have not changed since that peak) and
//! takes the current generation. Its value at the peak is then its peak counts when
//! `saved_gen` is the current generation, its live counts otherwise.

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
    /// Live counts saved at the table's peak (see the module note; read through
    /// [`StackTable::peak_of`]).
    peak: Live,
    /// The peak generation at which `peak` was saved.
    saved_gen: u64,
    /// Sampled blocks freed within [`SHORT_LIVED_NS`] of their allocation, and their
    /// estimated objects and bytes.
    pub short_samples: u64,
    pub short_objects_fixed: u64,
    pub short_bytes: u64,
}

/// Live counts of one stack: sampled blocks, estimated objects (fixed point) and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    pub samples: u64,
    pub objects_fixed: u64,
    pub bytes: u64,
}

/// A sampled block freed within this long of its allocation is counted as short-lived.
pub const SHORT_LIVED_NS: u64 = 1_000_000;

impl Counters {
    fn live(&self) -> Live {
        Live {
            samples: self.inuse_samples,
            objects_fixed: self.inuse_objects_fixed,
            bytes: self.inuse_bytes,
        }
    }

    /// Saves the live counts as the peak's before they change (see the module note).
    fn save_for_peak(&mut self, gen: u64) {
        if self.saved_gen != gen {
            self.peak = self.live();
            self.saved_gen = gen;
        }
    }

    fn count_short_lived(&mut self, w: Weight) {
        self.short_samples += 1;
        self.short_objects_fixed = self.short_objects_fixed.saturating_add(w.objects_fixed);
        self.short_bytes = self.short_bytes.saturating_add(w.bytes);
    }

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
    /// Sum of the live bytes of every stack.
    live_bytes: u64,
    /// The highest `live_bytes` so far, when it was reached, and its generation.
    peak_live_bytes: u64,
    peak_ns: u64,
    peak_gen: u64,
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
                peak: Live {
                    samples: 0,
                    objects_fixed: 0,
                    bytes: 0,
                },
                saved_gen: 0,
                short_samples: 0,
                short_objects_fixed: 0,
                short_bytes: 0,
            },
            live_bytes: 0,
            peak_live_bytes: 0,
            peak_ns: 0,
            peak_gen: 0,
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
                // Not live at any earlier peak: its peak counts (zero) are current.
                entry.counters = Counters {
                    saved_gen: self.peak_gen,
                    ..Counters::default()
                };
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

    /// Counts a sample of stack `id`, taken at `now_ns`; a new high of the live bytes
    /// becomes the peak.
    pub fn add(&mut self, id: StackId, w: Weight, now_ns: u64) {
        let gen = self.peak_gen;
        let Some(c) = self.counters_mut(id) else {
            return;
        };
        c.save_for_peak(gen);
        c.add(w);
        self.live_bytes = self.live_bytes.saturating_add(w.bytes);
        if self.live_bytes > self.peak_live_bytes {
            // Every stack's live counts are now its peak counts.
            self.peak_live_bytes = self.live_bytes;
            self.peak_ns = now_ns;
            self.peak_gen += 1;
        }
    }

    /// Takes a freed sampled block of stack `id` out of the live counts; `short_lived`:
    /// it was freed soon after its allocation.
    pub fn remove(&mut self, id: StackId, w: Weight, short_lived: bool) {
        let gen = self.peak_gen;
        let Some(c) = self.counters_mut(id) else {
            return;
        };
        c.save_for_peak(gen);
        c.remove(w);
        if short_lived {
            c.count_short_lived(w);
        }
        self.live_bytes = self.live_bytes.saturating_sub(w.bytes);
    }

    /// What a stack with counters `c` held live at the peak.
    pub fn peak_of(&self, c: &Counters) -> Live {
        if c.saved_gen == self.peak_gen {
            c.peak
        } else {
            c.live()
        }
    }

    /// The peak: estimated live bytes and when (the `now_ns` of the sample that reached it).
    pub fn peak(&self) -> (u64, u64) {
        (self.peak_live_bytes, self.peak_ns)
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
        t.add(a, w(100), 1);
        t.add(a, w(50), 2);
        t.add(b, w(7), 3);
        t.remove(a, w(100), false);
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
        t.add(OTHER, w(9), 0);
        let mut first = None;
        t.for_each(|c, pcs| {
            if first.is_none() {
                first = Some((pcs.len(), c.alloc_bytes));
            }
        });
        assert_eq!(first, Some((0, 9)));
    }

    /// Each stack's addresses and live bytes at the peak.
    type Snapshot = Vec<(Vec<usize>, u64)>;

    /// The peak snapshot, and the peak itself.
    fn peak_bytes(t: &StackTable) -> (Snapshot, (u64, u64)) {
        let mut seen = Vec::new();
        t.for_each(|c, pcs| seen.push((pcs.to_vec(), t.peak_of(c).bytes)));
        (seen, t.peak())
    }

    #[test]
    fn the_peak_snapshot_follows_the_highest_live_bytes() {
        let mut t = StackTable::new();
        let (a, b, c) = (
            t.find_or_insert(&[1]),
            t.find_or_insert(&[2]),
            t.find_or_insert(&[3]),
        );
        t.add(a, w(100), 10);
        t.add(b, w(50), 20); // live 150: the peak so far
        t.remove(a, w(100), true); // live 50
        t.add(c, w(80), 30); // live 130: below the peak
        let (seen, peak) = peak_bytes(&t);
        assert_eq!(peak, (150, 20));
        assert_eq!(
            seen,
            vec![(vec![1], 100), (vec![2], 50), (vec![3], 0)],
            "the state at the first peak"
        );
        // A stack first seen after the peak holds nothing in it.
        let d = t.find_or_insert(&[4]);
        t.add(d, w(10), 35); // live 140
        assert_eq!(peak_bytes(&t).0[3], (vec![4], 0));
        // Changes after the peak, then a new one: the snapshot is the state at the new one.
        t.remove(b, w(50), false); // live 90
        t.add(a, w(200), 40); // live 290: new peak
        t.add(b, w(5), 50); // live 295: new peak again
        t.remove(c, w(80), false); // live 215
        let (seen, peak) = peak_bytes(&t);
        assert_eq!(peak, (295, 50));
        assert_eq!(
            seen,
            vec![(vec![1], 200), (vec![2], 5), (vec![3], 80), (vec![4], 10)]
        );
        // The live counts are untouched by all this; one short-lived block was counted.
        let mut live = Vec::new();
        t.for_each(|c, _| live.push((c.inuse_bytes, c.short_samples, c.short_bytes)));
        assert_eq!(live, vec![(200, 1, 100), (5, 0, 0), (0, 0, 0), (10, 0, 0)]);
    }
}
