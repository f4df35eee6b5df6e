//! Micro-benchmarks: oxmalloc against glibc malloc, side by side in the same run.
//!
//! Every group measures both allocators with the same code: `oxmalloc/<param>` calls the
//! crate's C API (`ox_malloc`, `ox_free`, ...), `glibc/<param>` calls glibc's own entry
//! points (`__libc_malloc`, `__libc_free`, ...). This binary links the oxmalloc rlib,
//! which exports `malloc`/`free` itself, so a plain `malloc` here would reach oxmalloc,
//! not glibc; `check_attribution` proves at start-up that each side really is the
//! allocator it claims to be.
//!
//! Both sides are called through function pointers hidden behind `black_box`, so
//! neither is inlined into the benchmark loop: a C program reaches either allocator
//! through an indirect call (the PLT), and letting link-time optimisation inline
//! oxmalloc's fast path here would flatter it.
//!
//!     cargo bench --bench micro                 # all groups
//!     cargo bench --bench micro -- --quick      # fast, rough numbers
//!     cargo bench --bench micro -- batch        # groups whose name matches

#![allow(unused_unsafe)]

use core::ffi::{c_int, c_void};
use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
    fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(alignment: usize, size: usize) -> *mut c_void;
}

type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type AlignedFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;

/// One allocator's entry points.
#[derive(Clone, Copy)]
struct Api {
    name: &'static str,
    malloc: MallocFn,
    free: FreeFn,
    calloc: CallocFn,
    realloc: ReallocFn,
    aligned: AlignedFn,
}

unsafe extern "C" fn ox_malloc(size: usize) -> *mut c_void {
    unsafe { oxmalloc::ox_malloc(size) }
}
unsafe extern "C" fn ox_free(ptr: *mut c_void) {
    unsafe { oxmalloc::ox_free(ptr) }
}
unsafe extern "C" fn ox_calloc(count: usize, size: usize) -> *mut c_void {
    unsafe { oxmalloc::ox_calloc(count, size) }
}
unsafe extern "C" fn ox_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    unsafe { oxmalloc::ox_realloc(ptr, size) }
}
unsafe extern "C" fn ox_aligned_alloc(alignment: usize, size: usize) -> *mut c_void {
    unsafe { oxmalloc::ox_aligned_alloc(alignment, size) }
}
fn ox_owns(ptr: *const c_void) -> c_int {
    unsafe { oxmalloc::ox_owns(ptr as _) }
}

impl Api {
    fn oxmalloc() -> Api {
        black_box(Api {
            name: "oxmalloc",
            malloc: ox_malloc,
            free: ox_free,
            calloc: ox_calloc,
            realloc: ox_realloc,
            aligned: ox_aligned_alloc,
        })
    }

    fn glibc() -> Api {
        black_box(Api {
            name: "glibc",
            malloc: __libc_malloc,
            free: __libc_free,
            calloc: __libc_calloc,
            realloc: __libc_realloc,
            aligned: __libc_memalign,
        })
    }

    fn both() -> [Api; 2] {
        [Api::oxmalloc(), Api::glibc()]
    }
}

#[inline(always)]
fn nonnull(p: *mut c_void, what: &str) -> *mut c_void {
    if p.is_null() {
        panic!("{what} returned NULL");
    }
    p
}

/// Each side must really be the allocator it is named after.
fn check_attribution() {
    unsafe {
        let g = nonnull(__libc_malloc(64), "__libc_malloc");
        assert_eq!(
            ox_owns(g),
            0,
            "a block from __libc_malloc is claimed by oxmalloc"
        );
        __libc_free(g);
        let o = nonnull(ox_malloc(64), "ox_malloc");
        assert_eq!(ox_owns(o), 1, "a block from ox_malloc is not oxmalloc's");
        ox_free(o);
    }
}

/// Small deterministic generator for the random free order.
fn shuffled(n: usize, mut seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

// ---------------------------------------------------------------------------------------

fn malloc_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("malloc_free");
    for size in [16usize, 64, 256, 1024, 4096] {
        for api in Api::both() {
            g.bench_with_input(BenchmarkId::new(api.name, size), &size, |b, &size| {
                b.iter(|| unsafe {
                    let p = nonnull((api.malloc)(black_box(size)), "malloc") as *mut u8;
                    p.write_volatile(1);
                    (api.free)(black_box(p as *mut c_void));
                })
            });
        }
    }
    g.finish();
}

const BATCH: usize = 1000;
const BATCH_SIZE: usize = 64;

