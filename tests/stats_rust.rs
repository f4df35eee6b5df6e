//! `oxmalloc::stats()` for Rust programs: the same figures as C's `ox_stats_get`, moving
//! as the program allocates and frees.

use oxmalloc::OxMalloc;

#[global_allocator]
static GLOBAL: OxMalloc = OxMalloc;

/// Allocates 1000 boxes of 200 bytes and returns the stats before, the boxes, the stats
/// with them live, and how many small live blocks were added in between. (The boxes are the
/// point: 1000 separate heap blocks.)
#[allow(clippy::vec_box)]
fn thousand_boxes() -> (
    oxmalloc::OxStats,
    Vec<Box<[u8; 200]>>,
    oxmalloc::OxStats,
    usize,
) {
    let before = oxmalloc::stats();
    let boxes: Vec<Box<[u8; 200]>> = (0..1000).map(|i| Box::new([i as u8; 200])).collect();
    let during = oxmalloc::stats();
    let grew = during.small_live_blocks - before.small_live_blocks;
    (before, boxes, during, grew)
}

#[test]
fn stats_follow_live_blocks() {
    // One test in this binary, but the test harness's main thread lives beside it, and on
    // a loaded machine it was once seen to hold 5 more small blocks during the window (1005
    // in one run of hundreds). A miscount repeats at every try; such a neighbour does not:
    // up to 5 tries, and the figures of the last one are checked.
    let mut tries = 0;
    let (before, boxes, during, grew) = loop {
        tries += 1;
        let t = thousand_boxes();
        // 1000 blocks of 200 bytes (size class 208), plus the vector (one block).
        if (1000..=1002).contains(&t.3) || tries == 5 {
            break t;
        }
    };
    assert!(
        (1000..=1002).contains(&grew),
        "small live blocks grew by {grew} (in each of {tries} tries)"
    );
    assert!(
        during.small_live_bytes - before.small_live_bytes >= 1000 * 208,
        "small live bytes grew by {}",
        during.small_live_bytes - before.small_live_bytes
    );
    assert_eq!(
        during.live_bytes,
        during.small_live_bytes + during.medium_live_bytes + during.huge_live_bytes
    );
    assert!(during.held_bytes >= during.live_bytes);
    assert!(during.peak_held_bytes >= during.held_bytes);
    assert!(during.resident_bytes > 0 && during.resident_bytes <= during.mapped_bytes);
    assert!(during.threads_started >= 1);
    let mut c = oxmalloc::OxStats::default();
    // SAFETY: a valid, writable OxStats.
    unsafe { oxmalloc::ox_stats_get(&mut c) };
    assert_eq!(
        c.small_live_blocks, during.small_live_blocks,
        "C and Rust agree"
    );
    drop(boxes);
    let after = oxmalloc::stats();
    assert!(
        after.small_live_blocks <= before.small_live_blocks + 2,
        "{} live small blocks after dropping, {} before",
        after.small_live_blocks,
        before.small_live_blocks
    );
}
