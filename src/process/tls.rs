//! The thread's heap pointer, in initial-exec TLS.
//!
//! In a shared library a plain `thread_local!` compiles to a call to `__tls_get_addr` on
//! every access (general-dynamic model): slow on the fast path, and that function may itself
//! call `malloc`. glibc asks a replacement malloc to use the initial-exec model, in which a
//! thread-local is a fixed offset from the thread pointer. Stable Rust cannot ask for it, so
//! the slot is declared in `.tbss` with `global_asm!` and addressed through its
//! `@GOTTPOFF` GOT entry: one load of the offset plus one `fs:`-relative access. The library
//! is then marked `STATIC_TLS`, which is right for `LD_PRELOAD` and `-loxmalloc`; a library
//! `dlopen`ed late into a running process may fail to load, which the `portable-tls` feature
//! avoids at the price of `__tls_get_addr` calls.
//!
//! Checked with `objdump -d target/release/liboxmalloc.so`: `malloc` and `free` read the
//! slot with `mov rax, [rip + ...]` / `mov rax, fs:[rax]`, and contain no `__tls_get_addr`.
//!
//! Four words per thread, all zero at thread start:
//! - the heap pointer (null until the thread's first allocation takes the slow path);
//! - the thread state (0: no allocation yet, [`STATE_ACTIVE`], [`STATE_EXITED`]);
//! - the hardened mode's per-thread state (null in the other modes; see `harden`). It is
//!   a word of its own so that the heap pointer stays null in that mode, which sends every
//!   call to the slow paths without a test on the fast paths;
//! - the heap profiler's count of the stacks this thread took (see `prof::capture`).

use crate::heap::{Heap, OwnedHeap};

/// The thread has a heap.
pub const STATE_ACTIVE: usize = 1;
/// The thread's heap was handed back at thread exit; allocations use the global heap.
pub const STATE_EXITED: usize = 2;

#[cfg(all(not(feature = "portable-tls"), target_arch = "x86_64"))]
mod slot {
    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 4",
        ".globl __oxmalloc_tls_slot",
        ".hidden __oxmalloc_tls_slot",
        ".type __oxmalloc_tls_slot,@object",
        ".size __oxmalloc_tls_slot,32",
        "__oxmalloc_tls_slot:",
        ".zero 32",
        ".popsection",
    );

    /// Reads word `INDEX` (0 to 3) of the slot.
    #[inline(always)]
    pub fn read<const INDEX: usize>() -> usize {
        let value: usize;
        // SAFETY: the GOT entry holds the slot's offset from the thread pointer (filled by
        // the dynamic loader for the initial-exec model); the slot is 32 bytes, so
        // `8 * INDEX` stays inside it; reading an initialised usize has no side effects.
        unsafe {
            core::arch::asm!(
                "mov {v}, qword ptr [rip + __oxmalloc_tls_slot@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{v} + {off}]",
                v = out(reg) value,
                off = const 8 * INDEX,
                options(nostack, preserves_flags, readonly, pure)
            );
        }
        value
    }

    /// Writes word `INDEX` (0 to 3) of the slot.
    #[inline(always)]
    pub fn write<const INDEX: usize>(value: usize) {
        // SAFETY: as in `read`; the slot is this thread's own.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + __oxmalloc_tls_slot@GOTTPOFF]",
                "mov qword ptr fs:[{t} + {off}], {v}",
                t = out(reg) _,
                v = in(reg) value,
                off = const 8 * INDEX,
                options(nostack, preserves_flags)
            );
        }
    }
}

#[cfg(any(feature = "portable-tls", not(target_arch = "x86_64")))]
mod slot {
    use core::cell::Cell;

    std::thread_local! {
        // Const-initialised and without Drop: no destructor registration (which would call
        // calloc) and no lazy-init flag.
        static SLOT: [Cell<usize>; 4] =
            const { [Cell::new(0), Cell::new(0), Cell::new(0), Cell::new(0)] };
    }

    /// Reads word `INDEX` (0 to 3) of the slot.
    #[inline(always)]
    pub fn read<const INDEX: usize>() -> usize {
        SLOT.with(|s| s[INDEX].get())
    }

    /// Writes word `INDEX` (0 to 3) of the slot.
    #[inline(always)]
    pub fn write<const INDEX: usize>(value: usize) {
        SLOT.with(|s| s[INDEX].set(value))
    }
}

/// The calling thread's heap, or null.
#[inline(always)]
pub fn heap() -> *mut Heap {
    slot::read::<0>() as *mut Heap
}

/// The calling thread's heap, as the proof of ownership the allocator's methods take.
///
/// Callers hold the result only for the allocator call at hand and never across a call
/// that could allocate again (so a thread never has two at once).
#[inline(always)]
pub fn owned_heap() -> Option<OwnedHeap<'static>> {
    // SAFETY: the slot holds the calling thread's own heap (or null), which no other
    // thread uses while it is set here; see above for the one-at-a-time rule.
    unsafe { OwnedHeap::claim(heap()) }
}

/// Sets the calling thread's heap.
#[inline]
pub fn set_heap(heap: *mut Heap) {
    slot::write::<0>(heap as usize)
}

/// The calling thread's state.
#[inline]
pub fn state() -> usize {
    slot::read::<1>()
}

/// Sets the calling thread's state.
#[inline]
pub fn set_state(state: usize) {
    slot::write::<1>(state)
}

/// The calling thread's hardened-mode state (null when it has none).
#[inline]
pub fn hardened() -> usize {
    slot::read::<2>()
}

/// Sets the calling thread's hardened-mode state.
#[inline]
pub fn set_hardened(state: usize) {
    slot::write::<2>(state)
}

/// Stacks the heap profiler took on the calling thread so far.
#[inline]
pub fn prof_captures() -> usize {
    slot::read::<3>()
}

/// Sets the calling thread's count of stacks taken by the heap profiler.
#[inline]
pub fn set_prof_captures(count: usize) {
    slot::write::<3>(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_thread() {
        // The test binary itself runs on oxmalloc, so nothing may allocate while the slot
        // holds the fake value: only reads, writes and integer compares in between.
        let fake = 0x1000usize;
        let seen = std::thread::spawn(move || {
            let saved = (heap(), state());
            set_heap(fake as *mut Heap);
            set_state(STATE_EXITED);
            let seen = (heap() as usize, state());
            set_heap(saved.0);
            set_state(saved.1);
            seen
        })
        .join()
        .unwrap();
        assert_eq!(seen, (fake, STATE_EXITED));
        assert_ne!(heap() as usize, fake);
        assert_ne!(state(), STATE_EXITED);
    }
}
