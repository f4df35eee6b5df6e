//! glibc's malloc extensions, answered honestly from our own structures: programs call
//! them, and glibc's versions must never see our pointers.

use crate::writer::{Sink, Writer};
use core::ffi::c_int;

/// glibc's `struct mallinfo` (int fields, saturating).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MallInfo {
    /// Bytes mapped, except live huge blocks (see [`MallInfo2::arena`]).
    pub arena: c_int,
    /// Free chunks (unused here: 0).
    pub ordblks: c_int,
    /// Fastbin blocks (unused here: 0).
    pub smblks: c_int,
    /// Live huge blocks.
    pub hblks: c_int,
    /// Bytes in huge blocks.
    pub hblkhd: c_int,
    /// Unused (0).
    pub usmblks: c_int,
    /// Unused (0).
    pub fsmblks: c_int,
    /// Bytes allocated (see [`MallInfo2::uordblks`]).
    pub uordblks: c_int,
    /// Bytes held but free.
    pub fordblks: c_int,
    /// Bytes releasable by `malloc_trim`.
    pub keepcost: c_int,
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MallInfo2 {
    /// Bytes mapped, except live huge blocks.
    pub arena: usize,
    /// Free chunks (unused here: 0).
    pub ordblks: usize,
    /// Fastbin blocks (unused here: 0).
    pub smblks: usize,
    /// Live huge blocks (each its own mapping).
    pub hblks: usize,
    /// Bytes in huge blocks.
    pub hblkhd: usize,
    /// Unused (0).
    pub usmblks: usize,
    /// Unused (0).
    pub fsmblks: usize,
    /// Bytes in live small and medium blocks (counted from the slabs' live counts and the
    /// buddy arena's blocks; huge blocks are in `hblkhd`).
    pub uordblks: usize,
    /// Bytes held but free: `arena - uordblks`.
    pub fordblks: usize,
    /// Bytes held in caches that `malloc_trim` would release.
    pub keepcost: usize,
}

/// `mallinfo2`, from the census (see `stats::census`):
/// - `arena`: bytes mapped, except live huge blocks (slab segments, medium regions, cached
///   huge mappings, the allocator's metadata);
/// - `uordblks`: bytes in live small and medium blocks (at their block size); after the
///   program frees everything it falls back to about zero;
/// - `fordblks`: `arena - uordblks`, the bytes held but free;
/// - `hblks`, `hblkhd`: live huge blocks and their mapped bytes;
/// - `keepcost`: bytes `malloc_trim` would give back at once (pooled segments, cached huge
///   mappings).
pub fn mallinfo2() -> MallInfo2 {
    mallinfo2_from(&crate::process::census::take(false).stats)
}

fn mallinfo2_from(s: &crate::OxStats) -> MallInfo2 {
    let arena = s.mapped_bytes.saturating_sub(s.huge_live_bytes);
    let uordblks = s.small_live_bytes + s.medium_live_bytes;
    MallInfo2 {
        arena,
        hblks: s.huge_live_blocks,
        hblkhd: s.huge_live_bytes,
        uordblks,
        fordblks: arena.saturating_sub(uordblks),
        keepcost: s.huge_cached_bytes + s.pooled_segments * crate::block::segment::SEGMENT_BYTES,
        ..MallInfo2::default()
    }
}

/// `mallinfo`: `mallinfo2` clamped to `int`.
pub fn mallinfo() -> MallInfo {
    let m = mallinfo2();
    let clamp = |v: usize| v.min(c_int::MAX as usize) as c_int;
    MallInfo {
        arena: clamp(m.arena),
        hblks: clamp(m.hblks),
        hblkhd: clamp(m.hblkhd),
        uordblks: clamp(m.uordblks),
        fordblks: clamp(m.fordblks),
        keepcost: clamp(m.keepcost),
        ..MallInfo::default()
    }
}

/// glibc's `M_MXFAST`.
pub const M_MXFAST: c_int = 1;
/// glibc's `M_TRIM_THRESHOLD`.
pub const M_TRIM_THRESHOLD: c_int = -1;
/// glibc's `M_TOP_PAD`.
pub const M_TOP_PAD: c_int = -2;
/// glibc's `M_MMAP_THRESHOLD`.
pub const M_MMAP_THRESHOLD: c_int = -3;
/// glibc's `M_MMAP_MAX`.
pub const M_MMAP_MAX: c_int = -4;
/// glibc's `M_CHECK_ACTION`.
pub const M_CHECK_ACTION: c_int = -5;
/// glibc's `M_PERTURB`.
pub const M_PERTURB: c_int = -6;
/// glibc's `M_ARENA_TEST`.
pub const M_ARENA_TEST: c_int = -7;
/// glibc's `M_ARENA_MAX`.
pub const M_ARENA_MAX: c_int = -8;

