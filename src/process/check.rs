//! The check mode (`OXMALLOC_CHECK=1`): catches what the default checks cannot afford to.
//!
//! ```text
//! block:  [ user bytes (size) | canary 0xCB ... | trailer: magic ^ ptr, size ]
//!                                                  └─ last 16 bytes of the usable block
//! ```
//! - A write past the end of a block lands in the canary or the trailer: `free` finds it.
//! - A freed block's trailer says FREED and the block waits in a quarantine (a FIFO of
//!   [`QUARANTINE_SLOTS`] blocks) before its memory is reused, so a second free of it, or a
//!   realloc of it, is reported even after other blocks were allocated in between.
//!
//! Threads get no heap in this mode (their TLS heap stays null), so the fast paths fall
//! through to the slow paths, which route every call here; all blocks come from the global
//! heap under its lock. The fast paths pay nothing for the mode's existence.

use crate::fatal;
use crate::heap::OwnedHeap;
use crate::os::RealOs;
use crate::process::context::Context;
use crate::sync::Mutex;
use core::ptr;

const TRAILER_BYTES: usize = 16;
const LIVE_MAGIC: usize = 0x6f78_6c69_7665_2121; // "oxlive!!"
const FREED_MAGIC: usize = 0x6f78_6672_6565_2121; // "oxfree!!"
const CANARY: u8 = 0xCB;
/// Freed blocks held back from reuse.
pub const QUARANTINE_SLOTS: usize = 1024;

/// Freed blocks waiting before their memory is reused.
pub struct Quarantine {
    ring: [usize; QUARANTINE_SLOTS],
    next: usize,
}

/// The quarantine (taken before fork like every global lock).
pub static QUARANTINE: Mutex<Quarantine> = Mutex::new(Quarantine {
    ring: [0; QUARANTINE_SLOTS],
    next: 0,
});

/// Runs `f` with the global heap, under its lock.
fn with_global<T>(ctx: &Context<RealOs>, f: impl FnOnce(OwnedHeap) -> Option<T>) -> Option<T> {
    let mut global = ctx.global_heap.lock();
    if global.0.is_null() {
        global.0 = ctx.heaps.lock().acquire(&ctx.os)?;
    }
    // SAFETY: the global heap is ours while its lock is held.
    let heap = unsafe { OwnedHeap::claim(global.0) }?;
    f(heap)
}

/// Where the trailer of the block at `ptr` with `usable` bytes lives.
fn trailer(ptr: *mut u8, usable: usize) -> *mut [usize; 2] {
    ptr.wrapping_add(usable - TRAILER_BYTES).cast()
}

/// Allocates a checked block.
pub fn alloc(ctx: &Context<RealOs>, size: usize, align_bytes: usize, zero: bool) -> *mut u8 {
    let Some(total) = size.checked_add(TRAILER_BYTES) else {
        return ptr::null_mut();
    };
    let Some((p, zeroed)) = with_global(ctx, |h| ctx.alloc_with(h, total, align_bytes)) else {
        return ptr::null_mut();
    };
    let p = p.as_ptr();
    let usable = ctx.usable_size(p, "malloc");
    // SAFETY: `p` is a fresh block of `usable >= size + 16` bytes.
    unsafe {
        if zero && !zeroed {
            p.write_bytes(0, size);
        }
        p.add(size)
            .write_bytes(CANARY, usable - TRAILER_BYTES - size);
        trailer(p, usable).write_unaligned([LIVE_MAGIC ^ p as usize, size]);
    }
    p
}

/// The requested size of the live checked block at `ptr`, after verifying its trailer and
/// canary; reports and aborts otherwise.
fn verify_live(ctx: &Context<RealOs>, ptr: *mut u8, call: &str) -> (usize, usize) {
    let usable = ctx.usable_size(ptr, call);
    if usable < TRAILER_BYTES {
        fatal::bad_pointer(call, "invalid pointer", ptr as usize);
    }
    // SAFETY: `ptr` is a block of ours with `usable` bytes.
    let [magic, size] = unsafe { trailer(ptr, usable).read_unaligned() };
    if magic == FREED_MAGIC ^ ptr as usize {
        fatal::bad_pointer(call, "double free or use of a freed block", ptr as usize);
    }
    if magic != LIVE_MAGIC ^ ptr as usize || size > usable - TRAILER_BYTES {
        fatal::bad_pointer(
            call,
            "block trailer overwritten (write past the end of)",
            ptr as usize,
        );
    }
    // SAFETY: the canary lies inside the block.
    let canary =
        unsafe { core::slice::from_raw_parts(ptr.add(size), usable - TRAILER_BYTES - size) };
    if canary.iter().any(|&b| b != CANARY) {
        fatal::bad_pointer(call, "write past the end of the block", ptr as usize);
    }
    (size, usable)
}

/// Frees a checked block into the quarantine; the oldest quarantined block is freed for real.
///
/// # Safety
/// `ptr` must be null or a pointer the program got from the allocator (what it points to
/// is verified before anything is written).
pub unsafe fn free(ctx: &Context<RealOs>, ptr: *mut u8, call: &str) {
    if ptr.is_null() {
        return;
    }
    let (_, usable) = verify_live(ctx, ptr, call);
    // SAFETY: the trailer lies inside the block.
    unsafe { trailer(ptr, usable).write_unaligned([FREED_MAGIC ^ ptr as usize, 0]) };
    let evicted = {
        let mut q = QUARANTINE.lock();
        let i = q.next;
        q.next = (i + 1) % QUARANTINE_SLOTS;
        match q.ring.get_mut(i) {
            Some(slot) => core::mem::replace(slot, ptr as usize),
            None => crate::fatal::fatal("check: quarantine index out of range"),
        }
    };
    if evicted != 0 {
        free_for_real(ctx, evicted, call);
    }
}

/// Frees a block that left the quarantine (freed by the program, held only by us).
fn free_for_real(ctx: &Context<RealOs>, addr: usize, call: &str) {
    with_global(ctx, |h| {
        // SAFETY: the block left the quarantine: freed by the program, held only by us.
        unsafe { ctx.free_with(Some(h), addr as *mut u8, call) };
        Some(())
    });
}

/// The requested size of a live checked block (0 for null).
pub fn usable_size(ctx: &Context<RealOs>, ptr: *const u8, call: &str) -> usize {
    if ptr.is_null() {
        return 0;
    }
    verify_live(ctx, ptr.cast_mut(), call).0
}

/// Reallocates a checked block (`ptr` not null, `new_size` > 0).
///
/// # Safety
/// As for [`free`].
pub unsafe fn realloc(
    ctx: &Context<RealOs>,
    ptr: *mut u8,
    new_size: usize,
    align_bytes: usize,
) -> *mut u8 {
    let (size, _) = verify_live(ctx, ptr, "realloc");
    let new = alloc(ctx, new_size, align_bytes, false);
    if new.is_null() {
        return new;
    }
    // SAFETY: both blocks are live and at least `min(size, new_size)` long.
    unsafe { ptr::copy_nonoverlapping(ptr, new, size.min(new_size)) };
    // SAFETY: `ptr` was verified live above.
    unsafe { free(ctx, ptr, "realloc") };
    new
}

/// Empties the quarantine (for `malloc_trim`).
pub fn drain(ctx: &Context<RealOs>) {
    loop {
        let victim = {
            let mut q = QUARANTINE.lock();
            match q.ring.iter_mut().find(|s| **s != 0) {
                Some(slot) => core::mem::replace(slot, 0),
                None => return,
            }
        };
        free_for_real(ctx, victim, "free");
    }
}
