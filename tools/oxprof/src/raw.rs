//! Reads a raw heap profile, format version 1 or 2, as oxmalloc's library writes it.
//!
//! The format is line-oriented ASCII: a fixed header (`oxprof-raw N`, `pid`, `exe`,
//! `reason`, `time`, `interval`, `totals`, in that order; version 2 adds `cmdline`,
//! `elapsed`, `short_lived`, `peak` and then the timeline's `point` lines), one `stack`
//! line per allocation stack (version 2: with the peak and short-lived counts), then a
//! `maps` line followed by the verbatim `/proc/self/maps` of the process to the end of the
//! file. The parser is strict about that order so that a file
//! from another program, or one cut short, is rejected with the number of the line at
//! fault rather than turned into a plausible but wrong profile.
//!
//! A file is *truncated* when it lacks its final newline, its `maps` line, or any
//! mapping after it: the library writes the maps last, so each of these is what a cut
//! file looks like.

use std::fmt;

/// The first line of every version-1 file.
const MAGIC: &str = "oxprof-raw";
const OLDEST_VERSION: u64 = 1;
const VERSION: u64 = 2;

/// One parsed raw profile.
#[derive(Debug, Clone)]
pub struct RawProfile {
    pub pid: u64,
    /// `/proc/self/exe` of the profiled process.
    pub exe: String,
    /// Why the dump was taken: `exit`, `api`, `signal`, `bytes`, `peak`.
    pub reason: String,
    pub time_secs: u64,
    /// Mean sampling interval in bytes.
    pub interval_bytes: u64,
    pub total_alloc_bytes: u64,
    pub total_live_bytes: u64,
    /// Version 2 and later: what version 1 files lack.
    pub extra: Option<Extra>,
    pub stacks: Vec<RawStack>,
    pub maps: Vec<MapEntry>,
}

/// The lines version 2 added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    /// The process's arguments (decoded; empty when unknown).
    pub cmdline: Vec<String>,
    /// Microseconds from the profiler's start to the dump.
    pub elapsed_us: u64,
    /// A sampled block freed within this many microseconds counts as short-lived.
    pub short_lived_us: u64,
    /// When live bytes were highest (microseconds since start), and their estimate.
    pub peak_us: u64,
    pub peak_bytes: u64,
    /// Live and resident bytes over time, oldest first.
    pub points: Vec<Point>,
}

/// One point of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Microseconds since the profiler's start.
    pub t_us: u64,
    pub live_bytes: u64,
    /// Resident bytes of the process (0: unknown).
    pub resident_bytes: u64,
    pub allocated_bytes: u64,
}

/// One allocation stack with its estimates (see the format note for their meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStack {
    pub alloc_samples: u64,
    pub alloc_objects: u64,
    pub alloc_bytes: u64,
    pub inuse_samples: u64,
    pub inuse_objects: u64,
    pub inuse_bytes: u64,
    /// Live at the peak (version 1: zero).
    pub peak_samples: u64,
    pub peak_objects: u64,
    pub peak_bytes: u64,
    /// Freed soon after their allocation (version 1: zero).
    pub short_samples: u64,
    pub short_objects: u64,
    pub short_bytes: u64,
    /// Return addresses, innermost first. Empty for the "[other stacks]" overflow entry.
    pub pcs: Vec<u64>,
}

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The four permission characters, e.g. `r-xp`.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// The path, `[heap]`-style pseudo name, or empty for anonymous memory.
    pub path: String,
}

impl MapEntry {
    pub fn is_executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }

    pub fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }

    /// The file behind the mapping, if it is a file (not `[vdso]`, `[heap]`, anonymous).
    /// A ` (deleted)` suffix is dropped: the file may have been replaced by a new build
    /// at the same path, which is still the best guess.
    pub fn file_path(&self) -> Option<&str> {
        if !self.path.starts_with('/') {
            return None;
        }
        Some(self.path.strip_suffix(" (deleted)").unwrap_or(&self.path))
    }

    /// Short name for messages: the file name, or the pseudo name.
    pub fn short_name(&self) -> &str {
        match self.file_path() {
            Some(path) => path.rsplit('/').next().unwrap_or(path),
            None => &self.path,
        }
    }
}

