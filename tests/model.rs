//! Model-based test: pseudo-random action sequences against the `ox_*` API, each result
//! checked by the shadow model in `support/model.rs` (the fuzz target runs the same model on
//! its inputs).
//!
//! A case is a seed: its bytes come from a SplitMix64 generator and [`decode`] turns them
//! into actions, so the test and the fuzzer share one distribution of sizes and alignments.
//! Each test runs a fixed list of seeds (deterministic in CI; the multi-threaded test is
//! deterministic in each thread's actions, not in their interleaving). On failure the seed
//! is printed; to rerun that case alone, or to run longer:
//!
//! ```sh
//! OXTEST_MODEL_SEED=0x… OXTEST_MODEL_CASES=1 cargo test --test model single_thread
//! OXTEST_MODEL_CASES=500 cargo test --release --test model -- --nocapture
//! ```
//!
//! `OXTEST_MODEL_SEED` is the first seed (decimal or `0x` hex), the others follow it;
//! `OXTEST_MODEL_CASES` is the number of cases per test. `--nocapture` shows each test's
//! figures.
//!
//! The test binary links oxmalloc with its C exports, so the harness, the threads and the
//! model's own collections allocate from oxmalloc too.

mod support {
    pub mod model;
}

use std::collections::HashSet;
use std::mem::discriminant;
use std::thread;
use std::time::Instant;
use support::model::{decode, run_lanes, Action, Model, Shared, Stats};

/// SplitMix64 (Steele, Lea and Flood): small, fast, and good enough to drive a decoder.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A length in `[low, high)`.
    fn len_in(&mut self, low: usize, high: usize) -> usize {
        low + (self.next_u64() % (high - low) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The generator of one case (or of one thread of a case), salted per test so that tests
/// with the same seed do not run the same bytes.
fn generator(seed: u64, salt: u64) -> SplitMix64 {
    let mut mixer = SplitMix64(seed ^ salt.wrapping_mul(0xa076_1d64_78bd_642f));
    SplitMix64(mixer.next_u64())
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={text:?} is not a number"),
    }
}

/// Prints how to rerun a case if it panics.
struct SeedReport<'a> {
    test: &'a str,
    seed: u64,
}

impl Drop for SeedReport<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "{}: case with seed {:#x} failed; rerun it with\n  \
                 OXTEST_MODEL_SEED={:#x} OXTEST_MODEL_CASES=1 cargo test --test model {}",
                self.test, self.seed, self.seed, self.test
            );
        }
    }
}

/// Runs `case` for `OXTEST_MODEL_CASES` (else `default_cases`) seeds from
/// `OXTEST_MODEL_SEED` (else `default_seed`), then prints the totals.
fn for_each_case(
    test: &str,
    default_seed: u64,
    default_cases: u64,
    mut case: impl FnMut(u64) -> Stats,
) {
    let first_seed = env_number("OXTEST_MODEL_SEED").unwrap_or(default_seed);
    let cases = env_number("OXTEST_MODEL_CASES").unwrap_or(default_cases);
    let start = Instant::now();
    let mut total = Stats::default();
    for i in 0..cases {
        let seed = first_seed.wrapping_add(i);
        let report = SeedReport { test, seed };
        total.add(&case(seed));
        drop(report);
    }
    println!(
        "{test}: {cases} cases from seed {first_seed:#x} in {:.2?}: {total}",
        start.elapsed()
    );
}

/// Inputs of 2 to 10 KiB decode to about 350 to 1,750 actions.
const INPUT_BYTES: (usize, usize) = (2 << 10, 10 << 10);

#[test]
fn single_thread() {
    for_each_case("single_thread", 0x6f78_0001, 12, |seed| {
        let mut rng = generator(seed, 1);
        let len = rng.len_in(INPUT_BYTES.0, INPUT_BYTES.1);
        let actions = decode(&rng.bytes(len));
        let shared = Shared::default();
        let mut model = Model::new(&shared, 0);
        for action in &actions {
            model.apply(action);
        }
        model.drain_mailbox();
        let stats = model.finish();
        shared.assert_empty();
        stats
    });
}

