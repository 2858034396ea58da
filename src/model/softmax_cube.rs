//! [`AttentionSoftmaxOps`] forward and backward on CubeCL devices: one cube per row of keys (a
//! head's query), the row's maximum and sums in f32 shared memory. Written here because the
//! default bodies are 7 and 5 tensor operations over [B, heads, S, S] that burn's fusion runs as
//! several kernels (its reductions are kernels of their own, each another pass over the
//! scores); each is one operation and one pass for fusion here (`softmax.rs`).

use crate::cube_reduce::{contiguous_in, cube_max, cube_sum, empty_like, row_cubes};
use crate::model::softmax::AttentionSoftmaxOps;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

/// Row `CUBE_POS` of `scores` [R, S] (cubes past the last row do nothing): with
/// z = scores·scale + bias, p = exp(z − max z) / Σ exp(z − max z), computed in f32 and written
/// in the bias's dtype `P`. `bias` [B, S] is the padding bias of the row's batch element: R / B
/// consecutive rows (heads × queries) share it.
#[cube(launch_unchecked)]
fn forward_kernel<F: Float, P: Float>(
    scores: &Tensor<F>,
    bias: &Tensor<P>,
    p: &mut Tensor<P>,
    scale: f32,
    #[comptime] units: usize,
    #[define(F, P)] _dtypes: [ElemType; 2],
) {
    let s = scores.shape(scores.rank() - 1);
    let row = CUBE_POS;
    if row * s >= scores.len() {
        terminate!();
    }
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
        p[start + j] = P::cast_from((z - max).exp() / sum);
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

/// Units per cube for rows of `s` keys: a unit per key up to 256 (BERT's 128 and 512 keys: 128
/// and 256 units), at least a warp's 32; a power of two for the cube's tree sums.
fn units(s: usize) -> usize {
    s.next_power_of_two().clamp(32, 256)
}

impl AttentionSoftmaxOps for CubeBackend {
    fn attention_softmax(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
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
        let units = units(s);
        // SAFETY: scores and p hold R × S contiguous elements, bias B × S (checked above); cube r
        // reads row r of scores and row r / (R / B) of bias, and writes row r of p only.
        unsafe {
            forward_kernel::launch_unchecked(
                &scores.client,
                row_cubes(shape.num_elements() / s),
                CubeDim::new_1d(units as u32),
                scores.clone().into_tensor_arg(),
                bias.into_tensor_arg(),
                p.clone().into_tensor_arg(),
                scale as f32,
                units,
                [dtype_to_storage_type(dtype), dtype_to_storage_type(p_dtype)],
            );
        }
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
}