fn batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_1000x64B");
    g.throughput(Throughput::Elements(BATCH as u64));
    let lifo: Vec<usize> = (0..BATCH).rev().collect();
    let fifo: Vec<usize> = (0..BATCH).collect();
    let random = shuffled(BATCH, 0x9E37_79B9_7F4A_7C15);
    for (order_name, order) in [("lifo", &lifo), ("fifo", &fifo), ("random", &random)] {
        for api in Api::both() {
            let mut ptrs: Vec<*mut c_void> = vec![core::ptr::null_mut(); BATCH];
            g.bench_function(BenchmarkId::new(api.name, order_name), |b| {
                b.iter(|| unsafe {
                    for slot in ptrs.iter_mut() {
                        let p = nonnull((api.malloc)(BATCH_SIZE), "malloc");
                        (p as *mut u8).write_volatile(1);
                        *slot = p;
                    }
                    for &i in order.iter() {
                        (api.free)(ptrs[i]);
                    }
                    black_box(&mut ptrs);
                })
            });
        }
    }
    g.finish();
}

fn realloc_growth(c: &mut Criterion) {
    let mut g = c.benchmark_group("realloc_16B_to_64KiB_doubling");
    for api in Api::both() {
        g.bench_function(api.name, |b| {
            b.iter(|| unsafe {
                let mut size = 16usize;
                let mut p = nonnull((api.malloc)(size), "malloc") as *mut u8;
                p.write_volatile(1);
                while size < 64 * 1024 {
                    size *= 2;
                    p = nonnull((api.realloc)(p as *mut c_void, size), "realloc") as *mut u8;
                    p.add(size - 1).write_volatile(1);
                }
                (api.free)(black_box(p as *mut c_void));
            })
        });
    }
    g.finish();
}

fn calloc(c: &mut Criterion) {
    let mut g = c.benchmark_group("calloc_free");
    for size in [64usize, 4096, 64 * 1024] {
        for api in Api::both() {
            g.bench_with_input(BenchmarkId::new(api.name, size), &size, |b, &size| {
                b.iter(|| unsafe {
                    let p = nonnull((api.calloc)(1, black_box(size)), "calloc") as *mut u8;
                    black_box(p.add(size / 2).read_volatile());
                    (api.free)(p as *mut c_void);
                })
            });
        }
    }
    g.finish();
}

fn aligned(c: &mut Criterion) {
    let mut g = c.benchmark_group("aligned_alloc_free");
    for (align, size) in [(64usize, 64usize), (4096, 4096)] {
        for api in Api::both() {
            let id = BenchmarkId::new(api.name, format!("align{align}_size{size}"));
            g.bench_function(id, |b| {
                b.iter(|| unsafe {
                    let p = nonnull((api.aligned)(black_box(align), black_box(size)), "aligned");
                    if (p as usize) & (align - 1) != 0 {
                        panic!("{}: misaligned block {p:p} for alignment {align}", api.name);
                    }
                    (p as *mut u8).write_volatile(1);
                    (api.free)(p);
                })
            });
        }
    }
    g.finish();
}

/// Thread A allocates batches of 1000 blocks, thread B frees them. Two batch buffers
/// circulate between the threads, so A fills one while B empties the other; the time is
/// taken on A from the first allocation until B has freed the last batch.
fn cross_thread_batches(api: Api, iters: u64) -> Duration {
    let (to_b, from_a) = mpsc::sync_channel::<Vec<usize>>(2);
    let (to_a, from_b) = mpsc::sync_channel::<Vec<usize>>(2);
    to_a.send(Vec::with_capacity(BATCH)).unwrap();
    to_a.send(Vec::with_capacity(BATCH)).unwrap();
    let freer = thread::spawn(move || {
        while let Ok(mut batch) = from_a.recv() {
            for &p in batch.iter() {
                unsafe { (api.free)(p as *mut c_void) };
            }
            batch.clear();
            if to_a.send(batch).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        let mut batch = from_b.recv().unwrap();
        for _ in 0..BATCH {
            let p = nonnull(unsafe { (api.malloc)(BATCH_SIZE) }, "malloc");
            unsafe { (p as *mut u8).write_volatile(1) };
            batch.push(p as usize);
        }
        to_b.send(batch).unwrap();
    }
    // both buffers back means every block has been freed
    let a = from_b.recv().unwrap();
    let b = from_b.recv().unwrap();
    let elapsed = start.elapsed();
    drop(to_b);
    freer.join().unwrap();
    drop((a, b));
    elapsed
}

fn cross_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_thread_free_1000x64B");
    g.throughput(Throughput::Elements(BATCH as u64));
    for api in Api::both() {
        g.bench_function(api.name, |b| {
            b.iter_custom(|iters| cross_thread_batches(api, iters))
        });
    }
    g.finish();
}

fn criterion_config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40)
}

criterion_group! {
    name = benches;
    config = criterion_config();
    targets = malloc_free, batch, realloc_growth, calloc, aligned, cross_thread
}

fn main() {
    check_attribution();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
