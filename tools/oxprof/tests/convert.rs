//! `oxprof convert` on raw profiles made here, from this test process's own maps and the
//! addresses of its own functions, so that the expected names are known; and the
//! command line's errors and exit statuses.

mod support;

use std::path::Path;

use support::*;

// Plain operators only: a call to a std function here could be inlined at the entry
// address and show as an extra (inlined) frame in optimized builds.
#[inline(never)]
fn leaf_alpha(x: u64) -> u64 {
    x ^ 0x5a
}

#[inline(never)]
fn middle_beta(x: u64) -> u64 {
    leaf_alpha(x) ^ 0x33
}

#[inline(never)]
fn root_gamma(x: u64) -> u64 {
    middle_beta(x) ^ 0x0f
}

/// A "return address" inside `f`: its first byte is what the tool looks up (pc - 1).
fn pc_in(f: fn(u64) -> u64) -> u64 {
    f as *const () as usize as u64 + 1
}

const LEAF: &str = "convert::leaf_alpha";
const MIDDLE: &str = "convert::middle_beta";
const ROOT: &str = "convert::root_gamma";

/// A raw profile of this process with the given `stack` lines and correct totals.
fn raw_profile(stacks: &[String]) -> String {
    let field = |line: &String, index: usize| -> u64 {
        line.split(' ').nth(index).unwrap().parse().unwrap()
    };
    let alloc: u64 = stacks.iter().map(|line| field(line, 3)).sum();
    let live: u64 = stacks.iter().map(|line| field(line, 6)).sum();
    let exe = std::env::current_exe().unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut text = format!(
        "oxprof-raw 1\npid {}\nexe {}\nreason exit\ntime 1700000000\ninterval 524288\ntotals {alloc} {live}\n",
        std::process::id(),
        exe.display()
    );
    for line in stacks {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("maps\n");
    text.push_str(&maps);
    text
}

/// Five stacks: two with live bytes through this file's functions, one at an unknown
/// address, the library's overflow stack, and one whose blocks were all freed.
fn sample_stacks() -> Vec<String> {
    let (leaf, middle, root) = (pc_in(leaf_alpha), pc_in(middle_beta), pc_in(root_gamma));
    assert_eq!(root_gamma(std::hint::black_box(0)), 0x5a ^ 0x33 ^ 0x0f);
    vec![
        format!("stack 4 10 10000 2 4 4000 3 {leaf:#x} {middle:#x} {root:#x}"),
        format!("stack 3 5 50000 2 2 30000 2 {middle:#x} {root:#x}"),
        "stack 1 1 100 1 1 100 1 0x10".to_string(),
        "stack 2 3 3000 0 0 0 0".to_string(),
        format!("stack 1 7 700 0 0 0 2 {leaf:#x} {root:#x}"),
    ]
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn pprof_output_has_the_types_names_and_totals() {
    let dir = scratch_dir("pprof");
    let raw = write(&dir, "oxprof.1.exit.raw", &raw_profile(&sample_stacks()));
    convert(&raw, &dir);
    let profile = read_profile(&dir.join("oxprof.1.exit.pb.gz"));

    assert_eq!(profile.sample_types, expected_sample_types());
    assert_eq!(profile.default_sample_type, "inuse_space");
    assert_eq!(
        profile.period_type,
        ("space".to_string(), "bytes".to_string())
    );
    assert_eq!(profile.period, 524288);
    assert_eq!(profile.time_nanos, 1_700_000_000_000_000_000);
    assert!(profile.comments.iter().any(|c| c.contains("reason: exit")));

    // Totals per sample type are the raw file's sums.
    assert_eq!(profile.totals(), vec![26, 63800, 7, 34100]);
    assert_eq!(profile.samples.len(), 5);

    // The function names are in the string table and the locations use them.
    for name in [LEAF, MIDDLE, ROOT] {
        assert!(profile.strings.iter().any(|s| s == name), "{name} missing");
    }
    let by_address = profile.location_by_address();
    for (f, name) in [
        (leaf_alpha as fn(u64) -> u64, LEAF),
        (middle_beta, MIDDLE),
        (root_gamma, ROOT),
    ] {
        let location = by_address
            .get(&(pc_in(f) - 1))
            .unwrap_or_else(|| panic!("no location at {name}'s address"));
        assert_eq!(profile.names_at(location.id), vec![name.to_string()]);
        let (function, line) = location.lines[0];
        let function = profile.function(function);
        assert!(function.filename.ends_with("convert.rs"), "{function:?}");
        assert!(function.system_name.starts_with("_ZN") || function.system_name.starts_with("_R"));
        assert!(line > 0, "{name} has no line");
        let mapping = profile
            .mappings
            .iter()
            .find(|m| m.id == location.mapping_id)
            .expect("the location has a mapping");
        assert!(mapping.start <= location.address && location.address < mapping.limit);
        assert!(mapping.has_functions && mapping.has_line_numbers);
    }

    // Stack A's sample lists its locations leaf first.
    let sample_a = profile
        .samples
        .iter()
        .find(|s| s.values == [10, 10000, 4, 4000])
        .unwrap();
    let names: Vec<String> = sample_a
        .location_ids
        .iter()
        .flat_map(|&id| profile.names_at(id))
        .collect();
    assert_eq!(names, [LEAF, MIDDLE, ROOT]);

    // The overflow stack and the unknown address.
    let other = profile
        .samples
        .iter()
        .find(|s| s.values == [3, 3000, 0, 0])
        .unwrap();
    assert_eq!(profile.names_at(other.location_ids[0]), ["[other stacks]"]);
    let unknown = by_address.get(&0xf).expect("location of pc 0x10");
    assert!(unknown.lines.is_empty());
    assert_eq!(unknown.mapping_id, 0);

    // The main program is mapping 1.
    let exe = std::env::current_exe().unwrap();
    assert_eq!(profile.mappings[0].id, 1);
    assert_eq!(Path::new(&profile.mappings[0].filename), exe);
}

#[test]
fn folded_and_leak_report_are_ordered_with_totals() {
    let dir = scratch_dir("text");
    let raw = write(&dir, "p.raw", &raw_profile(&sample_stacks()));
    convert(&raw, &dir);

    let folded = std::fs::read_to_string(dir.join("p.live.folded")).unwrap();
    let expected = format!("{ROOT};{MIDDLE} 30000\n{ROOT};{MIDDLE};{LEAF} 4000\n0x10 100\n");
    assert_eq!(folded, expected);

    let leaks = std::fs::read_to_string(dir.join("p.leaks.txt")).unwrap();
    let headers: Vec<&str> = leaks.lines().filter(|line| line.starts_with('#')).collect();
    assert_eq!(headers.len(), 3, "{leaks}");
    assert!(
        headers[0].starts_with("#1 30000 bytes (29.3 KiB) in 2 objects, 2 sampled, 88.0% of live")
    );
    assert!(headers[1].starts_with("#2 4000 bytes (3.9 KiB) in 4 objects, 2 sampled"));
    assert!(headers[2].starts_with("#3 100 bytes (100 B) in 1 objects, 1 sampled"));
    assert!(
        leaks.contains("never freed"),
        "an exit dump says these are leaks"
    );
    let total = leaks.lines().last().unwrap();
    assert_eq!(
        total,
        "total: 34100 bytes (33.3 KiB) in 7 objects, from 5 sampled blocks in 3 stacks"
    );
    // Frames of the first entry, innermost first, with file and line.
    let first_entry: Vec<&str> = leaks
        .split("#1 ")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|line| !line.is_empty())
        .collect();
    assert_eq!(first_entry.len(), 2, "{leaks}");
    assert!(first_entry[0].contains(MIDDLE) && first_entry[0].contains("convert.rs:"));
    assert!(first_entry[1].contains(ROOT));
    assert!(leaks.contains("0x0000000000000010 ??"), "{leaks}");
}

#[test]
fn a_version_1_file_has_no_peak_view() {
    let dir = scratch_dir("v1-views");
    let raw = write(&dir, "p.raw", &raw_profile(&sample_stacks()));
    convert(&raw, &dir);
    assert!(!dir.join("p.peak.folded").exists());
    let alloc = std::fs::read_to_string(dir.join("p.alloc.folded")).unwrap();
    let expected = format!(
        "{ROOT};{MIDDLE} 50000\n{ROOT};{MIDDLE};{LEAF} 10000\n[other stacks] 3000\n{ROOT};{LEAF} 700\n0x10 100\n"
    );
    assert_eq!(alloc, expected);
    let page = std::fs::read_to_string(dir.join("p.html")).unwrap();
    assert!(
        page.contains("No timeline"),
        "a version-1 file has no timeline"
    );
    assert!(!page.contains("data-view=\"peak\""));
    assert!(page.contains("data-view=\"alloc\"") && page.contains("data-view=\"live\""));
}

#[test]
fn a_dump_without_live_blocks_still_gives_every_output() {
    let dir = scratch_dir("empty");
    let leaf = pc_in(leaf_alpha);
    let raw = write(
        &dir,
        "e.raw",
        &raw_profile(&[format!("stack 1 1 100 0 0 0 1 {leaf:#x}")]),
    );
    convert(&raw, &dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("e.live.folded")).unwrap(),
        ""
    );
    let leaks = std::fs::read_to_string(dir.join("e.leaks.txt")).unwrap();
    assert!(
        leaks.ends_with("total: 0 bytes (0 B) in 0 objects, from 0 sampled blocks in 0 stacks\n")
    );
    let page = std::fs::read_to_string(dir.join("e.html")).unwrap();
    assert!(page.contains("No leaks: no sampled block was live at exit."));
    assert_eq!(
        read_profile(&dir.join("e.pb.gz")).totals(),
        vec![1, 100, 0, 0]
    );
}

