//! Writing a raw profile (the format is `docs/prof-format.md`).
//!
//! A dump runs inside whatever call asked for it (an allocation's slow path, `exit`, the
//! API), so it allocates nothing: the text is assembled in one stack buffer of 4 KiB and
//! written with `write(2)`, to a temporary name that is renamed once complete. The profile
//! lock is held while the table's and the timeline's lines are written; `/proc/self/maps` is copied after,
//! through the same buffer. About 7 KiB of stack in all.
//!
//! Errors come back as errno values; the automatic dumps turn them into one warning line
//! on stderr, and the program goes on.

use crate::fatal::MessageBuffer;
use crate::heap::sampler::OBJECT_FIXED_SHIFT;
use core::ffi::{c_char, c_int};
use core::sync::atomic::{AtomicU64, Ordering};

/// Longest path written to (directory and file name, with the terminator).
const PATH_MAX_BYTES: usize = 1024;
const BUFFER_BYTES: usize = 4096;

/// Why a profile is written (its `reason` line).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reason {
    /// The process exits.
    Exit,
    /// `ox_prof_dump` or `oxmalloc::prof_dump`.
    Api,
    /// The signal of `OXMALLOC_PROF_SIGNAL`.
    Signal,
    /// Another `OXMALLOC_PROF_DUMP_BYTES` bytes were allocated.
    Bytes,
    /// A new peak of live memory (`OXMALLOC_PROF_DUMP_PEAK`).
    Peak,
}

impl Reason {
    fn name(self) -> &'static [u8] {
        match self {
            Reason::Exit => b"exit",
            Reason::Api => b"api",
            Reason::Signal => b"signal",
            Reason::Bytes => b"bytes",
            Reason::Peak => b"peak",
        }
    }
}

fn errno() -> c_int {
    // SAFETY: the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// `v` in decimal, at least `min_digits` digits (zero-padded), in `tmp`.
fn decimal(v: u64, min_digits: usize, tmp: &mut [u8; 20]) -> &[u8] {
    let mut v = v;
    let mut count = 0;
    for slot in tmp.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
        count += 1;
        if v == 0 && count >= min_digits {
            break;
        }
    }
    tmp.get(tmp.len() - count..).unwrap_or(&[])
}

/// `v` as `0x` and lower-case hexadecimal digits, in `tmp`.
fn hex(v: usize, tmp: &mut [u8; 18]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut v = v;
    let mut start = tmp.len();
    for slot in tmp.iter_mut().skip(2).rev() {
        *slot = DIGITS[v & 15];
        v >>= 4;
        start -= 1;
        if v == 0 {
            break;
        }
    }
    start -= 2;
    if let Some(prefix) = tmp.get_mut(start..start + 2) {
        prefix.copy_from_slice(b"0x");
    }
    tmp.get(start..).unwrap_or(&[])
}

/// A path assembled in place, with room for its terminator.
struct Path {
    bytes: [u8; PATH_MAX_BYTES],
    len: usize,
    too_long: bool,
}

impl Path {
    fn new() -> Self {
        Path {
            bytes: [0; PATH_MAX_BYTES],
            len: 0,
            too_long: false,
        }
    }

    fn push(&mut self, text: &[u8]) -> &mut Self {
        match self.bytes.get_mut(self.len..self.len + text.len()) {
            // Keep one byte for the terminator.
            Some(dest) if self.len + text.len() < PATH_MAX_BYTES && !text.contains(&0) => {
                dest.copy_from_slice(text);
                self.len += text.len();
            }
            _ => self.too_long = true,
        }
        self
    }

    fn push_decimal(&mut self, v: u64, min_digits: usize) -> &mut Self {
        let mut tmp = [0; 20];
        self.push(decimal(v, min_digits, &mut tmp))
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// The path for a syscall; ENAMETOOLONG if it did not fit.
    fn terminated(&mut self) -> Result<*const c_char, c_int> {
        match self.bytes.get_mut(self.len) {
            Some(end) if !self.too_long => {
                *end = 0;
                Ok(self.bytes.as_ptr().cast())
            }
            _ => Err(libc::ENAMETOOLONG),
        }
    }
}

/// The file being written, through a stack buffer.
struct Out {
    fd: c_int,
    buf: [u8; BUFFER_BYTES],
    len: usize,
    /// The first error met (0: none); later output is dropped.
    error: c_int,
}

impl Out {
    fn push(&mut self, mut text: &[u8]) -> &mut Self {
        while !text.is_empty() && self.error == 0 {
            let room = self.buf.get_mut(self.len..).unwrap_or(&mut []);
            if room.is_empty() {
                self.flush();
                continue;
            }
            let mut n = 0;
            for (dest, &b) in room.iter_mut().zip(text) {
                *dest = b;
                n += 1;
            }
            self.len += n;
            text = text.get(n..).unwrap_or(&[]);
        }
        self
    }

