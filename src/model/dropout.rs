//! Dropout (HF `nn.Dropout`): in training, zero each element with probability `prob` and scale
//! the rest by `1 / (1 - prob)`; outside training, the identity.
//!
//! Why not `burn::nn::Dropout`: on the CPU backends burn draws its Bernoulli mask one element at
//! a time from a single ChaCha generator, on the thread that runs the model, and then applies it
//! in two passes (`x * mask`, then `* 1/(1-p)`). At the bench-mini shapes that is ~17 M draws per
//! step, about a fifth of the step's non-matmul time (perf, BENCHMARKS.md). Here the scaled mask
//! comes from a counter-based hash ([`keep_mask`]), filled in parallel, and is applied in one
//! multiply. Each call takes its 64-bit seed from the device's generator, which training reseeds
//! from (seed, step) every step, so masks stay reproducible and resume stays exact.
//!
//! On GPUs a host mask would cost an upload per call, and burn's on-device draw writes a mask of
//! f32 the size of `x` that autodiff keeps for backward (at BERT-base, batch 128 × 128, 100 MB a
//! layer for the attention probabilities alone). There dropout is one operation of its own
//! ([`DropoutOps`], a CubeCL kernel in `dropout_cube.rs`): element `i` is kept by a 32-bit hash of
//! (call seed, `i`) ([`hashed_keep`]), and the backward hashes again instead of keeping a mask.
//! Its call seeds come from a host stream ([`seed`]) that training reseeds with the device, since
//! reading the device's generator would be a device read.

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use super::precision::cast_primitive;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, Distribution, TensorData};
use rayon::prelude::*;
use std::sync::Mutex;

#[derive(Module, Debug)]
pub struct Dropout {
    /// Probability of zeroing an element, in [0, 1).
    pub prob: f64,
}

impl Dropout {
    pub fn new(prob: f64) -> Self {
        Self { prob }
    }

    /// `x` [...] → [...]: dropped out on an autodiff (training) device, unchanged otherwise.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        self.forward_as(x, dtype)
    }

    /// [`forward`](Self::forward), its result in `dtype`: for a product that takes it in lower
    /// precision (attention's probabilities), on GPUs written so by the dropout kernel itself
    /// instead of by a cast after it.
    pub fn forward_as<const D: usize>(&self, x: Tensor<D>, dtype: DType) -> Tensor<D> {
        if let Some((seed, prob)) = self.gpu_call(&x.device())
            && prob != 0.0
        {
            return Tensor::from_dispatch(<Dispatch as DropoutOps>::dropout(
                x.into_dispatch(),
                seed,
                prob,
                dtype,
            ));
        }
        let y = self.host_forward(x);
        if y.dtype() == dtype { y } else { y.cast(dtype) }
    }

    /// The seed and probability of this call's hashed mask where dropout runs as a GPU operation
    /// (training on a GPU; prob 0 means no dropout), for an operation that drops out inside its
    /// own kernel; `None` where [`forward`](Self::forward) is the CPU's dropout or the identity.
    pub(crate) fn gpu_call(&self, device: &Device) -> Option<(u64, f64)> {
        if !device.is_autodiff() || super::on_host(device) {
            return None;
        }
        Some(if self.prob == 0.0 {
            (0, 0.0)
        } else {
            (next_seed(), self.prob)
        })
    }

    /// The CPU backends' dropout (and the identity outside training).
    fn host_forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        if self.prob == 0.0 || !device.is_autodiff() {
            return x;
        }
        // Three 24-bit draws from the device's (seeded) generator make the call's seed (24 bits:
        // the bounds pass through f32, and the device's integers may be i32).
        let draw = Tensor::<1, Int>::random([3], Distribution::Uniform(0.0, 16777216.0), &device)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .expect("two integers");
        let seed = ((draw[0] as u64) << 40) ^ ((draw[1] as u64) << 20) ^ draw[2] as u64;
        let shape = x.shape();
        let mask = keep_mask(seed, shape.num_elements(), self.prob);
        x * Tensor::from_data(TensorData::new(mask, shape), &device)
    }
}

/// The state of the host stream of GPU dropout's call seeds (SplitMix64's counter).
static SEEDS: Mutex<u64> = Mutex::new(0);

/// Restarts the stream of GPU dropout's call seeds at `seed`: training calls it wherever it seeds
/// the device, so that a resumed run's masks are an uninterrupted one's.
pub fn seed(seed: u64) {
    *SEEDS.lock().unwrap() = seed;
}

/// The next call seed of GPU dropout.
fn next_seed() -> u64 {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut state = SEEDS.lock().unwrap();
    *state = state.wrapping_add(GOLDEN);
    mix(*state)
}

