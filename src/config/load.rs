//! Loading the options: the environment scan and the parse, on the loading thread's stack,
//! then the publication into the statics of `config`.

use super::{
    parse, path_slot, verbose, write_verbose, Kind, Source, LOADED, LOADER, LOADING, NOT_LOADED,
    OPTIONS, OPTION_COUNT, PATHS, PATH_MAX_BYTES, PATH_OPTIONS, SOURCES, STATE, VALUES,
};
use crate::writer::Writer;
use core::sync::atomic::Ordering;

/// A path value in a fixed buffer.
#[derive(Clone, Copy)]
pub(super) struct PathValue {
    bytes: [u8; PATH_MAX_BYTES],
    len: usize,
}

impl PathValue {
    pub(super) const EMPTY: PathValue = PathValue {
        bytes: [0; PATH_MAX_BYTES],
        len: 0,
    };

    fn set(&mut self, text: &[u8]) -> bool {
        match self.bytes.get_mut(..text.len()) {
            Some(dest) => {
                dest.copy_from_slice(text);
                self.len = text.len();
                true
            }
            None => false,
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// Makes a relative path absolute from the current directory, if the result fits
    /// (otherwise leaves it as it is).
    fn make_absolute(&mut self) {
        if self.len == 0 || self.bytes.first() == Some(&b'/') {
            return;
        }
        let mut cwd = [0u8; PATH_MAX_BYTES + 1];
        // SAFETY: getcwd(2) writes at most `len` bytes into the buffer; no allocation.
        let n = unsafe { libc::syscall(libc::SYS_getcwd, cwd.as_mut_ptr(), cwd.len()) };
        if n <= 1 {
            return;
        }
        // The syscall's length counts the terminating NUL.
        let cwd = cwd.get(..n as usize - 1).unwrap_or(&[]);
        let own = *self;
        let rel = own.as_bytes();
        let rel = if rel == b"." {
            &[][..]
        } else {
            rel.strip_prefix(b"./").unwrap_or(rel)
        };
        let mut out = PathValue::EMPTY;
        let fits =
            out.set(cwd) && (rel.is_empty() || cwd == b"/" || out.append(b"/")) && out.append(rel);
        if fits {
            *self = out;
        }
    }

    fn append(&mut self, text: &[u8]) -> bool {
        let end = self.len + text.len();
        match self.bytes.get_mut(self.len..end) {
            Some(dest) => {
                dest.copy_from_slice(text);
                self.len = end;
                true
            }
            None => false,
        }
    }
}

/// Every option's value while it is being worked out (on the loader's stack).
struct Settings {
    values: [u64; OPTION_COUNT],
    sources: [Source; OPTION_COUNT],
    paths: [PathValue; PATH_OPTIONS.len()],
}

/// What was wrong with an `OXMALLOC_*` entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Problem {
    /// Not an option.
    Unknown,
    /// The value does not parse for this option.
    Invalid(usize),
}

impl Settings {
    /// Every option at its default (the table's text, parsed like a user's value).
    fn defaults() -> Settings {
        let mut s = Settings {
            values: [0; OPTION_COUNT],
            sources: [Source::Default; OPTION_COUNT],
            paths: [PathValue::EMPTY; PATH_OPTIONS.len()],
        };
        for (i, spec) in OPTIONS.iter().enumerate() {
            // The defaults are checked to parse by a unit test.
            let _ = s.set(i, spec.default.as_bytes());
        }
        s
    }

    /// Parses `value` for option `index` and stores it; false (nothing stored) when it does
    /// not parse.
    fn set(&mut self, index: usize, value: &[u8]) -> bool {
        let Some(spec) = OPTIONS.get(index) else {
            return false;
        };
        let parsed = match spec.kind {
            Kind::Bool => parse::boolean(value).map(u64::from),
            Kind::Millis => parse::millis(value).map(u64::from),
            Kind::Bytes => parse::bytes(value),
            Kind::Stats => parse::stats_mode(value).map(|m| m as u64),
            Kind::Signal => parse::signal(value).map(|s| s as u64),
            Kind::Path => {
                let ok = path_slot(index)
                    .and_then(|slot| self.paths.get_mut(slot))
                    .is_some_and(|p| p.set(value));
                ok.then_some(0)
            }
        };
        match (parsed, self.values.get_mut(index)) {
            (Some(v), Some(slot)) => {
                *slot = v;
                true
            }
            _ => false,
        }
    }

