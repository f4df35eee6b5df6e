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
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        self
    }

    /// Appends `value` as `0x` followed by lower-case hexadecimal digits.
    pub fn push_hex(&mut self, value: usize) -> &mut Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 18];
        digits[0] = b'0';
        digits[1] = b'x';
        let mut count = 0;
        let mut v = value;
        let mut tmp = [0u8; 16];
        loop {
            tmp[count] = DIGITS[v & 15];
            count += 1;
            v >>= 4;
            if v == 0 || count == 16 {
                break;
            }
        }
        for i in 0..count {
            digits[2 + i] = tmp[count - 1 - i];
        }
        // The digits are ASCII, so this is valid UTF-8.
        self.push_str(core::str::from_utf8(&digits[..2 + count]).unwrap_or("0x?"))
    }

    /// Appends `value` in decimal.
    pub fn push_usize(&mut self, value: usize) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut count = 0;
        let mut v = value;
        loop {
            tmp[19 - count] = b'0' + (v % 10) as u8;
            count += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push_str(core::str::from_utf8(&tmp[20 - count..]).unwrap_or("?"))
    }

    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Writes the text to fd 2 with one `write(2)`.
    pub fn write_stderr(&self) {
        // SAFETY: the slice is valid for its length; a failed or short write is ignored, as
        // there is nowhere else to report it.
        unsafe { libc::write(2, self.bytes.as_ptr().cast(), self.len) };
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

fn abort() -> ! {
    // SAFETY: abort never returns and needs no precondition.
    unsafe { libc::abort() }
}
