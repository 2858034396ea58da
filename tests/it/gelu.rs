//! masklm's GELU (`model::gelu`) on every backend: the erf form forward and its exact derivative
//! backward, as HF's `gelu` and PyTorch's autograd compute them. burn 0.22.1's own
//! `gelu_backward` is, by default (CubeCL's backends, ndarray), the derivative of GELU's tanh
//! approximation, up to 8.7e-4 away; flex's own and masklm's are exact. Under mixed precision
//! (`gelu_to`) the result is rounded to f16 and the gradient is GELU' at x rounded to f16.

#[cfg(feature = "vulkan")]
use crate::common;
use burn::prelude::*;
use burn::tensor::DType;
use masklm::model::gelu::{gelu, gelu_to};

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

/// (y, dx) of `Σ gelu_to(x, f16)·w` on `device`, x over [-6, 6], and the reference: GELU of x
/// rounded to f16, and GELU' at x rounded to f16 times w (the f16 result's gradient), in f64.
fn gelu_to_f16(device: &Device) -> [(Vec<f32>, Vec<f64>); 2] {
    let x: Vec<f32> = (-6000..=6000).map(|i| i as f32 * 1e-3 + 1e-4).collect();
    let w: Vec<f32> = (0..x.len()).map(|i| ((i % 7) as f32 - 3.0) / 3.0).collect();
    let xt = Tensor::<1>::from_floats(x.as_slice(), device).require_grad();
    let wt = Tensor::<1>::from_floats(w.as_slice(), device).cast(DType::F16);
    let y = gelu_to(xt.clone(), DType::F16);
    assert_eq!(y.dtype(), DType::F16);
    let dx = xt.grad(&(y.clone() * wt).sum().backward()).unwrap();
    assert_eq!(dx.dtype(), DType::F32, "the gradient in x's dtype");
    let vec = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    // f32 values rounded to f16 and back (burn's conversion on flex).
    let f16 = |v: Vec<f32>| {
        let t = Tensor::<1>::from_floats(v.as_slice(), &Device::flex());
        vec(t.cast(DType::F16).cast(DType::F32))
    };
    let y_ref = f16(x.iter().map(|&x| gelu_ref(x as f64) as f32).collect());
    let (x16, w16) = (f16(x.clone()), f16(w));
    let dx_ref = x16
        .iter()
        .zip(&w16)
        .map(|(&x, &w)| gelu_grad_ref(x as f64) * w as f64);
    let y_ref = y_ref.into_iter().map(f64::from).collect();
    [(vec(y), y_ref), (vec(dx), dx_ref.collect())]
}

/// The mixed-precision GELU on `device`: the f32 GELU rounded to f16 forward, and backward the
/// exact GELU' at x as kept in f16 (not at x: the difference is up to |x·GELU''(x)|·2⁻¹¹).
fn assert_gelu_to_f16(device: &Device) {
    let [(y, y_ref), (dx, dx_ref)] = gelu_to_f16(device);
    for (i, (y, r)) in y.iter().zip(&y_ref).enumerate() {
        // One f16 ulp (2⁻¹⁰ relative) where the f32 GELU and f64's straddle a rounding boundary,
        // and the f32 GELU's own error (relative to 1 + |x|, as above) in the tails, where the
        // result is below f16's precision.
        let tol = r.abs() / 1024.0 + TOLERANCE * 7.0;
        assert!((*y as f64 - r).abs() <= tol, "y[{i}]: {y} vs {r}");
    }
    for (i, (d, r)) in dx.iter().zip(&dx_ref).enumerate() {
        assert!((*d as f64 - r).abs() < TOLERANCE, "dx[{i}]: {d} vs {r}");
    }
}

#[test]
fn on_flex_gelu_to_f16_rounds_the_result_and_the_kept_input() {
    assert_gelu_to_f16(&Device::flex().autodiff());
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_gelu_to_f16_rounds_the_result_and_the_kept_input() {
    assert_gelu_to_f16(&common::vulkan().autodiff());
}
