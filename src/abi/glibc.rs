//! glibc's malloc extensions, answered honestly from our own structures: programs call
//! them, and glibc's versions must never see our pointers.

use crate::fatal::MessageBuffer;
use core::ffi::c_int;

/// glibc's `struct mallinfo` (int fields, saturating).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MallInfo {
    /// Bytes mapped for slabs and medium regions ("non-mmapped space").
    pub arena: c_int,
    /// Free chunks (unused here: 0).
    pub ordblks: c_int,
    /// Fastbin blocks (unused here: 0).
    pub smblks: c_int,
    /// Huge blocks mapped.
    pub hblks: c_int,
    /// Bytes in huge blocks.
    pub hblkhd: c_int,
    /// Unused (0).
    pub usmblks: c_int,
    /// Unused (0).
    pub fsmblks: c_int,
    /// Bytes allocated (see [`MallInfo2::uordblks`]).
    pub uordblks: c_int,
    /// Bytes mapped but free.
    pub fordblks: c_int,
    /// Bytes releasable by `malloc_trim`.
    pub keepcost: c_int,
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MallInfo2 {
    /// Bytes mapped for slabs and medium regions.
    pub arena: usize,
    /// Free chunks (unused here: 0).
    pub ordblks: usize,
    /// Fastbin blocks (unused here: 0).
    pub smblks: usize,
    /// Huge blocks mapped (not counted: 0).
    pub hblks: usize,
    /// Bytes in huge blocks.
    pub hblkhd: usize,
    /// Unused (0).
    pub usmblks: usize,
    /// Unused (0).
    pub fsmblks: usize,
    /// Bytes allocated: medium spans and huge blocks exactly; small blocks counted by the
    /// slabs that hold them (a slab with one live block counts whole), since per-block
    /// counting would cost the fast path.
    pub uordblks: usize,
    /// Bytes mapped but not counted in `uordblks`.
    pub fordblks: usize,
    /// Bytes held in caches that `malloc_trim` would release.
    pub keepcost: usize,
}

/// A snapshot of the figures behind `mallinfo2`, `malloc_stats` and `ox_stats_get`.
pub struct Snapshot {
    /// Bytes mapped by the allocator.
    pub mapped: usize,
    /// Most bytes ever mapped.
    pub peak_mapped: usize,
    /// Bytes in allocated medium spans.
    pub medium_allocated: usize,
    /// Bytes of medium regions.
    pub medium_mapped: usize,
    /// Bytes mapped for live huge blocks.
    pub huge_live: usize,
    /// Bytes of freed huge mappings kept for reuse.
    pub huge_cached: usize,
    /// Unused segments kept for reuse.
    pub pooled_segments: usize,
    /// Heaps ever created.
    pub heaps_created: usize,
    /// Heaps of exited threads not yet adopted.
    pub heaps_abandoned: usize,
}

/// Reads the counters (takes the global locks briefly, one at a time).
pub fn snapshot() -> Snapshot {
    let ctx = &crate::process::CTX;
    let (medium_allocated, medium_mapped) = {
        let b = ctx.buddy.lock();
        (b.allocated_bytes(), b.mapped_bytes())
    };
    let (huge_live, huge_cached) = {
        let l = ctx.large.lock();
        (l.live_bytes(), l.cached_bytes())
    };
    let pooled_segments = ctx.segments.lock().len();
    let (heaps_created, heaps_abandoned) = {
        let h = ctx.heaps.lock();
        (h.created(), h.abandoned_count())
    };
    Snapshot {
        mapped: crate::stats::mapped_bytes(),
        peak_mapped: crate::stats::peak_mapped_bytes(),
        medium_allocated,
        medium_mapped,
        huge_live,
        huge_cached,
        pooled_segments,
        heaps_created,
        heaps_abandoned,
    }
}

