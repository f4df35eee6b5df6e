//! `oxprof`: converts the raw heap profiles that oxmalloc writes (`OXMALLOC_PROF=1`) into
//! a pprof profile, collapsed stacks, a flame graph and a report of live blocks.
//!
//! ```text
//! oxprof convert [--out OUTDIR] INPUT...
//! ```
//!
//! Exit status: 0 when every input converted, 1 when an input was malformed or could
//! not be read or written (the others are still converted), 2 on a usage error.

#![forbid(unsafe_code)]

mod convert;
mod flame;
mod pprof;
mod raw;
mod report;
mod symbolize;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: oxprof convert [--out OUTDIR] INPUT...

Converts oxmalloc's raw heap profiles. INPUT is a raw file (oxprof.<pid>.<seq>.raw,
oxprof.<pid>.exit.raw) or a folder of them. For each X.raw it writes, into OUTDIR
(default: the folder of X.raw):

  X.pb.gz      pprof profile:     go tool pprof -http=: X.pb.gz
  X.folded     collapsed stacks of live bytes (speedscope, flamegraph.pl, inferno)
  X.svg        flame graph of live bytes: open it in a browser
  X.leaks.txt  live blocks grouped by stack, largest first (at exit: the leaks)

Addresses are named from the ELF symbol tables and DWARF of the files in the
process's maps (separate debug files under /usr/lib/debug are used too), so run
oxprof on the machine that ran the program, before rebuilding it.

Exit status: 0 on success, 1 if an input is malformed or unreadable, 2 on usage errors.
";

enum Usage {
    Help,
    Convert {
        out_dir: Option<PathBuf>,
        inputs: Vec<PathBuf>,
    },
}

fn parse_args(args: &[String]) -> Result<Usage, String> {
    match args.first().map(String::as_str) {
        None => Err("no command given".to_string()),
        Some("-h" | "--help" | "help") => Ok(Usage::Help),
        Some("convert") => {
            let mut out_dir = None;
            let mut inputs = Vec::new();
            let mut rest = args[1..].iter();
            let mut options_done = false;
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "-h" | "--help" if !options_done => return Ok(Usage::Help),
                    "--out" | "-o" if !options_done => {
                        let dir = rest.next().ok_or("--out needs a folder")?;
                        out_dir = Some(PathBuf::from(dir));
                    }
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
            Ok(Usage::Convert { out_dir, inputs })
        }
        Some(other) => Err(format!("unknown command `{other}`")),
    }
}

/// The raw files of a folder, in name order; a file stands for itself.
fn expand_input(input: &Path) -> Result<Vec<PathBuf>, String> {
    if !input.is_dir() {
        return Ok(vec![input.to_path_buf()]);
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
    Ok(files)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out_dir, inputs) = match parse_args(&args) {
        Ok(Usage::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Usage::Convert { out_dir, inputs }) => (out_dir, inputs),
        Err(message) => {
            eprintln!("oxprof: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let mut failed = false;
    let mut symbolizer = symbolize::Symbolizer::new();
    for input in &inputs {
        let files = match expand_input(input) {
            Ok(files) => files,
            Err(message) => {
                eprintln!("oxprof: {message}");
                failed = true;
                continue;
            }
        };
        for file in files {
            match convert::convert_file(&file, out_dir.as_deref(), &mut symbolizer) {
                Ok(written) => {
                    for path in written {
                        println!("oxprof: wrote {}", path.display());
                    }
                }
                Err(error) => {
                    eprintln!("oxprof: {error}");
                    failed = true;
                }
            }
        }
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
            Ok(Usage::Convert { out_dir, inputs }) => {
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