    fn decimal(&mut self, v: u64) -> &mut Self {
        let mut tmp = [0; 20];
        self.push(decimal(v, 1, &mut tmp))
    }

    fn hex(&mut self, v: usize) -> &mut Self {
        let mut tmp = [0; 18];
        self.push(hex(v, &mut tmp))
    }

    fn flush(&mut self) {
        let mut done = 0;
        while done < self.len && self.error == 0 {
            let rest = self.buf.get(done..self.len).unwrap_or(&[]);
            // SAFETY: writing from a live buffer of that length.
            let n = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                done += n as usize;
            } else if n == 0 {
                self.error = libc::EIO;
            } else if errno() != libc::EINTR {
                self.error = errno();
            }
        }
        self.len = 0;
    }

    /// Appends the target of `/proc/self/exe`.
    fn exe(&mut self) {
        self.flush();
        // SAFETY: readlink writes at most `buf.len()` bytes into the buffer.
        let n = unsafe {
            libc::readlink(
                c"/proc/self/exe".as_ptr(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
            )
        };
        if n > 0 && (n as usize) < self.buf.len() {
            self.len = n as usize;
        } else {
            self.push(b"?");
        }
    }

    /// Appends `/proc/self/cmdline` with the arguments separated by spaces, each byte
    /// outside `!`..`~` and each backslash written `\xNN` (at most 64 KiB of it).
    fn cmdline(&mut self) {
        // SAFETY: a path literal with its terminator.
        let fd = unsafe {
            libc::open(
                c"/proc/self/cmdline".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return;
        }
        let mut chunk = [0u8; 256];
        let mut total = 0usize;
        // The kernel ends every argument with a NUL: the last one is not a separator.
        let mut pending_separator = false;
        while self.error == 0 && total < 64 << 10 {
            // SAFETY: reading into our chunk buffer, at most its length.
            let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            let Some(read) = usize::try_from(n).ok().filter(|&n| n > 0) else {
                break;
            };
            total += read;
            for &b in chunk.get(..read).unwrap_or(&[]) {
                if pending_separator {
                    self.push(b" ");
                    pending_separator = false;
                }
                match b {
                    0 => pending_separator = true,
                    b'!'..=b'~' if b != b'\\' => {
                        self.push(&[b]);
                    }
                    _ => {
                        const DIGITS: &[u8; 16] = b"0123456789abcdef";
                        let escaped = [
                            b'\\',
                            b'x',
                            DIGITS[usize::from(b >> 4)],
                            DIGITS[usize::from(b & 15)],
                        ];
                        self.push(&escaped);
                    }
                }
            }
        }
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
    }

    /// Appends `/proc/self/maps` verbatim.
    fn maps(&mut self) {
        self.flush();
        // SAFETY: a path literal with its terminator.
        let fd = unsafe {
            libc::open(
                c"/proc/self/maps".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            self.error = errno();
            return;
        }
        while self.error == 0 {
            // SAFETY: reading into our buffer, empty after the flush, at most its length.
            let n = unsafe { libc::read(fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n > 0 {
                self.len = n as usize;
                self.flush();
            } else if n == 0 {
                break;
            } else if errno() != libc::EINTR {
                self.error = errno();
            }
        }
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
    }
}

/// Dumps of this process so far: the pid in the high half, the next number in the low
/// half. A forked child sees another pid and starts again from 0.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn next_sequence(pid: u32) -> u64 {
    let mut current = SEQUENCE.load(Ordering::Relaxed);
    loop {
        let next = if (current >> 32) as u32 == pid {
            current & 0xffff_ffff
        } else {
            0
        };
        let new = (u64::from(pid) << 32) | ((next + 1) & 0xffff_ffff);
        match SEQUENCE.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => current = seen,
        }
    }
}

/// Writes a profile to `path`, or under the default name in `OXMALLOC_PROF_DIR`. Returns
/// the errno value of the first failure; then no file is left behind.
pub fn write(reason: Reason, path: Option<&[u8]>) -> Result<(), c_int> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let mut target = Path::new();
    match path {
        Some(p) => target.push(p),
        None => {
            target
                .push(crate::config::prof_dir())
                .push(b"/oxprof.")
                .push_decimal(u64::from(pid), 1)
                .push(b".");
            if reason == Reason::Exit {
                target.push(b"exit")
            } else {
                target.push_decimal(next_sequence(pid), 4)
            }
            .push(b".raw")
        }
    };
    let mut temporary = Path::new();
    temporary.push(target.as_bytes()).push(b".tmp");
    let target_c = target.terminated()?;
    let temporary_c = temporary.terminated()?;
    let fd = create_new(temporary_c)?;
    let mut out = Out {
        fd,
        buf: [0; BUFFER_BYTES],
        len: 0,
        error: 0,
    };
    write_profile(&mut out, reason, pid);
    out.flush();
    let mut result = if out.error == 0 {
        Ok(())
    } else {
        Err(out.error)
    };
    // SAFETY: closing the descriptor opened above (close reports late write errors).
    if unsafe { libc::close(fd) } != 0 && result.is_ok() {
        result = Err(errno());
    }
    // SAFETY: terminated paths.
    if result.is_ok() && unsafe { libc::rename(temporary_c, target_c) } != 0 {
        result = Err(errno());
    }
    if result.is_err() {
        // SAFETY: a terminated path.
        unsafe { libc::unlink(temporary_c) };
    }
    result
}

/// Creates `path` as a new file for writing. A file already there (a temporary left by a
/// process that died while writing) is removed first, never written through: `O_EXCL`
/// refuses an existing name and `O_NOFOLLOW` a symbolic link, so a link planted at the
/// name cannot send the profile to a file of the link's choosing.
fn create_new(path: *const libc::c_char) -> Result<c_int, c_int> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    for attempt in 0..2 {
        // SAFETY: a terminated path; open does not allocate.
        let fd = unsafe { libc::open(path, flags, 0o644) };
        if fd >= 0 {
            return Ok(fd);
        }
        let e = errno();
        if e != libc::EEXIST || attempt == 1 {
            return Err(e);
        }
        // SAFETY: a terminated path; unlink removes the name (a link itself, not its target).
        unsafe { libc::unlink(path) };
    }
    Err(libc::EEXIST)
}

fn write_profile(out: &mut Out, reason: Reason, pid: u32) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let elapsed_us = super::now_ns() / 1000;
    out.push(b"oxprof-raw 2\npid ").decimal(u64::from(pid));
    out.push(b"\nexe ").exe();
    out.push(b"\nreason ").push(reason.name());
    out.push(b"\ntime ").decimal(now.tv_sec.max(0) as u64);
    out.push(b"\ninterval ")
        .decimal(crate::config::prof_interval_bytes())
        .push(b"\n");
    let profile = super::PROFILE.lock();
    let (mut allocated, mut live) = (0u64, 0u64);
    profile.stacks.for_each(|c, _| {
        allocated = allocated.saturating_add(c.alloc_bytes);
        live = live.saturating_add(c.inuse_bytes);
    });
    out.push(b"totals ")
        .decimal(allocated)
        .push(b" ")
        .decimal(live)
        .push(b"\n");
    out.push(b"cmdline ").cmdline();
    out.push(b"\nelapsed ").decimal(elapsed_us);
    out.push(b"\nshort_lived ")
        .decimal(super::stacks::SHORT_LIVED_NS / 1000);
    let (peak_bytes, peak_ns) = profile.stacks.peak();
    out.push(b"\npeak ")
        .decimal(peak_ns / 1000)
        .push(b" ")
        .decimal(peak_bytes)
        .push(b"\n");
    for p in profile.timeline.points() {
        out.push(b"point ").decimal(p.t_ns / 1000).push(b" ");
        out.decimal(p.live_bytes).push(b" ");
        out.decimal(p.resident_bytes).push(b" ");
        out.decimal(p.allocated_bytes).push(b"\n");
    }
    let objects = |fixed: u64| (fixed + (1 << (OBJECT_FIXED_SHIFT - 1))) >> OBJECT_FIXED_SHIFT;
    profile.stacks.for_each(|c, pcs| {
        let peak = profile.stacks.peak_of(c);
        out.push(b"stack ").decimal(c.alloc_samples).push(b" ");
        out.decimal(objects(c.alloc_objects_fixed)).push(b" ");
        out.decimal(c.alloc_bytes).push(b" ");
        out.decimal(c.inuse_samples).push(b" ");
        out.decimal(objects(c.inuse_objects_fixed)).push(b" ");
        out.decimal(c.inuse_bytes).push(b" ");
        out.decimal(peak.samples).push(b" ");
        out.decimal(objects(peak.objects_fixed)).push(b" ");
        out.decimal(peak.bytes).push(b" ");
        out.decimal(c.short_samples).push(b" ");
        out.decimal(objects(c.short_objects_fixed)).push(b" ");
        out.decimal(c.short_bytes).push(b" ");
        out.decimal(pcs.len() as u64);
        for &pc in pcs {
            out.push(b" ").hex(pc);
        }
        out.push(b"\n");
    });
    drop(profile);
    out.push(b"maps\n").maps();
}