    /// Applies one `NAME=value` environment entry (its name starts with `OXMALLOC_`).
    fn apply(&mut self, entry: &[u8]) -> Result<(), Problem> {
        let eq = entry.iter().position(|&b| b == b'=').unwrap_or(entry.len());
        let name = entry.get(..eq).unwrap_or(entry);
        let value = entry.get(eq + 1..).unwrap_or(&[]);
        let index = OPTIONS
            .iter()
            .position(|o| o.name.as_bytes() == name)
            .ok_or(Problem::Unknown)?;
        if value.is_empty() {
            return Ok(());
        }
        // `set` stores nothing when the value does not parse: the old value stays.
        if !self.set(index, value) {
            return Err(Problem::Invalid(index));
        }
        if let Some(source) = self.sources.get_mut(index) {
            *source = Source::Environment;
        }
        Ok(())
    }
}

extern "C" {
    static environ: *const *const libc::c_char;
}

/// Scans `environ` and applies our entries; false when libc has not set it up yet.
fn scan_environ(settings: &mut Settings, w: &mut Writer) -> bool {
    // SAFETY: `environ` is libc's environment: null, or a null-terminated array of
    // null-terminated strings that stay valid while we read them.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return false;
        }
        while !(*entry).is_null() {
            let s = core::ffi::CStr::from_ptr(*entry).to_bytes();
            if s.starts_with(b"OXMALLOC_") {
                apply_or_warn(settings, s, w);
            }
            entry = entry.add(1);
        }
    }
    true
}

/// Scans `/proc/self/environ` (entries separated by NUL) with stack buffers.
fn scan_proc_environ(settings: &mut Settings, w: &mut Writer) {
    // SAFETY: a path literal with its terminator; open(2) does not allocate.
    let fd = unsafe {
        libc::open(
            c"/proc/self/environ".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 1024];
    let mut entry = [0u8; 512];
    let mut len = 0usize;
    let mut overflow = false;
    loop {
        // SAFETY: reading into a stack buffer of that length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        for &b in buf.get(..n as usize).unwrap_or(&[]) {
            if b == 0 {
                let text = entry.get(..len).unwrap_or(&[]);
                if text.starts_with(b"OXMALLOC_") {
                    if overflow {
                        warn_line(w, text, " is too long to be an option value; ignored");
                    } else {
                        apply_or_warn(settings, text, w);
                    }
                }
                len = 0;
                overflow = false;
            } else if let Some(slot) = entry.get_mut(len) {
                *slot = b;
                len += 1;
            } else {
                overflow = true;
            }
        }
    }
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
}

fn warn_line(w: &mut Writer, entry: &[u8], why: &str) {
    w.str("oxmalloc: warning: ").bytes(entry).str(why).str("\n");
}

/// Applies an entry; on a problem writes the one warning line.
fn apply_or_warn(settings: &mut Settings, entry: &[u8], w: &mut Writer) {
    match settings.apply(entry) {
        Ok(()) => {}
        Err(Problem::Unknown) => {
            let eq = entry.iter().position(|&b| b == b'=').unwrap_or(entry.len());
            w.str("oxmalloc: warning: unknown option ")
                .bytes(entry.get(..eq).unwrap_or(entry))
                .str(" ignored (options:");
            for spec in &OPTIONS {
                w.str(" ").str(spec.name);
            }
            w.str(")\n");
        }
        Err(Problem::Invalid(index)) => {
            if let Some(spec) = OPTIONS.get(index) {
                w.str("oxmalloc: warning: invalid value ")
                    .bytes(entry)
                    .str(" (accepted: ")
                    .str(spec.kind.accepted())
                    .str("); using the default ")
                    .str(if spec.default.is_empty() {
                        "(none)"
                    } else {
                        spec.default
                    })
                    .str("\n");
            }
        }
    }
}

