//! Counters that one thread (the owner) writes and any thread may read.
//!
//! A statistics report, `mallinfo2` or `ox_stats_get` reads figures that other threads keep
//! changing (a slab's live count, a heap's slow-path counters). A plain integer read while
//! its owner writes it is a data race; an atomic read-modify-write on every change would
//! cost a locked instruction on the fast path. These types sit in between: the owner
//! updates with a relaxed load and a relaxed store (on x86-64 the same `mov`/`add` a plain
//! integer compiles to, no `lock` prefix), readers use a relaxed load. A reader sees some
//! recent value, never a torn one; only the owner may write, or updates get lost.

use core::ops::{AddAssign, BitAndAssign, BitOrAssign, SubAssign};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A `u32` written by its owner only, readable by any thread.
#[repr(transparent)]
#[derive(Default)]
pub struct OwnerU32(AtomicU32);

impl OwnerU32 {
    /// A counter holding `value`.
    pub const fn new(value: u32) -> Self {
        OwnerU32(AtomicU32::new(value))
    }

    /// The current value (any thread).
    #[inline(always)]
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the value (owner only).
    #[inline(always)]
    pub fn set(&self, value: u32) {
        self.0.store(value, Ordering::Relaxed)
    }
}

// The operators are the owner's updates: a load and a store, not an atomic RMW. Wrapping
// arithmetic: the invariants of the callers keep the values in range, and a checked
// operation would bring a panic path into the allocator.
impl AddAssign<u32> for OwnerU32 {
    #[inline(always)]
    fn add_assign(&mut self, rhs: u32) {
        self.set(self.get().wrapping_add(rhs));
    }
}

impl SubAssign<u32> for OwnerU32 {
    #[inline(always)]
    fn sub_assign(&mut self, rhs: u32) {
        self.set(self.get().wrapping_sub(rhs));
    }
}

impl BitOrAssign<u32> for OwnerU32 {
    #[inline(always)]
    fn bitor_assign(&mut self, rhs: u32) {
        self.set(self.get() | rhs);
    }
}

impl BitAndAssign<u32> for OwnerU32 {
    #[inline(always)]
    fn bitand_assign(&mut self, rhs: u32) {
        self.set(self.get() & rhs);
    }
}

/// A `u64` written by its owner only, readable by any thread.
#[repr(transparent)]
#[derive(Default)]
pub struct OwnerU64(AtomicU64);

impl OwnerU64 {
    /// A counter holding `value`.
    pub const fn new(value: u64) -> Self {
        OwnerU64(AtomicU64::new(value))
    }

    /// The current value (any thread).
    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds `n` (owner only; takes `&self` so that a counter reached through a shared
    /// reference can be bumped by its owner).
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.get().wrapping_add(n), Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_updates() {
        let mut c = OwnerU32::new(5);
        c += 3;
        c -= 1;
        c |= 1 << 31;
        assert_eq!(c.get(), 7 | 1 << 31);
        c &= !(1 << 31);
        assert_eq!(c.get(), 7);
        c.set(0);
        assert_eq!(c.get(), 0);
        let d = OwnerU64::new(1);
        d.add(41);
        assert_eq!(d.get(), 42);
    }
}