/// Dropout as one backend operation with a backward of its own, for GPUs: the mask is a hash of
/// (`seed`, element index), so backward recomputes it instead of keeping it.
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait DropoutOps: Backend {
    /// `x` [...] → `x ⊙ mask` [...] computed in f32 and returned in `dtype`, the mask
    /// [`hashed_keep_mask`]`(seed, n, prob)` over `x`'s elements in row-major order. The
    /// backward is the same operation on the gradient, returned in `x`'s dtype.
    ///
    /// The default body builds the mask on the host: the reference that the CubeCL kernel
    /// (`dropout_cube.rs`) is tested against; the CPU backends' training runs [`keep_mask`].
    #[fusion(dtype = *dtype, shape = x)]
    fn dropout(x: FloatTensor<Self>, seed: u64, prob: f64, dtype: DType) -> FloatTensor<Self> {
        hashed_dropout::<Self>(x, seed, prob, dtype)
    }
}

/// [`DropoutOps::dropout`] by backend operations, with the mask built on the host: the default
/// bodies' reference, for every operation that drops out with the hashed mask.
pub(crate) fn hashed_dropout<B: Backend>(
    x: FloatTensor<B>,
    seed: u64,
    prob: f64,
    dtype: DType,
) -> FloatTensor<B> {
    let shape = x.shape();
    let mask = hashed_keep_mask(seed, shape.num_elements(), prob);
    let mask = B::float_from_data(TensorData::new(mask, shape), &x.device());
    let x = cast_primitive::<B>(x, DType::F32);
    cast_primitive::<B>(B::float_mul(x, mask), dtype)
}

impl DropoutOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl DropoutOps for burn::backend::NdArray {}

/// The backward of [`DropoutOps::dropout`]: its state is `(seed, prob)`, the mask's recipe, and
/// the input's dtype.
#[derive(Debug)]
struct DropoutGrad;

impl<B: DropoutOps> Backward<B, 1> for DropoutGrad {
    type State = (u64, f64, DType);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (seed, prob, x_dtype) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dy| {
            B::dropout(dy, seed, prob, x_dtype)
        });
    }
}

