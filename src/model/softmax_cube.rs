//! [`AttentionSoftmaxOps`] forward and backward on CubeCL devices: one cube per row of keys (a
//! head's query), the row's maximum and sums in f32 shared memory. Written here because the
//! default bodies are 7 and 5 tensor operations over [B, heads, S, S] that burn's fusion runs as
//! several kernels (its reductions are kernels of their own, each another pass over the
//! scores); each is one operation and one pass for fusion here (`softmax.rs`). The same kernels
//! serve the softmax with attention's dropout: the forward also writes the dropped-out
//! probabilities, the backward masks the gradient as it loads it.

use crate::cube_reduce::{cube_max, cube_sum, empty_like, row_cubes};
use crate::model::dropout_cube::{Mask, mask_args, mask_at};
use crate::model::softmax::AttentionSoftmaxOps;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::prelude::Shape;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Row `CUBE_POS` of `scores` [R, S] (cubes past the last row do nothing): with
/// z = scores·scale + bias, p = exp(z − max z) / Σ exp(z − max z), computed in f32 and written
/// in the bias's dtype `P`. `bias` [B, S] is the padding bias of the row's batch element: R / B
/// consecutive rows (heads × queries) share it. With `dropped`, also pd = p ⊙ mask (the mask
/// only when `masked`) in `O`, from p in f32 as GPU dropout reads it (`pd` is unused
/// otherwise).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel<F: Float, P: Float, O: Float>(
    scores: &Tensor<F>,
    bias: &Tensor<P>,
    p: &mut Tensor<P>,
    pd: &mut Tensor<O>,
    scale: f32,
    key0: u32,
    key1: u32,
    threshold: u32,
    mask_scale: f32,
    #[comptime] dropped: bool,
    #[comptime] masked: bool,
    #[comptime] units: usize,
    #[define(F, P, O)] _dtypes: [ElemType; 3],
) {
    let s = scores.shape(scores.rank() - 1);
    let row = CUBE_POS;
    if row * s >= scores.len() {
        terminate!();
    }
    let mask = Mask {
        key0,
        key1,
        threshold,
        scale: mask_scale,
    };
    let start = row * s;
    let bias_start = row / (scores.len() / bias.len()) * s;
    let mut shared = Shared::<[f32]>::new_slice(units);
    // f32::MIN, not -inf: a unit without keys (S < units) must leave the maximum as it is, and a
    // fully padded row's z are all f32::MIN (its scores vanish beside the bias), so that row
    // comes out uniform, as burn's softmax gives it.
    let mut max = f32::new(f32::MIN);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        let z = f32::cast_from(scores[start + j]) * scale + f32::cast_from(bias[bias_start + j]);
        max = f32::max(max, z);
    }
    let max = cube_max(&mut shared, max);
    let mut sum = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        let z = f32::cast_from(scores[start + j]) * scale + f32::cast_from(bias[bias_start + j]);
        sum += (z - max).exp();
    }
    let sum = cube_sum(&mut shared, sum);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        let z = f32::cast_from(scores[start + j]) * scale + f32::cast_from(bias[bias_start + j]);
        let pj = P::cast_from((z - max).exp() / sum);
        p[start + j] = pj;
        if dropped {
            let mut d = f32::cast_from(pj);
            if masked {
                d *= mask_at(&mask, start + j);
            }
            pd[start + j] = O::cast_from(d);
        }
    }
}

/// Row `CUBE_POS` of dscores (cubes past the last row do nothing): with dp = `dy` (times the
/// dropout mask when `masked`, as the forward's pd took it) in f32,
/// dscores = scale · p ⊙ (dp − Σ_keys dp ⊙ p), written in the scores' dtype `F`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn backward_kernel<F: Float, P: Float, D: Float>(
    dy: &Tensor<D>,
    p: &Tensor<P>,
    dscores: &mut Tensor<F>,
    scale: f32,
    key0: u32,
    key1: u32,
    threshold: u32,
    mask_scale: f32,
    #[comptime] masked: bool,
    #[comptime] units: usize,
    #[define(F, P, D)] _dtypes: [ElemType; 3],
) {
    let s = p.shape(p.rank() - 1);
    let row = CUBE_POS;
    if row * s >= p.len() {
        terminate!();
    }
    let mask = Mask {
        key0,
        key1,
        threshold,
        scale: mask_scale,
    };
    let start = row * s;
    let mut shared = Shared::<[f32]>::new_slice(units);
    let mut dot = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        let dp = gradient(dy, start + j, &mask, masked);
        dot += dp * f32::cast_from(p[start + j]);
    }
    let dot = cube_sum(&mut shared, dot);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        let pj = f32::cast_from(p[start + j]);
        let dp = gradient(dy, start + j, &mask, masked);
        dscores[start + j] = F::cast_from(scale * pj * (dp - dot));
    }
}

/// p's gradient at element `i` in f32: `dy[i]`, times the dropout mask when `masked`.
#[cube]
fn gradient<D: Float>(dy: &Tensor<D>, i: usize, mask: &Mask, #[comptime] masked: bool) -> f32 {
    let mut dp = f32::cast_from(dy[i]);
    if masked {
        dp *= mask_at(mask, i);
    }
    dp
}

