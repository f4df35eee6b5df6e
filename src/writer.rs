//! Text output without allocating: a stack buffer flushed to a file descriptor (or a C
//! `FILE *`) with `write(2)`, and number formatting done by hand.
//!
//! The options' start-up lines, their warnings and the statistics reports are written from
//! inside the allocator, where `core::fmt` is avoided (its padding and float code brings in
//! panicking paths the shipped library must not contain) and nothing may call `malloc`.
//! Output longer than the buffer is flushed in pieces; a failed write is dropped, since
//! there is nowhere else to report it.

/// Bytes buffered before a write.
const BUFFER_BYTES: usize = 4096;

/// Where the text goes.
#[derive(Clone, Copy)]
pub enum Sink {
    /// A file descriptor (`write(2)`).
    Fd(i32),
    /// A C stream (`fwrite`), for `malloc_info`.
    File(*mut libc::FILE),
}

/// A buffered writer over a [`Sink`].
pub struct Writer {
    sink: Sink,
    buf: [u8; BUFFER_BYTES],
    len: usize,
    failed: bool,
}

impl Writer {
    /// A writer to file descriptor `fd`.
    pub const fn to_fd(fd: i32) -> Writer {
        Writer::new(Sink::Fd(fd))
    }

    /// A writer to `sink`.
    pub const fn new(sink: Sink) -> Writer {
        Writer {
            sink,
            buf: [0; BUFFER_BYTES],
            len: 0,
            failed: false,
        }
    }

    /// True when a write failed (the text after it was dropped).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        let Some(pending) = self.buf.get(..self.len) else {
            return;
        };
        let mut rest = pending;
        while !rest.is_empty() && !self.failed {
            let n = match self.sink {
                // SAFETY: `rest` is valid for its length; write(2) does not keep it.
                Sink::Fd(fd) => unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) },
                Sink::File(stream) => {
                    // SAFETY: the caller of `Writer::new` gave a valid stream; `rest` is
                    // valid for its length.
                    let n = unsafe { libc::fwrite(rest.as_ptr().cast(), 1, rest.len(), stream) };
                    if n == 0 {
                        -1
                    } else {
                        n as isize
                    }
                }
            };
            if n < 0 {
                // SAFETY: the calling thread's errno slot.
                if matches!(self.sink, Sink::Fd(_))
                    && unsafe { *libc::__errno_location() } == libc::EINTR
                {
                    continue;
                }
                self.failed = true;
            } else {
                rest = rest.get(n as usize..).unwrap_or(&[]);
            }
        }
        self.len = 0;
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            if self.len == BUFFER_BYTES {
                self.flush();
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        self
    }

    /// Appends text.
    pub fn str(&mut self, text: &str) -> &mut Self {
        self.bytes(text.as_bytes())
    }

    /// Appends `count` copies of `byte`.
    pub fn repeat(&mut self, byte: u8, count: usize) -> &mut Self {
        for _ in 0..count {
            self.bytes(&[byte]);
        }
        self
    }

    /// Appends `value` in decimal.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        let mut digits = Digits::new();
        self.bytes(digits.decimal(value))
    }

    /// Appends `value` in decimal.
    pub fn usize(&mut self, value: usize) -> &mut Self {
        self.u64(value as u64)
    }

    /// Appends `value` as a signed decimal.
    pub fn i64(&mut self, value: i64) -> &mut Self {
        if value < 0 {
            self.str("-");
        }
        self.u64(value.unsigned_abs())
    }

    /// Appends `text` right-aligned in `width` columns.
    pub fn right(&mut self, text: &[u8], width: usize) -> &mut Self {
        self.repeat(b' ', width.saturating_sub(text.len()));
        self.bytes(text)
    }

    /// Appends `text` left-aligned in `width` columns.
    pub fn left(&mut self, text: &[u8], width: usize) -> &mut Self {
        self.bytes(text);
        self.repeat(b' ', width.saturating_sub(text.len()))
    }

    /// Appends `value` in decimal, right-aligned in `width` columns.
    pub fn u64_right(&mut self, value: u64, width: usize) -> &mut Self {
        let mut digits = Digits::new();
        let text = digits.decimal(value);
        self.repeat(b' ', width.saturating_sub(text.len()));
        self.bytes(text)
    }

    /// Appends a byte count for people (`512 B`, `1.5 KiB`, `12.0 MiB`), right-aligned in
    /// `width` columns.
    pub fn human_right(&mut self, bytes: u64, width: usize) -> &mut Self {
        let mut digits = Digits::new();
        let text = digits.human(bytes);
        self.repeat(b' ', width.saturating_sub(text.len()));
        self.bytes(text)
    }

    /// Appends a byte count for people (see [`Writer::human_right`]).
    pub fn human(&mut self, bytes: u64) -> &mut Self {
        self.human_right(bytes, 0)
    }

    /// Appends `text` as a JSON string, quotes included. Bytes that are not printable
    /// ASCII are escaped as `\u00XX` (a path that is not UTF-8 still gives valid JSON).
    pub fn json_str(&mut self, text: &[u8]) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.bytes(b"\"");
        for &b in text {
            match b {
                b'"' => self.bytes(b"\\\""),
                b'\\' => self.bytes(b"\\\\"),
                b'\n' => self.bytes(b"\\n"),
                b'\t' => self.bytes(b"\\t"),
                0x20..=0x7e => self.bytes(&[b]),
                _ => self.bytes(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]),
            };
        }
        self.bytes(b"\"")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A small stack buffer that formats one number.
