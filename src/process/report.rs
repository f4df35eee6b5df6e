//! The statistics report: text for people or one JSON object for programs, printed when the
//! process exits (`OXMALLOC_STATS`) and by `malloc_stats()` (text, on stderr).
//!
//! A report at exit must not get lost. Programs close fd 2 before they exit (`cat` does, in
//! its own exit handler, which runs before ours), so at start-up [`at_start`] keeps a private
//! copy of fd 2 at a high descriptor number (`F_DUPFD_CLOEXEC`: an `exec`ed program starts
//! its own). Before writing to it, the report checks that the copy still refers to the file
//! it was taken from, since a program may close it and get the number back for something
//! else. With `OXMALLOC_STATS_FILE` the report goes to that file instead, `%p` expanded to
//! the pid at exit, so forked children write their own.
//!
//! Every report names the process (pid, `/proc/self/exe`, `/proc/self/cmdline`, read with
//! plain syscalls into stack buffers). The JSON schema is in the README ("Statistics").

use crate::config::{self, StatsMode};
use crate::process::census::{self, Census};
use crate::writer::Writer;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// Version of the JSON report's layout; bumped when a field changes meaning or goes away
/// (new fields may appear without a bump).
pub const JSON_SCHEMA: u32 = 1;

static STARTED: AtomicBool = AtomicBool::new(false);
/// The private copy of fd 2, or -1.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
static REPORT_DEV: AtomicU64 = AtomicU64::new(0);
static REPORT_INO: AtomicU64 = AtomicU64::new(0);

/// Device and inode of an open descriptor.
fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat writes into our stack `stat`; a bad descriptor gives an error.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

/// Prepares the exit report when `OXMALLOC_STATS` asks for one: copies fd 2 and registers
/// the exit handler. Runs once (from the library's constructor, or earlier from the first
/// thread's set-up).
pub fn at_start() {
    if !config::show_stats() || STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    // Start-up must leave the program's errno alone.
    crate::os::real::keep_errno(prepare);
}

/// The work of [`at_start`].
fn prepare() {
    // A high number, below the descriptor limit, that programs are unlikely to use or to
    // close one by one; kept small enough that the kernel's descriptor table stays small.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into our stack struct.
    let lowest = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.saturating_sub(16).clamp(3, 1000) as i32
    } else {
        3
    };
    // SAFETY: duplicating fd 2 (if open) has no memory effects.
    let mut fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, lowest) };
    if fd < 0 && lowest > 3 {
        // SAFETY: duplicating fd 2 (if open) at the lowest free number from 3 has no memory
        // effects.
        fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    }
    if let Some((dev, ino)) = identity(fd).filter(|_| fd >= 0) {
        REPORT_DEV.store(dev, Ordering::Relaxed);
        REPORT_INO.store(ino, Ordering::Relaxed);
        REPORT_FD.store(fd, Ordering::Release);
    }
    // SAFETY: registering a plain function that takes no argument; atexit does not call
    // malloc for the first 32 registrations, and may safely call ours in any case.
    unsafe { libc::atexit(at_exit) };
}

/// The descriptor a report to "stderr" goes to: the private copy if it still refers to the
/// file it was taken from, else fd 2 if it is open, else none.
fn stderr_fd() -> Option<i32> {
    let fd = REPORT_FD.load(Ordering::Acquire);
    if fd >= 0
        && identity(fd)
            == Some((
                REPORT_DEV.load(Ordering::Relaxed),
                REPORT_INO.load(Ordering::Relaxed),
            ))
    {
        return Some(fd);
    }
    identity(2).map(|_| 2)
}

