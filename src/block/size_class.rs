//! Size classes: the block sizes slabs are cut into, and the O(1) map from a request size
//! to its class.
//!
//! Spacing: 16-byte steps up to 128 bytes, then eight classes per power of two (step =
//! 2^k / 8 between 2^k and 2^(k+1)), so a block wastes under 1/8 of its size to rounding.
//! From 1 KiB up, each power of two's eight classes trade the step just below the next
//! power of two (2^k * 15/8) for one just above the power of two (2^k * 33/32: 1056, 2112,
//! 4224, 8448 bytes), because programs often ask for a power of two plus a small header
//! (sqlite's 4096 + 8 byte buffers, 1024 + 8 byte nodes): such a request used to round up
//! by 1/8 of its size and now rounds up by at most 1/32. The class dropped costs nothing
//! over the 1/8 bound, since its requests round up to the power of two.
//!
//! Every class size is a multiple of 16 (`max_align_t`), and every power of two from 16 to
//! [`SMALL_MAX_BYTES`] is itself a class, which is what aligned requests use (see
//! [`class_for_aligned`]).
//!
//! Classes run from 16 bytes to 16 KiB: 64 classes. A request's class is looked up in a
//! table of 1025 bytes indexed by `(size + 15) / 16`.
#![forbid(unsafe_code)]

/// Largest request served by slabs; larger ones go to the buddy allocator.
pub const SMALL_MAX_BYTES: usize = 16 * 1024;
/// Number of size classes.
pub const CLASS_COUNT: usize = 64;
/// The smallest block.
pub const MIN_BLOCK_BYTES: usize = 16;

const _: () = assert!(CLASS_COUNT.is_power_of_two());

/// A validated size-class index (`< CLASS_COUNT`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SizeClass(u8);

impl SizeClass {
    /// The smallest class.
    pub const FIRST: SizeClass = SizeClass(0);

    /// The class with index `index`, if there is one.
    pub const fn from_index(index: usize) -> Option<SizeClass> {
        if index < CLASS_COUNT {
            Some(SizeClass(index as u8))
        } else {
            None
        }
    }

    /// The class index, `< CLASS_COUNT`. The mask is the identity for every valid class
    /// (the invariant of the type) and lets the compiler see that indexing an array of
    /// `CLASS_COUNT` entries is in range, so no bounds check (and no panic path) is emitted.
    #[inline(always)]
    pub const fn index(self) -> usize {
        self.0 as usize & (CLASS_COUNT - 1)
    }

    /// The block size of this class.
    #[inline(always)]
    pub const fn block_bytes(self) -> usize {
        CLASS_BYTES[self.index()] as usize
    }
}

/// Block size of class `index` (computed, valid for `index < CLASS_COUNT`).
const fn class_block_bytes(index: usize) -> usize {
    if index < 8 {
        (index + 1) * 16
    } else {
        let group = (index - 8) / 8; // 0 for (128, 256], 1 for (256, 512], ...
        let base = 128usize << group;
        let step = base / 8;
        match (index - 8) % 8 {
            // From 1 KiB: just above the power of two instead of 15/8 of it.
            0 if base >= SPLIT_FROM => base + base / 32,
            o if base >= SPLIT_FROM && o < 7 => base + o * step,
            o => base + (o + 1) * step,
        }
    }
}

/// The first power of two whose group has a class just above it.
const SPLIT_FROM: usize = 1024;

/// The class of a request of `size` bytes, computed (for building the tables).
const fn class_of_computed(size: usize) -> usize {
    let mut i = 0;
    while i < CLASS_COUNT - 1 && class_block_bytes(i) < size {
        i += 1;
    }
    i
}

/// Block size of every class.
const CLASS_BYTES: [u32; CLASS_COUNT] = {
    let mut t = [0u32; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        t[i] = class_block_bytes(i) as u32;
        i += 1;
    }
    t
};

/// The class of every size up to [`SMALL_MAX_BYTES`], by `(size + 15) / 16` (every class
/// is a multiple of 16 bytes, so the rounding is exact): one load on the fast path.
const TABLE: [u8; SMALL_MAX_BYTES / 16 + 1] = {
    let mut t = [0u8; SMALL_MAX_BYTES / 16 + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = class_of_computed(i * 16) as u8;
        i += 1;
    }
    t
};

