//! masklm's GELU (`model::gelu`) on every backend: the erf form forward and its exact derivative
//! backward, as HF's `gelu` and PyTorch's autograd compute them. burn 0.22.1's own
//! `gelu_backward` is, by default (CubeCL's backends, ndarray), the derivative of GELU's tanh
//! approximation, up to 8.7e-4 away; flex's own and masklm's are exact.

#[cfg(feature = "vulkan")]
use crate::common;
use burn::prelude::*;
use masklm::model::gelu::gelu;

fn gelu_ref(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

fn gelu_grad_ref(x: f64) -> f64 {
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)) + x * pdf
}

/// The worst errors of GELU and of its gradient on `device` over [-6, 6] (step 1e-3), relative
/// to 1 + |x|, against f64.
fn worst_errors(device: &Device) -> (f64, f64) {
    let x: Vec<f32> = (-6000..=6000).map(|i| i as f32 * 1e-3).collect();
    let n = x.len();
    let xt = Tensor::<1>::from_floats(x.as_slice(), device).require_grad();
    let y = gelu(xt.clone());
    let dx = xt.grad(&y.clone().sum().backward()).unwrap();
    let y = y.into_data().try_to_vec::<f32>().unwrap();
    let dx = dx.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!((y.len(), dx.len()), (n, n));
    let (mut worst_y, mut worst_dx) = (0.0f64, 0.0f64);
    for ((&x, &y), &dx) in x.iter().zip(&y).zip(&dx) {
        let (x, scale) = (x as f64, 1.0 + (x as f64).abs());
        worst_y = worst_y.max((y as f64 - gelu_ref(x)).abs() / scale);
        worst_dx = worst_dx.max((dx as f64 - gelu_grad_ref(x)).abs() / scale);
    }
    (worst_y, worst_dx)
}

/// f32 rounding of erf, exp and a few products: a few 1e-7; the tanh form's derivative is
/// 8.7e-4 off at x ≈ ±2 (2.9e-4 relative to 1 + |x|).
const TOLERANCE: f64 = 2e-6;

/// GELU and its gradient on `device` are the erf forms within [`TOLERANCE`].
fn assert_erf_forms(device: &Device) {
    let (y, dx) = worst_errors(device);
    assert!(
        y < TOLERANCE && dx < TOLERANCE,
        "GELU {y:e}, gradient {dx:e}"
    );
}

#[test]
fn on_flex_gelu_and_its_gradient_are_the_erf_forms() {
    assert_erf_forms(&Device::flex().autodiff());
}

#[cfg(feature = "ndarray")]
#[test]
#[allow(deprecated)]
fn on_ndarray_gelu_and_its_gradient_are_the_erf_forms() {
    assert_erf_forms(&Device::ndarray().autodiff());
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_gelu_and_its_gradient_are_the_erf_forms() {
    assert_erf_forms(&common::vulkan().autodiff());
}