/// A malformed file. `line` is 1-based; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Parses a number: decimal, or hexadecimal when written `0x…`.
fn parse_number(field: &str, what: &str, line: usize) -> Result<u64, ParseError> {
    let parsed = match field.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => field.parse::<u64>(),
    };
    parsed.map_err(|_| error(line, format!("{what}: `{field}` is not a number")))
}

/// Walks the lines, keeping the 1-based number of the last line returned.
struct Lines<'a> {
    rest: std::str::Lines<'a>,
    number: usize,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let line = self.rest.next()?;
        self.number += 1;
        Some(line)
    }

    /// The next line, which must start with `keyword` and a space; returns the rest.
    fn expect(&mut self, keyword: &str) -> Result<&'a str, ParseError> {
        let Some(line) = self.next() else {
            return Err(error(
                self.number + 1,
                format!("truncated file: expected `{keyword}` line, found end of file"),
            ));
        };
        match line.split_once(' ') {
            Some((word, rest)) if word == keyword => Ok(rest),
            _ => Err(error(
                self.number,
                format!("expected `{keyword} …`, found `{}`", clip(line)),
            )),
        }
    }

    /// Like `expect` for a line of exactly `count` numbers.
    fn expect_numbers(&mut self, keyword: &str, count: usize) -> Result<Vec<u64>, ParseError> {
        let rest = self.expect(keyword)?;
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields.len() != count {
            return Err(error(
                self.number,
                format!(
                    "`{keyword}` takes {count} number(s), found {}",
                    fields.len()
                ),
            ));
        }
        fields
            .iter()
            .map(|field| parse_number(field, keyword, self.number))
            .collect()
    }
}

/// A line shortened for an error message.
fn clip(line: &str) -> String {
    const LIMIT: usize = 60;
    match line.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// Parses a whole raw profile.
pub fn parse(text: &str) -> Result<RawProfile, ParseError> {
    if text.is_empty() {
        return Err(error(1, "empty file"));
    }
    let mut lines = Lines {
        rest: text.lines(),
        number: 0,
    };

    let version = lines.expect(MAGIC).map_err(|_| {
        error(
            1,
            "not an oxprof raw profile (the first line must be `oxprof-raw 1`)",
        )
    })?;
    let version = parse_number(version, "version", 1)?;
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(error(
            1,
            format!(
                "format version {version} is not supported (this oxprof reads versions {OLDEST_VERSION} to {VERSION})"
            ),
        ));
    }
    let pid = lines.expect_numbers("pid", 1)?[0];
    let exe = lines.expect("exe")?.to_string();
    let reason = lines.expect("reason")?.to_string();
    if reason.is_empty() || reason.contains(' ') {
        return Err(error(lines.number, "`reason` takes one word"));
    }
    let time_secs = lines.expect_numbers("time", 1)?[0];
    let interval_bytes = lines.expect_numbers("interval", 1)?[0];
    let totals = lines.expect_numbers("totals", 2)?;
    let mut extra = None;
    if version >= 2 {
        let cmdline = decode_cmdline(lines.expect("cmdline")?);
        let elapsed_us = lines.expect_numbers("elapsed", 1)?[0];
        let short_lived_us = lines.expect_numbers("short_lived", 1)?[0];
        let peak = lines.expect_numbers("peak", 2)?;
        extra = Some(Extra {
            cmdline,
            elapsed_us,
            short_lived_us,
            peak_us: peak[0],
            peak_bytes: peak[1],
            points: Vec::new(),
        });
    }

    let mut stacks = Vec::new();
    loop {
        let Some(line) = lines.next() else {
            return Err(error(
                lines.number + 1,
                "truncated file: expected `stack` or `maps` line, found end of file",
            ));
        };
        if line == "maps" {
            break;
        }
        match (line.strip_prefix("point "), extra.as_mut()) {
            (Some(rest), Some(extra)) if stacks.is_empty() => {
                extra.points.push(parse_point(rest, lines.number)?);
            }
            _ => stacks.push(parse_stack(line, lines.number, version)?),
        }
    }

    let maps_line = lines.number;
    let mut maps = Vec::new();
    while let Some(line) = lines.next() {
        maps.push(parse_map_line(line, lines.number)?);
    }
    if maps.is_empty() {
        return Err(error(
            maps_line + 1,
            "truncated file: no mappings after the `maps` line",
        ));
    }
    if !text.ends_with('\n') {
        return Err(error(
            lines.number,
            "truncated file: the last line has no newline",
        ));
    }

    Ok(RawProfile {
        pid,
        exe,
        reason,
        time_secs,
        interval_bytes,
        total_alloc_bytes: totals[0],
        total_live_bytes: totals[1],
        extra,
        stacks,
        maps,
    })
}