/// Opens the report file named by `pattern` (`%p` becomes the pid, `%%` a `%`).
fn open_report_file(pattern: &[u8]) -> Option<i32> {
    let mut path = [0u8; config::PATH_MAX_BYTES + 32];
    let mut len = 0;
    let mut push = |path: &mut [u8], text: &[u8]| -> bool {
        for &b in text {
            match path.get_mut(len) {
                Some(slot) => *slot = b,
                None => return false,
            }
            len += 1;
        }
        true
    };
    let mut digits = crate::writer::Digits::new();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let pid = digits.decimal(pid);
    let mut i = 0;
    while let Some(&b) = pattern.get(i) {
        let next = pattern.get(i + 1).copied();
        let ok = match (b, next) {
            (b'%', Some(b'p')) => {
                i += 1;
                push(&mut path, pid)
            }
            (b'%', Some(b'%')) => {
                i += 1;
                push(&mut path, b"%")
            }
            _ => push(&mut path, &[b]),
        };
        if !ok {
            return None;
        }
        i += 1;
    }
    // The terminating NUL (the buffer has room past the longest pattern's expansion or
    // `push` failed above).
    if !push(&mut path, &[0]) {
        return None;
    }
    // SAFETY: a NUL-terminated path in a stack buffer.
    let fd = unsafe {
        libc::open(
            path.as_ptr().cast(),
            // O_NOFOLLOW: a symbolic link at the name is refused (the report then goes to
            // stderr with a message), so a link cannot aim the report at another file.
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    (fd >= 0).then_some(fd)
}

/// The exit handler.
extern "C" fn at_exit() {
    let mode = config::stats_mode();
    let file = config::stats_file();
    if !file.is_empty() {
        if let Some(fd) = open_report_file(file) {
            {
                let mut w = Writer::to_fd(fd);
                write_report(&mut w, mode);
            }
            // SAFETY: closing the descriptor we opened.
            unsafe { libc::close(fd) };
            return;
        }
        if let Some(fd) = stderr_fd() {
            Writer::to_fd(fd)
                .str("oxmalloc: cannot open OXMALLOC_STATS_FILE=")
                .bytes(file)
                .str("; the report follows on stderr\n");
        }
    }
    if let Some(fd) = stderr_fd() {
        write_report(&mut Writer::to_fd(fd), mode);
    }
}

/// Reads a small `/proc/self/` file into `buf`; returns the bytes read.
fn read_proc(path: &core::ffi::CStr, buf: &mut [u8]) -> usize {
    // SAFETY: a NUL-terminated path; open does not allocate.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return 0;
    }
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..).filter(|r| !r.is_empty()) {
        // SAFETY: reading into the unfilled part of our buffer.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
    len
}

/// Who the report is about.
struct Process {
    pid: i64,
    exe: [u8; 256],
    exe_len: usize,
    cmdline: [u8; 256],
    cmdline_len: usize,
}

impl Process {
    fn current() -> Process {
        let mut p = Process {
            // SAFETY: getpid has no preconditions.
            pid: i64::from(unsafe { libc::getpid() }),
            exe: [0; 256],
            exe_len: 0,
            cmdline: [0; 256],
            cmdline_len: 0,
        };
        // SAFETY: readlink writes at most `len` bytes into our buffer.
        let n = unsafe {
            libc::readlink(
                c"/proc/self/exe".as_ptr(),
                p.exe.as_mut_ptr().cast(),
                p.exe.len(),
            )
        };
        p.exe_len = if n > 0 { n as usize } else { 0 };
        p.cmdline_len = read_proc(c"/proc/self/cmdline", &mut p.cmdline);
        // Arguments are NUL-separated: show them separated by spaces.
        let shown = p.cmdline.get_mut(..p.cmdline_len).unwrap_or(&mut []);
        for b in shown.iter_mut() {
            if *b == 0 {
                *b = b' ';
            }
        }
        while p.cmdline_len > 0 && p.cmdline.get(p.cmdline_len - 1) == Some(&b' ') {
            p.cmdline_len -= 1;
        }
        p
    }

    fn exe(&self) -> &[u8] {
        self.exe.get(..self.exe_len).unwrap_or(&[])
    }

    fn cmdline(&self) -> &[u8] {
        self.cmdline.get(..self.cmdline_len).unwrap_or(&[])
    }
}

/// Writes a report in `mode` (nothing for [`StatsMode::Off`]).
pub fn write_report(w: &mut Writer, mode: StatsMode) {
    if mode == StatsMode::Off {
        return;
    }
    let census = census::take(true);
    let process = Process::current();
    match mode {
        StatsMode::Json => write_json(w, &census, &process),
        _ => write_text(w, &census, &process),
    }
    w.flush();
}

const LABEL: usize = 17;

fn label<'a>(w: &'a mut Writer, text: &str) -> &'a mut Writer {
    w.str("  ").left(text.as_bytes(), LABEL)
}

