//! The start-up lines of `OXMALLOC_VERBOSE`.

use super::{
    build_features, parse, path_slot, tls_mode, Kind, Source, StatsMode, OPTIONS, PATHS,
    PATH_MAX_BYTES, SOURCES, VALUES,
};
use crate::writer::Writer;
use core::sync::atomic::Ordering;

/// An option's value as a user would write it, in a stack buffer.
struct ValueText {
    bytes: [u8; PATH_MAX_BYTES + 32],
    len: usize,
}

impl ValueText {
    fn push(&mut self, text: &[u8]) -> &mut Self {
        for &b in text {
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        self
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// The value of option `index` now.
    fn of(index: usize) -> ValueText {
        let mut t = ValueText {
            bytes: [0; PATH_MAX_BYTES + 32],
            len: 0,
        };
        let Some(spec) = OPTIONS.get(index) else {
            return t;
        };
        let v = VALUES.get(index).map_or(0, |v| v.load(Ordering::Relaxed));
        let mut digits = crate::writer::Digits::new();
        match spec.kind {
            Kind::Bool => {
                t.push(if v != 0 { b"on" } else { b"off" });
            }
            Kind::Millis | Kind::Bytes => {
                t.push(digits.decimal(v));
            }
            Kind::Stats => {
                t.push(StatsMode::from_u64(v).name().as_bytes());
            }
            Kind::Signal => {
                let n = i32::try_from(v).unwrap_or(0);
                match (n, parse::signal_name(n)) {
                    (0, _) => t.push(b"none"),
                    (_, Some(name)) => t.push(b"SIG").push(name.as_bytes()).push(b" ("),
                    (_, None) => t.push(b"signal "),
                };
                if n != 0 {
                    t.push(digits.decimal(v));
                    if parse::signal_name(n).is_some() {
                        t.push(b")");
                    }
                }
            }
            Kind::Path => {
                let p = path_slot(index)
                    // SAFETY: called after loading; the buffers are no longer written.
                    .and_then(|slot| unsafe { (*PATHS.0.get()).get(slot).map(|p| p.as_bytes()) })
                    .unwrap_or(&[]);
                t.push(if p.is_empty() { b"(none)" } else { p });
            }
        }
        t
    }
}

/// Writes the start-up lines of `OXMALLOC_VERBOSE`: version, build, TLS model, then every
/// option with its value and where it came from.
pub fn write_verbose(w: &mut Writer) {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    w.str("oxmalloc ")
        .str(env!("CARGO_PKG_VERSION"))
        .str(": pid ")
        .i64(i64::from(pid))
        .str(", features: ")
        .str(build_features())
        .str(", TLS: ")
        .str(tls_mode())
        .str(if cfg!(debug_assertions) {
            ", debug build"
        } else {
            ""
        })
        .str("\n");
    for (i, spec) in OPTIONS.iter().enumerate() {
        let value = ValueText::of(i);
        w.str("oxmalloc:   ")
            .str(spec.name)
            .str("=")
            .left(value.as_bytes(), 38 - spec.name.len());
        let from = Source::from_u8(SOURCES.get(i).map_or(0, |s| s.load(Ordering::Relaxed)));
        w.str(" (").str(from.name()).str(")\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_lines_name_every_option() {
        crate::config::ensure_loaded();
        let mut fds = [0i32; 2];
        // SAFETY: a two-int array for pipe(2).
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        {
            let mut w = Writer::to_fd(fds[1]);
            write_verbose(&mut w);
        }
        // SAFETY: closing our own write end, then reading from our read end.
        unsafe { libc::close(fds[1]) };
        let mut out = std::vec::Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a stack buffer of that length.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        // SAFETY: our own read end.
        unsafe { libc::close(fds[0]) };
        let text = std::string::String::from_utf8(out).unwrap();
        assert!(text.starts_with("oxmalloc "), "{text}");
        assert!(text.contains("TLS: "), "{text}");
        for spec in &OPTIONS {
            assert!(
                text.contains(spec.name),
                "{} missing from:\n{text}",
                spec.name
            );
        }
    }
}
