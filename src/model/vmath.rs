//! Vectorized f32 GELU and its backward, the CPU path of `model::gelu` (hand-written: measured
//! faster than the scalar `libm::erff` code burn's CPU backend runs, BENCHMARKS.md).
//!
//! Upstream computes GELU as `0.5 * x * (1 + libm::erff(x / sqrt 2))` one element at a time;
//! `erff` is a branchy scalar call that LLVM cannot vectorize, and in a BERT training step
//! GELU's forward and backward were ~10% of all CPU time (`perf`, BENCHMARKS.md). Here the
//! per-element code is branch-free, so each chunk loop compiles to 8-wide AVX2 + FMA
//! (runtime-detected) or 4-wide SSE2, and chunks run on the rayon pool.
//!
//! The normal CDF uses Abramowitz & Stegun 7.1.26, the approximation PyTorch's vectorized CPU
//! `erf` (and so its CPU GELU) uses: `erfc(z) = t·(a1 + t·(a2 + … a5·t))·exp(-z²)`,
//! `t = 1 / (1 + p·z)`, absolute error below 1.5e-7. `exp` is Cephes' `expf` polynomial
//! (about 1 ulp). `tests/fast_gelu.rs` checks both directions against f64 references over a
//! dense grid and every slice length around the chunk sizes.

use core::mem::MaybeUninit;

const INV_SQRT_2: f32 = core::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    // `mul_add` is one instruction with FMA and a slow libm call without it.
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `exp(x)`, branch-free (Cephes `expf`): `x = n·ln2 + r`, `|r| ≤ ln2/2`, a degree-6 polynomial
/// for `exp(r)`, and `2^n` built in the exponent bits. Below -87.3 (where `2^n` would leave the
/// normal range) the result is 0.
#[inline(always)]
fn exp<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // ln 2 split in two so that `n·LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.7);
    let m = fmadd::<FMA>(xc, LOG2E, SHIFTER);
    let n = m - SHIFTER;
    let r = fmadd::<FMA>(n, -LN2_LO, fmadd::<FMA>(n, -LN2_HI, xc));
    let mut p = 1.987_569_1e-4_f32;
    p = fmadd::<FMA>(p, r, 1.398_199_9e-3);
    p = fmadd::<FMA>(p, r, 8.333_452e-3);
    p = fmadd::<FMA>(p, r, 4.166_579_6e-2);
    p = fmadd::<FMA>(p, r, 1.666_666_5e-1);
    // Cephes writes 5.0000001201e-1, which rounds to 0.5 in f32.
    p = fmadd::<FMA>(p, r, 0.5);
    let y = fmadd::<FMA>(p, r * r, r) + 1.0;
    // The integer n sits in m's low bits as 0x4B40_0000 + n; 2^n's bits are (n + 127) << 23.
    let pow2n = f32::from_bits(
        m.to_bits()
            .wrapping_sub(0x4B40_0000)
            .wrapping_add(127)
            .wrapping_shl(23),
    );
    if x < -87.3 { 0.0 } else { y * pow2n }
}

/// `(Φ(x), φ(x))`: the standard normal CDF and density.
#[inline(always)]
fn cdf_pdf<const FMA: bool>(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let z = x.abs() * INV_SQRT_2;
    let t = 1.0 / fmadd::<FMA>(P, z, 1.0);
    let mut poly = A[4];
    poly = fmadd::<FMA>(poly, t, A[3]);
    poly = fmadd::<FMA>(poly, t, A[2]);
    poly = fmadd::<FMA>(poly, t, A[1]);
    poly = fmadd::<FMA>(poly, t, A[0]);
    // exp(-z²) = exp(-x²/2), shared by erfc and the density.
    let e = exp::<FMA>(-z * z);
    let half_erfc = 0.5 * t * poly * e;
    let cdf = if x >= 0.0 { 1.0 - half_erfc } else { half_erfc };
    (cdf, e * INV_SQRT_2PI)
}

/// GELU(x) = x·Φ(x).
#[inline(always)]
fn gelu1<const FMA: bool>(x: f32) -> f32 {
    x * cdf_pdf::<FMA>(x).0
}

/// g·GELU'(x) = g·(Φ(x) + x·φ(x)).
#[inline(always)]
fn gelu_grad1<const FMA: bool>(x: f32, g: f32) -> f32 {
    let (cdf, pdf) = cdf_pdf::<FMA>(x);
    g * fmadd::<FMA>(x, pdf, cdf)
}

/// Defines `$name(args)` that runs `$body` compiled twice, for AVX2 + FMA (chosen at run time)
/// and for the baseline target, so the same loop vectorizes at the widest width available.
macro_rules! multiversion {
    ($name:ident, ($($arg:ident: $ty:ty),*), $fma:ident => $body:block) => {
        #[inline]
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) {
                    const $fma: bool = true;
                    $body
                }
                // SAFETY: the CPU supports AVX2 and FMA (checked above).
                unsafe { wide($($arg),*) };
                return;
            }
            const $fma: bool = false;
            $body
        }
    };
}

multiversion!(gelu_chunk, (src: &[f32], dst: &mut [MaybeUninit<f32>]), FMA => {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = MaybeUninit::new(gelu1::<FMA>(x));
    }
});

multiversion!(gelu_chunk_inplace, (a: &mut [f32]), FMA => {
    for x in a.iter_mut() {
        *x = gelu1::<FMA>(*x);
    }
});

multiversion!(gelu_grad_chunk, (x: &[f32], g: &[f32], dst: &mut [MaybeUninit<f32>]), FMA => {
    for ((d, &x), &g) in dst.iter_mut().zip(x).zip(g) {
        *d = MaybeUninit::new(gelu_grad1::<FMA>(x, g));
    }
});

multiversion!(gelu_grad_chunk_inplace, (x: &[f32], g: &mut [f32]), FMA => {
    for (g, &x) in g.iter_mut().zip(x) {
        *g = gelu_grad1::<FMA>(x, *g);
    }
});

/// Elements per rayon task.
const CHUNK: usize = 1 << 13;
/// Below this many elements the loop stays on the calling thread.
const PAR_MIN: usize = 1 << 15;

fn for_chunks<T: Send, F: Fn(&mut [T], usize) + Sync + Send>(a: &mut [T], f: F) {
    if a.len() >= PAR_MIN {
        use rayon::prelude::*;
        a.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, c)| f(c, i * CHUNK));
        return;
    }
    f(a, 0);
}

/// `dst = GELU(src)`, `dst` fully written.
pub fn gelu_into(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    assert_eq!(src.len(), dst.len());
    for_chunks(dst, |d, at| gelu_chunk(&src[at..at + d.len()], d));
}

/// `a = GELU(a)`.
pub fn gelu_inplace(a: &mut [f32]) {
    for_chunks(a, |c, _| gelu_chunk_inplace(c));
}

/// `dst = g · GELU'(x)`, `dst` fully written.
pub fn gelu_grad_into(x: &[f32], g: &[f32], dst: &mut [MaybeUninit<f32>]) {
    assert!(x.len() == dst.len() && g.len() == dst.len());
    for_chunks(dst, |d, at| {
        let r = at..at + d.len();
        gelu_grad_chunk(&x[r.clone()], &g[r], d)
    });
}

/// `g = g · GELU'(x)`.
pub fn gelu_grad_inplace(x: &[f32], g: &mut [f32]) {
    assert_eq!(x.len(), g.len());
    for_chunks(g, |c, at| gelu_grad_chunk_inplace(&x[at..at + c.len()], c));
}