/// Four threads run their own actions at once on one shared registry (so an address given
/// to two threads is caught) and one mailbox: a block handed off by one thread is checked,
/// resized and freed by another, its owner perhaps gone by then.
#[test]
fn four_threads_with_hand_offs() {
    const THREADS: usize = 4;
    for_each_case("four_threads_with_hand_offs", 0x6f78_1001, 4, |seed| {
        let shared = Shared::default();
        let mut stats = thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|lane| {
                    let shared = &shared;
                    scope.spawn(move || {
                        let mut rng = generator(seed, 100 + lane as u64);
                        let len = rng.len_in(INPUT_BYTES.0, INPUT_BYTES.1);
                        let actions = decode(&rng.bytes(len));
                        let mut model = Model::new(shared, lane);
                        for action in &actions {
                            model.apply(action);
                        }
                        model.finish()
                    })
                })
                .collect();
            let mut stats = Stats::default();
            for worker in workers {
                match worker.join() {
                    Ok(s) => stats.add(&s),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            stats
        });
        // What no thread adopted is freed here, by a thread that did not allocate it.
        let mut rest = Model::new(&shared, THREADS);
        rest.drain_mailbox();
        stats.add(&rest.finish());
        shared.assert_empty();
        stats
    });
}

/// The fuzz target's path: random bytes through `decode` and `run_lanes`.
#[test]
fn lock_step_lanes_as_the_fuzzer_runs_them() {
    for_each_case(
        "lock_step_lanes_as_the_fuzzer_runs_them",
        0x6f78_2001,
        10,
        |seed| {
            let mut rng = generator(seed, 2);
            let len = rng.len_in(0, INPUT_BYTES.1);
            run_lanes(&decode(&rng.bytes(len)))
        },
    );
}

/// Known edges, in a fixed order: zero sizes, growth and shrinkage across the small, medium
/// and huge allocators, the largest alignments, calls that must fail, and hand-offs.
#[test]
fn edges_in_order() {
    use Action::*;
    let mut actions = vec![
        Free { slot: 0 },
        UsableSize { slot: 0 },
        Realloc { slot: 0, size: 0 },
        Malloc { slot: 0, size: 0 },
        Malloc { slot: 1, size: 0 },
        Calloc {
            slot: 2,
            count: 0,
            size: 0,
        },
        Calloc {
            slot: 3,
            count: 7,
            size: 0,
        },
        UsableSize { slot: 0 },
        Realloc { slot: 0, size: 0 },
        Calloc {
            slot: 4,
            count: usize::MAX,
            size: 2,
        },
        Calloc {
            slot: 4,
            count: 1 << 40,
            size: 1 << 40,
        },
        Malloc {
            slot: 4,
            size: usize::MAX,
        },
        AlignedAlloc {
            slot: 4,
            align_shift: 21,
            size: usize::MAX - 15,
        },
        Realloc { slot: 5, size: 1 },
    ];
    // Grow one block through every allocator, then shrink it back.
    let sizes = [
        8,
        16,
        17,
        128,
        129,
        1000,
        4096,
        16384,
        16385,
        32768,
        32769,
        500_000,
        1 << 20,
        (1 << 20) + 1,
        3 << 20,
        8 << 20,
        9 << 20,
        1 << 20,
        16385,
        16384,
        100,
        1,
    ];
    for size in sizes {
        actions.push(Realloc { slot: 5, size });
        actions.push(UsableSize { slot: 5 });
    }
    actions.push(Realloc {
        slot: 5,
        size: usize::MAX,
    });
    actions.push(Realloc {
        slot: 5,
        size: isize::MAX as usize,
    });
    for align_shift in 3..=22 {
        let slot = 10 + u16::from(align_shift);
        actions.push(AlignedAlloc {
            slot,
            align_shift,
            size: 1,
        });
        actions.push(AlignedAlloc {
            slot: slot + 40,
            align_shift,
            size: (1 << align_shift) + 1,
        });
        actions.push(Realloc {
            slot,
            size: 100_000,
        });
    }
    actions.extend([
        Burst {
            slot: 100,
            count: 4096,
            size: 16,
        },
        FreeRange {
            slot: 100,
            count: 2048,
        },
        Burst {
            slot: 100,
            count: 2048,
            size: 16,
        },
        HeapCheck,
        HandOff { slot: 5 },
        HandOff { slot: 13 },
        HandOff { slot: 30 },
        Switch { lane: 1 },
        Adopt { slot: 0 },
        Adopt { slot: 1 },
        Realloc {
            slot: 1,
            size: 200_000,
        },
        HandOff { slot: 1 },
        Burst {
            slot: 200,
            count: 300,
            size: 1000,
        },
        HandOff { slot: 250 },
        Switch { lane: 2 },
        Adopt { slot: 0 },
        Adopt { slot: 1 },
        Free { slot: 0 },
        Trim,
        HeapCheck,
        Switch { lane: 0 },
        Adopt { slot: 9 },
        FreeRange {
            slot: 100,
            count: 4096,
        },
        Trim,
        HeapCheck,
    ]);
    let start = Instant::now();
    let stats = run_lanes(&actions);
    println!("edges_in_order: {:.2?}: {stats}", start.elapsed());
    assert_eq!(stats.expected_nulls, 6, "{stats}");
}