/// `mallopt`. One glibc parameter has a meaning here; the others are accepted (1) with no
/// effect, because the design has no such knob; unknown parameters are refused (0).
///
/// - `M_TRIM_THRESHOLD`: oxmalloc returns idle memory by time, not by amount. `0` sets the
///   purge delay to 0 (freed memory goes back at the next decay check, every 64 slow-path
///   calls of a thread); a negative value (glibc reads it as "never trim") turns the timed
///   purge off (a delay of about 49 days; `malloc_trim` still works); a positive threshold
///   is accepted and leaves the delay as it is.
/// - `M_MMAP_THRESHOLD`, `M_MMAP_MAX`: no effect: blocks above 1 MiB always get their own
///   mapping, smaller ones never do.
/// - `M_ARENA_MAX`, `M_ARENA_TEST`: no effect: every thread has its own heap.
/// - `M_MXFAST`, `M_TOP_PAD`: no effect: small blocks are always served from per-thread
///   slabs, and segments are mapped whole.
/// - `M_PERTURB`, `M_CHECK_ACTION`: no effect: bad pointers always abort with a message;
///   `OXMALLOC_CHECK=1` gives the deeper checks.
pub fn mallopt(param: c_int, value: c_int) -> c_int {
    match param {
        M_TRIM_THRESHOLD => {
            if value == 0 {
                crate::config::set_purge_delay_ms(0);
            } else if value < 0 {
                crate::config::set_purge_delay_ms(u32::MAX);
            }
            1
        }
        M_MXFAST | M_TOP_PAD | M_MMAP_THRESHOLD | M_MMAP_MAX | M_CHECK_ACTION | M_PERTURB
        | M_ARENA_TEST | M_ARENA_MAX => 1,
        _ => 0,
    }
}

/// `malloc_trim`: returns free memory to the OS; 1 if any was released.
pub fn malloc_trim(_pad: usize) -> c_int {
    c_int::from(crate::process::trim() > 0)
}

/// `malloc_stats`: the text report (as `OXMALLOC_STATS=text` prints at exit) on fd 2.
pub fn print_stats() {
    crate::process::report::write_report(
        &mut crate::writer::Writer::to_fd(2),
        crate::config::StatsMode::Text,
    );
}

/// `malloc_info`: an XML report on `stream` with the figures of `mallinfo2`; `options`
/// must be 0 (else it returns EINVAL, errno untouched, as glibc).
///
/// # Safety
/// `stream` must be a valid `FILE *`.
pub unsafe fn malloc_info(options: c_int, stream: *mut libc::FILE) -> c_int {
    if options != 0 {
        // As glibc: the error is the return value, and errno is left alone.
        return libc::EINVAL;
    }
    let census = crate::process::census::take(false);
    let s = &census.stats;
    let m = mallinfo2_from(s);
    let mut w = Writer::new(Sink::File(stream));
    w.str("<malloc version=\"oxmalloc-1\">\n<heap nr=\"0\">\n<sizes>\n");
    for c in census.classes.iter().filter(|c| c.slabs > 0) {
        w.str("<size from=\"")
            .usize(c.block_bytes)
            .str("\" to=\"")
            .usize(c.block_bytes)
            .str("\" total=\"")
            .usize(c.live_bytes())
            .str("\" count=\"")
            .usize(c.live_blocks)
            .str("\"/>\n");
    }
    w.str("</sizes>\n</heap>\n");
    let totals: [(&str, usize); 7] = [
        ("mapped", s.mapped_bytes),
        ("arena", m.arena),
        ("allocated", m.uordblks),
        ("free", m.fordblks),
        ("mmap", m.hblkhd),
        ("huge-count", m.hblks),
        ("cached", m.keepcost),
    ];
    for (name, value) in totals {
        w.str("<total type=\"")
            .str(name)
            .str("\" size=\"")
            .usize(value)
            .str("\"/>\n");
    }
    w.str("<system type=\"current\" size=\"")
        .usize(s.mapped_bytes)
        .str("\"/>\n<system type=\"max\" size=\"")
        .usize(s.peak_mapped_bytes)
        .str("\"/>\n</malloc>\n");
    w.flush();
    if w.failed() {
        -1
    } else {
        0
    }
}
