//! Options: the `OXMALLOC_*` environment variables, read once at start-up.
//!
//! One table, [`OPTIONS`], says everything about an option: its name, the kind of value it
//! takes, its default and what it does. The parser, the `OXMALLOC_VERBOSE` start-up lines
//! and the README's options table (checked by `cargo test -p oxmalloc --lib readme_options_table`) are all made
//! from it, so they cannot disagree.
//!
//! Loading happens once: at the first call that needs an option (the first `malloc` that
//! leaves the fast path, which may come from the dynamic loader before libc is set up), or
//! at the latest in the library's ELF constructor. It does not allocate: the environment is
//! scanned through `environ` when libc has set it up, and otherwise through
//! `/proc/self/environ` read with raw syscalls into a stack buffer. A name that starts with
//! `OXMALLOC_` but is not an option, or a value that does not parse, gets one warning line
//! on stderr and the default is used. An empty value counts as unset.
//!
//! `load` scans and parses, `parse` holds the value parsers, `verbose` prints the start-up
//! lines.
//!
//! The values live in atomics (the purge delay can be changed later by `mallopt`) and, for
//! paths, in fixed buffers written only by the one loading thread before it publishes
//! [`LOADED`] with a release store; readers call [`ensure_loaded`] first, whose acquire load
//! orders their reads after those writes.

mod load;
pub mod parse;
mod verbose;

pub use parse::StatsMode;
pub use verbose::write_verbose;

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// The kind of value an option takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// On or off.
    Bool,
    /// Milliseconds (`u32`).
    Millis,
    /// A byte count (`u64`) with an optional `k`/`m`/`g` suffix.
    Bytes,
    /// `off`, `text` or `json`.
    Stats,
    /// A file or directory path of at most [`PATH_MAX_BYTES`] bytes.
    Path,
    /// A signal name or number, or none.
    Signal,
}

impl Kind {
    /// The values accepted, as warnings and the README say it.
    pub const fn accepted(self) -> &'static str {
        match self {
            Kind::Bool => "1/0, true/false, yes/no, on/off (any case)",
            Kind::Millis => "a whole number of milliseconds from 0 to 4294967295",
            Kind::Bytes => {
                "a whole number of bytes, optionally followed by k, m or g (KiB, MiB, GiB)"
            }
            Kind::Stats => "0/off, 1/text, json",
            Kind::Path => "a path of at most 255 bytes",
            Kind::Signal => "a signal name (SIGUSR2 or USR2, RTMIN+n) or number (1-64), or none",
        }
    }

    /// The type column of the README table.
    #[cfg(test)]
    pub const fn type_name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Millis => "u32 (ms)",
            Kind::Bytes => "u64 (bytes)",
            Kind::Stats => "off \\| text \\| json",
            Kind::Path => "path",
            Kind::Signal => "signal",
        }
    }
}

/// One option.
pub struct OptionSpec {
    /// The environment variable.
    pub name: &'static str,
    /// The kind of value.
    pub kind: Kind,
    /// The default, written as a user would write the value (parsed at start-up like one).
    pub default: &'static str,
    /// What the option does (one sentence or two; Markdown): the README table's text.
    #[cfg_attr(not(test), allow(dead_code))]
    pub meaning: &'static str,
}

/// An option's index in [`OPTIONS`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum Opt {
    /// `OXMALLOC_CHECK`.
    Check,
    /// `OXMALLOC_HARDEN`.
    Harden,
    /// `OXMALLOC_PURGE_DELAY_MS`.
    PurgeDelayMs,
    /// `OXMALLOC_STATS`.
    Stats,
    /// `OXMALLOC_STATS_FILE`.
    StatsFile,
    /// `OXMALLOC_VERBOSE`.
    Verbose,
    /// `OXMALLOC_PROF`.
    Prof,
    /// `OXMALLOC_PROF_DIR`.
    ProfDir,
    /// `OXMALLOC_PROF_INTERVAL`.
    ProfInterval,
    /// `OXMALLOC_PROF_SIGNAL`.
    ProfSignal,
    /// `OXMALLOC_PROF_DUMP_BYTES`.
    ProfDumpBytes,
    /// `OXMALLOC_PROF_DUMP_PEAK`.
    ProfDumpPeak,
    /// `OXMALLOC_GUARD`.
    Guard,
    /// `OXMALLOC_GUARD_INTERVAL`.
    GuardInterval,
}

/// Number of options.
pub const OPTION_COUNT: usize = 14;

