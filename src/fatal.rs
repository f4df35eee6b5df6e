//! Fatal errors: one fixed message on fd 2, then `abort`.
//!
//! Nothing here allocates or formats through `core::fmt` machinery that could: messages
//! are assembled in a stack buffer and written with one `write(2)`, so a report works even
//! when the heap is corrupt or a lock is held.

/// A fixed-capacity message buffer on the stack; overflowing text is cut, never an error.
pub struct MessageBuffer {
    bytes: [u8; 256],
    len: usize,
}

impl Default for MessageBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageBuffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        MessageBuffer {
            bytes: [0; 256],
            len: 0,
        }
    }

    /// Appends text, cutting what does not fit.
    pub fn push_str(&mut self, text: &str) -> &mut Self {
        for &b in text.as_bytes() {
            self.push_byte(b);
        }
        self
    }

    /// Appends one byte, dropping it when the buffer is full.
    fn push_byte(&mut self, b: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    /// Appends `value` as `0x` followed by lower-case hexadecimal digits.
    pub fn push_hex(&mut self, value: usize) -> &mut Self {
        self.push_str("0x");
        let digits = (usize::BITS - value.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            let nibble = (value >> (4 * i)) & 15;
            self.push_byte(if nibble < 10 {
                b'0' + nibble as u8
            } else {
                b'a' + (nibble - 10) as u8
            });
        }
        self
    }

    /// Appends `value` in decimal.
    pub fn push_dec(&mut self, value: usize) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut n = 0;
        let mut v = value;
        loop {
            if let Some(d) = digits.get_mut(n) {
                *d = b'0' + (v % 10) as u8;
            }
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for i in (0..n).rev() {
            self.push_byte(digits.get(i).copied().unwrap_or(b'?'));
        }
        self
    }

    /// Appends raw bytes (a path read from `/proc`), cutting what does not fit.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.push_byte(b);
        }
        self
    }

    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// Writes the text to fd 2 with one `write(2)`.
    pub fn write_stderr(&self) {
        // SAFETY: the slice is valid for its length; a failed or short write is ignored, as
        // there is nowhere else to report it.
        unsafe { libc::write(2, self.bytes.as_ptr().cast(), self.as_bytes().len()) };
    }
}

impl core::fmt::Write for MessageBuffer {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

/// Reports a broken invariant of the allocator itself and aborts.
#[cold]
#[inline(never)]
pub fn fatal(message: &str) -> ! {
    let mut buf = MessageBuffer::new();
    buf.push_str("oxmalloc: fatal: ")
        .push_str(message)
        .push_str("\n");
    buf.write_stderr();
    abort()
}

/// Reports a bad pointer handed to `call` (e.g. `free(): invalid pointer 0x…`) and aborts.
#[cold]
#[inline(never)]
pub fn bad_pointer(call: &str, what: &str, ptr: usize) -> ! {
    let mut buf = MessageBuffer::new();
    buf.push_str("oxmalloc: ")
        .push_str(call)
        .push_str("(): ")
        .push_str(what)
        .push_str(" ")
        .push_hex(ptr)
        .push_str("\n");
    buf.write_stderr();
    abort()
}

/// `abort()`.
pub fn abort() -> ! {
    // SAFETY: abort never returns and needs no precondition.
    unsafe { libc::abort() }
}
