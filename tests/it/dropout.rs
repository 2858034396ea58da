//! GPU dropout (`masklm::model::dropout::DropoutOps`): the CubeCL kernel computes the host's
//! hashed mask to the bit, forward and backward, and the module's masks on a GPU are a function
//! of the step's seed alone.

use crate::common;
use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::DType;
use masklm::model::dropout::{DropoutOps, hashed_keep_mask};

fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// `dropout(x, seed, prob)` in `dtype` through the backend operation (the GPU path of
/// `Dropout::forward_as`, with the seed given instead of drawn).
fn dropout<const D: usize>(x: Tensor<D>, seed: u64, prob: f64, dtype: DType) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as DropoutOps>::dropout(
        x.into_dispatch(),
        seed,
        prob,
        dtype,
    ))
}

/// (y, dx) of the loss `Σ y·w` for `n` elements of x (f32, as [rows, 3]), y in `dtype`.
fn forward_backward(
    n: usize,
    seed: u64,
    prob: f64,
    dtype: DType,
    device: &Device,
) -> [Vec<f32>; 2] {
    let t = |s: u64| Tensor::<1>::from_floats(common::uniform(n, s, -2.0, 2.0).as_slice(), device);
    let x = t(1).reshape([n / 3, 3]).require_grad();
    let w = t(2).reshape([n / 3, 3]).cast(dtype);
    let y = dropout(x.clone(), seed, prob, dtype);
    assert_eq!(y.dtype(), dtype);
    let grads = (y.clone() * w).sum().backward();
    let dx = x.grad(&grads).unwrap();
    assert_eq!(dx.dtype(), DType::F32, "the gradient in x's dtype");
    [vec(y), vec(dx)]
}

#[test]
fn the_operation_multiplies_by_the_hashed_mask_forward_and_backward() {
    let (n, seed, prob) = (3 * 7_001, 0x1234_5678_9abc_def0, 0.1);
    let [y, dx] = forward_backward(n, seed, prob, DType::F32, &Device::flex().autodiff());
    let mask = hashed_keep_mask(seed, n, prob);
    let (x, w) = (
        common::uniform(n, 1, -2.0, 2.0),
        common::uniform(n, 2, -2.0, 2.0),
    );
    for i in 0..n {
        assert_eq!(y[i], x[i] * mask[i], "y[{i}]");
        assert_eq!(dx[i], w[i] * mask[i], "dx[{i}]");
    }
    let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64 / n as f64;
    // 0.9 ± 5 standard deviations (√(0.09 / n) ≈ 2.1e-3).
    assert!((kept - 0.9).abs() < 0.011, "{kept}");
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_the_kernel_draws_the_hosts_mask_to_the_bit() {
    // 16,777,218 elements: 65,537 cubes of 256 units, past one launch axis.
    // f16 out: attention's probabilities, dropped out and written for their f16 product.
    for (n, seed, prob, dtype) in [
        (3 * 7_001, 5, 0.1, DType::F32),
        (3 * 5_592_406, u64::MAX - 6, 0.37, DType::F32),
        (3 * 7_001, 6, 0.1, DType::F16),
    ] {
        let cpu = forward_backward(n, seed, prob, dtype, &Device::flex().autodiff());
        let gpu = forward_backward(n, seed, prob, dtype, &common::vulkan().autodiff());
        assert!(
            cpu == gpu,
            "{n} elements, seed {seed}, {dtype:?}: flex and Vulkan differ"
        );
    }
}

/// The tiny model's hidden states after a training-mode forward on `device` seeded with `seed`.
#[cfg(feature = "vulkan")]
fn training_hidden(seed: u64, device: &Device) -> Vec<f32> {
    let model = common::tiny_bert(0.3).init_seeded(7, device);
    masklm::train::seed_device(device, seed);
    let ids: Vec<i64> = (0..32).map(|i| 5 + (i * 7) % 94).collect();
    let ids = Tensor::<1, Int>::from_ints(ids.as_slice(), device).reshape([2, 16]);
    vec(model.encode(ids, Tensor::<2, Int>::ones([2, 16], device)))
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_the_module_s_masks_follow_the_step_seed() {
    let dev = common::vulkan().autodiff();
    let a = training_hidden(11, &dev);
    assert_eq!(
        a,
        training_hidden(11, &dev),
        "the same seed, the same masks"
    );
    assert_ne!(a, training_hidden(12, &dev), "another seed, other masks");
}