/// The decoder reaches every action, every size range and the alignment extremes.
#[test]
fn decoder_spreads_actions_sizes_and_alignments() {
    assert!(decode(&[]).is_empty());
    assert_eq!(decode(&[0xff]), vec![Action::Trim]);
    assert_eq!(
        decode(&[0; 3]).len(),
        1,
        "a Malloc reads 3 bytes: op, slot, size"
    );

    let actions = decode(&generator(0x6f78_3001, 3).bytes(1 << 20));
    let kinds: HashSet<_> = actions.iter().map(discriminant).collect();
    assert_eq!(kinds.len(), 13, "action kinds seen: {}", kinds.len());

    let mut sizes = Vec::new();
    let mut align_shifts = HashSet::new();
    let mut calloc_overflows = 0;
    let mut longest_burst = 0;
    for action in &actions {
        match *action {
            Action::Malloc { size, .. } | Action::Realloc { size, .. } => sizes.push(size),
            Action::AlignedAlloc {
                align_shift, size, ..
            } => {
                sizes.push(size);
                align_shifts.insert(align_shift);
            }
            Action::Calloc { count, size, .. } => match count.checked_mul(size) {
                Some(total) => sizes.push(total),
                None => calloc_overflows += 1,
            },
            Action::Burst { count, .. } => longest_burst = longest_burst.max(count),
            _ => {}
        }
    }
    let ranges: [(&str, usize, usize); 9] = [
        ("zero", 0, 0),
        ("tiny", 1, 16),
        ("small", 17, 1024),
        ("small, upper classes", 1025, 16 << 10),
        ("medium", (16 << 10) + 1, 256 << 10),
        ("medium, large spans", (256 << 10) + 1, 1 << 20),
        ("huge", (1 << 20) + 1, 8 << 20),
        ("larger than 8 MiB", (8 << 20) + 1, 64 << 20),
        ("impossible", 1 << 62, usize::MAX),
    ];
    for (name, low, high) in ranges {
        let count = sizes.iter().filter(|&&s| (low..=high).contains(&s)).count();
        assert!(
            count > 0,
            "no {name} size ({low}..={high}) in {} sizes",
            sizes.len()
        );
    }
    for edge in [16384, 16385, 1 << 20, (1 << 20) + 1] {
        assert!(sizes.contains(&edge), "size {edge} never decoded");
    }
    assert!(
        align_shifts.contains(&3) && align_shifts.contains(&22),
        "{align_shifts:?}"
    );
    assert_eq!(
        align_shifts.len(),
        20,
        "alignments 8 B..4 MiB: {align_shifts:?}"
    );
    assert!(calloc_overflows > 0);
    assert_eq!(longest_burst, 4096);
}

/// The lanes the fuzzer's `Switch` names all exist.
#[test]
fn lanes_cover_every_switch() {
    let actions: Vec<Action> = (0..=u8::MAX)
        .flat_map(|lane| {
            [
                Action::Switch { lane },
                Action::Malloc { slot: 0, size: 24 },
            ]
        })
        .collect();
    let stats = run_lanes(&actions);
    assert_eq!(stats.allocations, 256, "{stats}");
}