/// Every option, in [`Opt`] order (a unit test checks the order).
pub static OPTIONS: [OptionSpec; OPTION_COUNT] = [
    OptionSpec {
        name: "OXMALLOC_CHECK",
        kind: Kind::Bool,
        default: "off",
        meaning: "Check mode: every block gets canary bytes and a trailer checked at \
                  `free`/`realloc` (a write past the end is reported), and freed blocks wait in \
                  a 1024-entry quarantine before reuse (a double free after other allocations \
                  is reported). Slow: every call goes through one lock.",
    },
    OptionSpec {
        name: "OXMALLOC_HARDEN",
        kind: Kind::Bool,
        default: "off",
        meaning: "Hardened mode: bad pointers, double frees (also after other allocations), \
                  writes past the end of a block, writes after free, wrong sizes given to \
                  `free_sized` and sized `operator delete` stop the program with a one-line \
                  report; `malloc(0)` and freed medium and huge blocks are inaccessible; \
                  small blocks are zeroed at free. Per-thread, no global lock; see \
                  \"Hardened mode\" for what it costs.",
    },
    OptionSpec {
        name: "OXMALLOC_PURGE_DELAY_MS",
        kind: Kind::Millis,
        default: "1000",
        meaning: "How long freed memory may stay resident unused before it goes back to the \
                  OS. `mallopt(M_TRIM_THRESHOLD, 0)` sets it to 0.",
    },
    OptionSpec {
        name: "OXMALLOC_STATS",
        kind: Kind::Stats,
        default: "off",
        meaning: "Print a statistics report when the process exits: `text` (or `1`) for \
                  people, `json` for programs. It goes to a copy of stderr taken at start-up, \
                  so a program that closes fd 2 still gets it.",
    },
    OptionSpec {
        name: "OXMALLOC_STATS_FILE",
        kind: Kind::Path,
        default: "",
        meaning: "Write the exit report to this file instead of stderr; `%p` becomes the pid, \
                  so each process of a program that forks or runs others writes its own. A \
                  relative path is taken from the directory at start-up.",
    },
    OptionSpec {
        name: "OXMALLOC_VERBOSE",
        kind: Kind::Bool,
        default: "off",
        meaning: "At start-up, print the version, the build features, the TLS model and \
                  every option in effect with where its value came from, on stderr.",
    },
    OptionSpec {
        name: "OXMALLOC_PROF",
        kind: Kind::Bool,
        default: "off",
        meaning: "Heap profiler: sample allocations and write profiles to \
                  `OXMALLOC_PROF_DIR`.",
    },
    OptionSpec {
        name: "OXMALLOC_PROF_DIR",
        kind: Kind::Path,
        default: ".",
        meaning: "Directory the heap profiles are written to (relative: from the directory \
                  at start-up).",
    },
    OptionSpec {
        name: "OXMALLOC_PROF_INTERVAL",
        kind: Kind::Bytes,
        default: "524288",
        meaning: "Mean number of bytes allocated between two samples of the heap profiler.",
    },
    OptionSpec {
        name: "OXMALLOC_PROF_SIGNAL",
        kind: Kind::Signal,
        default: "none",
        meaning: "Write a heap profile when the process receives this signal.",
    },
    OptionSpec {
        name: "OXMALLOC_PROF_DUMP_BYTES",
        kind: Kind::Bytes,
        default: "0",
        meaning: "Write a heap profile every time this many more bytes have been allocated \
                  (0: never).",
    },
    OptionSpec {
        name: "OXMALLOC_PROF_DUMP_PEAK",
        kind: Kind::Bool,
        default: "off",
        meaning: "Write a heap profile at each new peak of live bytes.",
    },
    OptionSpec {
        name: "OXMALLOC_GUARD",
        kind: Kind::Bool,
        default: "off",
        meaning: "Guarded sampling: about one allocation per `OXMALLOC_GUARD_INTERVAL` bytes \
                  (of blocks up to 16 KiB) is placed next to an inaccessible OS page and made \
                  inaccessible at `free`; \
                  a use after free, an overflow or an underflow of it, and its double free, \
                  stop the program with a report naming the allocation and free stacks. \
                  Cheap enough for production; off in check and hardened mode. See \
                  \"Guarded sampling\".",
    },
    OptionSpec {
        name: "OXMALLOC_GUARD_INTERVAL",
        kind: Kind::Bytes,
        default: "16777216",
        meaning: "Mean number of bytes allocated in blocks up to 16 KiB between two \
                  guarded blocks (`OXMALLOC_GUARD=1`).",
    },
];