fn write_text(w: &mut Writer, c: &Census, p: &Process) {
    let s = &c.stats;
    w.str("oxmalloc ")
        .str(env!("CARGO_PKG_VERSION"))
        .str(" report, pid ")
        .i64(p.pid)
        .str(": ")
        .bytes(p.exe())
        .str(" (")
        .bytes(p.cmdline())
        .str(")\n");
    label(w, "live")
        .human(s.live_bytes as u64)
        .str(" in ")
        .usize(s.live_blocks)
        .str(" blocks: small ")
        .human(s.small_live_bytes as u64)
        .str(" in ")
        .usize(s.small_live_blocks)
        .str(", medium ")
        .human(s.medium_live_bytes as u64)
        .str(" in ")
        .usize(s.medium_live_blocks)
        .str(", huge ")
        .human(s.huge_live_bytes as u64)
        .str(" in ")
        .usize(s.huge_live_blocks)
        .str("\n");
    label(w, "peak held")
        .human(s.peak_held_bytes as u64)
        .str(" (held now ")
        .human(s.held_bytes as u64)
        .str("; an upper bound of peak live bytes: small blocks count by whole slabs)\n");
    label(w, "memory")
        .human(s.mapped_bytes as u64)
        .str(" mapped (peak ")
        .human(s.peak_mapped_bytes as u64)
        .str("), ")
        .human(s.resident_bytes as u64)
        .str(" resident, ")
        .human(s.free_bytes as u64)
        .str(" not in live blocks; ")
        .human(s.purged_bytes as u64)
        .str(" purged in ")
        .usize(s.purge_count)
        .str(" calls\n");
    label(w, "threads")
        .usize(s.threads_started.saturating_sub(s.threads_exited))
        .str(" with a heap (")
        .usize(s.threads_started)
        .str(" started, ")
        .usize(s.threads_exited)
        .str(" exited); heaps: ")
        .usize(s.heaps_created)
        .str(" created, ")
        .usize(s.heaps_abandoned)
        .str(" abandoned, ")
        .usize(s.heaps_adopted)
        .str(" adopted\n");
    label(w, "remote frees").usize(s.remote_frees).str("\n");
    label(w, "failed requests")
        .usize(s.failed_requests)
        .str("\n");
    label(w, "medium")
        .usize(s.medium_live_blocks)
        .str(" live (")
        .human(s.medium_live_bytes as u64)
        .str("), ")
        .usize(s.medium_cached_blocks)
        .str(" cached in threads (")
        .human(s.medium_cached_bytes as u64)
        .str("), ")
        .human(s.medium_free_bytes as u64)
        .str(" free in ")
        .usize(s.medium_regions)
        .str(" regions\n");
    label(w, "huge")
        .usize(s.huge_live_blocks)
        .str(" live (")
        .human(s.huge_live_bytes as u64)
        .str("), ")
        .usize(s.huge_cached_count)
        .str(" cached mappings (")
        .human(s.huge_cached_bytes as u64)
        .str(")\n");
    label(w, "small")
        .usize(s.segments)
        .str(" segments (")
        .usize(s.pooled_segments)
        .str(" pooled), ")
        .usize(s.slabs)
        .str(" slabs\n");
    const HEAD: [(&str, usize); 7] = [
        ("block", 9),
        ("live", 10),
        ("live bytes", 12),
        ("slabs", 7),
        ("held", 11),
        ("waste", 11),
        ("refills", 10),
    ];
    w.str("  ");
    for (name, width) in HEAD {
        w.right(name.as_bytes(), width);
    }
    w.str("\n");
    for class in c.classes.iter().filter(|k| k.slabs > 0 || k.refills > 0) {
        w.str("  ")
            .u64_right(class.block_bytes as u64, 9)
            .u64_right(class.live_blocks as u64, 10)
            .human_right(class.live_bytes() as u64, 12)
            .u64_right(class.slabs as u64, 7)
            .human_right(class.held_bytes() as u64, 11)
            .human_right(class.waste_bytes() as u64, 11)
            .u64_right(class.refills, 10)
            .str("\n");
    }
    w.str(
        "  (refills: allocations of the class that found its current slab empty, about one \
         per OS page of blocks; oxmalloc does not count every malloc, which would cost every \
         call)\n",
    );
}

