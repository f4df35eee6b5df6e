//! `oxprof symbolize` on a real report of oxmalloc's guarded sampling: a C program with a
//! read after free (`fixtures/guard_use_after_free.c`) runs on the workspace's
//! `liboxmalloc.so` with every block guarded, dies by `SIGSEGV` after the report, and the
//! symbolized report names the allocating and the freeing function and the faulting line.
//! Needs a C compiler and the library built (`cargo build --release` at the workspace
//! root); the test says which is missing and passes without checking anything then.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// The signal number of `SIGSEGV` on Linux.
const SIGSEGV: i32 = 11;

#[test]
fn a_use_after_free_report_names_its_functions() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/liboxmalloc.so");
    if !lib.is_file() {
        eprintln!("skipped: {} is not built", lib.display());
        return;
    }
    let dir = scratch_dir("guard-report");
    let program = dir.join("use_after_free");
    match Command::new("cc")
        .args(["-O0", "-g", "-o"])
        .arg(&program)
        .arg(format!("{FIXTURES}/guard_use_after_free.c"))
        .status()
    {
        Ok(status) => assert!(status.success(), "cc failed"),
        Err(_) => {
            eprintln!("skipped: no C compiler (cc)");
            return;
        }
    }
    let run = Command::new(&program)
        .env("LD_PRELOAD", &lib)
        .env("OXMALLOC_GUARD", "1")
        .env("OXMALLOC_GUARD_INTERVAL", "1")
        .output()
        .expect("the program runs");
    let report = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.signal(), Some(SIGSEGV), "{report}");
    assert!(
        report.contains("oxmalloc: guard: use after free: read at "),
        "{report}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_oxprof"))
        .arg("symbolize")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("oxprof runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), report.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let named = String::from_utf8_lossy(&out.stdout);
    let first_frame_after = |title: &str| {
        let rest = &named[named.find(title).unwrap_or_else(|| panic!("{named}"))..];
        rest.lines().nth(1).unwrap_or_default().to_string()
    };
    let alloc = first_frame_after("the block was allocated by thread");
    assert!(
        alloc.contains("#0 0x") && alloc.contains(" in open_session at "),
        "{named}"
    );
    assert!(alloc.contains("guard_use_after_free.c:9"), "{named}");
    let free = first_frame_after("and freed by thread");
    assert!(free.contains(" in close_session at "), "{named}");
    let access = named
        .lines()
        .find(|line| line.contains("by the instruction at"))
        .unwrap_or_default();
    assert!(
        access.contains(" in main at ") && access.contains("guard_use_after_free.c:21"),
        "{named}"
    );
}