impl<B: DropoutOps, C: CheckpointStrategy> DropoutOps for Autodiff<B, C> {
    fn dropout(x: FloatTensor<Self>, seed: u64, prob: f64, dtype: DType) -> FloatTensor<Self> {
        let (node, x_dtype) = (x.node(), x.dtype());
        let y = B::dropout(x.into_primitive(), seed, prob, dtype);
        match DropoutGrad.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((seed, prob, x_dtype), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// The two 32-bit keys of a call seed, and the keep threshold of `prob`: element `i` is kept when
/// `triple32(triple32(i ^ k0) + k1) < threshold` (exactly `1 - prob` up to 2^-32).
pub(crate) fn hash_params(seed: u64, prob: f64) -> ([u32; 2], u32) {
    let threshold = ((1.0 - prob) * 4294967296.0).round().min(u32::MAX as f64) as u32;
    ([seed as u32, (seed >> 32) as u32], threshold)
}

/// Chris Wellons' `triple32` integer hash (an invertible mix of 32 bits with very low bias),
/// written in 32-bit arithmetic so that every GPU shader language computes it (WGSL has no
/// 64-bit integers); the kernel in `dropout_cube.rs` is the same function.
pub(crate) fn triple32(mut x: u32) -> u32 {
    x ^= x >> 17;
    x = x.wrapping_mul(0xed5a_d4bb);
    x ^= x >> 11;
    x = x.wrapping_mul(0xac4c_1b51);
    x ^= x >> 15;
    x = x.wrapping_mul(0x3184_8bab);
    x ^= x >> 14;
    x
}

/// Whether GPU dropout keeps element `i` under the keys and threshold of `hash_params`.
pub fn hashed_keep(keys: [u32; 2], threshold: u32, i: u32) -> bool {
    triple32(triple32(i ^ keys[0]).wrapping_add(keys[1])) < threshold
}

/// GPU dropout's scaled mask of `n` elements (`1 / (1 - prob)` kept, 0 dropped), on the host.
/// The index is hashed as 32 bits, so a tensor of more than 2³² elements (BERT-base attention at
/// batch 128 × 512 has 4.0 × 10⁸) would repeat the mask's pattern past that.
pub fn hashed_keep_mask(seed: u64, n: usize, prob: f64) -> Vec<f32> {
    let (keys, threshold) = hash_params(seed, prob);
    let scale = (1.0 / (1.0 - prob)) as f32;
    (0..n)
        .into_par_iter()
        .with_min_len(1 << 14)
        .map(|i| {
            if hashed_keep(keys, threshold, i as u32) {
                scale
            } else {
                0.0
            }
        })
        .collect()
}

/// SplitMix64's output function: a bijective mix of a 64-bit counter into 64 random bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The scaled keep-mask of `n` elements: `1 / (1 - prob)` where kept, 0 where dropped. Element
/// `i` is decided by 32 bits of `mix(seed + (i / 2 + 1) · φ)` alone (low half for even `i`,
/// high half for odd), so the mask is the same whatever the thread count or chunking. Collected
/// in parallel straight into the output (no zero-fill pass first).
pub fn keep_mask(seed: u64, n: usize, prob: f64) -> Vec<f32> {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let keep = 1.0 - prob;
    // Kept when the 32-bit draw is below keep · 2^32 (exactly `keep` up to 2^-32).
    let threshold = (keep * 4294967296.0).round() as u64;
    let scale = (1.0 / keep) as f32;
    (0..n)
        .into_par_iter()
        .with_min_len(1 << 14)
        .map(|i| {
            let r = mix(seed.wrapping_add((i as u64 / 2 + 1).wrapping_mul(GOLDEN)));
            let u = (r >> (32 * (i % 2))) & 0xffff_ffff;
            if u < threshold { scale } else { 0.0 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_keeps_about_one_minus_prob_and_scales_the_kept() {
        let n = 200_001; // odd: the last pair is half used
        let m = keep_mask(7, n, 0.1);
        assert_eq!(m.len(), n);
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        // 0.9 ± 5 standard deviations (sqrt(0.09 / n) ≈ 6.7e-4).
        assert!((kept - 0.9).abs() < 3.4e-3, "{kept}");
        assert!(m.iter().all(|&v| v == 0.0 || v == (1.0f64 / 0.9) as f32));
    }

    #[test]
    fn the_mask_is_a_function_of_seed_and_index_only() {
        let a = keep_mask(42, 100_000, 0.3);
        // A prefix is the same mask, whatever the length and so the chunking.
        assert_eq!(&keep_mask(42, 40_001, 0.3)[..], &a[..40_001]);
        assert_ne!(keep_mask(43, 100_000, 0.3), a, "another seed, another mask");
        // Neighbouring elements are independent: P(both kept) ≈ 0.49.
        let both = a.windows(2).filter(|w| w[0] != 0.0 && w[1] != 0.0).count() as f64
            / (a.len() - 1) as f64;
        assert!((both - 0.49).abs() < 0.01, "{both}");
    }

    /// P(both kept) over pairs of elements (`a[i]`, `b[i]`).
    fn both_kept(a: &[f32], b: &[f32]) -> f64 {
        let both = a.iter().zip(b).filter(|(x, y)| **x != 0.0 && **y != 0.0);
        both.count() as f64 / a.len() as f64
    }

    #[test]
    fn the_hashed_mask_keeps_one_minus_prob_independently_per_element_and_call() {
        let n = 200_000;
        seed(99);
        let (s1, s2) = (next_seed(), next_seed());
        let (a, b) = (hashed_keep_mask(s1, n, 0.1), hashed_keep_mask(s2, n, 0.1));
        for m in [&a, &b] {
            let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
            // 0.9 ± 5 standard deviations (√(0.09 / n) ≈ 6.7e-4).
            assert!((kept - 0.9).abs() < 3.4e-3, "{kept}");
            assert!(m.iter().all(|&v| v == 0.0 || v == (1.0f64 / 0.9) as f32));
        }
        // Neighbouring elements, and the same element in two consecutive calls: 0.81 ± 5σ.
        assert!((both_kept(&a[1..], &a[..n - 1]) - 0.81).abs() < 4.5e-3);
        assert!((both_kept(&a, &b) - 0.81).abs() < 4.5e-3);
        // A prefix is the same mask; the stream restarts where it is reseeded.
        assert_eq!(hashed_keep_mask(s1, 40_001, 0.1)[..], a[..40_001]);
        seed(99);
        assert_eq!(next_seed(), s1);
    }

    #[test]
    fn dropout_scales_by_the_mask_in_training_and_is_the_identity_otherwise() {
        let device = Device::flex();
        let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device);
        let d = Dropout::new(0.5);
        assert_eq!(d.forward(x.clone()).into_data(), x.clone().into_data());

        let train = device.autodiff();
        let xs = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &train);
        let y = d.forward(xs).into_data().try_into_vec::<f32>().unwrap();
        let x = x.into_data().try_into_vec::<f32>().unwrap();
        for (y, x) in y.iter().zip(&x) {
            assert!(*y == 0.0 || *y == 2.0 * x, "{y} from {x}");
        }
    }
}