/// Units per cube for rows of `s` keys: a unit per key up to 256 (BERT's 128 and 512 keys: 128
/// and 256 units), at least a warp's 32; a power of two for the cube's tree sums.
fn units(s: usize) -> usize {
    s.next_power_of_two().clamp(32, 256)
}

/// The forward kernel: p, and with `dropped` = Some((seed, prob, dtype)) pd in `dtype`.
fn forward(
    scores: CubeTensor,
    bias: CubeTensor,
    scale: f64,
    dropped: Option<(u64, f64, DType)>,
) -> (CubeTensor, Option<CubeTensor>) {
    let (dtype, p_dtype) = (scores.dtype, bias.dtype);
    let scores = into_contiguous(scores);
    let shape = scores.meta.shape().clone();
    let (rank, bias_shape) = (shape.num_dims(), bias.meta.shape().clone());
    let s = shape[rank - 1];
    assert!(
        rank == 4 && bias_shape.dims::<4>() == [shape[0], 1, 1, s],
        "attention_softmax on a CubeCL device takes scores [B, heads, S, S] and a padding \
         bias [B, 1, 1, S], got {shape:?} and {bias_shape:?}"
    );
    let bias = into_contiguous(bias);
    let p = empty_like(&bias, shape.clone());
    let (seed, prob, pd_dtype) = dropped.unwrap_or((0, 0.0, p_dtype));
    let (key0, key1, threshold, mask_scale, masked) = mask_args(seed, prob);
    // Without dropout the kernel writes no pd: one element stands in for the argument.
    let pd_shape = if dropped.is_some() {
        shape.clone()
    } else {
        Shape::new([1])
    };
    let pd = empty_device_dtype(bias.client.clone(), bias.device.clone(), pd_shape, pd_dtype);
    let units = units(s);
    // SAFETY: scores, p (and pd with dropout) hold R × S contiguous elements, bias B × S
    // (checked above); cube r reads row r of scores and row r / (R / B) of bias, and writes row
    // r of p (and pd) only.
    unsafe {
        forward_kernel::launch_unchecked(
            &scores.client,
            row_cubes(shape.num_elements() / s),
            CubeDim::new_1d(units as u32),
            scores.clone().into_tensor_arg(),
            bias.into_tensor_arg(),
            p.clone().into_tensor_arg(),
            pd.clone().into_tensor_arg(),
            scale as f32,
            key0,
            key1,
            threshold,
            mask_scale,
            dropped.is_some(),
            masked,
            units,
            [
                dtype_to_storage_type(dtype),
                dtype_to_storage_type(p_dtype),
                dtype_to_storage_type(pd_dtype),
            ],
        );
    }
    (p, dropped.map(|_| pd))
}

/// The backward kernel: dscores in `scores_dtype` from `dy` (dp, or pd's gradient under the
/// dropout of (`seed`, `prob`)) and p.
fn backward(
    dy: CubeTensor,
    p: CubeTensor,
    scale: f64,
    scores_dtype: DType,
    (seed, prob): (u64, f64),
) -> CubeTensor {
    let (dy_dtype, p_dtype) = (dy.dtype, p.dtype);
    let (dy, p) = (into_contiguous(dy), into_contiguous(p));
    let shape = dy.meta.shape().clone();
    let s = shape[shape.num_dims() - 1];
    let dscores = empty_device_dtype(
        dy.client.clone(),
        dy.device.clone(),
        shape.clone(),
        scores_dtype,
    );
    let (key0, key1, threshold, mask_scale, masked) = mask_args(seed, prob);
    let units = units(s);
    // SAFETY: dy, p and dscores hold R × S contiguous elements; cube r reads row r of dy and p
    // and writes row r of dscores only.
    unsafe {
        backward_kernel::launch_unchecked(
            &dy.client,
            row_cubes(shape.num_elements() / s),
            CubeDim::new_1d(units as u32),
            dy.clone().into_tensor_arg(),
            p.into_tensor_arg(),
            dscores.clone().into_tensor_arg(),
            scale as f32,
            key0,
            key1,
            threshold,
            mask_scale,
            masked,
            units,
            [
                dtype_to_storage_type(scores_dtype),
                dtype_to_storage_type(p_dtype),
                dtype_to_storage_type(dy_dtype),
            ],
        );
    }
    dscores
}

impl AttentionSoftmaxOps for CubeBackend {
    fn attention_softmax(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        forward(scores, bias, scale, None).0
    }

    fn attention_softmax_backward(
        dp: FloatTensor<Self>,
        p: FloatTensor<Self>,
        scale: f64,
        scores_dtype: DType,
    ) -> FloatTensor<Self> {
        backward(dp, p, scale, scores_dtype, (0, 0.0))
    }

    fn attention_softmax_dropout_forward(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        seed: u64,
        prob: f64,
        dtype: DType,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (p, pd) = forward(scores, bias, scale, Some((seed, prob, dtype)));
        (p, pd.expect("the kernel wrote pd"))
    }

    fn attention_softmax_dropout_backward(
        dpd: FloatTensor<Self>,
        p: FloatTensor<Self>,
        scale: f64,
        scores_dtype: DType,
        seed: u64,
        prob: f64,
    ) -> FloatTensor<Self> {
        backward(dpd, p, scale, scores_dtype, (seed, prob))
    }
}
