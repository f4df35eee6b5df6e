//! The process allocator: [`CTX`] (the context over the real OS) with the calling thread's
//! heap, and the life of threads and of the process around it: lazy start-up, the thread
//! exit destructor, the global heap for threads past their exit cleanup, and `fork`.
//!
//! Start-up is lazy because the dynamic loader and libc call `malloc` before any
//! constructor of ours could run: a new thread's TLS heap pointer is null, so its first
//! allocation takes the slow path, which makes or adopts a heap and, the first time in the
//! process, creates the thread-exit key and registers the fork handlers.

pub(crate) mod census;
pub(crate) mod check;
pub(crate) mod context;
#[cfg(test)]
mod core_tests;
pub(crate) mod guard;
pub(crate) mod harden;
pub(crate) mod prof;
pub(crate) mod report;
pub(crate) mod tls;

use crate::block::size_class::{self, SMALL_MAX_BYTES};
use crate::fatal;
use crate::heap::{Heap, OwnedHeap};
use crate::os::RealOs;
use crate::process::context::{Context, MIN_ALIGN};
use crate::region_map::{self, Kind};
use crate::sync::ForkLock;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

/// The process's allocator.
pub static CTX: Context<RealOs> = Context::with_checked_free(RealOs, checked_free);

/// Frees of threads without a heap in check mode and in hardened mode (every thread, in
/// those modes) go to the checker's quarantine or to the hardened mode's.
///
/// # Safety
/// As for [`Context::free_with`].
unsafe fn checked_free(ptr: *mut u8, call: &str) {
    if crate::config::check_mode() {
        // SAFETY: forwarded contract.
        return unsafe { crate::process::check::free(&CTX, ptr, call) };
    }
    // SAFETY: forwarded contract.
    unsafe { harden::free(ptr, call, None) }
}

