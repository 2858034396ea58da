//! [`AttentionSoftmaxOps`] forward and backward on CubeCL devices: one cube per row of keys (a
//! head's query), the row's maximum and sums in f32 shared memory. Written here because the
//! default bodies are 7 and 5 tensor operations over [B, heads, S, S] that burn's fusion runs as
//! several kernels (its reductions are kernels of their own, each another pass over the
//! scores); each is one operation and one pass for fusion here (`softmax.rs`). For attention's
//! context in training, the forward kernel writes the dropped-out probabilities and each row's
//! max and sum instead of p, and a third kernel recomputes p from the scores in backward.

use crate::cube_reduce::{contiguous_in, cube_max, cube_sum, empty_like, row_cubes};
use crate::model::dropout_cube::{Mask, mask_args, mask_at};
use crate::model::layer_norm::per_row;
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

/// z_j = scores_j·scale + bias_j of the row starting at `start`, in f32.
#[cube]
fn z_at<F: Float, P: Float>(
    scores: &Tensor<F>,
    bias: &Tensor<P>,
    start: usize,
    bias_start: usize,
    j: usize,
    scale: f32,
) -> f32 {
    f32::cast_from(scores[start + j]) * scale + f32::cast_from(bias[bias_start + j])
}

/// p_j = exp(z_j − max) / sum of the row starting at `start`, rounded to `P` as the forward
/// writes it, in f32.
#[cube]
#[allow(clippy::too_many_arguments)]
fn p_at<F: Float, P: Float>(
    scores: &Tensor<F>,
    bias: &Tensor<P>,
    start: usize,
    bias_start: usize,
    j: usize,
    scale: f32,
    max: f32,
    sum: f32,
) -> f32 {
    let z = z_at(scores, bias, start, bias_start, j, scale);
    f32::cast_from(P::cast_from((z - max).exp() / sum))
}

/// `v` times the dropout mask at element `i` when `masked`, else `v`.
#[cube]
fn masked_at(v: f32, mask: &Mask, i: usize, #[comptime] masked: bool) -> f32 {
    let mut v = v;
    if masked {
        v *= mask_at(mask, i);
    }
    v
}

/// Row `CUBE_POS` of `scores` [R, S] (cubes past the last row do nothing): with
/// z = scores·scale + bias, p = exp(z − max z) / Σ exp(z − max z), computed in f32. `bias`
/// [B, S] is the padding bias of the row's batch element: R / B consecutive rows (heads ×
/// queries) share it. Without `dropped`, writes p in the bias's dtype `P` (`pd`, `max`, `sum`
/// unused); with it, writes pd = p ⊙ mask in `O` (the mask only when `masked`, applied to p in
/// `P` as GPU dropout reads it) and the row's max and sum in `P` (`p` unused).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel<F: Float, P: Float, O: Float>(
    scores: &Tensor<F>,
    bias: &Tensor<P>,
    p: &mut Tensor<P>,
    pd: &mut Tensor<O>,
    max_out: &mut Tensor<P>,
    sum_out: &mut Tensor<P>,
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
        max = f32::max(max, z_at(scores, bias, start, bias_start, j, scale));
    }
    let max = cube_max(&mut shared, max);
    let mut sum = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        sum += (z_at(scores, bias, start, bias_start, j, scale) - max).exp();
    }
    let sum = cube_sum(&mut shared, sum);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        let pj = p_at(scores, bias, start, bias_start, j, scale, max, sum);
        if dropped {
            pd[start + j] = O::cast_from(masked_at(pj, &mask, start + j, masked));
        } else {
            p[start + j] = P::cast_from(pj);
        }
    }
    if dropped && UNIT_POS == 0 {
        max_out[row] = P::cast_from(max);
        sum_out[row] = P::cast_from(sum);
    }
}

/// Row `CUBE_POS` of dscores (cubes past the last row do nothing):
/// dscores = scale · p ⊙ (dp − Σ_keys dp ⊙ p), computed in f32 and written in the scores'
/// dtype `F`.
#[cube(launch_unchecked)]
fn backward_kernel<F: Float, P: Float>(
    dp: &Tensor<P>,
    p: &Tensor<P>,
    dscores: &mut Tensor<F>,
    scale: f32,
    #[comptime] units: usize,
    #[define(F, P)] _dtypes: [ElemType; 2],
) {
    let s = p.shape(p.rank() - 1);
    let row = CUBE_POS;
    if row * s >= p.len() {
        terminate!();
    }
    let start = row * s;
    let mut shared = Shared::<[f32]>::new_slice(units);
    let mut dot = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        dot += f32::cast_from(dp[start + j]) * f32::cast_from(p[start + j]);
    }
    let dot = cube_sum(&mut shared, dot);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        let pj = f32::cast_from(p[start + j]);
        dscores[start + j] = F::cast_from(scale * pj * (f32::cast_from(dp[start + j]) - dot));
    }
}