pub struct Digits {
    buf: [u8; 32],
}

impl Default for Digits {
    fn default() -> Self {
        Self::new()
    }
}

impl Digits {
    /// An empty buffer.
    pub const fn new() -> Digits {
        Digits { buf: [0; 32] }
    }

    /// `value` in decimal.
    pub fn decimal(&mut self, value: u64) -> &[u8] {
        let mut pos = self.buf.len();
        let mut v = value;
        loop {
            pos -= 1;
            if let Some(slot) = self.buf.get_mut(pos) {
                *slot = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || pos == 0 {
                break;
            }
        }
        self.buf.get(pos..).unwrap_or(&[])
    }

    /// `bytes` for people: whole bytes below 1 KiB, else one decimal in the largest binary
    /// unit that keeps the number at least 1 (`1.5 KiB`, `12.0 MiB`, `3.2 GiB`).
    pub fn human(&mut self, bytes: u64) -> &[u8] {
        const UNITS: [&[u8]; 5] = [b" B", b" KiB", b" MiB", b" GiB", b" TiB"];
        let mut unit = 0;
        while unit + 1 < UNITS.len() && bytes >= 1u64 << (10 * (unit + 1)) {
            unit += 1;
        }
        let mut len = 0;
        let mut push = |buf: &mut [u8; 32], text: &[u8]| {
            for &b in text {
                if let Some(slot) = buf.get_mut(len) {
                    *slot = b;
                    len += 1;
                }
            }
        };
        let mut digits = Digits::new();
        if unit == 0 {
            push(&mut self.buf, digits.decimal(bytes));
        } else {
            // Tenths of the unit, rounded to nearest.
            let shift = 10 * unit as u32;
            let tenths = ((u128::from(bytes) * 10 + (1u128 << (shift - 1))) >> shift) as u64;
            push(&mut self.buf, digits.decimal(tenths / 10));
            push(&mut self.buf, b".");
            push(&mut self.buf, digits.decimal(tenths % 10));
        }
        push(&mut self.buf, UNITS.get(unit).copied().unwrap_or(b""));
        self.buf.get(..len).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        let mut d = Digits::new();
        assert_eq!(d.decimal(0), b"0");
        assert_eq!(d.decimal(u64::MAX), b"18446744073709551615");
        assert_eq!(d.human(0), b"0 B");
        assert_eq!(d.human(1023), b"1023 B");
        assert_eq!(d.human(1024), b"1.0 KiB");
        assert_eq!(d.human(1536), b"1.5 KiB");
        assert_eq!(d.human(12 << 20), b"12.0 MiB");
        assert_eq!(d.human((3 << 30) + (1 << 29)), b"3.5 GiB");
        assert_eq!(d.human(u64::MAX), b"16777216.0 TiB");
    }
}