/// `point <t_us> <live_bytes> <resident_bytes> <allocated_bytes>` (after the keyword).
fn parse_point(rest: &str, number: usize) -> Result<Point, ParseError> {
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() != 4 {
        return Err(error(
            number,
            format!("`point` takes 4 numbers, found {}", fields.len()),
        ));
    }
    let mut values = [0u64; 4];
    for (value, field) in values.iter_mut().zip(&fields) {
        *value = parse_number(field, "point", number)?;
    }
    Ok(Point {
        t_us: values[0],
        live_bytes: values[1],
        resident_bytes: values[2],
        allocated_bytes: values[3],
    })
}

/// The arguments of a `cmdline` line: separated by spaces, `\xNN` for any other byte.
pub fn decode_cmdline(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(' ')
        .map(|arg| {
            let mut bytes = Vec::with_capacity(arg.len());
            let raw = arg.as_bytes();
            let mut i = 0;
            while i < raw.len() {
                let escaped = raw
                    .get(i..i + 4)
                    .filter(|s| s.starts_with(b"\\x"))
                    .and_then(|s| std::str::from_utf8(&s[2..]).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match escaped {
                    Some(b) => {
                        bytes.push(b);
                        i += 4;
                    }
                    None => {
                        bytes.push(raw[i]);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .collect()
}

/// `stack <alloc_samples> <alloc_objects> <alloc_bytes> <inuse_samples> <inuse_objects>
/// <inuse_bytes> [version 2: <peak_samples> <peak_objects> <peak_bytes> <short_samples>
/// <short_objects> <short_bytes>] <depth> <pc0> ... <pc(depth-1)>`
fn parse_stack(line: &str, number: usize, version: u64) -> Result<RawStack, ParseError> {
    const MOST_COUNTS: usize = 13;
    let counts_len = if version >= 2 { MOST_COUNTS } else { 7 };
    let Some(rest) = line.strip_prefix("stack ") else {
        return Err(error(
            number,
            format!("expected `stack …` or `maps`, found `{}`", clip(line)),
        ));
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() < counts_len {
        return Err(error(
            number,
            format!(
                "`stack` takes at least {counts_len} numbers, found {}",
                fields.len()
            ),
        ));
    }
    let mut counts = [0u64; MOST_COUNTS];
    for (slot, field) in counts.iter_mut().zip(&fields[..counts_len]) {
        *slot = parse_number(field, "stack", number)?;
    }
    let depth = counts[counts_len - 1];
    let pcs_found = fields.len() - counts_len;
    if u64::try_from(pcs_found) != Ok(depth) {
        return Err(error(
            number,
            format!("stack depth is {depth} but {pcs_found} addresses follow"),
        ));
    }
    let pcs = fields[counts_len..]
        .iter()
        .map(|field| parse_number(field, "stack address", number))
        .collect::<Result<Vec<u64>, ParseError>>()?;
    Ok(RawStack {
        alloc_samples: counts[0],
        alloc_objects: counts[1],
        alloc_bytes: counts[2],
        inuse_samples: counts[3],
        inuse_objects: counts[4],
        inuse_bytes: counts[5],
        peak_samples: if version >= 2 { counts[6] } else { 0 },
        peak_objects: if version >= 2 { counts[7] } else { 0 },
        peak_bytes: if version >= 2 { counts[8] } else { 0 },
        short_samples: if version >= 2 { counts[9] } else { 0 },
        short_objects: if version >= 2 { counts[10] } else { 0 },
        short_bytes: if version >= 2 { counts[11] } else { 0 },
        pcs,
    })
}

/// `start-end perms offset dev inode [path]`, numbers in hex without `0x`, the path
/// padded with spaces and possibly containing spaces itself.
pub fn parse_map_line(line: &str, number: usize) -> Result<MapEntry, ParseError> {
    let bad = |what: &str| error(number, format!("bad mapping ({what}): `{}`", clip(line)));
    let mut rest = line;
    let mut fields = [""; 5];
    for field in &mut fields {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        *field = &rest[..end];
        rest = &rest[end..];
    }
    let [range, perms, offset, device, inode] = fields;
    let (start, end) = range.split_once('-').ok_or_else(|| bad("address range"))?;
    let start = u64::from_str_radix(start, 16).map_err(|_| bad("start address"))?;
    let end = u64::from_str_radix(end, 16).map_err(|_| bad("end address"))?;
    if end < start {
        return Err(bad("end before start"));
    }
    if perms.len() != 4 {
        return Err(bad("permissions"));
    }
    let offset = u64::from_str_radix(offset, 16).map_err(|_| bad("offset"))?;
    if !device.contains(':') {
        return Err(bad("device"));
    }
    inode.parse::<u64>().map_err(|_| bad("inode"))?;
    Ok(MapEntry {
        start,
        end,
        perms: perms.to_string(),
        offset,
        path: rest.trim_start_matches(' ').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "oxprof-raw 1
pid 42
exe /usr/bin/my prog
reason exit
time 1700000000
interval 524288
totals 3000 1000
stack 2 2 2000 1 1 1000 2 0x401234 0x401100
stack 1 1 1000 0 0 0 0
maps
00400000-00402000 r-xp 00000000 08:01 1234                               /usr/bin/my prog
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0                          [vdso]
7ffd00002000-7ffd00003000 rw-p 00000000 00:00 0 
";

    #[test]
    fn parses_every_field() {
        let profile = parse(GOOD).expect("valid file");
        assert_eq!(profile.pid, 42);
        assert_eq!(profile.exe, "/usr/bin/my prog");
        assert_eq!(profile.reason, "exit");
        assert_eq!(profile.time_secs, 1_700_000_000);
        assert_eq!(profile.interval_bytes, 524_288);
        assert_eq!(
            (profile.total_alloc_bytes, profile.total_live_bytes),
            (3000, 1000)
        );
        assert_eq!(profile.stacks.len(), 2);
        assert_eq!(profile.stacks[0].pcs, vec![0x401234, 0x401100]);
        assert_eq!(profile.stacks[0].inuse_bytes, 1000);
        assert!(profile.stacks[1].pcs.is_empty());
        assert_eq!(profile.maps.len(), 3);
        let exe = &profile.maps[0];
        assert_eq!((exe.start, exe.end, exe.offset), (0x400000, 0x402000, 0));
        assert_eq!(exe.file_path(), Some("/usr/bin/my prog"));
        assert_eq!(exe.short_name(), "my prog");
        assert!(exe.is_executable());
        assert_eq!(profile.maps[1].file_path(), None);
        assert_eq!(profile.maps[1].short_name(), "[vdso]");
        assert_eq!(profile.maps[2].path, "");
        assert!(!profile.maps[2].is_executable());
    }

    fn error_of(text: &str) -> ParseError {
        parse(text).expect_err("the file must be rejected")
    }

    #[test]
    fn errors_name_the_line() {
        let wrong_depth = GOOD.replace("1000 2 0x401234", "1000 3 0x401234");
        let e = error_of(&wrong_depth);
        assert_eq!(e.line, 8);
        assert!(e.message.contains("depth is 3 but 2"), "{e}");

        let bad_hex = GOOD.replace("0x401100", "0xzz");
        assert_eq!(error_of(&bad_hex).line, 8);

        let swapped = GOOD.replace(
            "reason exit\ntime 1700000000",
            "time 1700000000\nreason exit",
        );
        let e = error_of(&swapped);
        assert_eq!(e.line, 4);
        assert!(e.message.contains("expected `reason"), "{e}");

        let bad_map = GOOD.replace("00400000-00402000", "00400000_00402000");
        assert_eq!(error_of(&bad_map).line, 11);

        let stray = GOOD.replace("maps\n", "garbage\nmaps\n");
        assert_eq!(error_of(&stray).line, 10);
    }

    #[test]
    fn rejects_other_files_and_versions() {
        assert_eq!(error_of("").line, 1);
        assert!(error_of("hello\n")
            .message
            .contains("not an oxprof raw profile"));
        let v3 = GOOD.replace("oxprof-raw 1", "oxprof-raw 3");
        assert!(error_of(&v3).message.contains("version 3 is not supported"));
    }

    #[test]
    fn rejects_truncated_files() {
        // Cut at every byte. Every prefix is rejected except those that end a mapping
        // line after the first: a maps section cut at a line boundary cannot be told
        // from a process with fewer mappings (the library's write-then-rename is what
        // prevents such files).
        let first_map_end = GOOD.find("/usr/bin/my prog\n7ffd").unwrap() + 17;
        for cut in 0..GOOD.len() {
            let prefix = &GOOD[..cut];
            if cut >= first_map_end && prefix.ends_with('\n') {
                assert!(parse(prefix).is_ok(), "cut at {cut}");
                continue;
            }
            let e = error_of(prefix);
            assert!(e.line >= 1, "cut at {cut}");
        }
        let e = error_of(&GOOD[..GOOD.find("maps\n").unwrap() + 5]);
        assert!(e.message.contains("truncated"), "{e}");
        assert_eq!(e.line, 11);
        let e = error_of(&GOOD[..GOOD.find("stack 1").unwrap()]);
        assert!(e.message.contains("truncated"), "{e}");
        assert_eq!(e.line, 9);
    }

    const GOOD_V2: &str = "oxprof-raw 2
pid 42
exe /usr/bin/prog
reason exit
time 1700000000
interval 524288
totals 3000 1000
cmdline prog -c print(\\x22a\\x20b\\x22)  \\x5cx
elapsed 2500000
short_lived 1000
peak 1200000 2500
point 10000 500 4096000 500
point 1200000 2500 8192000 2600
stack 2 2 2000 1 1 1000 2 2 2000 1 1 1000 2 0x401234 0x401100
stack 1 1 1000 0 0 0 1 1 500 0 0 0 0
maps
00400000-00402000 r-xp 00000000 08:01 1234                               /usr/bin/prog
";

    #[test]
    fn parses_version_2() {
        let profile = parse(GOOD_V2).expect("valid file");
        let extra = profile.extra.as_ref().expect("version 2 lines");
        assert_eq!(
            extra.cmdline,
            vec!["prog", "-c", "print(\"a b\")", "", "\\x"]
        );
        assert_eq!((extra.elapsed_us, extra.short_lived_us), (2_500_000, 1000));
        assert_eq!((extra.peak_us, extra.peak_bytes), (1_200_000, 2500));
        assert_eq!(extra.points.len(), 2);
        assert_eq!(
            extra.points[1],
            Point {
                t_us: 1_200_000,
                live_bytes: 2500,
                resident_bytes: 8_192_000,
                allocated_bytes: 2600
            }
        );
        let s = &profile.stacks[0];
        assert_eq!((s.peak_samples, s.peak_objects, s.peak_bytes), (2, 2, 2000));
        assert_eq!(
            (s.short_samples, s.short_objects, s.short_bytes),
            (1, 1, 1000)
        );
        assert_eq!(s.pcs, vec![0x401234, 0x401100]);
        assert!(profile.stacks[1].pcs.is_empty());
        assert_eq!(profile.stacks[1].peak_bytes, 500);
        // Version 1 has none of it.
        assert!(parse(GOOD).expect("valid").extra.is_none());
        // A version-1 stack line in a version-2 file is cut short.
        let short = GOOD_V2.replace(
            "stack 1 1 1000 0 0 0 1 1 500 0 0 0 0",
            "stack 1 1 1000 0 0 0 0",
        );
        assert!(
            error_of(&short).message.contains("at least 13"),
            "{}",
            error_of(&short)
        );
        // Points come before the stacks, and have four numbers.
        let late = GOOD_V2.replace("maps\n", "point 1 2 3 4\nmaps\n");
        assert_eq!(error_of(&late).line, 16);
        let bad = GOOD_V2.replace("point 10000 500 4096000 500", "point 10000 500");
        assert!(error_of(&bad).message.contains("4 numbers"));
        // Every header line is required, in order.
        let missing = GOOD_V2.replace("short_lived 1000\n", "");
        assert!(error_of(&missing).message.contains("expected `short_lived"));
    }

    #[test]
    fn accepts_both_number_forms() {
        assert_eq!(parse_number("0x1f", "x", 1), Ok(31));
        assert_eq!(parse_number("31", "x", 1), Ok(31));
        assert!(parse_number("-1", "x", 1).is_err());
        assert!(parse_number("", "x", 1).is_err());
    }
}