/// Row `CUBE_POS` of the dropped-out softmax's backward (cubes past the last row do nothing),
/// from the forward's scores and its row's `max` and `sum`: p = exp(z − max) / sum as the
/// forward computed it, pd = p ⊙ mask written in `O` (dpd's dtype) as the forward wrote it, and
/// with dp = dpd ⊙ mask, dscores = scale · p ⊙ (dp − Σ_keys dp ⊙ p) written in the scores'
/// dtype `F`. The mask only when `masked`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn recompute_backward_kernel<F: Float, P: Float, O: Float>(
    scores: &Tensor<F>,
    bias: &Tensor<P>,
    max: &Tensor<P>,
    sum: &Tensor<P>,
    dpd: &Tensor<O>,
    dscores: &mut Tensor<F>,
    pd: &mut Tensor<O>,
    scale: f32,
    key0: u32,
    key1: u32,
    threshold: u32,
    mask_scale: f32,
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
    let (row_max, row_sum) = (f32::cast_from(max[row]), f32::cast_from(sum[row]));
    let mut shared = Shared::<[f32]>::new_slice(units);
    let mut dot = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        let pj = p_at(scores, bias, start, bias_start, j, scale, row_max, row_sum);
        dot += masked_at(f32::cast_from(dpd[start + j]), &mask, start + j, masked) * pj;
    }
    let dot = cube_sum(&mut shared, dot);
    for j in range_stepped(UNIT_POS as usize, s, units) {
        let pj = p_at(scores, bias, start, bias_start, j, scale, row_max, row_sum);
        let dp = masked_at(f32::cast_from(dpd[start + j]), &mask, start + j, masked);
        pd[start + j] = O::cast_from(masked_at(pj, &mask, start + j, masked));
        dscores[start + j] = F::cast_from(scale * pj * (dp - dot));
    }
}

/// Units per cube for rows of `s` keys: a unit per key up to 256 (BERT's 128 and 512 keys: 128
/// and 256 units), at least a warp's 32; a power of two for the cube's tree sums.
fn units(s: usize) -> usize {
    s.next_power_of_two().clamp(32, 256)
}

/// The scores' kernel arguments checked: [B, heads, S, S] scores and a [B, 1, 1, S] bias, both
/// made contiguous.
fn checked(scores: CubeTensor, bias: CubeTensor) -> (CubeTensor, CubeTensor) {
    let scores = into_contiguous(scores);
    let shape = scores.meta.shape().clone();
    let (rank, bias_shape) = (shape.num_dims(), bias.meta.shape().clone());
    let s = shape[rank - 1];
    assert!(
        rank == 4 && bias_shape.dims::<4>() == [shape[0], 1, 1, s],
        "attention_softmax on a CubeCL device takes scores [B, heads, S, S] and a padding \
         bias [B, 1, 1, S], got {shape:?} and {bias_shape:?}"
    );
    (scores, into_contiguous(bias))
}

/// A one-element stand-in for a kernel argument that the kernel's mode does not touch.
fn unused(like: &CubeTensor, dtype: DType) -> CubeTensor {
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::new([1]),
        dtype,
    )
}

