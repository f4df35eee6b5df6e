//! oxmalloc as Rust's global allocator: collections, threads, alignment, zeroing.

use oxmalloc::OxMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap};

#[global_allocator]
static GLOBAL: OxMalloc = OxMalloc;

#[test]
fn boxes_and_vectors_come_from_oxmalloc() {
    let b = Box::new([7u8; 100]);
    assert_eq!(oxmalloc::ox_owns((&*b as *const [u8; 100]).cast()), 1);
    let mut v: Vec<u64> = Vec::new();
    for i in 0..100_000 {
        v.push(i);
    }
    assert_eq!(oxmalloc::ox_owns(v.as_ptr().cast()), 1);
    assert_eq!(v.iter().sum::<u64>(), 100_000 * 99_999 / 2);
    let s: String = (0..10_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(s.len(), 10_000);
}

#[test]
fn threads_share_and_drop_across_each_other() {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<String>>();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for round in 0..200 {
                    let batch: Vec<String> = (0..50)
                        .map(|i| format!("{t}-{round}-{i}-{}", "x".repeat(i)))
                        .collect();
                    tx.send(batch).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut count = 0;
    let mut map = HashMap::new();
    for batch in rx {
        for s in batch {
            count += 1;
            *map.entry(s.len()).or_insert(0u32) += 1;
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(count, 4 * 200 * 50);
    assert_eq!(map.values().sum::<u32>(), count);
}

#[test]
fn aligned_and_zeroed_layouts() {
    for align in [16usize, 64, 4096, 1 << 16, 1 << 21] {
        for size in [1usize, 100, 5000, 100_000, 3 << 20] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size; freed below with the same layout.
            unsafe {
                let p = GLOBAL.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                let bytes = std::slice::from_raw_parts(p, size);
                assert!(bytes.iter().all(|&b| b == 0));
                p.write_bytes(0xEE, size);
                let q = GLOBAL.realloc(p, layout, size * 2);
                assert!(!q.is_null());
                assert_eq!(q as usize % align, 0, "realloc keeps alignment");
                assert!(std::slice::from_raw_parts(q, size)
                    .iter()
                    .all(|&b| b == 0xEE));
                GLOBAL.dealloc(q, Layout::from_size_align(size * 2, align).unwrap());
            }
        }
    }
}

#[test]
fn ordered_map_churn() {
    let mut m = BTreeMap::new();
    for i in 0..200_000u32 {
        m.insert(i.wrapping_mul(2_654_435_761), vec![i; (i % 7) as usize]);
        if i % 3 == 0 {
            m.remove(&(i / 2).wrapping_mul(2_654_435_761));
        }
    }
    assert!(m.len() > 100_000);
    assert_eq!(oxmalloc::ox_heap_check(), 0);
}
