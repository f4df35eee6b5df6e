//! `oxprof convert` on raw profiles of real C processes: `fixtures/workload.c` run under
//! `fixtures/sampler.c`, a small preloaded sampling profiler that writes the raw format
//! with the process's real return addresses and maps (glibc and the dynamic loader
//! included). Needs a C compiler and binutils; each test says so and passes without
//! checking anything when `cc` or `objcopy` is missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

struct Build {
    sampler: PathBuf,
    workload: PathBuf,
    /// `workload` without symbols or DWARF, with a `.gnu_debuglink` to `workload.debug`.
    stripped: PathBuf,
}

fn run(command: &mut Command) -> bool {
    match command.status() {
        Ok(status) => status.success(),
        Err(_) => false,
    }
}

/// Builds the fixtures once per test run; `None` when there is no C compiler.
fn build() -> Option<&'static Build> {
    static BUILD: OnceLock<Option<Build>> = OnceLock::new();
    BUILD
        .get_or_init(|| {
            let have = |tool: &str| {
                run(Command::new(tool)
                    .arg("--version")
                    .stdout(std::process::Stdio::null()))
            };
            if !have("cc") || !have("objcopy") {
                return None;
            }
            let dir = scratch_dir("c-build");
            let sampler = dir.join("sampler.so");
            let workload = dir.join("workload");
            let stripped_dir = dir.join("stripped");
            std::fs::create_dir_all(&stripped_dir).unwrap();
            let stripped = stripped_dir.join("workload");
            let debug = stripped_dir.join("workload.debug");
            assert!(run(Command::new("cc")
                .args(["-O2", "-g", "-fPIC", "-shared", "-pthread", "-o"])
                .arg(&sampler)
                .arg(format!("{FIXTURES}/sampler.c"))
                .args(["-ldl", "-lm"])));
            assert!(run(Command::new("cc")
                .args(["-O0", "-g", "-Wl,--build-id=sha1", "-o"])
                .arg(&workload)
                .arg(format!("{FIXTURES}/workload.c"))));
            assert!(run(Command::new("objcopy")
                .arg("--only-keep-debug")
                .arg(&workload)
                .arg(&debug)));
            assert!(run(Command::new("objcopy")
                .arg("--strip-all")
                .arg(format!("--add-gnu-debuglink={}", debug.display()))
                .arg(&workload)
                .arg(&stripped)));
            Some(Build {
                sampler,
                workload,
                stripped,
            })
        })
        .as_ref()
}

macro_rules! build_or_skip {
    () => {
        match build() {
            Some(build) => build,
            None => {
                eprintln!("skipped: no C compiler (`cc`) or `objcopy` to build the test programs");
                return;
            }
        }
    };
}

/// Runs `program` under the sampler (every block sampled) and returns its raw profile.
fn profile_of(build: &Build, program: &Path, dir: &Path) -> PathBuf {
    let raw = dir.join("oxprof.test.exit.raw");
    let status = Command::new(program)
        .env("LD_PRELOAD", &build.sampler)
        .env("OXPROF_TEST_OUT", &raw)
        .env("OXPROF_TEST_INTERVAL", "1")
        .status()
        .unwrap();
    assert!(status.success());
    assert!(raw.is_file(), "the sampler wrote no profile");
    raw
}

/// The line of `workload.c` that contains `text`.
fn workload_line(text: &str) -> usize {
    let source = std::fs::read_to_string(format!("{FIXTURES}/workload.c")).unwrap();
    source.lines().position(|line| line.contains(text)).unwrap() + 1
}

/// Sums of alloc_objects, alloc_bytes, inuse_objects, inuse_bytes over the stack lines.
fn raw_sums(raw: &Path) -> Vec<i64> {
    let mut sums = vec![0i64; 4];
    for line in std::fs::read_to_string(raw).unwrap().lines() {
        if let Some(rest) = line.strip_prefix("stack ") {
            let fields: Vec<i64> = rest
                .split(' ')
                .take(6)
                .map(|f| f.parse().unwrap())
                .collect();
            for (sum, index) in sums.iter_mut().zip([1, 2, 4, 5]) {
                *sum += fields[index];
            }
        }
    }
    sums
}

fn check_workload_outputs(raw: &Path, dir: &Path) {
    convert(raw, dir);
    let base = dir.join("oxprof.test.exit");
    let path = |suffix: &str| PathBuf::from(format!("{}{suffix}", base.display()));

    // Live at exit: the tree (16 x 4096) and the strings (10 x 1000); churn freed all.
    let folded = std::fs::read_to_string(path(".live.folded")).unwrap();
    let lines: Vec<&str> = folded.lines().collect();
    assert_eq!(lines.len(), 2, "{folded}");
    assert!(
        lines[0].ends_with(";main;build_tree;make_node 65536"),
        "{folded}"
    );
    assert!(lines[1].ends_with(";main;leak_strings 10000"), "{folded}");
    assert!(!folded.contains("churn"));

    let leaks = std::fs::read_to_string(path(".leaks.txt")).unwrap();
    assert!(
        leaks.contains("#1 65536 bytes (64.0 KiB) in 16 objects, 16 sampled"),
        "{leaks}"
    );
    assert!(
        leaks.contains("#2 10000 bytes (9.8 KiB) in 10 objects, 10 sampled"),
        "{leaks}"
    );
    let make_node = format!(
        " make_node {FIXTURES}/workload.c:{}",
        workload_line("void *node = malloc")
    );
    assert!(leaks.contains(&make_node), "{make_node} not in {leaks}");
    let build_tree = format!(
        " build_tree {FIXTURES}/workload.c:{}",
        workload_line("tree[i] = make_node")
    );
    assert!(leaks.contains(&build_tree), "{leaks}");
    assert!(leaks.ends_with(
        "total: 75536 bytes (73.8 KiB) in 26 objects, from 26 sampled blocks in 2 stacks\n"
    ));

    let profile = read_profile(&path(".pb.gz"));
    assert_eq!(profile.sample_types, expected_sample_types());
    assert_eq!(profile.totals(), raw_sums(raw));
    assert_eq!(profile.totals(), vec![1026, 275536, 26, 75536]);
    for name in ["make_node", "build_tree", "churn", "leak_strings", "main"] {
        assert!(
            profile.functions.iter().any(|f| f.name == name),
            "{name} missing"
        );
    }
    let main_mapping = &profile.mappings[0];
    assert!(main_mapping.filename.ends_with("/workload"));
    assert_eq!(main_mapping.build_id.len(), 40, "a GNU build id in hex");
    assert!(main_mapping.has_functions && main_mapping.has_line_numbers);

    let page = std::fs::read_to_string(path(".html")).unwrap();
    for name in ["make_node", "build_tree", "leak_strings", "main", "churn"] {
        assert!(
            page.contains(&format!("\"{name}\"")),
            "{name} not in the page's frames"
        );
    }
}

#[test]
fn c_program_with_debug_info() {
    let build = build_or_skip!();
    let dir = scratch_dir("c-debug");
    let raw = profile_of(build, &build.workload, &dir);
    check_workload_outputs(&raw, &dir);
}

#[test]
fn stripped_c_program_finds_its_debuglink_file() {
    let build = build_or_skip!();
    let dir = scratch_dir("c-stripped");
    let raw = profile_of(build, &build.stripped, &dir);
    // The static functions are in no symbol table of the stripped file: their names
    // and lines can only come from workload.debug.
    check_workload_outputs(&raw, &dir);
}
