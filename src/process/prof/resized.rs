//! Sampled medium blocks that a sampled `realloc` left in the buddy arena.
//!
//! A `realloc` that the profiler samples used to move its block into a profiler slot, so
//! that the block's record had a header to live in. For a vector grown by doubling through
//! medium sizes that meant one copy of the whole block per sample where the buddy arena
//! would have grown it in place (`realloc` workload: 18% more CPU time with profiling on,
//! about 2,200 copies of 64 KiB–1 MiB blocks). Such a block now stays where the arena puts
//! it, and its record is kept
//! here, in a small table keyed by the block's address; `free` of a medium block and
//! `realloc` of one look it up only while the table holds any record (one relaxed load
//! otherwise, off the small-block paths).
//!
//! The table is an open-addressing hash table with linear probing and backward-shift
//! deletion (no tombstones, so a lookup of an absent address stops at the first empty
//! entry however many records came and went), in a static array: it allocates nothing.
//! When it is three-quarters full, the caller moves the block into a slot as before.
//! Its lock nests no other lock of ours and is in the fork lock list.

use super::blocks::BlockInfo;
use crate::sync::Mutex;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Entries of the table (a power of two): at most three-quarters of them hold records.
const CAPACITY: usize = 1024;
const MAX_RECORDS: usize = CAPACITY / 4 * 3;
/// An empty entry's address (no block starts at 0).
const EMPTY: usize = 0;

#[derive(Clone, Copy)]
struct Entry {
    addr: usize,
    info: BlockInfo,
}

const EMPTY_ENTRY: Entry = Entry {
    addr: EMPTY,
    info: BlockInfo {
        stack: 0,
        size: 0,
        objects_fixed: 0,
        bytes: 0,
        born_ns: 0,
    },
};

/// The records, by block address.
pub struct Table {
    entries: [Entry; CAPACITY],
    len: usize,
}

/// The process's table.
pub static TABLE: Mutex<Table> = Mutex::new(Table::new());

/// Records in [`TABLE`] (written under its lock): while 0, frees and reallocs of medium
/// blocks skip the lock. A block's record is inserted before the program can hand the
/// block to another thread, so a thread that frees it sees the count that covers it.
static RECORDS: AtomicUsize = AtomicUsize::new(0);

fn home(addr: usize) -> usize {
    // Medium blocks start on OS pages: the bits above the page offset, mixed.
    ((addr >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) & (CAPACITY - 1)
}

impl Table {
    const fn new() -> Self {
        Table {
            entries: [EMPTY_ENTRY; CAPACITY],
            len: 0,
        }
    }

    /// Records `info` for the block at `addr` (not yet recorded); false when the table is
    /// as full as it may be.
    fn insert(&mut self, addr: usize, info: BlockInfo) -> bool {
        if self.len >= MAX_RECORDS || addr == EMPTY {
            return false;
        }
        let mut i = home(addr);
        while self.entries[i].addr != EMPTY {
            i = (i + 1) & (CAPACITY - 1);
        }
        self.entries[i] = Entry { addr, info };
        self.len += 1;
        true
    }

    /// Takes the record of the block at `addr` out of the table, if it has one.
    fn take(&mut self, addr: usize) -> Option<BlockInfo> {
        let mut i = home(addr);
        loop {
            let e = self.entries[i];
            if e.addr == EMPTY {
                return None;
            }
            if e.addr == addr {
                break;
            }
            i = (i + 1) & (CAPACITY - 1);
        }
        let found = self.entries[i].info;
        // Backward shift: move later entries of the probe run into the hole when their
        // home is not after it (cyclically), so that every entry stays reachable from its
        // home without passing an empty one.
        let mut hole = i;
        let mut j = (i + 1) & (CAPACITY - 1);
        while self.entries[j].addr != EMPTY {
            let h = home(self.entries[j].addr);
            // Distance from the home to j, and from the hole to j, along the probe order.
            let from_home = j.wrapping_sub(h) & (CAPACITY - 1);
            let from_hole = j.wrapping_sub(hole) & (CAPACITY - 1);
            if from_home >= from_hole {
                self.entries[hole] = self.entries[j];
                hole = j;
            }
            j = (j + 1) & (CAPACITY - 1);
        }
        self.entries[hole] = EMPTY_ENTRY;
        self.len -= 1;
        Some(found)
    }
}

/// Records `info` for the medium block at `addr`; false when the table is full.
pub fn insert(addr: usize, info: BlockInfo) -> bool {
    let mut table = TABLE.lock();
    let ok = table.insert(addr, info);
    RECORDS.store(table.len, Ordering::Relaxed);
    ok
}

/// Takes out the record of the medium block at `addr`, if it has one (before the block
/// is freed or resized).
#[inline]
pub fn take(addr: usize) -> Option<BlockInfo> {
    if RECORDS.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut table = TABLE.lock();
    let found = table.take(addr);
    RECORDS.store(table.len, Ordering::Relaxed);
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    fn info(stack: u32) -> BlockInfo {
        BlockInfo {
            stack,
            ..EMPTY_ENTRY.info
        }
    }

    #[test]
    fn records_come_back_once_whatever_the_order() {
        let mut t = Box::new(Table::new());
        // Addresses that share homes (multiples of CAPACITY pages apart) and ones that do not.
        let addrs: Vec<usize> = (1..=300)
            .map(|k| {
                if k % 3 == 0 {
                    0x7f00_0000_0000 + k * CAPACITY * 4096
                } else {
                    0x7f00_0000_0000 + k * 4096
                }
            })
            .collect();
        for (k, &a) in addrs.iter().enumerate() {
            assert!(t.insert(a, info(k as u32)));
        }
        assert_eq!(t.take(0x1000), None, "never recorded");
        // Take every other one, then check the rest are all still found.
        for (k, &a) in addrs.iter().enumerate().step_by(2) {
            assert_eq!(t.take(a).map(|i| i.stack), Some(k as u32));
            assert_eq!(t.take(a), None, "taken once");
        }
        for (k, &a) in addrs.iter().enumerate().skip(1).step_by(2) {
            assert_eq!(t.take(a).map(|i| i.stack), Some(k as u32), "{a:x}");
        }
        assert_eq!(t.len, 0);
        assert!(t.entries.iter().all(|e| e.addr == EMPTY));
    }

    #[test]
    fn a_full_table_refuses() {
        let mut t = Box::new(Table::new());
        for k in 0..MAX_RECORDS {
            assert!(t.insert(0x10_0000 + k * 4096, info(1)));
        }
        assert!(!t.insert(0x9000_0000, info(2)));
        assert!(t.take(0x10_0000).is_some());
        assert!(t.insert(0x9000_0000, info(2)));
    }
}
