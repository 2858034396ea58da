//! Dropout (HF `nn.Dropout`): in training, zero each element with probability `prob` and scale
//! the rest by `1 / (1 - prob)`; outside training, the identity.
//!
//! Why not `burn::nn::Dropout`: on the CPU backends burn draws its Bernoulli mask one element at
//! a time from a single ChaCha generator, on the thread that runs the model, and then applies it
//! in two passes (`x * mask`, then `* 1/(1-p)`). At the bench-mini shapes that is ~17 M draws per
//! step, about a fifth of the step's non-matmul time (perf, BENCHMARKS.md). Here the scaled mask
//! comes from a counter-based hash ([`keep_mask`]), filled in parallel, and is applied in one
//! multiply. Each call takes its 64-bit seed from the device's generator, which training reseeds
//! from (seed, step) every step, so masks stay reproducible and resume stays exact. On GPU
//! backends burn's on-device draw is kept (a host mask would cost an upload per call).

use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use rayon::prelude::*;

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
        let device = x.device();
        if self.prob == 0.0 || !device.is_autodiff() {
            return x;
        }
        let keep = 1.0 - self.prob;
        if !is_host(&device) {
            // burn::nn::Dropout's computation, on the device.
            let random = x.random_like(Distribution::Bernoulli(keep));
            return x * random * (1.0 / keep);
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

/// Whether `device` computes on this machine's CPU (flex or ndarray, with or without autodiff).
fn is_host(device: &Device) -> bool {
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if device.clone().without_autodiff() == Device::ndarray() {
        return true;
    }
    super::on_flex(device)
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
