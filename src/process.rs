//! The process allocator: [`CTX`] (the context over the real OS) with the calling thread's
//! heap, and the life of threads and of the process around it: lazy start-up, the thread
//! exit destructor, the global heap for threads past their exit cleanup, and `fork`.
//!
//! Start-up is lazy because the dynamic loader and libc call `malloc` before any
//! constructor of ours could run: a new thread's TLS heap pointer is null, so its first
//! allocation takes the slow path, which makes or adopts a heap and, the first time in the
//! process, creates the thread-exit key and registers the fork handlers.

use crate::allocator::{Context, MIN_ALIGN};
use crate::fatal;
use crate::heap::Heap;
use crate::os::RealOs;
use crate::prof;
use crate::region_map::{self, Kind};
use crate::size_class::{self, SMALL_MAX_BYTES};
use crate::sync::ForkLock;
use crate::tls;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

/// The process's allocator.
pub static CTX: Context<RealOs> = Context::new(RealOs);

/// Which heap the calling thread allocates from.
enum ThreadHeap {
    /// Its own heap.
    Own(*mut Heap),
    /// The shared global heap (after the thread's exit cleanup).
    Global,
    /// No memory for a heap.
    Unavailable,
}

/// The calling thread's heap, created (or adopted) on first use.
#[inline]
fn thread_heap() -> ThreadHeap {
    let heap = tls::heap();
    if !heap.is_null() {
        return ThreadHeap::Own(heap);
    }
    if tls::state() == tls::STATE_EXITED || crate::config::check_mode() {
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
    process_start();
    // SAFETY: the key exists (process_start) and the value is only read by our destructor.
    unsafe { libc::pthread_setspecific(THREAD_KEY.load(Ordering::Acquire), heap.cast()) };
    ThreadHeap::Own(heap)
}

/// Runs `f` with a heap the calling thread may use: its own, or the global one under its
/// lock. Null when no heap can be had.
#[inline]
fn with_heap(f: impl FnOnce(*mut Heap) -> *mut u8) -> *mut u8 {
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
            f(global.0)
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
        // Another thread is setting up; it does not wait on us, so waiting is safe.
        while START.load(Ordering::Acquire) != START_DONE {
            core::hint::spin_loop();
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
        return;
    }
    START_OWNER.store(me, Ordering::Release);
    if crate::config::show_stats() {
        extern "C" fn print_at_exit() {
            crate::abi::glibc::print_stats();
        }
        // SAFETY: registering a plain function; atexit may allocate, which is fine here
        // (the calling thread's heap is already set up).
        unsafe { libc::atexit(print_at_exit) };
    }
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

/// The thread-exit destructor (pthread key): hands the heap back. Later allocations by
/// this thread (other libraries' destructors run after ours) use the global heap.
extern "C" fn thread_exit(_value: *mut libc::c_void) {
    let heap = tls::heap();
    if heap.is_null() {
        return;
    }
    tls::set_heap(ptr::null_mut());
    tls::set_state(tls::STATE_EXITED);
    // SAFETY: the thread owned the heap and no longer points to it.
    unsafe { CTX.retire_heap(heap) };
}

/// Every global lock, in the order code nests them (the global heap's lock is held while
/// a heap is taken from the pool, and while slabs and spans come from the segment pool and
/// the buddy arena). `fork_prepare` takes them in this order; the others release them.
fn fork_locks() -> [&'static dyn ForkLock; 9] {
    let [profile, slots, without_heap] = crate::prof::fork_locks();
    [
        &crate::check::QUARANTINE,
        &CTX.global_heap,
        &CTX.heaps,
        &CTX.segments,
        &CTX.buddy,
        &CTX.large,
        profile,
        slots,
        without_heap,
    ]
}

extern "C" fn fork_prepare() {
    for lock in fork_locks() {
        lock.lock_for_fork();
    }
}

extern "C" fn fork_parent() {
    for lock in fork_locks().iter().rev() {
        // SAFETY: fork_prepare took every lock in this thread.
        unsafe { lock.unlock_after_fork() };
    }
}

extern "C" fn fork_child() {
    for lock in fork_locks().iter().rev() {
        // SAFETY: we are the only thread of the child, and we took every lock before fork.
        unsafe { lock.reset_after_fork() };
    }
}

/// `malloc`: at least `size` bytes, 16-byte aligned; null when memory is short.
#[inline(always)]
pub fn alloc(size: usize) -> *mut u8 {
    let heap = tls::heap();
    if size <= SMALL_MAX_BYTES && !heap.is_null() {
        // SAFETY: the TLS heap is the calling thread's own.
        unsafe {
            if prof::countdown_expired(heap, size) {
                return alloc_sampled_slow(size, heap);
            }
            return CTX.alloc_small(heap, size_class::class_of(size));
        }
    }
    alloc_slow(size)
}

/// A small allocation whose profiler countdown ran out: sampled, or served as usual.
///
/// # Safety
/// `heap` must be the calling thread's own.
#[cold]
#[inline(never)]
unsafe fn alloc_sampled_slow(size: usize, heap: *mut Heap) -> *mut u8 {
    // SAFETY: the caller owns the heap; no lock is held.
    match unsafe { prof::sample_slow(heap, size, MIN_ALIGN, false) } {
        Some(p) => p.as_ptr(),
        // SAFETY: as above.
        None => unsafe { CTX.alloc_small(heap, size_class::class_of(size)) },
    }
}

#[cold]
#[inline(never)]
fn alloc_slow(size: usize) -> *mut u8 {
    if crate::config::check_mode() {
        return crate::check::alloc(size, MIN_ALIGN, false);
    }
    if let Some(p) = prof::maybe_sample(size, MIN_ALIGN, false) {
        return p.as_ptr();
    }
    if size <= SMALL_MAX_BYTES {
        // SAFETY: `with_heap` gives a heap the thread may use for the call.
        return with_heap(|heap| unsafe { CTX.alloc_small(heap, size_class::class_of(size)) });
    }
    // SAFETY: the TLS heap (or null) is the calling thread's own.
    unsafe { CTX.alloc_big(tls::heap(), size, MIN_ALIGN) }
        .map_or(ptr::null_mut(), |(p, _)| p.as_ptr())
}

/// Allocation at an alignment (a power of two); null when memory is short.
pub fn alloc_aligned(size: usize, align_bytes: usize) -> *mut u8 {
    if align_bytes <= MIN_ALIGN {
        return alloc(size);
    }
    if crate::config::check_mode() {
        return crate::check::alloc(size, align_bytes, false);
    }
    if let Some(p) = prof::maybe_sample(size, align_bytes, false) {
        return p.as_ptr();
    }
    // SAFETY: `with_heap` gives a heap the thread may use for the call.
    with_heap(|heap| unsafe {
        CTX.alloc_with(heap, size, align_bytes)
            .map_or(ptr::null_mut(), |(p, _)| p.as_ptr())
    })
}

/// Zeroed allocation at an alignment (a power of two); null when memory is short.
pub fn alloc_zeroed_aligned(size: usize, align_bytes: usize) -> *mut u8 {
    if crate::config::check_mode() {
        return crate::check::alloc(size, align_bytes.max(MIN_ALIGN), true);
    }
    if let Some(p) = prof::maybe_sample(size, align_bytes.max(MIN_ALIGN), true) {
        return p.as_ptr();
    }
    // SAFETY: `with_heap` gives a heap the thread may use for the call.
    with_heap(|heap| unsafe {
        match CTX.alloc_with(heap, size, align_bytes.max(MIN_ALIGN)) {
            Some((p, zeroed)) => {
                if !zeroed {
                    p.as_ptr().write_bytes(0, size);
                }
                p.as_ptr()
            }
            None => ptr::null_mut(),
        }
    })
}

/// `free`.
///
/// # Safety
/// `ptr` must be null or a live block of ours (bad pointers are reported where detected).
#[inline(always)]
pub unsafe fn free(ptr: *mut u8, call: &str) {
    // SAFETY: the TLS heap (or null) is the calling thread's own.
    unsafe { CTX.free_with(tls::heap(), ptr, call) }
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
        return unsafe { crate::check::realloc(ptr, new_size.max(1), align_bytes.max(MIN_ALIGN)) };
    }
    // SAFETY: `ptr` is the program's realloc argument (caller).
    if unsafe { CTX.small_block_fits(ptr, new_size) } {
        return ptr;
    }
    // The heap profiler: a realloc that leaves the fast path counts as an allocation of
    // `new_size` bytes. A block in sampled memory is resized where it is when it can be;
    // a sampled realloc of another block moves it into sampled memory.
    let sample = prof::sample_point(new_size.max(1));
    if region_map::raw_kind_of(ptr as usize) == Kind::Sampled as u8 {
        let resized = prof::resize_sampled(
            ptr,
            new_size.max(1),
            align_bytes.max(MIN_ALIGN),
            sample.as_ref(),
        );
        if let Some(p) = resized {
            return p.as_ptr();
        }
    }
    if let Some(new) = sample
        .as_ref()
        .and_then(|s| prof::alloc_sampled(s, align_bytes.max(MIN_ALIGN), false))
    {
        let old_usable = CTX.usable_size(ptr, "realloc");
        // SAFETY: both blocks are live and distinct; `ptr` is live (caller) and no longer
        // used once copied.
        unsafe {
            ptr::copy_nonoverlapping(ptr, new.as_ptr(), old_usable.min(new_size));
            CTX.free_with(tls::heap(), ptr, "realloc");
        }
        return new.as_ptr();
    }
    // SAFETY: `with_heap` gives a heap the thread may use; `ptr` is live (caller).
    with_heap(|heap| unsafe {
        CTX.realloc_with(
            heap,
            ptr,
            new_size.max(1),
            align_bytes.max(MIN_ALIGN),
            "realloc",
        )
    })
}

/// Usable size of a live block (0 for null).
pub fn usable_size(ptr: *const u8, call: &str) -> usize {
    if crate::config::check_mode() {
        return crate::check::usable_size(ptr, call);
    }
    CTX.usable_size(ptr, call)
}

/// True when `ptr` is a block of ours.
pub fn owns(ptr: *const u8) -> bool {
    CTX.owns(ptr)
}

/// Returns free memory to the OS; the bytes released or purged.
pub fn trim() -> usize {
    if crate::config::check_mode() {
        crate::check::drain();
    }
    let heap = tls::heap();
    // SAFETY: the TLS heap (or null) is the calling thread's own.
    unsafe { CTX.trim(heap) }
}

/// The calling thread's heap, if it has one (for the heap checker and statistics).
pub fn current_heap() -> *mut Heap {
    tls::heap()
}
