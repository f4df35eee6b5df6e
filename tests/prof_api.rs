//! The heap profiler's Rust API, `oxmalloc::prof_dump`, with oxmalloc as the global
//! allocator (its code is then in the program itself, not in a shared library).
//!
//! Profiling is set up when the process starts, so the test runs itself again with
//! `OXMALLOC_PROF=1` in the environment and checks what the child wrote.

use oxmalloc::OxMalloc;
use std::ffi::CString;
use std::process::Command;

#[global_allocator]
static GLOBAL: OxMalloc = OxMalloc;

const CHILD_ENV: &str = "OXPROF_TEST_CHILD_PATH";

/// Allocates through Rust's global allocator from a known place; returns the boxes (one
/// allocation each, which is the point: hence the lint).
#[inline(never)]
#[allow(clippy::vec_box)]
fn allocate_here() -> Vec<Box<[u8; 200]>> {
    (0..20_000).map(|_| Box::new([1u8; 200])).collect()
}

/// The child's side: allocate, write a profile, report where `allocate_here` is.
fn child(path: &str) {
    let kept = allocate_here();
    let path = CString::new(path).unwrap();
    oxmalloc::prof_dump(Some(&path)).expect("prof_dump");
    println!("SITE={}", allocate_here as *const () as usize);
    drop(kept);
}

#[test]
fn prof_dump_writes_a_profile_with_the_callers_frames() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return child(&path);
    }
    let dir = std::env::temp_dir().join(format!("oxprof-rust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("api.raw");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "prof_dump_writes_a_profile_with_the_callers_frames",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .env("OXMALLOC_PROF", "1")
        .env("OXMALLOC_PROF_INTERVAL", "4096")
        .env("OXMALLOC_PROF_DIR", &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The harness prints "test NAME ... " before the child's own line.
    let site: usize = stdout
        .split("SITE=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("child said SITE")
        .parse()
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("oxprof-raw 2"));
    assert!(text.contains("\nreason api\n") && text.contains("\ninterval 4096\n"));
    // 20,000 boxes of 200 bytes (4 MB) at a 4 KiB interval: about 1000 samples, and one
    // of the first frames of their stack lies in `allocate_here` (the allocator's entry
    // path above it stays: its code cannot be told from the program's by address).
    let mut samples = 0u64;
    for line in text.lines().filter(|l| l.starts_with("stack ")) {
        let fields: Vec<&str> = line.split(' ').collect();
        // Twelve counts (live, allocated, at the peak, short-lived), then the depth.
        let depth: usize = fields[13].parse().unwrap();
        assert_eq!(fields.len(), 14 + depth, "{line}");
        let pcs: Vec<usize> = fields[14..14 + depth]
            .iter()
            .map(|pc| usize::from_str_radix(pc.trim_start_matches("0x"), 16).unwrap())
            .collect();
        if pcs.iter().take(40).any(|&pc| pc > site && pc < site + 4096) {
            samples += fields[1].parse::<u64>().unwrap();
        }
    }
    assert!(samples > 500, "{samples} samples in allocate_here");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn prof_dump_says_enotsup_when_profiling_is_off() {
    if std::env::var_os(CHILD_ENV).is_some() || std::env::var_os("OXMALLOC_PROF").is_some() {
        return; // this process was started with profiling options: nothing to check here
    }
    let path = CString::new("/tmp/never-written.raw").unwrap();
    assert_eq!(oxmalloc::prof_dump(Some(&path)), Err(libc::ENOTSUP));
    assert!(!std::path::Path::new("/tmp/never-written.raw").exists());
}
