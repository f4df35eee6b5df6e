//! Reading `/proc` files with raw system calls, for the places where libc's wrappers must
//! not be used: a signal handler (async-signal-safe), and the decay, which may run under an
//! allocator lock (libc's `open` and `read` are cancellation points: a thread cancelled in
//! one would leave the lock held). Nothing here allocates.

use core::ffi::CStr;

/// A file opened for reading; closed when dropped.
pub struct ProcFile(libc::c_long);

impl ProcFile {
    /// Opens `path` read-only and close-on-exec; None when it cannot be opened.
    pub fn open(path: &CStr) -> Option<ProcFile> {
        // SAFETY: `path` is a valid C string for the call; openat does not allocate.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        (fd >= 0).then_some(ProcFile(fd))
    }

    /// Reads the next bytes into `buf`: how many (0 at the end), None on an error.
    pub fn read(&mut self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: reading at most `buf.len()` bytes into the caller's buffer, from our
        // descriptor.
        let n = unsafe { libc::syscall(libc::SYS_read, self.0, buf.as_mut_ptr(), buf.len()) };
        usize::try_from(n).ok()
    }
}

impl Drop for ProcFile {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value opened and owns.
        unsafe { libc::syscall(libc::SYS_close, self.0) };
    }
}