/// A dump the program did not ask for by a call: a failure becomes one warning line.
pub fn write_or_warn(reason: Reason) {
    let Err(code) = write(reason, None) else {
        return;
    };
    let mut number = [0; 20];
    let number = decimal(code.max(0) as u64, 1, &mut number);
    let mut msg = MessageBuffer::new();
    msg.push_str("oxmalloc: heap profile (")
        .push_str(core::str::from_utf8(reason.name()).unwrap_or("?"))
        .push_str(") not written in ")
        .push_str(core::str::from_utf8(crate::config::prof_dir()).unwrap_or("OXMALLOC_PROF_DIR"))
        .push_str(": ")
        .push_str(error_text(code))
        .push_str(" (errno ")
        .push_str(core::str::from_utf8(number).unwrap_or("?"))
        .push_str(")\n");
    msg.write_stderr();
}

/// Words for the errors a dump meets (`strerror` may allocate for some codes).
fn error_text(code: c_int) -> &'static str {
    match code {
        libc::ENOENT => "no such directory",
        libc::ENOTDIR => "not a directory",
        libc::EACCES | libc::EPERM => "permission denied",
        libc::ENOSPC => "no space left on device",
        libc::EDQUOT => "disk quota exceeded",
        libc::EROFS => "read-only file system",
        libc::ENAMETOOLONG => "path too long",
        libc::EIO => "input/output error",
        libc::EMFILE | libc::ENFILE => "too many open files",
        _ => "cannot write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format() {
        let mut t = [0; 20];
        assert_eq!(decimal(0, 1, &mut t), b"0");
        assert_eq!(decimal(7, 4, &mut t), b"0007");
        assert_eq!(decimal(12345, 4, &mut t), b"12345");
        assert_eq!(decimal(u64::MAX, 1, &mut t), b"18446744073709551615");
        let mut h = [0; 18];
        assert_eq!(hex(0, &mut h), b"0x0");
        assert_eq!(hex(0x7f3a_5c01_0010, &mut h), b"0x7f3a5c010010");
        assert_eq!(hex(usize::MAX, &mut h), b"0xffffffffffffffff");
    }

    #[test]
    fn paths_refuse_overflow_and_nul() {
        let mut p = Path::new();
        p.push(b"dir").push(b"/x").push_decimal(3, 4);
        assert_eq!(p.as_bytes(), b"dir/x0003");
        assert!(p.terminated().is_ok());
        let mut p = Path::new();
        p.push(&[b'a'; PATH_MAX_BYTES]);
        assert_eq!(p.terminated(), Err(libc::ENAMETOOLONG));
        let mut p = Path::new();
        p.push(b"a\0b");
        assert_eq!(p.terminated(), Err(libc::ENAMETOOLONG));
    }

    #[test]
    fn sequence_restarts_in_another_process() {
        assert_eq!(next_sequence(4_000_000_001), 0);
        assert_eq!(next_sequence(4_000_000_001), 1);
        assert_eq!(next_sequence(4_000_000_002), 0);
    }
}