/// Where an option's value came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Source {
    /// The table's default.
    Default = 0,
    /// The environment.
    Environment = 1,
    /// A `mallopt` call.
    Mallopt = 2,
}

impl Source {
    fn from_u8(v: u8) -> Source {
        match v {
            1 => Source::Environment,
            2 => Source::Mallopt,
            _ => Source::Default,
        }
    }

    /// As the verbose lines say it.
    pub fn name(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Environment => "environment",
            Source::Mallopt => "mallopt",
        }
    }
}

/// Longest path value, in bytes.
pub const PATH_MAX_BYTES: usize = 255;
/// The options that take a path, in the order of their buffers.
const PATH_OPTIONS: [Opt; 2] = [Opt::StatsFile, Opt::ProfDir];

/// The buffer index of a path option.
fn path_slot(index: usize) -> Option<usize> {
    PATH_OPTIONS.iter().position(|&o| o as usize == index)
}

/// Loading state: [`NOT_LOADED`], [`LOADING`] (one thread is parsing), [`LOADED`].
static STATE: AtomicU8 = AtomicU8::new(NOT_LOADED);
const NOT_LOADED: u8 = 0;
const LOADING: u8 = 1;
/// The options are published.
pub const LOADED: u8 = 2;
/// The loading thread (`pthread_self`), while [`LOADING`].
static LOADER: AtomicUsize = AtomicUsize::new(0);

static VALUES: [AtomicU64; OPTION_COUNT] = [const { AtomicU64::new(0) }; OPTION_COUNT];
static SOURCES: [AtomicU8; OPTION_COUNT] = [const { AtomicU8::new(0) }; OPTION_COUNT];

/// The path buffers, written by the loading thread only, before it publishes [`LOADED`].
struct PathBuffers(UnsafeCell<[load::PathValue; PATH_OPTIONS.len()]>);

// SAFETY: written only by the single thread that moved STATE from NOT_LOADED to LOADING,
// before its release store of LOADED; read only after an acquire load saw LOADED.
unsafe impl Sync for PathBuffers {}

static PATHS: PathBuffers = PathBuffers(UnsafeCell::new(
    [load::PathValue::EMPTY; PATH_OPTIONS.len()],
));

/// Loads the options if not done yet. Cheap after the first call.
#[inline]
pub fn ensure_loaded() {
    if STATE.load(Ordering::Acquire) == LOADED {
        return;
    }
    load::load_slow();
}

fn value(opt: Opt) -> u64 {
    ensure_loaded();
    VALUES
        .get(opt as usize)
        .map_or(0, |v| v.load(Ordering::Relaxed))
}

fn path(opt: Opt) -> &'static [u8] {
    ensure_loaded();
    if STATE.load(Ordering::Acquire) != LOADED {
        // Re-entered while loading: no path yet.
        return &[];
    }
    let Some(slot) = path_slot(opt as usize) else {
        return &[];
    };
    // SAFETY: LOADED was seen with acquire ordering, so the buffers are written and will
    // never be written again; a shared reference to them lives as long as the process.
    let paths: &'static [load::PathValue; PATH_OPTIONS.len()] = unsafe { &*PATHS.0.get() };
    paths.get(slot).map_or(&[], |p| p.as_bytes())
}

/// True in check mode (`OXMALLOC_CHECK`).
#[inline]
pub fn check_mode() -> bool {
    value(Opt::Check) != 0
}

/// True in hardened mode (`OXMALLOC_HARDEN`).
#[inline]
pub fn harden_mode() -> bool {
    value(Opt::Harden) != 0
}

/// True in check or hardened mode: threads get no heap pointer, so every call takes the
/// slow paths, which route it to the mode.
#[inline]
pub fn routed_mode() -> bool {
    check_mode() || harden_mode()
}

/// How long freed memory may stay resident unused, in milliseconds.
pub fn purge_delay_ms() -> u64 {
    value(Opt::PurgeDelayMs)
}

/// Changes the purge delay (`mallopt(M_TRIM_THRESHOLD, ...)`).
pub fn set_purge_delay_ms(ms: u32) {
    ensure_loaded();
    if let (Some(v), Some(s)) = (
        VALUES.get(Opt::PurgeDelayMs as usize),
        SOURCES.get(Opt::PurgeDelayMs as usize),
    ) {
        v.store(u64::from(ms), Ordering::Relaxed);
        s.store(Source::Mallopt as u8, Ordering::Relaxed);
    }
}

