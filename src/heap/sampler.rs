//! Which allocations are sampled, and what a sample stands for.
//!
//! Sample points fall on the stream of allocated bytes as a Poisson process of rate
//! `1 / interval`: the distance to the next point is exponential with mean `interval`. An
//! allocation of `s` bytes is sampled when a point falls inside its bytes, which happens
//! with probability `p = 1 - exp(-s / interval)`; it then stands for `1/p` allocations
//! and `s/p` bytes (the Horvitz-Thompson weights: unbiased whatever the size mix).
//!
//! Each heap keeps the distance to its next point in [`HeapSampler::countdown`]; the
//! `malloc` fast path subtracts the size and branches when it goes negative. Because the
//! distance is memoryless, the next distance after a sampled allocation is a fresh draw
//! from the end of that allocation, and the process stays exact.
//!
//! No libm: `-ln(u)` and `exp(-x)` are computed here from `f64` arithmetic alone, to a
//! relative error near 1e-15 (the unit tests check the bounds).
#![forbid(unsafe_code)]

/// The sampler state of one heap (owner-only, like the rest of the heap).
#[repr(C)]
#[derive(Debug)]
pub struct HeapSampler {
    /// Bytes left before the next sample point. The fast path subtracts each small size
    /// and takes the sampling slow path when the result is negative. `isize::MAX` while
    /// profiling is off; 0 in a new heap, so that its first allocation sets it up.
    pub countdown: isize,
    /// xorshift64* state; 0 until seeded.
    pub rng: u64,
    /// True while the heap's thread is inside the sampling slow path: an allocation made
    /// from there (by the stack unwinder) is not sampled.
    pub busy: bool,
    /// The profiler's own countdown is `countdown + prof_extra`, the guard's
    /// `countdown + guard_extra` (both extras >= 0, one of them 0 after each reset):
    /// `countdown` is the nearer of the two, so the fast path keeps one subtraction and one
    /// branch whatever is on, and the slow path charges both (see `process::guard`).
    pub prof_extra: isize,
    /// See `prof_extra`.
    pub guard_extra: isize,
    /// The guard's xorshift64* state; 0 until seeded.
    pub guard_rng: u64,
}

impl HeapSampler {
    /// A sampler whose first allocation takes the slow path (which seeds it, or turns it
    /// off when profiling is off).
    pub const fn new() -> Self {
        HeapSampler {
            countdown: 0,
            rng: 0,
            busy: false,
            prof_extra: 0,
            guard_extra: 0,
            guard_rng: 0,
        }
    }
}

impl Default for HeapSampler {
    fn default() -> Self {
        Self::new()
    }
}

/// Fixed-point unit of the object estimates: 1/p is kept in 1/65536ths of an object, so
/// that the sums of live estimates go back exactly to zero when every block is freed.
pub const OBJECT_FIXED_SHIFT: u32 = 16;

/// What one sampled allocation stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Weight {
    /// `1/p` in 1/65536ths of an object.
    pub objects_fixed: u64,
    /// `s/p`, rounded to whole bytes.
    pub bytes: u64,
}

/// The weight of a sampled block of `size` bytes at a mean interval of `interval_bytes`.
pub fn weight(size: usize, interval_bytes: u64) -> Weight {
    let s = size.max(1) as f64;
    let p = one_minus_exp_neg(s / interval_bytes.max(1) as f64);
    // p > 0 for any s >= 1 and interval <= 2^40 (p >= 2^-40 then), so the quotients are
    // finite; float-to-int casts saturate in any case.
    Weight {
        objects_fixed: round_u64((1u64 << OBJECT_FIXED_SHIFT) as f64 / p),
        bytes: round_u64(s / p),
    }
}

/// Rounds a finite non-negative value to the nearest integer (casts saturate).
fn round_u64(v: f64) -> u64 {
    (v + 0.5) as u64
}

/// Seeds a sampler's generator from `seed` (any value): never 0 afterwards.
pub fn seed(seed: u64) -> u64 {
    // splitmix64's finaliser spreads nearby seeds (heap addresses, counters) apart.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 {
        0x2545_f491_4f6c_dd1d
    } else {
        z
    }
}