/// Whether the kernel started this process in secure-execution mode: `AT_SECURE` in the
/// auxiliary vector, set for set-user-ID and set-group-ID programs and for programs with
/// file capabilities. getauxval reads the vector libc saved at start-up; it does not
/// allocate.
fn secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

// Secure execution: no `OXMALLOC_*` variable sets an option. The environment is then the
// caller's, and the process runs with rights the caller lacks. Every option is ignored
// there, not only the ones that name a file: `OXMALLOC_STATS_FILE` and `OXMALLOC_PROF_DIR`
// would write where the caller cannot, `OXMALLOC_PROF_SIGNAL` would make a signal the
// caller may send write a file, `OXMALLOC_VERBOSE` and `OXMALLOC_STATS` would put the
// process's addresses and its heap's shape on the caller's terminal, and
// `OXMALLOC_PURGE_DELAY_MS` and the sampling options let the caller change how a privileged
// process holds its memory. Weighing them one by one would gain a privileged program nothing
// it needs; glibc ignores its `MALLOC_*` variables there in the same way. A program's own
// calls (`mallopt`, `ox_prof_dump(path)`) are its own business and still work.

/// Loads the options (see `config::ensure_loaded`).
#[cold]
#[inline(never)]
pub(super) fn load_slow() {
    // SAFETY: pthread_self has no preconditions and does not allocate.
    let me = unsafe { libc::pthread_self() } as usize;
    match STATE.compare_exchange(NOT_LOADED, LOADING, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {}
        Err(LOADED) => return,
        Err(_) => {
            if LOADER.load(Ordering::Relaxed) == me {
                // Re-entered on the loading thread (a signal handler that allocates): the
                // defaults hold meanwhile.
                return;
            }
            // Another thread is loading; it neither allocates nor waits for us.
            while STATE.load(Ordering::Acquire) != LOADED {
                core::hint::spin_loop();
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            return;
        }
    }
    LOADER.store(me, Ordering::Relaxed);
    // The syscalls of loading must not change the program's errno.
    crate::os::real::keep_errno(|| {
        let mut settings = Settings::defaults();
        let mut w = Writer::to_fd(2);
        if !secure_execution() && !scan_environ(&mut settings, &mut w) {
            scan_proc_environ(&mut settings, &mut w);
        }
        for p in &mut settings.paths {
            p.make_absolute();
        }
        for i in 0..OPTION_COUNT {
            if let (Some(v), Some(s)) = (VALUES.get(i), SOURCES.get(i)) {
                v.store(
                    settings.values.get(i).copied().unwrap_or(0),
                    Ordering::Relaxed,
                );
                s.store(
                    settings.sources.get(i).copied().unwrap_or(Source::Default) as u8,
                    Ordering::Relaxed,
                );
            }
        }
        // SAFETY: this thread moved STATE to LOADING, so it is the only writer, and no reader
        // looks at the buffers before the release store of LOADED below.
        unsafe { *PATHS.0.get() = settings.paths };
        STATE.store(LOADED, Ordering::Release);

        if verbose() {
            write_verbose(&mut w);
        }
        w.flush();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Opt, StatsMode};

    #[test]
    fn defaults_parse() {
        let mut s = Settings::defaults();
        for (i, spec) in OPTIONS.iter().enumerate() {
            assert!(
                spec.default.is_empty() || s.set(i, spec.default.as_bytes()),
                "default of {} does not parse",
                spec.name
            );
        }
        assert_eq!(s.values[Opt::PurgeDelayMs as usize], 1000);
        assert_eq!(s.values[Opt::ProfInterval as usize], 524288);
        assert_eq!(s.values[Opt::ProfSignal as usize], 0);
        assert_eq!(s.paths[1].as_bytes(), b".");
        assert_eq!(s.paths[0].as_bytes(), b"");
    }

    #[test]
    fn entries_apply_or_report_a_problem() {
        let mut s = Settings::defaults();
        assert_eq!(s.apply(b"OXMALLOC_CHECK=false"), Ok(()));
        assert_eq!(
            s.values[Opt::Check as usize],
            0,
            "false must not turn check mode on"
        );
        assert_eq!(s.apply(b"OXMALLOC_CHECK=Yes"), Ok(()));
        assert_eq!(s.values[Opt::Check as usize], 1);
        assert_eq!(s.sources[Opt::Check as usize], Source::Environment);
        assert_eq!(
            s.apply(b"OXMALLOC_PURGE_DELAY_MS=abc"),
            Err(Problem::Invalid(Opt::PurgeDelayMs as usize))
        );
        assert_eq!(
            s.apply(b"OXMALLOC_PURGE_DELAY_MS=-1"),
            Err(Problem::Invalid(Opt::PurgeDelayMs as usize))
        );
        assert_eq!(s.values[Opt::PurgeDelayMs as usize], 1000);
        assert_eq!(s.sources[Opt::PurgeDelayMs as usize], Source::Default);
        assert_eq!(s.apply(b"OXMALLOC_PURGE_DELAY_MS=5"), Ok(()));
        assert_eq!(s.values[Opt::PurgeDelayMs as usize], 5);
        assert_eq!(
            s.apply(b"OXMALLOC_PURGE_DELAY_MS="),
            Ok(()),
            "empty is unset"
        );
        assert_eq!(s.values[Opt::PurgeDelayMs as usize], 5);
        assert_eq!(s.apply(b"OXMALLOC_NOPE=1"), Err(Problem::Unknown));
        assert_eq!(s.apply(b"OXMALLOC_CHECKX"), Err(Problem::Unknown));
        assert_eq!(s.apply(b"OXMALLOC_STATS=json"), Ok(()));
        assert_eq!(s.values[Opt::Stats as usize], StatsMode::Json as u64);
        assert_eq!(s.apply(b"OXMALLOC_PROF_INTERVAL=64k"), Ok(()));
        assert_eq!(s.values[Opt::ProfInterval as usize], 65536);
        assert_eq!(s.apply(b"OXMALLOC_PROF_SIGNAL=SIGUSR2"), Ok(()));
        assert_eq!(s.values[Opt::ProfSignal as usize], libc::SIGUSR2 as u64);
        assert_eq!(s.apply(b"OXMALLOC_PROF_DIR=/tmp/prof"), Ok(()));
        assert_eq!(s.paths[1].as_bytes(), b"/tmp/prof");
        let mut long = [b'a'; 300];
        long[..18].copy_from_slice(b"OXMALLOC_PROF_DIR=");
        assert_eq!(s.apply(&long), Err(Problem::Invalid(Opt::ProfDir as usize)));
        assert_eq!(
            s.paths[1].as_bytes(),
            b"/tmp/prof",
            "a refused value keeps the old one"
        );
        assert_eq!(s.apply(b"OXMALLOC_STATS_FILE=/tmp/r.%p.json"), Ok(()));
        assert_eq!(s.paths[0].as_bytes(), b"/tmp/r.%p.json");
    }

    #[test]
    fn relative_paths_become_absolute() {
        let cwd = std::env::current_dir().unwrap();
        let cwd = cwd.to_str().unwrap().as_bytes().to_vec();
        let mut p = PathValue::EMPTY;
        assert!(p.set(b"."));
        p.make_absolute();
        assert_eq!(p.as_bytes(), &cwd[..]);
        assert!(p.set(b"./out/x"));
        p.make_absolute();
        let mut want = cwd.clone();
        want.extend_from_slice(b"/out/x");
        assert_eq!(p.as_bytes(), &want[..]);
        assert!(p.set(b"/abs"));
        p.make_absolute();
        assert_eq!(p.as_bytes(), b"/abs");
    }
}