/// The exit report asked for by `OXMALLOC_STATS`.
pub fn stats_mode() -> StatsMode {
    StatsMode::from_u64(value(Opt::Stats))
}

/// True when `OXMALLOC_STATS` asked for a report at exit.
pub fn show_stats() -> bool {
    stats_mode() != StatsMode::Off
}

/// `OXMALLOC_STATS_FILE` (absolute when it fits; `%p` not yet expanded), empty for stderr.
pub fn stats_file() -> &'static [u8] {
    path(Opt::StatsFile)
}

/// True with `OXMALLOC_VERBOSE`.
pub fn verbose() -> bool {
    value(Opt::Verbose) != 0
}

/// True when the heap profiler is on (`OXMALLOC_PROF`).
pub fn prof_enabled() -> bool {
    value(Opt::Prof) != 0
}

/// The directory heap profiles go to (`OXMALLOC_PROF_DIR`; absolute when it fits; no NUL).
pub fn prof_dir() -> &'static [u8] {
    path(Opt::ProfDir)
}

/// Mean bytes between two profiler samples (`OXMALLOC_PROF_INTERVAL`).
pub fn prof_interval_bytes() -> u64 {
    value(Opt::ProfInterval)
}

/// The signal that asks for a profile (`OXMALLOC_PROF_SIGNAL`), 0 for none.
pub fn prof_signal() -> i32 {
    i32::try_from(value(Opt::ProfSignal)).unwrap_or(0)
}

/// Write a profile every this many bytes allocated (`OXMALLOC_PROF_DUMP_BYTES`), 0 never.
pub fn prof_dump_bytes() -> u64 {
    value(Opt::ProfDumpBytes)
}

/// Write a profile at each new peak of live bytes (`OXMALLOC_PROF_DUMP_PEAK`).
pub fn prof_dump_peak() -> bool {
    value(Opt::ProfDumpPeak) != 0
}

/// True when guarded sampling is asked for (`OXMALLOC_GUARD`; check and hardened mode
/// turn it off, which the guard itself decides).
pub fn guard_enabled() -> bool {
    value(Opt::Guard) != 0
}

/// Mean bytes between two guarded blocks (`OXMALLOC_GUARD_INTERVAL`).
pub fn guard_interval_bytes() -> u64 {
    value(Opt::GuardInterval)
}

/// The build features compiled in, for the verbose lines and reports.
pub fn build_features() -> &'static str {
    match (
        cfg!(feature = "c-exports"),
        cfg!(feature = "unchecked-free"),
    ) {
        (true, false) => "c-exports",
        (true, true) => "c-exports, unchecked-free",
        (false, false) => "none",
        (false, true) => "unchecked-free",
    }
}

/// The TLS model of this build.
pub fn tls_mode() -> &'static str {
    if cfg!(any(feature = "portable-tls", not(target_arch = "x86_64"))) {
        "portable (thread_local!)"
    } else {
        "initial-exec"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_index_order() {
        let order = [
            (Opt::Check, "OXMALLOC_CHECK"),
            (Opt::Harden, "OXMALLOC_HARDEN"),
            (Opt::PurgeDelayMs, "OXMALLOC_PURGE_DELAY_MS"),
            (Opt::Stats, "OXMALLOC_STATS"),
            (Opt::StatsFile, "OXMALLOC_STATS_FILE"),
            (Opt::Verbose, "OXMALLOC_VERBOSE"),
            (Opt::Prof, "OXMALLOC_PROF"),
            (Opt::ProfDir, "OXMALLOC_PROF_DIR"),
            (Opt::ProfInterval, "OXMALLOC_PROF_INTERVAL"),
            (Opt::ProfSignal, "OXMALLOC_PROF_SIGNAL"),
            (Opt::ProfDumpBytes, "OXMALLOC_PROF_DUMP_BYTES"),
            (Opt::ProfDumpPeak, "OXMALLOC_PROF_DUMP_PEAK"),
            (Opt::Guard, "OXMALLOC_GUARD"),
            (Opt::GuardInterval, "OXMALLOC_GUARD_INTERVAL"),
        ];
        assert_eq!(order.len(), OPTION_COUNT);
        for (opt, name) in order {
            assert_eq!(OPTIONS[opt as usize].name, name);
        }
    }
}

#[cfg(test)]
mod readme_table;
