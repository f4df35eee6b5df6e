//! A fake OS for tests: real memory underneath, but it can refuse mappings on a script
//! (the n-th `map` from now, or every `map` while "exhausted"), and it counts what is
//! mapped and purged so a test can see that nothing leaked; its clock moves only when the
//! test says so.

use super::{real::RealOs, Os};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};

/// A failure-injecting [`Os`] over [`RealOs`].
#[derive(Default)]
pub struct FakeOs {
    /// Counts down on every `map`; the call that takes it from 1 to 0 fails. 0 = off.
    fail_countdown: AtomicUsize,
    /// While set, every `map` and every growing `resize_in_place` fails.
    exhausted: AtomicBool,
    /// `map` calls so far (successful or not).
    map_calls: AtomicUsize,
    /// Bytes currently mapped through this fake.
    live_bytes: AtomicIsize,
    /// `purge` calls so far.
    purge_calls: AtomicUsize,
    /// Bytes purged so far.
    purged_bytes: AtomicUsize,
    /// The clock (`now_ms`), moved only by the test.
    clock_ms: AtomicU64,
}

impl FakeOs {
    /// A fake that refuses nothing until told to.
    pub const fn new() -> Self {
        FakeOs {
            fail_countdown: AtomicUsize::new(0),
            exhausted: AtomicBool::new(false),
            map_calls: AtomicUsize::new(0),
            live_bytes: AtomicIsize::new(0),
            purge_calls: AtomicUsize::new(0),
            purged_bytes: AtomicUsize::new(0),
            clock_ms: AtomicU64::new(1000),
        }
    }

    /// Moves the clock forward by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.clock_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Number of `purge` calls so far.
    pub fn purge_calls(&self) -> usize {
        self.purge_calls.load(Ordering::SeqCst)
    }

    /// Bytes purged so far.
    pub fn purged_bytes(&self) -> usize {
        self.purged_bytes.load(Ordering::SeqCst)
    }

    /// Makes the `n`-th `map` from now fail (1 = the next one); 0 turns it off.
    pub fn fail_nth_map(&self, n: usize) {
        self.fail_countdown.store(n, Ordering::SeqCst);
    }

    /// While `on`, every request for more memory fails.
    pub fn set_exhausted(&self, on: bool) {
        self.exhausted.store(on, Ordering::SeqCst);
    }

    /// Number of `map` calls so far.
    pub fn map_calls(&self) -> usize {
        self.map_calls.load(Ordering::SeqCst)
    }

    /// Bytes mapped through this fake and not yet unmapped.
    pub fn live_bytes(&self) -> isize {
        self.live_bytes.load(Ordering::SeqCst)
    }

    fn should_fail(&self) -> bool {
        self.map_calls.fetch_add(1, Ordering::SeqCst);
        if self.exhausted.load(Ordering::SeqCst) {
            return true;
        }
        let mut cur = self.fail_countdown.load(Ordering::SeqCst);
        while cur != 0 {
            match self.fail_countdown.compare_exchange(
                cur,
                cur - 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return cur == 1,
                Err(now) => cur = now,
            }
        }
        false
    }
}

// SAFETY: every successful operation is RealOs's, which upholds the contract; refusing is
// always allowed.
unsafe impl Os for FakeOs {
    fn now_ms(&self) -> u64 {
        self.clock_ms.load(Ordering::SeqCst)
    }

    fn map(&self, bytes: usize, align_bytes: usize) -> Option<NonNull<u8>> {
        if self.should_fail() {
            return None;
        }
        let ptr = RealOs.map(bytes, align_bytes)?;
        let rounded = super::round_up(bytes, super::OS_PAGE_BYTES)?;
        self.live_bytes
            .fetch_add(rounded as isize, Ordering::SeqCst);
        Some(ptr)
    }

    unsafe fn unmap(&self, ptr: NonNull<u8>, bytes: usize) {
        self.live_bytes.fetch_sub(bytes as isize, Ordering::SeqCst);
        // SAFETY: forwarded contract.
        unsafe { RealOs.unmap(ptr, bytes) }
    }

    unsafe fn purge(&self, ptr: NonNull<u8>, bytes: usize) {
        self.purge_calls.fetch_add(1, Ordering::SeqCst);
        self.purged_bytes.fetch_add(bytes, Ordering::SeqCst);
        // SAFETY: forwarded contract.
        unsafe { RealOs.purge(ptr, bytes) }
    }

    unsafe fn resize_in_place(&self, ptr: NonNull<u8>, old_bytes: usize, new_bytes: usize) -> bool {
        if new_bytes > old_bytes && self.exhausted.load(Ordering::SeqCst) {
            return false;
        }
        // SAFETY: forwarded contract.
        let done = unsafe { RealOs.resize_in_place(ptr, old_bytes, new_bytes) };
        if done {
            self.live_bytes
                .fetch_add(new_bytes as isize - old_bytes as isize, Ordering::SeqCst);
        }
        done
    }

    unsafe fn move_mapping(
        &self,
        ptr: NonNull<u8>,
        old_bytes: usize,
        target: NonNull<u8>,
        new_bytes: usize,
    ) -> bool {
        // SAFETY: forwarded contract.
        let done = unsafe { RealOs.move_mapping(ptr, old_bytes, target, new_bytes) };
        if done {
            self.live_bytes
                .fetch_sub(old_bytes as isize, Ordering::SeqCst);
        }
        done
    }
}