/// The forward kernel: p alone, or with `dropped` = Some((seed, prob, dtype)) (pd in `dtype`,
/// max, sum).
fn forward(
    scores: CubeTensor,
    bias: CubeTensor,
    scale: f64,
    dropped: Option<(u64, f64, DType)>,
) -> [CubeTensor; 3] {
    let (dtype, p_dtype) = (scores.dtype, bias.dtype);
    let (scores, bias) = checked(scores, bias);
    let shape = scores.meta.shape().clone();
    let s = shape[shape.num_dims() - 1];
    let (seed, prob, pd_dtype) = dropped.unwrap_or((0, 0.0, p_dtype));
    let (key0, key1, threshold, mask_scale, masked) = mask_args(seed, prob);
    let [p, pd, max, sum] = if dropped.is_some() {
        let stats = || empty_like(&bias, per_row(&shape));
        let pd = empty_device_dtype(
            bias.client.clone(),
            bias.device.clone(),
            shape.clone(),
            pd_dtype,
        );
        [unused(&bias, p_dtype), pd, stats(), stats()]
    } else {
        let none = || unused(&bias, p_dtype);
        [empty_like(&bias, shape.clone()), none(), none(), none()]
    };
    let units = units(s);
    // SAFETY: scores and the written p or pd hold R × S contiguous elements, max and sum R,
    // bias B × S (checked above); cube r reads row r of scores and row r / (R / B) of bias, and
    // writes row r of p or pd (and max[r], sum[r]) only.
    unsafe {
        forward_kernel::launch_unchecked(
            &scores.client,
            row_cubes(shape.num_elements() / s),
            CubeDim::new_1d(units as u32),
            scores.clone().into_tensor_arg(),
            bias.into_tensor_arg(),
            p.clone().into_tensor_arg(),
            pd.clone().into_tensor_arg(),
            max.clone().into_tensor_arg(),
            sum.clone().into_tensor_arg(),
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
    if dropped.is_some() {
        [pd, max, sum]
    } else {
        [p, max, sum]
    }
}

impl AttentionSoftmaxOps for CubeBackend {
    fn attention_softmax(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let [p, ..] = forward(scores, bias, scale, None);
        p
    }

    fn attention_softmax_backward(
        dp: FloatTensor<Self>,
        p: FloatTensor<Self>,
        scale: f64,
        scores_dtype: DType,
    ) -> FloatTensor<Self> {
        let p_dtype = dp.dtype;
        let dp = into_contiguous(dp);
        let p = contiguous_in(p, p_dtype);
        let shape = dp.meta.shape().clone();
        let s = shape[shape.num_dims() - 1];
        let dscores = empty_device_dtype(
            dp.client.clone(),
            dp.device.clone(),
            shape.clone(),
            scores_dtype,
        );
        let units = units(s);
        // SAFETY: dp, p and dscores hold R × S contiguous elements; cube r reads row r of dp and
        // p and writes row r of dscores only.
        unsafe {
            backward_kernel::launch_unchecked(
                &dp.client,
                row_cubes(shape.num_elements() / s),
                CubeDim::new_1d(units as u32),
                dp.clone().into_tensor_arg(),
                p.into_tensor_arg(),
                dscores.clone().into_tensor_arg(),
                scale as f32,
                units,
                [
                    dtype_to_storage_type(scores_dtype),
                    dtype_to_storage_type(p_dtype),
                ],
            );
        }
        dscores
    }

    fn attention_probs_forward(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        seed: u64,
        prob: f64,
        dtype: DType,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [pd, max, sum] = forward(scores, bias, scale, Some((seed, prob, dtype)));
        (pd, max, sum)
    }

    fn attention_probs_backward(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        max: FloatTensor<Self>,
        sum: FloatTensor<Self>,
        dpd: FloatTensor<Self>,
        scale: f64,
        seed: u64,
        prob: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dtype, p_dtype, pd_dtype) = (scores.dtype, bias.dtype, dpd.dtype);
        let (scores, bias) = checked(scores, bias);
        let (max, sum) = (contiguous_in(max, p_dtype), contiguous_in(sum, p_dtype));
        let dpd = into_contiguous(dpd);
        let shape = scores.meta.shape().clone();
        let s = shape[shape.num_dims() - 1];
        let dscores = empty_device_dtype(
            scores.client.clone(),
            scores.device.clone(),
            shape.clone(),
            dtype,
        );
        let pd = empty_device_dtype(
            dpd.client.clone(),
            dpd.device.clone(),
            shape.clone(),
            pd_dtype,
        );
        let (key0, key1, threshold, mask_scale, masked) = mask_args(seed, prob);
        let units = units(s);
        // SAFETY: scores, dpd, dscores and pd hold R × S contiguous elements, max and sum R, bias
        // B × S (checked); cube r reads row r of scores and dpd, max[r], sum[r] and row
        // r / (R / B) of bias, and writes row r of dscores and pd only.
        unsafe {
            recompute_backward_kernel::launch_unchecked(
                &scores.client,
                row_cubes(shape.num_elements() / s),
                CubeDim::new_1d(units as u32),
                scores.clone().into_tensor_arg(),
                bias.into_tensor_arg(),
                max.into_tensor_arg(),
                sum.into_tensor_arg(),
                dpd.into_tensor_arg(),
                dscores.clone().into_tensor_arg(),
                pd.clone().into_tensor_arg(),
                scale as f32,
                key0,
                key1,
                threshold,
                mask_scale,
                masked,
                units,
                [
                    dtype_to_storage_type(dtype),
                    dtype_to_storage_type(p_dtype),
                    dtype_to_storage_type(pd_dtype),
                ],
            );
        }
        (dscores, pd)
    }
}
