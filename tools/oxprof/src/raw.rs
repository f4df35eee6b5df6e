//! Reads a raw heap profile, format version 1, as oxmalloc's library writes it.
//!
//! The format is line-oriented ASCII: a fixed header (`oxprof-raw 1`, `pid`, `exe`,
//! `reason`, `time`, `interval`, `totals`, in that order), one `stack` line per
//! allocation stack, then a `maps` line followed by the verbatim `/proc/self/maps` of the
//! process to the end of the file. The parser is strict about that order so that a file
//! from another program, or one cut short, is rejected with the number of the line at
//! fault rather than turned into a plausible but wrong profile.
//!
//! A file is *truncated* when it lacks its final newline, its `maps` line, or any
//! mapping after it: the library writes the maps last, so each of these is what a cut
//! file looks like.

use std::fmt;

/// The first line of every version-1 file.
const MAGIC: &str = "oxprof-raw";
const VERSION: u64 = 1;

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
    pub stacks: Vec<RawStack>,
    pub maps: Vec<MapEntry>,
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
    if parse_number(version, "version", 1)? != VERSION {
        return Err(error(
            1,
            format!(
                "format version {version} is not supported (this oxprof reads version {VERSION})"
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
        stacks.push(parse_stack(line, lines.number)?);
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
        stacks,
        maps,
    })
}

/// `stack <alloc_samples> <alloc_objects> <alloc_bytes> <inuse_samples> <inuse_objects>
/// <inuse_bytes> <depth> <pc0> ... <pc(depth-1)>`
fn parse_stack(line: &str, number: usize) -> Result<RawStack, ParseError> {
    const COUNTS: usize = 7;
    let Some(rest) = line.strip_prefix("stack ") else {
        return Err(error(
            number,
            format!("expected `stack …` or `maps`, found `{}`", clip(line)),
        ));
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() < COUNTS {
        return Err(error(
            number,
            format!(
                "`stack` takes at least {COUNTS} numbers, found {}",
                fields.len()
            ),
        ));
    }
    let mut counts = [0u64; COUNTS];
    for (slot, field) in counts.iter_mut().zip(&fields) {
        *slot = parse_number(field, "stack", number)?;
    }
    let depth = counts[6];
    let pcs_found = fields.len() - COUNTS;
    if u64::try_from(pcs_found) != Ok(depth) {
        return Err(error(
            number,
            format!("stack depth is {depth} but {pcs_found} addresses follow"),
        ));
    }
    let pcs = fields[COUNTS..]
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
        let v2 = GOOD.replace("oxprof-raw 1", "oxprof-raw 2");
        assert!(error_of(&v2).message.contains("version 2 is not supported"));
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

    #[test]
    fn accepts_both_number_forms() {
        assert_eq!(parse_number("0x1f", "x", 1), Ok(31));
        assert_eq!(parse_number("31", "x", 1), Ok(31));
        assert!(parse_number("-1", "x", 1).is_err());
        assert!(parse_number("", "x", 1).is_err());
    }
}