/// Which heap the calling thread allocates from.
enum ThreadHeap {
    /// Its own heap.
    Own(OwnedHeap<'static>),
    /// The shared global heap (after the thread's exit cleanup).
    Global,
    /// No memory for a heap.
    Unavailable,
}

/// The calling thread's heap, created (or adopted) on first use.
#[inline]
fn thread_heap() -> ThreadHeap {
    if let Some(heap) = tls::owned_heap() {
        return ThreadHeap::Own(heap);
    }
    if tls::state() == tls::STATE_EXITED || crate::config::routed_mode() {
        return ThreadHeap::Global;
    }
    thread_start_slow()
}

#[cold]
#[inline(never)]
fn thread_start_slow() -> ThreadHeap {
    let Some(heap) = CTX.heaps.lock().acquire(&CTX.os) else {
        return ThreadHeap::Unavailable;
    };
    // Publish the heap before anything that may call malloc (pthread_key_create,
    // pthread_atfork, pthread_setspecific): nested calls then find it.
    tls::set_heap(heap);
    tls::set_state(tls::STATE_ACTIVE);
    crate::stats::thread_started();
    process_start();
    // SAFETY: the key exists (process_start) and the value is only read by our destructor.
    unsafe { libc::pthread_setspecific(THREAD_KEY.load(Ordering::Acquire), heap.cast()) };
    match tls::owned_heap() {
        Some(heap) => ThreadHeap::Own(heap),
        None => ThreadHeap::Unavailable,
    }
}

/// Runs `f` with a heap the calling thread may use: its own, or the global one under its
/// lock. Null when no heap can be had.
#[inline]
fn with_heap(f: impl FnOnce(OwnedHeap) -> *mut u8) -> *mut u8 {
    match thread_heap() {
        ThreadHeap::Own(heap) => f(heap),
        ThreadHeap::Global => {
            let mut global = CTX.global_heap.lock();
            if global.0.is_null() {
                match CTX.heaps.lock().acquire(&CTX.os) {
                    Some(h) => global.0 = h,
                    None => return ptr::null_mut(),
                }
            }
            // SAFETY: the global heap is ours while its lock is held.
            match unsafe { OwnedHeap::claim(global.0) } {
                Some(heap) => f(heap),
                None => ptr::null_mut(),
            }
        }
        ThreadHeap::Unavailable => ptr::null_mut(),
    }
}

const START_NONE: u8 = 0;
const START_RUNNING: u8 = 1;
const START_DONE: u8 = 2;
static START: AtomicU8 = AtomicU8::new(START_NONE);
static THREAD_KEY: AtomicU32 = AtomicU32::new(0);
/// The thread running the set-up (its `pthread_self`), while `START` is running.
static START_OWNER: AtomicUsize = AtomicUsize::new(0);
/// The process in which `START` went to running (a `fork` child has another pid).
static START_PID: AtomicUsize = AtomicUsize::new(0);

/// One-time process set-up (the thread-exit key, the fork handlers), run by the first
/// thread that gets a heap, or in check mode by the first checked call (lazily: the loader
/// and libc call malloc before any constructor of ours could run).
pub fn process_start() {
    if START.load(Ordering::Acquire) == START_DONE {
        return;
    }
    // SAFETY: pthread_self has no preconditions and does not allocate.
    let me = unsafe { libc::pthread_self() } as usize;
    if START
        .compare_exchange(
            START_NONE,
            START_RUNNING,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        if START_OWNER.load(Ordering::Acquire) == me {
            // Re-entered from a call the set-up itself made (pthread_atfork may malloc):
            // the set-up is under way on this very thread.
            return;
        }
        // Another thread is setting up; it does not wait on us, so waiting is safe, unless
        // this process is a `fork` child of one in which another thread was setting up:
        // that thread does not exist here (and the fork handlers were perhaps not yet
        // registered to say so), so this thread takes the set-up over.
        while START.load(Ordering::Acquire) != START_DONE {
            // SAFETY: getpid has no preconditions.
            if START_PID.load(Ordering::Acquire) != unsafe { libc::getpid() } as usize {
                START.store(START_NONE, Ordering::Release);
                return process_start();
            }
            core::hint::spin_loop();
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
        return;
    }
    // SAFETY: getpid has no preconditions.
    START_PID.store(unsafe { libc::getpid() } as usize, Ordering::Release);
    START_OWNER.store(me, Ordering::Release);
    // The exit report (OXMALLOC_STATS), in case this runs before the library constructor.
    crate::process::report::at_start();
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `thread_exit` has the destructor signature; the key lives for the process.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
        fatal::fatal("pthread_key_create failed");
    }
    THREAD_KEY.store(key, Ordering::Release);
    // SAFETY: the handlers are plain functions that only take and release our locks.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    START.store(START_DONE, Ordering::Release);
}

/// Registers the calling thread's exit destructor (`value`: not null).
pub(crate) fn register_thread_exit(value: *mut libc::c_void) {
    // SAFETY: the key exists (process_start) and the value is only read by our destructor.
    unsafe { libc::pthread_setspecific(THREAD_KEY.load(Ordering::Acquire), value) };
}

/// The thread-exit destructor (pthread key): hands the heap back. Later allocations by
/// this thread (other libraries' destructors run after ours) use the global heap.
extern "C" fn thread_exit(_value: *mut libc::c_void) {
    if tls::hardened() != 0 {
        return harden::thread_exit();
    }
    let Some(heap) = tls::owned_heap() else {
        return;
    };
    tls::set_heap(ptr::null_mut());
    tls::set_state(tls::STATE_EXITED);
    crate::stats::thread_exited();
    CTX.retire_heap(heap);
}

/// Every global lock, in the order code nests them (the global heap's lock is held while
/// a heap is taken from the pool, and while slabs and spans come from the segment pool and
/// the buddy arena). `fork_prepare` takes them in this order; the others release them.
fn fork_locks() -> [&'static dyn ForkLock; 12] {
    let [profile, slots, resized, without_heap] = crate::process::prof::fork_locks();
    [
        &crate::process::check::QUARANTINE,
        &harden::GLOBALS,
        &CTX.global_heap,
        &CTX.heaps,
        &CTX.segments,
        &CTX.buddy,
        &CTX.large,
        profile,
        slots,
        resized,
        without_heap,
        &guard::POOL,
    ]
}

// glibc's stdio list lock (exported since glibc 2.2.5). It is recursive: `fork` takes it
// again after the prepare handlers, in the same thread, when it takes it at all.
extern "C" {
    fn _IO_list_lock();
    fn _IO_list_unlock();
    fn _IO_list_resetlock();
}

// The locks around `fork`, and the state each is in when a handler of ours runs.
//
// glibc's `fork` (2.34 and later) does this, where "multi" means the parent has ever had a
// second thread (`SINGLE_THREAD_P` false):
//   1. runs the prepare handlers (ours among them);
//   2. multi only: takes stdio's list lock, then its own malloc's arena locks;
//   3. forks;
//   4. child, multi only: resets its malloc locks, every `FILE` lock and the list lock;
//      parent, multi only: releases them;
//   5. runs the child or parent handlers.
// So in the child of a single-threaded parent glibc resets nothing: a lock taken in our
// prepare handler is still held there unless we undo it.
//
// | lock                         | prepare | parent handler | child handler, either parent     |
// |------------------------------|---------|----------------|----------------------------------|
// | stdio list lock (recursive)  | taken   | released       | reset (`_IO_list_resetlock`)     |
// | ours (`fork_locks`, 11 locks)| taken   | released       | reset, after the heaps are fixed |
// | `FILE` locks                 | -       | -              | glibc: reset if multi; else free |
// | glibc malloc's arena locks   | -       | -              | glibc's business                 |
//
// The list lock is reset in the child rather than released: after a multi-threaded parent
// glibc has already reset it (count 0, no owner), and a release would drive its count
// below zero; after a single-threaded parent our prepare handler's hold (count 1, owner:
// this thread) is the only one, and a reset clears it just as well. The child has one
// thread, so no one else can hold or wait for it. Taking the lock only when glibc itself
// will reset it was the other way: it would copy glibc's private test of "multi", which
// differs between versions (a thread flag before 2.35, `__libc_single_threaded` after).

/// Before `fork`: stdio's list lock first, then every lock of ours.
///
/// `fork` takes stdio's list lock only after the prepare handlers have run. Taking our
/// locks here without it would invert glibc's order (stdio, then malloc), and deadlock
/// against a thread that holds a `FILE` lock and waits in `realloc` for one of our locks
/// while a third thread holds the list lock in `fflush(NULL)`, waiting for that `FILE`
/// (`c_tests/fork_stdio.c`). Taking the list lock first restores glibc's own order.
extern "C" fn fork_prepare() {
    // SAFETY: a plain recursive lock of glibc's; released in `fork_parent`, reset in
    // `fork_child` (see the table above).
    unsafe { _IO_list_lock() };
    for lock in fork_locks() {
        lock.lock_for_fork();
    }
}

extern "C" fn fork_parent() {
    for lock in fork_locks().iter().rev() {
        // SAFETY: fork_prepare took every lock in this thread.
        unsafe { lock.unlock_after_fork() };
    }
    // SAFETY: fork_prepare took it in this thread; `fork` released its own hold, if it
    // took one, before running the parent handlers.
    unsafe { _IO_list_unlock() };
}

extern "C" fn fork_child() {
    // The threads that owned the other active heaps do not exist here: their heaps are
    // abandoned, to be adopted (after a check) by the child's new threads.
    // SAFETY: we are the child's only thread, and took both locks in fork_prepare.
    unsafe {
        let global = CTX.global_heap.lock_in_fork_child().0;
        // In hardened mode the thread's heap is in its hardened state, not in `tls::heap`.
        let mine = if tls::heap().is_null() {
            harden::thread_heap()
        } else {
            tls::heap()
        };
        CTX.heaps
            .lock_in_fork_child()
            .orphan_after_fork(mine, global);
    }
    for lock in fork_locks().iter().rev() {
        // SAFETY: we are the only thread of the child, and we took every lock before fork.
        unsafe { lock.reset_after_fork() };
    }
    // SAFETY: the child's only thread; the lock is either already reset by glibc or held
    // once by this thread through `fork_prepare` (the table above), and held by no one else.
    unsafe { _IO_list_resetlock() };
}

/// `malloc`: at least `size` bytes, 16-byte aligned; null when memory is short.
#[inline(always)]
pub fn alloc(size: usize) -> *mut u8 {
    if size <= SMALL_MAX_BYTES {
        if let Some(mut heap) = tls::owned_heap() {
            if prof::countdown_expired(&mut heap, size) {
                return alloc_sampled_slow(size, heap.as_ptr());
            }
            return CTX.alloc_small(heap, size_class::class_of(size));
        }
    }
    alloc_slow(size)
}

/// A small allocation whose profiler countdown ran out: sampled, or served as usual.
/// `heap` is the calling thread's own heap, whose `OwnedHeap` the caller gave up: the
/// stack capture may allocate from the same heap.
#[cold]
#[inline(never)]
fn alloc_sampled_slow(size: usize, heap: *mut Heap) -> *mut u8 {
    // SAFETY: the calling thread's own heap, no `OwnedHeap` of it live, no lock held.
    if let Some(p) = unsafe { prof::sample_slow(heap, size, MIN_ALIGN, false) } {
        return p.as_ptr();
    }
    match tls::owned_heap() {
        Some(heap) => CTX.alloc_small(heap, size_class::class_of(size)),
        None => ptr::null_mut(),
    }
}

#[cold]
#[inline(never)]
fn alloc_slow(size: usize) -> *mut u8 {
    if crate::config::check_mode() {
        process_start();
        return crate::process::check::alloc(&CTX, size, MIN_ALIGN, false);
    }
    if crate::config::harden_mode() {
        return harden::alloc(size, MIN_ALIGN, false);
    }
    if let Some(p) = prof::maybe_sample(size, MIN_ALIGN, false) {
        return p.as_ptr();
    }
    if size <= SMALL_MAX_BYTES {
        return with_heap(|heap| CTX.alloc_small(heap, size_class::class_of(size)));
    }
    CTX.alloc_big(tls::owned_heap(), size, MIN_ALIGN)
        .map_or(ptr::null_mut(), |(p, _)| p.as_ptr())
}

/// Allocation at an alignment (a power of two); null when memory is short.
pub fn alloc_aligned(size: usize, align_bytes: usize) -> *mut u8 {
    if align_bytes <= MIN_ALIGN {
        return alloc(size);
    }
    if crate::config::check_mode() {
        process_start();
        return crate::process::check::alloc(&CTX, size, align_bytes, false);
    }
    if crate::config::harden_mode() {
        return harden::alloc(size, align_bytes, false);
    }
    if let Some(p) = prof::maybe_sample(size, align_bytes, false) {
        return p.as_ptr();
    }
    with_heap(|heap| {
        CTX.alloc_with(heap, size, align_bytes)
            .map_or(ptr::null_mut(), |(p, _)| p.as_ptr())
    })
}

/// Zeroed allocation at an alignment (a power of two); null when memory is short.
pub fn alloc_zeroed_aligned(size: usize, align_bytes: usize) -> *mut u8 {
    if crate::config::check_mode() {
        process_start();
        return crate::process::check::alloc(&CTX, size, align_bytes.max(MIN_ALIGN), true);
    }
    if crate::config::harden_mode() {
        return harden::alloc(size, align_bytes.max(MIN_ALIGN), true);
    }
    if let Some(p) = prof::maybe_sample(size, align_bytes.max(MIN_ALIGN), true) {
        return p.as_ptr();
    }
    with_heap(
        |heap| match CTX.alloc_with(heap, size, align_bytes.max(MIN_ALIGN)) {
            Some((p, zeroed)) => {
                if !zeroed {
                    // SAFETY: a fresh block of at least `size` bytes.
                    unsafe { p.as_ptr().write_bytes(0, size) };
                }
                p.as_ptr()
            }
            None => ptr::null_mut(),
        },
    )
}

/// `free`.
///
/// # Safety
/// `ptr` must be null or a live block of ours (bad pointers are reported where detected).
#[inline(always)]
pub unsafe fn free(ptr: *mut u8, call: &str) {
    // SAFETY: forwarded contract.
    unsafe { CTX.free_with(tls::owned_heap(), ptr, call) }
}

/// A sized free (`free_sized`, sized `operator delete`): in hardened mode `size` must be
/// the block's requested size; otherwise it is not needed.
///
/// # Safety
/// As for [`free`].
#[inline]
pub unsafe fn free_sized(ptr: *mut u8, size: usize, call: &str) {
    // A thread with its own heap is not in hardened mode (that mode keeps the slot empty):
    // the common case pays no option read.
    if let Some(heap) = tls::owned_heap() {
        // SAFETY: forwarded contract.
        return unsafe { CTX.free_with(Some(heap), ptr, call) };
    }
    if crate::config::harden_mode() {
        // SAFETY: forwarded contract.
        return unsafe { harden::free(ptr, call, Some(size)) };
    }
    // SAFETY: forwarded contract.
    unsafe { CTX.free_with(None, ptr, call) }
}

/// `realloc` for a live, non-null `ptr` and a non-zero size, keeping `align_bytes`.
///
/// # Safety
/// `ptr` must be a live block of ours.
pub unsafe fn realloc_aligned(ptr: *mut u8, new_size: usize, align_bytes: usize) -> *mut u8 {
    if ptr.is_null() {
        return alloc_aligned(new_size, align_bytes);
    }
    if crate::config::check_mode() {
        // SAFETY: forwarded contract.
        return unsafe {
            crate::process::check::realloc(&CTX, ptr, new_size.max(1), align_bytes.max(MIN_ALIGN))
        };
    }
    if crate::config::harden_mode() {
        // SAFETY: forwarded contract.
        return unsafe { harden::realloc(ptr, new_size.max(1), align_bytes.max(MIN_ALIGN)) };
    }
    // SAFETY: `ptr` is the program's realloc argument (caller).
    if unsafe { CTX.small_block_fits(ptr, new_size) } {
        return ptr;
    }
    // SAFETY: forwarded contract.
    unsafe { realloc_leaving(ptr, new_size, align_bytes) }
}

/// [`realloc_aligned`] of a block that does not stay in its small block: out of line, so
/// that the path that keeps the block stays short.
///
/// # Safety
/// `ptr` must be a live block of ours, not null.
#[inline(never)]
unsafe fn realloc_leaving(ptr: *mut u8, new_size: usize, align_bytes: usize) -> *mut u8 {
    // The heap profiler: a realloc that leaves the fast path counts as an allocation of
    // `new_size` bytes. A block in a profiler slot is resized where it is when it can be,
    // a huge block (which may carry a profiler record) as the huge allocator does, a
    // medium block that stays medium as the buddy arena does (its record, when this
    // realloc is sampled, kept on the side); a sampled realloc of another block moves it
    // into a sampled block.
    let size = new_size.max(1);
    let align = align_bytes.max(MIN_ALIGN);
    // SAFETY: called with a live block of ours: the caller's `ptr`, or the block the
    // realloc of it returned.
    let as_usual =
        |ptr| with_heap(|heap| unsafe { CTX.realloc_with(heap, ptr, size, align, "realloc") });
    let kind = region_map::raw_kind_of(ptr as usize);
    if kind == Kind::Sampled as u8 && prof::blocks::stays_unmoved(ptr as usize, size, align) {
        return ptr;
    }
    if kind == Kind::Buddy as u8 {
        // A record kept on the side ends here, as a slot block's record at its realloc.
        prof::forget_resized(ptr as usize);
    }
    let sample = prof::sample_point(size);
    let resized = if kind == Kind::Sampled as u8 {
        prof::resize_sampled(ptr, size, align, sample.as_ref())
    } else if (kind == Kind::Huge as u8 || kind == Kind::HugeFar as u8) && prof::active() {
        // A huge block may carry a profiler record, which this realloc replaces.
        prof::resize_huge(ptr, size, align, sample.as_ref())
    } else {
        None
    };
    if let Some(p) = resized {
        return p.as_ptr();
    }
    let Some(s) = sample.as_ref() else {
        return as_usual(ptr);
    };
    let mut ptr = ptr;
    if kind == Kind::Buddy as u8
        && size > SMALL_MAX_BYTES
        && size <= crate::block::buddy::MEDIUM_MAX_BYTES
    {
        let p = as_usual(ptr);
        if p.is_null()
            || (region_map::raw_kind_of(p as usize) == Kind::Buddy as u8
                && prof::keep_resized(p, size, s))
        {
            return p;
        }
        // No room for the record: the block moves into a sampled one, as others do.
        ptr = p;
    }
    let old_usable = CTX.usable_size(ptr, "realloc");
    match prof::alloc_sampled_for_realloc(s, old_usable, align) {
        Some(new) => {
            // SAFETY: both blocks are live and distinct; `ptr` is live (see above) and no
            // longer used once copied.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new.as_ptr(), old_usable.min(size));
                CTX.free_with(tls::owned_heap(), ptr, "realloc");
            }
            new.as_ptr()
        }
        None => as_usual(ptr),
    }
}

