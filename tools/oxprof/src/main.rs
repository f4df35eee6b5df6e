//! `oxprof`: converts the raw heap profiles that oxmalloc writes (`OXMALLOC_PROF=1`) into
//! an HTML report per process (memory over time, flame graphs and top stacks of the peak,
//! the allocations and the leaks), an index of the processes, a pprof profile, collapsed
//! stacks and a report of live blocks.
//!
//! ```text
//! oxprof convert [--out OUTDIR] [--quiet] INPUT...
//! oxprof symbolize [REPORT...]
//! ```
//!
//! Exit status: 0 when every input converted, 1 when an input was malformed or could
//! not be read or written (the others are still converted), 2 on a usage error.

#![forbid(unsafe_code)]

mod convert;
mod guard_report;
mod html;
mod pprof;
mod raw;
mod report;
mod symbolize;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: oxprof convert [--out OUTDIR] [--quiet] INPUT...
       oxprof symbolize [REPORT...]

Converts oxmalloc's raw heap profiles. INPUT is a raw file (oxprof.<pid>.<seq>.raw,
oxprof.<pid>.exit.raw) or a folder of them. For each X.raw it writes, into OUTDIR
(default: the folder of X.raw):

  X.html          the report: open it in a browser (memory over time; flame graphs
                  and top stacks of the peak, of all allocations and of the leaks)
  X.pb.gz         pprof profile:     go tool pprof -http=: X.pb.gz
  X.peak.folded   collapsed stacks (speedscope, flamegraph.pl, inferno): live at the peak,
  X.alloc.folded  allocated since start,
  X.live.folded   live at the dump (at exit: the leaks)
  X.leaks.txt     live blocks grouped by stack, largest first (at exit: the leaks)

and index.html, the processes biggest first. Processes with fewer than 10 samples
(a shell wrapper, `uname`) found in a folder are listed there only.
--quiet prints only the report to open.

Addresses are named from the ELF symbol tables and DWARF of the files in the
process's maps (separate debug files under /usr/lib/debug are used too), so run
oxprof on the machine that ran the program, before rebuilding it.

`oxprof symbolize` reads a report of oxmalloc's guarded sampling (OXMALLOC_GUARD=1)
from the files given, or from stdin, and prints it with a function name, file and line
after each frame (`#3 0x... (MODULE+0xOFFSET) in FUNCTION at FILE:LINE`).

Exit status: 0 on success, 1 if an input is malformed or unreadable, 2 on usage errors.
";

enum Usage {
    Help,
    Symbolize {
        reports: Vec<PathBuf>,
    },
    Convert {
        out_dir: Option<PathBuf>,
        inputs: Vec<PathBuf>,
        quiet: bool,
    },
}

fn parse_args(args: &[String]) -> Result<Usage, String> {
    match args.first().map(String::as_str) {
        None => Err("no command given".to_string()),
        Some("-h" | "--help" | "help") => Ok(Usage::Help),
        Some("symbolize") => Ok(Usage::Symbolize {
            reports: args[1..].iter().map(PathBuf::from).collect(),
        }),
        Some("convert") => {
            let mut out_dir = None;
            let mut inputs = Vec::new();
            let mut quiet = false;
            let mut rest = args[1..].iter();
            let mut options_done = false;
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "-h" | "--help" if !options_done => return Ok(Usage::Help),
                    "--out" | "-o" if !options_done => {
                        let dir = rest.next().ok_or("--out needs a folder")?;
                        out_dir = Some(PathBuf::from(dir));
                    }
                    "--quiet" | "-q" if !options_done => quiet = true,
                    "--" if !options_done => options_done = true,
                    flag if flag.starts_with("--out=") && !options_done => {
                        out_dir = Some(PathBuf::from(&flag["--out=".len()..]));
                    }
                    flag if flag.starts_with('-') && flag.len() > 1 && !options_done => {
                        return Err(format!("unknown option `{flag}`"));
                    }
                    input => inputs.push(PathBuf::from(input)),
                }
            }
            if inputs.is_empty() {
                return Err("convert needs at least one INPUT".to_string());
            }
            Ok(Usage::Convert {
                out_dir,
                inputs,
                quiet,
            })
        }
        Some(other) => Err(format!("unknown command `{other}`")),
    }
}

/// The raw files of a folder, in name order; a file stands for itself. True for a folder.
fn expand_input(input: &Path) -> Result<(Vec<PathBuf>, bool), String> {
    if !input.is_dir() {
        return Ok((vec![input.to_path_buf()], false));
    }
    let entries =
        std::fs::read_dir(input).map_err(|error| format!("{}: {error}", input.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|extension| extension == "raw") && path.is_file()
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no .raw files in this folder", input.display()));
    }
    Ok((files, true))
}