/// The class serving `size` bytes, for `size <= SMALL_MAX_BYTES`.
#[inline(always)]
pub fn class_of(size: usize) -> SizeClass {
    debug_assert!(size <= SMALL_MAX_BYTES);
    // Above the limit (callers never ask, see above): the largest class.
    let index = TABLE
        .get((size + 15) >> 4)
        .copied()
        .unwrap_or(CLASS_COUNT as u8 - 1);
    SizeClass(index)
}

/// True when `realloc` of a small block of `block_bytes` (its class's block size) to
/// `new_size` bytes keeps the block where it is: the new size fits and does not waste more
/// than half of the block (or would get the same class anyway).
#[inline(always)]
pub fn realloc_keeps(block_bytes: usize, new_size: usize) -> bool {
    new_size <= block_bytes
        && (new_size * 2 >= block_bytes || class_of(new_size).block_bytes() == block_bytes)
}

/// The class serving `size` bytes at alignment `align_bytes` (a power of two), if slabs can:
/// a power-of-two class is used, since slabs start 64 KiB-aligned and a power-of-two block
/// size then keeps every block aligned to its size.
pub fn class_for_aligned(size: usize, align_bytes: usize) -> Option<SizeClass> {
    if align_bytes <= MIN_BLOCK_BYTES {
        return if size <= SMALL_MAX_BYTES {
            Some(class_of(size))
        } else {
            None
        };
    }
    let need = if size > align_bytes {
        size.checked_next_power_of_two()?
    } else {
        align_bytes
    };
    if need > SMALL_MAX_BYTES {
        return None;
    }
    Some(class_of(need))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_increasing_multiples_of_16_up_to_the_limit() {
        let mut prev = 0;
        for i in 0..CLASS_COUNT {
            let b = class_block_bytes(i);
            assert!(b > prev, "class {i} = {b} not above {prev}");
            assert_eq!(b % 16, 0, "class {i} = {b}");
            prev = b;
        }
        assert_eq!(prev, SMALL_MAX_BYTES);
    }

    #[test]
    fn every_size_maps_to_the_smallest_class_that_fits() {
        for size in 0..=SMALL_MAX_BYTES {
            let c = class_of(size);
            assert_eq!(c.index(), class_of_computed(size));
            assert!(c.block_bytes() >= size.max(1), "size {size}");
            if c.index() > 0 {
                let below = SizeClass::from_index(c.index() - 1).unwrap();
                assert!(
                    below.block_bytes() < size,
                    "size {size} could use a smaller class"
                );
            }
        }
    }

    #[test]
    fn power_of_two_plus_a_header_rounds_up_by_a_thirty_second() {
        for p in [1024, 2048, 4096, 8192] {
            let b = class_of(p + 8).block_bytes();
            assert_eq!(b, p + p / 32, "{p} + 8");
            assert!(class_of(p + p / 32 + 1).block_bytes() == p + p / 8);
        }
    }

    #[test]
    fn rounding_waste_stays_under_an_eighth() {
        for size in 129..=SMALL_MAX_BYTES {
            let b = class_of(size).block_bytes();
            assert!((b - size) * 8 < b, "size {size} -> {b}");
        }
    }

    #[test]
    fn powers_of_two_are_classes() {
        let mut p = 16;
        while p <= SMALL_MAX_BYTES {
            assert_eq!(class_of(p).block_bytes(), p);
            p *= 2;
        }
    }

    #[test]
    fn aligned_requests_get_power_of_two_blocks() {
        assert_eq!(class_for_aligned(10, 64).unwrap().block_bytes(), 64);
        assert_eq!(class_for_aligned(100, 64).unwrap().block_bytes(), 128);
        assert_eq!(class_for_aligned(4096, 4096).unwrap().block_bytes(), 4096);
        assert_eq!(class_for_aligned(1, 16384).unwrap().block_bytes(), 16384);
        assert!(class_for_aligned(1, 32768).is_none());
        assert!(class_for_aligned(16385, 16).is_none());
        assert_eq!(class_for_aligned(24, 8).unwrap().block_bytes(), 32);
    }
}