/// `mallinfo2`.
pub fn mallinfo2() -> MallInfo2 {
    let s = snapshot();
    let arena = s.mapped.saturating_sub(s.huge_live + s.huge_cached);
    let pooled = s.pooled_segments * crate::segment::SEGMENT_BYTES;
    // Small blocks: everything mapped for slabs except pooled segments.
    let small = arena.saturating_sub(s.medium_mapped + pooled);
    let uordblks = small + s.medium_allocated + s.huge_live;
    MallInfo2 {
        arena,
        hblkhd: s.huge_live,
        uordblks,
        fordblks: s.mapped.saturating_sub(uordblks),
        keepcost: s.huge_cached + pooled,
        ..MallInfo2::default()
    }
}

/// `mallinfo`: `mallinfo2` clamped to `int`.
pub fn mallinfo() -> MallInfo {
    let m = mallinfo2();
    let clamp = |v: usize| v.min(c_int::MAX as usize) as c_int;
    MallInfo {
        arena: clamp(m.arena),
        hblkhd: clamp(m.hblkhd),
        uordblks: clamp(m.uordblks),
        fordblks: clamp(m.fordblks),
        keepcost: clamp(m.keepcost),
        ..MallInfo::default()
    }
}

/// `mallopt`: glibc's tuning parameters do not apply to oxmalloc's design; the known ones
/// are accepted (1) and have no effect, unknown ones are refused (0), as glibc does.
pub fn mallopt(param: c_int, _value: c_int) -> c_int {
    // M_MXFAST 1, M_TRIM_THRESHOLD -1, M_TOP_PAD -2, M_MMAP_THRESHOLD -3, M_MMAP_MAX -4,
    // M_CHECK_ACTION -5, M_PERTURB -6, M_ARENA_TEST -7, M_ARENA_MAX -8.
    c_int::from(matches!(param, 1 | -8..=-1))
}

/// `malloc_trim`: returns free memory to the OS; 1 if any was released.
pub fn malloc_trim(_pad: usize) -> c_int {
    c_int::from(crate::process::trim() > 0)
}

fn line(label: &str, value: usize) {
    let mut buf = MessageBuffer::new();
    buf.push_str(label).push_usize(value).push_str("\n");
    buf.write_stderr();
}

/// `malloc_stats`: a short report on fd 2, as glibc's.
pub fn print_stats() {
    let s = snapshot();
    line("oxmalloc: mapped bytes           = ", s.mapped);
    line("oxmalloc: peak mapped bytes      = ", s.peak_mapped);
    line("oxmalloc: medium allocated bytes = ", s.medium_allocated);
    line("oxmalloc: medium region bytes    = ", s.medium_mapped);
    line("oxmalloc: huge live bytes        = ", s.huge_live);
    line("oxmalloc: huge cached bytes      = ", s.huge_cached);
    line("oxmalloc: pooled segments        = ", s.pooled_segments);
    line("oxmalloc: heaps created          = ", s.heaps_created);
    line("oxmalloc: heaps abandoned        = ", s.heaps_abandoned);
}

/// `malloc_info`: an XML report on `stream`; `options` must be 0 (else it returns EINVAL,
/// errno untouched, as glibc).
///
/// # Safety
/// `stream` must be a valid `FILE *`.
pub unsafe fn malloc_info(options: c_int, stream: *mut libc::FILE) -> c_int {
    if options != 0 {
        // As glibc: the error is the return value, and errno is left alone.
        return libc::EINVAL;
    }
    let s = snapshot();
    let m = mallinfo2();
    let mut buf = MessageBuffer::new();
    buf.push_str("<malloc version=\"oxmalloc-1\">\n<total type=\"mapped\" size=\"")
        .push_usize(s.mapped)
        .push_str("\"/>\n<total type=\"allocated\" size=\"")
        .push_usize(m.uordblks)
        .push_str("\"/>\n<total type=\"huge\" size=\"")
        .push_usize(s.huge_live)
        .push_str("\"/>\n<total type=\"cached\" size=\"")
        .push_usize(m.keepcost)
        .push_str("\"/>\n</malloc>\n");
    let bytes = buf.as_bytes();
    // SAFETY: `stream` is a valid FILE (caller); the buffer is valid for its length.
    let written = unsafe { libc::fwrite(bytes.as_ptr().cast(), 1, bytes.len(), stream) };
    if written == bytes.len() {
        0
    } else {
        -1
    }
}
