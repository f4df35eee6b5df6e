//! Converts one raw profile into its outputs.
//!
//! Every distinct return address is symbolized once (`Converted`); the writers then read
//! the names from there. The outputs land beside each other for an input `X.raw`:
//! `X.html` (the report), `X.pb.gz`, `X.peak.folded`, `X.alloc.folded`, `X.live.folded`
//! (one per view; no peak for a version-1 file) and `X.leaks.txt`. A process that
//! allocated almost nothing (fewer than [`TINY_SAMPLES`] samples: a shell wrapper,
//! `uname`) gets none of them when the caller asks to skip such processes; the index
//! still lists it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::html::{self, Summary};
use crate::pprof::{self, OTHER_STACKS};
use crate::raw::{self, RawProfile, RawStack};
use crate::report::{self, View};
use crate::symbolize::{Location, Symbolizer};

/// A profile with fewer samples than this is too small to draw.
pub const TINY_SAMPLES: u64 = 10;

/// What converting one file gave.
pub struct Converted1 {
    /// The files written, the page first when there is one.
    pub written: Vec<PathBuf>,
    /// The folder they went to.
    pub out_dir: PathBuf,
    pub summary: Summary,
}

/// A raw profile with every address it mentions symbolized.
pub struct Converted<'a> {
    pub profile: &'a RawProfile,
    locations: HashMap<u64, Location>,
}

impl<'a> Converted<'a> {
    pub fn new(profile: &'a RawProfile, symbolizer: &mut Symbolizer) -> Converted<'a> {
        let mut locations = HashMap::new();
        for stack in &profile.stacks {
            for &pc in &stack.pcs {
                locations
                    .entry(pc)
                    .or_insert_with(|| symbolizer.locate(pc, &profile.maps));
            }
        }
        Converted { profile, locations }
    }

    /// The location of an address of one of the profile's stacks.
    pub fn location(&self, pc: u64) -> &Location {
        &self.locations[&pc]
    }

    /// Frame names of a stack, root (outermost caller) first, inlined frames expanded.
    pub fn names_root_first(&self, stack: &RawStack) -> Vec<String> {
        if stack.pcs.is_empty() {
            return vec![OTHER_STACKS.to_string()];
        }
        stack
            .pcs
            .iter()
            .rev()
            .flat_map(|&pc| self.location(pc).names_root_first(&self.profile.maps))
            .collect()
    }
}

/// Why a file could not be converted.
#[derive(Debug)]
pub enum ConvertError {
    /// The input is not a valid raw profile (exit status 1).
    Malformed {
        path: PathBuf,
        error: raw::ParseError,
    },
    /// Reading the input or writing an output failed.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::Malformed { path, error } => {
                write!(f, "{}:{}: {}", path.display(), error.line, error.message)
            }
            ConvertError::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

/// `X` for `X.raw` (the whole name for other names).
fn base_name(input: &Path) -> String {
    let name = input
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "profile".to_string());
    match name.strip_suffix(".raw") {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => name,
    }
}

/// Converts `input`, writing into `out_dir` (the input's own folder when `None`); with
/// `skip_tiny`, a profile of fewer than [`TINY_SAMPLES`] samples is only summarized.
pub fn convert_file(
    input: &Path,
    out_dir: Option<&Path>,
    symbolizer: &mut Symbolizer,
    skip_tiny: bool,
) -> Result<Converted1, ConvertError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |error| ConvertError::Io { path, error }
    };
    let bytes = std::fs::read(input).map_err(io_error(input))?;
    let text = String::from_utf8_lossy(&bytes);
    let profile = raw::parse(&text).map_err(|error| ConvertError::Malformed {
        path: input.to_path_buf(),
        error,
    })?;
    check_totals(input, &profile);

    let out_dir = match out_dir {
        Some(dir) => dir.to_path_buf(),
        None => input
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    };
    std::fs::create_dir_all(&out_dir).map_err(io_error(&out_dir))?;
    let base = out_dir.join(base_name(input));
    let output = |suffix: &str| {
        let mut name = base.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };

    let raw_name = input
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let samples: u64 = profile.stacks.iter().map(|s| s.alloc_samples).sum();
    if skip_tiny && samples < TINY_SAMPLES {
        // Nothing to symbolize or draw: the summary needs only the counts.
        let converted = Converted {
            profile: &profile,
            locations: HashMap::new(),
        };
        return Ok(Converted1 {
            written: Vec::new(),
            out_dir,
            summary: Summary::of(&converted, raw_name, None),
        });
    }

    let converted = Converted::new(&profile, symbolizer);
    let page_path = output(".html");
    let pprof_path = output(".pb.gz");
    let pprof = pprof::encode_gzipped(&converted, symbolizer).map_err(io_error(&pprof_path))?;
    let mut outputs = vec![
        (page_path.clone(), html::page(&converted).into_bytes()),
        (pprof_path, pprof),
    ];
    for view in View::ALL {
        if view.available(&profile) {
            let path = output(&format!(".{}.folded", view.id()));
            outputs.push((path, report::folded(&converted, view).into_bytes()));
        }
    }
    outputs.push((output(".leaks.txt"), report::leaks(&converted).into_bytes()));
    let mut written = Vec::new();
    for (path, data) in outputs {
        std::fs::write(&path, data).map_err(io_error(&path))?;
        written.push(path);
    }
    let page_name = page_path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    Ok(Converted1 {
        written,
        out_dir,
        summary: Summary::of(&converted, raw_name, page_name),
    })
}

/// The `totals` line is a checksum of the stack lines; a mismatch is worth a note but
/// the stacks are what every output uses.
fn check_totals(input: &Path, profile: &RawProfile) {
    let alloc: u64 = profile.stacks.iter().map(|stack| stack.alloc_bytes).sum();
    let live: u64 = profile.stacks.iter().map(|stack| stack.inuse_bytes).sum();
    if (alloc, live) != (profile.total_alloc_bytes, profile.total_live_bytes) {
        eprintln!(
            "oxprof: note: {}: `totals` says {} allocated and {} live bytes, the stacks add up to {alloc} and {live}",
            input.display(),
            profile.total_alloc_bytes,
            profile.total_live_bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_drop_the_raw_suffix() {
        assert_eq!(base_name(Path::new("d/oxprof.1.exit.raw")), "oxprof.1.exit");
        assert_eq!(base_name(Path::new("d/dump")), "dump");
        assert_eq!(base_name(Path::new(".raw")), ".raw");
    }
}
