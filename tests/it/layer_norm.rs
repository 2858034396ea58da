//! masklm's LayerNorm operation (`masklm::model::layer_norm`): its forward is burn's LayerNorm
//! to the bit, its closed-form backward gives autodiff's gradients of burn's, and a CubeCL
//! device computes what flex does.

use crate::common;
use burn::module::Param;
use burn::nn::LayerNormConfig;
use burn::prelude::*;
use masklm::model::layer_norm::LayerNorm;

/// An odd width and a rank-3 input, as the embeddings' LayerNorm sees it.
const SHAPE: [usize; 3] = [3, 5, 37];
const EPS: f64 = 1e-12;

/// Seeded inputs on `device`: `x` [3, 5, 37] with a mean and a spread per row (so centring
/// matters), the weights `w` of the loss `Σ y·w` (a gradient that differs per element), γ, β [37].
fn inputs(seed: u64, device: &Device) -> ([Tensor<3>; 2], [Tensor<1>; 2]) {
    let n = SHAPE.iter().product();
    let t3 = |v: Vec<f32>, shape: [usize; 3]| {
        Tensor::<1>::from_floats(v.as_slice(), device).reshape(shape)
    };
    let x = t3(common::uniform(n, seed, -1.7, 1.7), SHAPE);
    let scale = t3(common::uniform(15, seed + 1, 0.5, 3.0), [3, 5, 1]);
    let shift = t3(common::uniform(15, seed + 2, -2.0, 2.0), [3, 5, 1]);
    let w = t3(common::uniform(n, seed + 3, -1.0, 1.0), SHAPE);
    let t1 = |v: Vec<f32>| Tensor::<1>::from_floats(v.as_slice(), device);
    (
        [x * scale + shift, w],
        [
            t1(common::uniform(37, seed + 4, 0.5, 1.5)),
            t1(common::uniform(37, seed + 5, -0.5, 0.5)),
        ],
    )
}

fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Ours on `device`: (y, dx, dγ, dβ) of the loss `Σ y·w`.
fn ours(seed: u64, device: &Device) -> [Vec<f32>; 4] {
    let ([x, w], [gamma, beta]) = inputs(seed, device);
    let ln = LayerNorm {
        gamma: Param::from_tensor(gamma),
        beta: Param::from_tensor(beta),
        epsilon: EPS,
    };
    let x = x.require_grad();
    let y = ln.forward(x.clone());
    let grads = (y.clone() * w).sum().backward();
    [
        vec(y),
        vec(x.grad(&grads).unwrap()),
        vec(ln.gamma.val().grad(&grads).unwrap()),
        vec(ln.beta.val().grad(&grads).unwrap()),
    ]
}

/// burn's `nn::LayerNorm`, differentiated by autodiff: the same four.
fn burns(seed: u64, device: &Device) -> [Vec<f32>; 4] {
    let ([x, w], [gamma, beta]) = inputs(seed, device);
    let mut ln = LayerNormConfig::new(37).with_epsilon(EPS).init(device);
    ln.gamma = Param::from_tensor(gamma);
    ln.beta = Some(Param::from_tensor(beta));
    let x = x.require_grad();
    let y = ln.forward(x.clone());
    let grads = (y.clone() * w).sum().backward();
    [
        vec(y),
        vec(x.grad(&grads).unwrap()),
        vec(ln.gamma.val().grad(&grads).unwrap()),
        vec(ln.beta.as_ref().unwrap().val().grad(&grads).unwrap()),
    ]
}

#[test]
fn the_forward_is_burns_layer_norm_to_the_bit_and_the_gradients_are_autodiffs() {
    let dev = Device::flex().autodiff();
    for seed in [1, 2, 3] {
        let [y, dx, dg, db] = ours(seed, &dev);
        let [y_ref, dx_ref, dg_ref, db_ref] = burns(seed, &dev);
        assert_eq!(y, y_ref, "forward, seed {seed}");
        // dβ sums dy = w over the rows in another order (autodiff one axis at a time); dγ and
        // dx are computed in another order than autodiff's chain of eleven operations: a few
        // f32 roundings of the terms, which reach the size of dy·γ (about 1) before they cancel.
        common::assert_close(&db, &db_ref, 1e-6, 1e-6, "dβ");
        common::assert_close(&dg, &dg_ref, 1e-5, 1e-5, "dγ");
        common::assert_close(&dx, &dx_ref, 1e-4, 1e-5, "dx");
        // Not a gradient of zeros: the loss weights every element differently.
        assert!(dx.iter().filter(|v| v.abs() > 1e-3).count() > dx.len() / 2);
    }
}

#[test]
fn without_autodiff_the_forward_is_burns() {
    let dev = Device::flex();
    let ([x, _], [gamma, beta]) = inputs(4, &dev);
    let ln = LayerNorm {
        gamma: Param::from_tensor(gamma.clone()),
        beta: Param::from_tensor(beta.clone()),
        epsilon: EPS,
    };
    let mut reference = LayerNormConfig::new(37).with_epsilon(EPS).init(&dev);
    reference.gamma = Param::from_tensor(gamma);
    reference.beta = Some(Param::from_tensor(beta));
    assert_eq!(vec(ln.forward(x.clone())), vec(reference.forward(x)));
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_the_operation_computes_what_flex_does() {
    let gpu = masklm::train::device_for(masklm::config::BackendName::Vulkan)
        .expect("a Vulkan adapter (mesa-vulkan-drivers)")
        .autodiff();
    let cpu = ours(5, &Device::flex().autodiff());
    let gpu = ours(5, &gpu);
    // Reductions in another order (a shader's tree against flex's loop).
    for (i, what) in ["y", "dx", "dγ", "dβ"].into_iter().enumerate() {
        common::assert_close(&cpu[i], &gpu[i], 1e-4, 1e-5, what);
    }
}