/// Usable size of a live block (0 for null).
pub fn usable_size(ptr: *const u8, call: &str) -> usize {
    if crate::config::check_mode() {
        return crate::process::check::usable_size(&CTX, ptr, call);
    }
    if crate::config::harden_mode() {
        return harden::usable_size(ptr, call);
    }
    CTX.usable_size(ptr, call)
}

/// True when `ptr` is a block of ours.
pub fn owns(ptr: *const u8) -> bool {
    CTX.owns(ptr) || (crate::config::harden_mode() && harden::owns_zero_block(ptr as usize))
}

/// Returns free memory to the OS; the bytes released or purged.
pub fn trim() -> usize {
    if crate::config::check_mode() {
        crate::process::check::drain(&CTX);
    }
    if crate::config::harden_mode() {
        harden::drain();
        return CTX.trim(harden::owned_heap());
    }
    CTX.trim(tls::owned_heap())
}

/// Checks the calling thread's heap, the global heap and the buddy arena (`ox_heap_check`).
pub fn heap_check() -> crate::heap::validate::CheckResult {
    if let Some(heap) = tls::owned_heap().or_else(harden::owned_heap) {
        crate::heap::validate::check_heap(&heap)?;
    }
    {
        let global = CTX.global_heap.lock();
        // SAFETY: the global heap is ours while its lock is held.
        if let Some(heap) = unsafe { OwnedHeap::claim(global.0) } {
            crate::heap::validate::check_heap(&heap)?;
        }
    }
    CTX.buddy.lock().check()
}

/// Runs when the library is loaded, after libc is set up: loads the options (so that
/// `OXMALLOC_VERBOSE` speaks even in a program that never allocates) and prepares the exit
/// report. Loading may already have happened at an earlier `malloc`; both steps run once.
extern "C" fn on_load() {
    crate::config::ensure_loaded();
    crate::process::report::at_start();
}

/// The ELF constructor entry (`.init_array`), run by the dynamic loader for the shared
/// library and by the C runtime for a program linked with the static one.
#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;
