//! Locks for the allocator's few global structures.
//!
//! [`Mutex`] is a three-state futex lock (0 free, 1 held, 2 held with waiters): an
//! uncontended lock/unlock is one compare-and-swap and one swap, a contended one sleeps in
//! the kernel instead of spinning (spinning on a 2-core machine with preemption wastes the
//! very time slice the holder needs). It never allocates, so it is safe inside `malloc`.
//!
//! Fork: `process` takes every global lock in a fixed order before `fork` and releases
//! them in the parent; the child, where only the forking thread survives, resets them with
//! [`Mutex::reset_after_fork`].

/// The atomics the lock-free protocols use: core's here; the `loom` model test compiles
/// those protocols (`remote_free.rs`) against loom's under the same path.
pub mod atomic {
    pub use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
}

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// A futex-based mutual-exclusion lock around a `T`.
pub struct Mutex<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock gives exclusive access to `value`, so sharing the Mutex between threads
// is safe whenever `T` itself may be sent between threads.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: moving the Mutex moves the `T` it owns, which is allowed when `T: Send`; the
// lock state is a plain atomic.
unsafe impl<T: Send> Send for Mutex<T> {}

/// Proof of holding a [`Mutex`]; unlocks on drop.
pub struct MutexGuard<'a, T> {
    lock: &'a Mutex<T>,
}

impl<T> Mutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> Self {
        Mutex {
            state: AtomicU32::new(UNLOCKED),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, sleeping while another thread holds it.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        MutexGuard { lock: self }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        // A short spin first: the holder is usually about to release.
        for _ in 0..64 {
            core::hint::spin_loop();
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex_wait(&self.state, CONTENDED);
        }
    }

    #[inline]
    fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake_one(&self.state);
        }
    }

    /// Takes the lock and keeps it without a guard (for the pre-fork handler).
    pub fn lock_for_fork(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken by [`Mutex::lock_for_fork`], in the parent after `fork`.
    ///
    /// # Safety
    /// The calling thread must hold the lock through `lock_for_fork`.
    pub unsafe fn unlock_after_fork(&self) {
        self.unlock();
    }

    /// Resets the lock in a child after `fork`: only the forking thread exists there, and it
    /// took the lock in the pre-fork handler, so no one else can hold it.
    ///
    /// # Safety
    /// Call only in the child process, from the fork child handler.
    pub unsafe fn reset_after_fork(&self) {
        self.state.store(UNLOCKED, Ordering::Relaxed);
    }

    /// Access to the value in a `fork` child, whose only thread took this lock in the
    /// prepare handler (so no guard exists, and no other thread can hold it).
    ///
    /// # Safety
    /// Call only from the fork child handler, after `lock_for_fork` in the parent.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn lock_in_fork_child(&self) -> &mut T {
        // SAFETY: the caller's guarantee: this thread holds the lock and is the only one.
        unsafe { &mut *self.value.get() }
    }
}

/// A lock the fork handlers take and release, whatever it guards.
pub trait ForkLock: Sync {
    /// Takes the lock and keeps it (pre-fork handler).
    fn lock_for_fork(&self);
    /// Releases it in the parent.
    ///
    /// # Safety
    /// The calling thread must hold it through `lock_for_fork`.
    unsafe fn unlock_after_fork(&self);
    /// Resets it in the child.
    ///
    /// # Safety
    /// Call only in the child process, from the fork child handler.
    unsafe fn reset_after_fork(&self);
}

impl<T: Send> ForkLock for Mutex<T> {
    fn lock_for_fork(&self) {
        Mutex::lock_for_fork(self)
    }

    unsafe fn unlock_after_fork(&self) {
        // SAFETY: forwarded contract.
        unsafe { Mutex::unlock_after_fork(self) }
    }

    unsafe fn reset_after_fork(&self) {
        // SAFETY: forwarded contract.
        unsafe { Mutex::reset_after_fork(self) }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held, so no other reference exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, so no other reference exists.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // FUTEX_WAIT may set errno (EAGAIN, EINTR); `free` must keep the caller's errno.
    // SAFETY: `__errno_location` returns this thread's errno slot.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: the slot is this thread's errno, an aligned int valid for the thread's life.
    let saved = unsafe { *errno_slot };
    // SAFETY: FUTEX_WAIT reads the 4-byte word at a valid address and sleeps only while it
    // still holds `expected`; spurious returns are handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    }
    // SAFETY: the slot is this thread's errno, an aligned int valid for the thread's life.
    unsafe { *errno_slot = saved };
}

fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only reads the address to find waiters.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}