fn field<'a>(w: &'a mut Writer, name: &str, value: usize) -> &'a mut Writer {
    w.str("\"").str(name).str("\":").usize(value)
}

fn write_json(w: &mut Writer, c: &Census, p: &Process) {
    let s = &c.stats;
    w.str("{\"oxmalloc\":\"")
        .str(env!("CARGO_PKG_VERSION"))
        .str("\",\"schema\":")
        .u64(u64::from(JSON_SCHEMA))
        .str(",\"pid\":")
        .i64(p.pid)
        .str(",\"exe\":")
        .json_str(p.exe())
        .str(",\"cmdline\":")
        .json_str(p.cmdline())
        .str(",\"live\":{");
    field(w, "bytes", s.live_bytes).str(",");
    field(w, "blocks", s.live_blocks).str(",");
    field(w, "small_bytes", s.small_live_bytes).str(",");
    field(w, "small_blocks", s.small_live_blocks).str(",");
    field(w, "medium_bytes", s.medium_live_bytes).str(",");
    field(w, "medium_blocks", s.medium_live_blocks).str(",");
    field(w, "huge_bytes", s.huge_live_bytes).str(",");
    field(w, "huge_blocks", s.huge_live_blocks).str("},\"held\":{");
    field(w, "bytes", s.held_bytes).str(",");
    field(w, "peak_bytes", s.peak_held_bytes).str("},\"memory\":{");
    field(w, "mapped_bytes", s.mapped_bytes).str(",");
    field(w, "peak_mapped_bytes", s.peak_mapped_bytes).str(",");
    field(w, "resident_bytes", s.resident_bytes).str(",");
    field(w, "free_bytes", s.free_bytes).str(",");
    field(w, "purged_bytes", s.purged_bytes).str(",");
    field(w, "purges", s.purge_count).str("},\"small\":{");
    field(w, "segments", s.segments).str(",");
    field(w, "pooled_segments", s.pooled_segments).str(",");
    field(w, "slabs", s.slabs).str(",\"classes\":[");
    let mut first = true;
    for class in c.classes.iter().filter(|k| k.slabs > 0 || k.refills > 0) {
        if !first {
            w.str(",");
        }
        first = false;
        w.str("{");
        field(w, "block_bytes", class.block_bytes).str(",");
        field(w, "live_blocks", class.live_blocks).str(",");
        field(w, "live_bytes", class.live_bytes()).str(",");
        field(w, "slabs", class.slabs).str(",");
        field(w, "held_bytes", class.held_bytes()).str(",");
        field(w, "waste_bytes", class.waste_bytes()).str(",\"refills\":");
        w.u64(class.refills).str("}");
    }
    w.str("]},\"medium\":{");
    field(w, "live_blocks", s.medium_live_blocks).str(",");
    field(w, "live_bytes", s.medium_live_bytes).str(",");
    field(w, "cached_blocks", s.medium_cached_blocks).str(",");
    field(w, "cached_bytes", s.medium_cached_bytes).str(",");
    field(w, "free_bytes", s.medium_free_bytes).str(",");
    field(w, "regions", s.medium_regions).str("},\"huge\":{");
    field(w, "live_blocks", s.huge_live_blocks).str(",");
    field(w, "live_bytes", s.huge_live_bytes).str(",");
    field(w, "cached_mappings", s.huge_cached_count).str(",");
    field(w, "cached_bytes", s.huge_cached_bytes).str("},\"threads\":{");
    field(w, "started", s.threads_started).str(",");
    field(w, "exited", s.threads_exited).str(",");
    field(
        w,
        "live",
        s.threads_started.saturating_sub(s.threads_exited),
    )
    .str("},\"heaps\":{");
    field(w, "created", s.heaps_created).str(",");
    field(w, "abandoned", s.heaps_abandoned).str(",");
    field(w, "adopted", s.heaps_adopted).str("},");
    field(w, "remote_frees", s.remote_frees).str(",");
    field(w, "failed_requests", s.failed_requests).str("}\n");
}