/// The profile that stands for each process in the index: its exit dump, else its last.
fn one_per_process(summaries: Vec<html::Summary>) -> Vec<html::Summary> {
    let rank = |s: &html::Summary| {
        (
            s.raw.ends_with(".exit.raw"),
            s.reason == "exit",
            s.raw.clone(),
        )
    };
    let mut by_pid: BTreeMap<u64, html::Summary> = BTreeMap::new();
    for summary in summaries {
        let better = match by_pid.get(&summary.pid) {
            None => true,
            Some(kept) => rank(&summary) > rank(kept),
        };
        if better {
            by_pid.insert(summary.pid, summary);
        }
    }
    by_pid.into_values().collect()
}

/// Writes `index.html` into each output folder and says what to open.
fn write_indexes(results: Vec<(PathBuf, html::Summary)>) -> bool {
    let mut by_dir: BTreeMap<PathBuf, Vec<html::Summary>> = BTreeMap::new();
    for (dir, summary) in results {
        by_dir.entry(dir).or_default().push(summary);
    }
    let mut ok = true;
    for (dir, summaries) in by_dir {
        let summaries = one_per_process(summaries);
        let index = dir.join("index.html");
        if let Err(error) = std::fs::write(&index, html::index(&summaries)) {
            eprintln!("oxprof: {}: {error}", index.display());
            ok = false;
            continue;
        }
        let biggest = summaries
            .iter()
            .filter(|s| s.page.is_some())
            .max_by_key(|s| s.size_key());
        match biggest {
            Some(s) => println!(
                "oxprof: open {} ({}: peak {}, allocated {})",
                dir.join(s.page.as_deref().unwrap_or_default()).display(),
                s.program(),
                s.peak_bytes
                    .map(report::human_bytes)
                    .unwrap_or_else(|| "?".to_string()),
                report::human_bytes(s.alloc_bytes)
            ),
            None => println!(
                "oxprof: no process allocated enough to draw a report (see {})",
                index.display()
            ),
        }
        if summaries.len() > 1 {
            println!(
                "oxprof: all {} processes, biggest first: {}",
                summaries.len(),
                index.display()
            );
        }
    }
    ok
}

/// `oxprof symbolize`: each report (stdin when none) with its frames named, on stdout.
fn symbolize_reports(reports: &[PathBuf]) -> ExitCode {
    let mut symbolizer = symbolize::Symbolizer::new();
    let mut failed = false;
    let mut texts = Vec::new();
    if reports.is_empty() {
        let mut text = String::new();
        match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            Ok(_) => texts.push(text),
            Err(error) => {
                eprintln!("oxprof: stdin: {error}");
                failed = true;
            }
        }
    }
    for report in reports {
        match std::fs::read(report) {
            Ok(bytes) => texts.push(String::from_utf8_lossy(&bytes).into_owned()),
            Err(error) => {
                eprintln!("oxprof: {}: {error}", report.display());
                failed = true;
            }
        }
    }
    for text in texts {
        print!("{}", guard_report::symbolize_report(&text, &mut symbolizer));
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out_dir, inputs, quiet) = match parse_args(&args) {
        Ok(Usage::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Usage::Symbolize { reports }) => return symbolize_reports(&reports),
        Ok(Usage::Convert {
            out_dir,
            inputs,
            quiet,
        }) => (out_dir, inputs, quiet),
        Err(message) => {
            eprintln!("oxprof: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let mut failed = false;
    let mut symbolizer = symbolize::Symbolizer::new();
    let mut results = Vec::new();
    for input in &inputs {
        let (files, folder) = match expand_input(input) {
            Ok(found) => found,
            Err(message) => {
                eprintln!("oxprof: {message}");
                failed = true;
                continue;
            }
        };
        for file in files {
            match convert::convert_file(&file, out_dir.as_deref(), &mut symbolizer, folder) {
                Ok(done) => {
                    if !quiet {
                        for path in &done.written {
                            println!("oxprof: wrote {}", path.display());
                        }
                    }
                    results.push((done.out_dir, done.summary));
                }
                Err(error) => {
                    eprintln!("oxprof: {error}");
                    failed = true;
                }
            }
        }
    }
    if !results.is_empty() && !write_indexes(results) {
        failed = true;
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn parses_the_command_line() {
        match parse_args(&args(&["convert", "--out", "o", "a.raw", "dir"])) {
            Ok(Usage::Convert {
                out_dir,
                inputs,
                quiet,
            }) => {
                assert!(!quiet);
                assert_eq!(out_dir, Some(PathBuf::from("o")));
                assert_eq!(inputs, vec![PathBuf::from("a.raw"), PathBuf::from("dir")]);
            }
            _ => panic!("convert expected"),
        }
        assert!(matches!(parse_args(&args(&["--help"])), Ok(Usage::Help)));
        assert!(parse_args(&args(&[])).is_err());
        assert!(parse_args(&args(&["convert"])).is_err());
        assert!(parse_args(&args(&["convert", "--out"])).is_err());
        assert!(parse_args(&args(&["convert", "--bogus", "a"])).is_err());
        assert!(parse_args(&args(&["frobnicate"])).is_err());
        match parse_args(&args(&["convert", "--", "--out"])) {
            Ok(Usage::Convert { inputs, .. }) => assert_eq!(inputs, vec![PathBuf::from("--out")]),
            _ => panic!("convert expected"),
        }
    }
}
