//! The text outputs: collapsed stacks, one file per view (`X.peak.folded`,
//! `X.alloc.folded`, `X.live.folded`), and the live-block report (`X.leaks.txt`).
//!
//! Collapsed stacks are the format of flamegraph.pl's `stackcollapse` tools, which
//! inferno, speedscope and many others read: `root;caller;…;leaf <count>` per line.
//! Here the count is the view's bytes; stacks with none are left out; lines are ordered
//! by bytes, largest first (flame graph tools sort for themselves).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::convert::Converted;
use crate::raw::{RawProfile, RawStack};

/// What a flame graph, a folded file or a table counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Live at the moment live bytes were highest.
    Peak,
    /// Allocated since start.
    Alloc,
    /// Live at the dump (at exit: the leaks).
    Live,
}

impl View {
    pub const ALL: [View; 3] = [View::Peak, View::Alloc, View::Live];

    /// The name in file names and in the page.
    pub fn id(self) -> &'static str {
        match self {
            View::Peak => "peak",
            View::Alloc => "alloc",
            View::Live => "live",
        }
    }

    /// False for the peak of a version-1 file, which does not record it.
    pub fn available(self, profile: &RawProfile) -> bool {
        self != View::Peak || profile.extra.is_some()
    }

    pub fn bytes(self, stack: &RawStack) -> u64 {
        match self {
            View::Peak => stack.peak_bytes,
            View::Alloc => stack.alloc_bytes,
            View::Live => stack.inuse_bytes,
        }
    }

    pub fn objects(self, stack: &RawStack) -> u64 {
        match self {
            View::Peak => stack.peak_objects,
            View::Alloc => stack.alloc_objects,
            View::Live => stack.inuse_objects,
        }
    }
}

/// Frame names in a collapsed line cannot hold the separators.
fn folded_frame(name: &str) -> String {
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

/// Collapsed stacks with the view's bytes, root first, largest first. Stacks that
/// symbolize to the same names are merged.
pub fn folded_lines(converted: &Converted<'_>, view: View) -> Vec<(String, u64)> {
    let mut merged: HashMap<String, u64> = HashMap::new();
    for stack in &converted.profile.stacks {
        let bytes = view.bytes(stack);
        if bytes == 0 {
            continue;
        }
        let names: Vec<String> = converted
            .names_root_first(stack)
            .iter()
            .map(|name| folded_frame(name))
            .collect();
        *merged.entry(names.join(";")).or_insert(0) += bytes;
    }
    let mut lines: Vec<(String, u64)> = merged.into_iter().collect();
    lines.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    lines
}

pub fn folded(converted: &Converted<'_>, view: View) -> String {
    let mut out = String::new();
    for (stack, bytes) in folded_lines(converted, view) {
        let _ = writeln!(out, "{stack} {bytes}");
    }
    out
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `YYYY-MM-DD HH:MM:SS UTC` for Unix seconds (days to civil date, proleptic Gregorian).
pub fn utc_time(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs_of_day = unix_secs % 86_400;
    // Shift the epoch to 0000-03-01 so that leap days end each 400-year era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// The stacks that hold live sampled blocks, largest estimated bytes first.
pub fn live_stacks<'p>(converted: &Converted<'p>) -> Vec<&'p RawStack> {
    let mut stacks: Vec<&RawStack> = converted
        .profile
        .stacks
        .iter()
        .filter(|stack| stack.inuse_samples > 0 || stack.inuse_bytes > 0)
        .collect();
    stacks.sort_by(|a, b| {
        b.inuse_bytes
            .cmp(&a.inuse_bytes)
            .then(b.inuse_objects.cmp(&a.inuse_objects))
    });
    stacks
}

/// The report of live blocks grouped by stack.
pub fn leaks(converted: &Converted<'_>) -> String {
    let profile = converted.profile;
    let stacks = live_stacks(converted);
    let total_bytes: u64 = stacks.iter().map(|stack| stack.inuse_bytes).sum();
    let total_objects: u64 = stacks.iter().map(|stack| stack.inuse_objects).sum();
    let total_samples: u64 = stacks.iter().map(|stack| stack.inuse_samples).sum();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "oxmalloc live heap of {} (pid {}), dump reason `{}`, {}",
        profile.exe,
        profile.pid,
        profile.reason,
        utc_time(profile.time_secs)
    );
    if profile.reason == "exit" {
        let _ = writeln!(
            out,
            "Taken at exit: every block below was never freed (a leak)."
        );
    }
    let _ = writeln!(
        out,
        "Blocks are sampled about once every {} bytes allocated; bytes and objects are \
         estimates from the sampled blocks.",
        profile.interval_bytes
    );
    let _ = writeln!(out);

    for (rank, stack) in stacks.iter().enumerate() {
        let share = if total_bytes == 0 {
            0.0
        } else {
            stack.inuse_bytes as f64 * 100.0 / total_bytes as f64
        };
        let _ = writeln!(
            out,
            "#{} {} bytes ({}) in {} objects, {} sampled, {share:.1}% of live",
            rank + 1,
            stack.inuse_bytes,
            human_bytes(stack.inuse_bytes),
            stack.inuse_objects,
            stack.inuse_samples
        );
        write_frames(&mut out, converted, stack);
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "total: {total_bytes} bytes ({}) in {total_objects} objects, from {total_samples} \
         sampled blocks in {} stacks",
        human_bytes(total_bytes),
        stacks.len()
    );
    out
}

/// One line per frame, innermost first (as debuggers print a backtrace):
/// `    0xPC function file:line (object)`, with inlined frames under their address.
fn write_frames(out: &mut String, converted: &Converted<'_>, stack: &RawStack) {
    if stack.pcs.is_empty() {
        let _ = writeln!(
            out,
            "    {} (the library's stack table was full)",
            crate::pprof::OTHER_STACKS
        );
        return;
    }
    let maps = &converted.profile.maps;
    for &pc in &stack.pcs {
        let location = converted.location(pc);
        let object = location
            .mapping
            .and_then(|index| maps.get(index))
            .map(|map| map.short_name())
            .filter(|name| !name.is_empty());
        let object = object.map(|name| format!(" ({name})")).unwrap_or_default();
        if location.frames.is_empty() {
            let _ = writeln!(out, "    {pc:#018x} ??{object}");
            continue;
        }
        for (depth, frame) in location.frames.iter().enumerate() {
            let address = if depth == 0 {
                format!("{pc:#018x}")
            } else {
                format!("{:>18}", "(inlined)")
            };
            let place = match &frame.file {
                Some(file) if frame.line > 0 => format!(" {file}:{}", frame.line),
                Some(file) => format!(" {file}"),
                None => String::new(),
            };
            let _ = writeln!(out, "    {address} {}{place}{object}", frame.function);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bytes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn formats_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn folded_frames_lose_separators() {
        assert_eq!(folded_frame("a;b\nc"), "a:b c");
    }
}
