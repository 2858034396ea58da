//! Attention's head layout as operations (`masklm::model::heads`): `split_heads` is the view
//! `reshape([B, S, nh, dh]).swap_dims(1, 2)` and `merge_heads` its inverse, each the other's
//! gradient, in any dtype, on flex and (copied into the contiguous layout) on Vulkan.

use crate::common;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use masklm::model::heads::{merge_heads, split_heads};

// B, S, nh, dh: odd sizes, so a transposed axis fails loudly.
const B: usize = 3;
const S: usize = 5;
const NH: usize = 4;
const DH: usize = 7;

fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Rows [B·S, H] of distinct values and loss weights [B, nh, S, dh] for `Σ split(x) · w`.
fn inputs(device: &Device) -> [Tensor<2>; 2] {
    let n = B * S * NH * DH;
    let x = Tensor::<1>::from_floats(common::uniform(n, 1, -2.0, 2.0).as_slice(), device);
    let w = Tensor::<1>::from_floats(common::uniform(n, 2, -1.0, 1.0).as_slice(), device);
    [x.reshape([B * S, NH * DH]), w.reshape([B * S, NH * DH])]
}

/// (split(x), merge(split(x)), dx of `Σ split(x) · w`, dy of `Σ merge(y) · x` at y = split(x))
/// on `device`, with x in `dtype`.
fn run(device: &Device, dtype: FloatDType) -> [Vec<f32>; 4] {
    let [x, w] = inputs(device);
    let x = x.cast(dtype).detach().require_grad();
    let heads = split_heads(x.clone(), B, NH);
    assert_eq!(heads.dims(), [B, NH, S, DH]);
    assert_eq!(heads.dtype(), DType::from(dtype));
    let w_heads = w
        .clone()
        .reshape([B, S, NH, DH])
        .swap_dims(1, 2)
        .cast(dtype);
    let dx = x.grad(&(heads.clone() * w_heads).sum().backward()).unwrap();

    let y = heads.clone().detach().require_grad();
    let rows = merge_heads(y.clone());
    assert_eq!(rows.dims(), [B * S, NH * DH]);
    let dy = y
        .grad(&(rows.clone() * w.cast(dtype)).sum().backward())
        .unwrap();
    [vec(heads), vec(rows), vec(dx), vec(dy)]
}

#[test]
fn split_is_the_view_merge_its_inverse_and_each_the_others_gradient() {
    let device = Device::flex().autodiff();
    let [x, w] = inputs(&device);
    let view = |t: Tensor<2>| vec(t.reshape([B, S, NH, DH]).swap_dims(1, 2));
    let [heads, rows, dx, dy] = run(&device, FloatDType::F32);
    assert_eq!(heads, view(x.clone()));
    assert_eq!(rows, vec(x), "merge(split(x)) = x");
    // Σ split(x)·w' has gradient w (in rows) for w' the heads view of w; Σ merge(y)·w has
    // gradient w's heads view.
    assert_eq!(dx, vec(w.clone()));
    assert_eq!(dy, view(w));
}

#[test]
fn merge_takes_any_strides() {
    // A key gradient arrives as the transposed view of [B, nh, dh, S] (autodiff's dKᵀ).
    assert_transposed_input_merges(&Device::flex());
}

/// `merge_heads` of the [B, nh, S, dh] view of a [B, nh, dh, S] tensor.
fn assert_transposed_input_merges(device: &Device) {
    let n = B * NH * DH * S;
    let t = Tensor::<1>::from_floats(common::uniform(n, 3, -1.0, 1.0).as_slice(), device)
        .reshape([B, NH, DH, S]);
    let expected = vec(t
        .clone()
        .swap_dims(2, 3)
        .swap_dims(1, 2)
        .reshape([B * S, NH * DH]));
    assert_eq!(vec(merge_heads(t.swap_dims(2, 3))), expected);
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_both_move_the_same_values_as_on_flex_in_f32_and_f16() {
    for dtype in [FloatDType::F32, FloatDType::F16] {
        let cpu = run(&Device::flex().autodiff(), dtype);
        let gpu = run(&common::vulkan().autodiff(), dtype);
        // Values moved, not computed: equal to the bit.
        assert_eq!(cpu, gpu, "{dtype:?}");
    }
    assert_transposed_input_merges(&common::vulkan());
}