#[test]
fn folders_convert_every_raw_file_beside_it() {
    let dir = scratch_dir("folder");
    let text = raw_profile(&sample_stacks());
    write(&dir, "oxprof.7.0000.raw", &text);
    write(&dir, "oxprof.7.exit.raw", &text);
    write(&dir, "oxprof.7.0001.raw.tmp", "half a file");
    let output = oxprof(&["convert", dir.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    // Five files each (no peak in version 1), then the report to open.
    assert_eq!(stdout.lines().count(), 11, "{stdout}");
    let page = dir.join("oxprof.7.exit.html");
    assert!(
        stdout.ends_with(&format!("oxprof: open {} (", page.display()))
            || stdout.contains(&format!("oxprof: open {} (", page.display())),
        "the exit dump stands for the process: {stdout}"
    );
    assert!(dir.join("index.html").is_file());
    for base in ["oxprof.7.0000", "oxprof.7.exit"] {
        for suffix in [
            ".html",
            ".pb.gz",
            ".alloc.folded",
            ".live.folded",
            ".leaks.txt",
        ] {
            let path = dir.join(format!("{base}{suffix}"));
            assert!(path.is_file(), "{} missing", path.display());
            assert!(stdout.contains(&path.display().to_string()));
        }
    }
    assert!(!dir.join("oxprof.7.0001.pb.gz").exists());
}

#[test]
fn malformed_and_truncated_files_are_rejected_naming_file_and_line() {
    let dir = scratch_dir("errors");
    let good = raw_profile(&sample_stacks());

    let bad = good.replacen(
        "stack 3 5 50000 2 2 30000 2",
        "stack 3 5 50000 2 2 30000 5",
        1,
    );
    let bad_path = write(&dir, "bad.raw", &bad);
    let output = oxprof(&["convert", bad_path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.raw:9: stack depth is 5 but 2 addresses follow"),
        "{stderr}"
    );
    assert!(!dir.join("bad.pb.gz").exists());

    // Cut inside the stack lines: no `maps` section.
    let cut = &good[..good.find("stack 2 3 3000").unwrap() + 5];
    let cut_path = write(&dir, "cut.raw", cut);
    let output = oxprof(&["convert", cut_path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cut.raw:11:"), "{stderr}");
    // Cut inside the maps: the last line has no newline.
    let cut_maps = &good[..good.len() - 3];
    let cut_maps_path = write(&dir, "cut-maps.raw", cut_maps);
    let output = oxprof(&["convert", cut_maps_path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("truncated"));

    // A bad file does not stop the others; the status still reports it.
    let good_path = write(&dir, "good.raw", &good);
    let output = oxprof(&[
        "convert",
        bad_path.to_str().unwrap(),
        good_path.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(dir.join("good.pb.gz").is_file());

    let missing = oxprof(&["convert", dir.join("missing.raw").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing.raw"));
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [
        &[][..],
        &["convert"][..],
        &["convert", "--out"][..],
        &["nonsense"][..],
    ] {
        let output = oxprof(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("usage: oxprof convert"));
    }
    let help = oxprof(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout)
        .starts_with("usage: oxprof convert [--out OUTDIR] [--quiet] INPUT..."));
}

#[test]
fn go_tool_pprof_reads_the_profile() {
    // The real consumer, where it is installed (CI machines have no Go toolchain; the
    // decoder above checks the same things without it).
    let has_go = std::process::Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_go {
        eprintln!("skipped: no `go` command to run `go tool pprof`");
        return;
    }
    let dir = scratch_dir("go-pprof");
    let raw = write(&dir, "p.raw", &raw_profile(&sample_stacks()));
    convert(&raw, &dir);
    let output = std::process::Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(dir.join("p.pb.gz"))
        .env("PPROF_TMPDIR", &dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains(
            "alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes[dflt]"
        ),
        "{text}"
    );
    for name in [LEAF, MIDDLE, ROOT, "[other stacks]"] {
        assert!(text.contains(name), "{name} not in {text}");
    }
}