/// Next value of an xorshift64* generator (`state` must not be 0).
pub fn next_u64(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A uniform draw in (0, 1], in steps of 2^-53.
pub fn uniform(state: &mut u64) -> f64 {
    ((next_u64(state) >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Distance to the next sample point: an exponential draw of mean `interval_bytes`,
/// rounded to whole bytes.
pub fn draw_countdown(state: &mut u64, interval_bytes: u64) -> isize {
    let v = -ln(uniform(state)) * interval_bytes as f64;
    // v is finite and non-negative (u >= 2^-53); the cast saturates at isize::MAX.
    (v + 0.5) as isize
}

const LN_2: f64 = core::f64::consts::LN_2;

/// Natural logarithm of a positive normal `x` (the sampler calls it on (0, 1]).
///
/// `x = m * 2^e` with `m` in [sqrt(1/2), sqrt(2)); `ln(m) = 2 atanh(z)` with
/// `z = (m - 1) / (m + 1)`, `|z| < 0.172`, summed as the odd series `z + z^3/3 + ...` up
/// to `z^17` (the first term left out is below 1e-15 of the result). Zero, negative and
/// subnormal inputs give meaningless results; they never occur here.
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > core::f64::consts::SQRT_2 {
        m *= 0.5;
        exponent += 1;
    }
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    // Horner form of 1 + z2/3 + z2^2/5 + ... + z2^8/17.
    let mut series = 1.0 / 17.0;
    for odd in [15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0] {
        series = series * z2 + 1.0 / odd;
    }
    exponent as f64 * LN_2 + 2.0 * z * series
}

/// `exp(-x)` for `x >= 0` (0 beyond 700, where it is below 1e-304).
///
/// `x = k ln2 + r` with `|r| <= ln2/2`; `exp(-r)` from its Taylor series to degree 16
/// (remainder below 1e-18), then scaled by `2^-k` through the exponent bits.
pub fn exp_neg(x: f64) -> f64 {
    // NaN and large values give 0; negative ones are taken as 0.
    let x = match x.partial_cmp(&700.0) {
        Some(core::cmp::Ordering::Less) => x.max(0.0),
        _ => return 0.0,
    };
    let k = (x * (1.0 / LN_2) + 0.5) as u64; // x >= 0: truncation is floor
    let r = x - k as f64 * LN_2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=16 {
        term *= -r / n as f64;
        sum += term;
    }
    // k <= 1010, so 1023 - k is a normal exponent.
    sum * f64::from_bits((1023 - k) << 52)
}

/// `1 - exp(-x)` for `x >= 0`, accurate also for tiny `x` (where `1 - exp(-x)` would lose
/// the digits that matter to the cancellation).
pub fn one_minus_exp_neg(x: f64) -> f64 {
    if x < 0.25 {
        // x - x^2/2! + x^3/3! - ...: to x^12/12!, the next term is below 1e-18 of x.
        let mut term = x;
        let mut sum = x;
        for n in 2..=12 {
            term *= -x / n as f64;
            sum += term;
        }
        sum
    } else {
        1.0 - exp_neg(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative_error(got: f64, want: f64) -> f64 {
        ((got - want) / want).abs()
    }

    #[test]
    fn ln_is_accurate_over_the_sampler_range() {
        let mut worst: f64 = 0.0;
        let mut worst_abs: f64 = 0.0;
        let mut state = seed(1);
        for i in 0..200_000 {
            // Uniform draws, and values spread over every binade down to 2^-53.
            let u = if i % 2 == 0 {
                uniform(&mut state)
            } else {
                (uniform(&mut state) * 2.0f64.powi(-(i % 53))).max(f64::MIN_POSITIVE)
            };
            let want = u.ln();
            worst_abs = worst_abs.max((ln(u) - want).abs());
            if want.abs() > 1e-3 {
                worst = worst.max(relative_error(ln(u), want));
            }
        }
        assert!(worst < 1e-14, "ln relative error {worst:e}");
        assert!(worst_abs < 1e-14, "ln absolute error {worst_abs:e}");
        assert_eq!(ln(1.0), 0.0);
        assert!((ln(2.0f64.powi(-53)) - 2.0f64.powi(-53).ln()).abs() < 1e-13);
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst: f64 = 0.0;
        for i in 0..100_000 {
            let x = i as f64 * 0.007;
            let want = (-x).exp();
            if want > 1e-300 {
                worst = worst.max(relative_error(exp_neg(x), want));
            }
        }
        assert!(worst < 1e-13, "exp relative error {worst:e}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(1e9), 0.0);
        assert_eq!(exp_neg(f64::NAN), 0.0);
        let mut worst_p: f64 = 0.0;
        for i in 0..100_000 {
            let x = 1e-12 * 1.0005f64.powi(i);
            if x > 50.0 {
                break;
            }
            worst_p = worst_p.max(relative_error(one_minus_exp_neg(x), -(-x).exp_m1()));
        }
        assert!(worst_p < 1e-14, "1 - exp(-x) relative error {worst_p:e}");
    }

    #[test]
    fn countdown_mean_is_the_interval() {
        for interval in [1u64, 4096, 512 * 1024] {
            let mut state = seed(interval);
            let n = 1_000_000;
            let mut sum = 0f64;
            let mut sum_sq = 0f64;
            for _ in 0..n {
                let d = draw_countdown(&mut state, interval) as f64;
                assert!(d >= 0.0);
                sum += d;
                sum_sq += d * d;
            }
            let mean = sum / n as f64;
            let variance = sum_sq / n as f64 - mean * mean;
            // The standard error of the mean is interval / 1000: 1% is 10 of them.
            // Rounding to whole bytes moves a mean of 1 by 4% (E[round(X)] for X ~ Exp(1)
            // is e^0.5 / (e - 1) = 0.9595...), hence the wider bound there.
            let tolerance = if interval == 1 { 0.1 } else { 0.01 };
            assert!(
                relative_error(mean, interval as f64) < tolerance,
                "interval {interval}: mean {mean}"
            );
            if interval > 1 {
                // Exponential: the variance is the mean squared.
                let want = (interval * interval) as f64;
                assert!(relative_error(variance, want) < 0.03, "variance {variance}");
            }
        }
    }

    #[test]
    fn sampling_probability_matches_the_weight() {
        // Drive a countdown as the fast path does, over allocations of one size; the share
        // sampled must be p = 1 - exp(-s / interval), and the weights must add up to the
        // bytes allocated.
        let interval = 4096u64;
        for size in [16usize, 1000, 4096, 20000] {
            let mut state = seed(size as u64);
            let mut countdown = draw_countdown(&mut state, interval);
            let n = 400_000;
            let mut sampled = 0u64;
            let mut estimate = 0u128;
            let w = weight(size, interval);
            for _ in 0..n {
                countdown -= size as isize;
                if countdown < 0 {
                    sampled += 1;
                    estimate += u128::from(w.bytes);
                    countdown = draw_countdown(&mut state, interval);
                }
            }
            let p = 1.0 - (-(size as f64) / interval as f64).exp();
            let share = sampled as f64 / n as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (share - p).abs() < 5.0 * sd + 1e-9,
                "size {size}: {share} vs {p}"
            );
            let truth = (size * n) as f64;
            let rel = (estimate as f64 - truth).abs() / truth;
            assert!(rel < 0.02, "size {size}: estimate off by {rel}");
        }
    }

    #[test]
    fn weights() {
        // Small blocks stand for about interval / s of themselves.
        let w = weight(8, 512 * 1024);
        assert_eq!(w.bytes, 512 * 1024 + 4);
        assert_eq!(w.objects_fixed >> OBJECT_FIXED_SHIFT, 65536);
        // Blocks far above the interval are always sampled and stand for themselves.
        let w = weight(100 << 20, 512 * 1024);
        assert_eq!(w.bytes, 100 << 20);
        assert_eq!(w.objects_fixed, 1 << OBJECT_FIXED_SHIFT);
        // Zero-byte blocks are never sampled; they still get a finite weight.
        assert_eq!(weight(0, 4096), weight(1, 4096));
    }

    #[test]
    fn generator_never_sticks_at_zero() {
        assert_ne!(seed(0), 0);
        let mut s = seed(0x9e37_79b9_7f4a_7c15u64.wrapping_neg());
        for _ in 0..1000 {
            next_u64(&mut s);
            assert_ne!(s, 0);
        }
    }
}
