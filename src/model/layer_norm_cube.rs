//! [`LayerNormOps`] forward and backward on CubeCL devices: one cube per row, the row's sums in
//! f32 shared memory. Written here because the default bodies are 10 and 14 tensor operations
//! that burn's fusion registers one by one and runs as several kernels (its reductions are
//! kernels of their own); each is one operation for fusion here (`layer_norm.rs`). The same two
//! kernels serve the fused `LayerNorm(dropout(h) + residual)`, whose rows they compute as they
//! load them and whose second gradient (h's, through the mask) the backward writes beside dx.

use crate::cube_reduce::{contiguous_in, cube_sum, empty_like, row_cubes};
use crate::model::dropout_cube::{Mask, mask_args, mask_at};
use crate::model::layer_norm::{LayerNormOps, per_row};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::prelude::Shape;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Units per cube: one cube normalises one row, each unit a stride of its elements.
const UNITS: usize = 256;

/// Element `i` of the rows LayerNorm normalises, in f32: `x[i]`, or for the fused residual
/// LayerNorm `x[i] · mask(i) + residual[i]` (x then the dense layer's output h; the mask only
/// when `masked`).
#[cube]
fn value<F: Float>(
    x: &Tensor<F>,
    residual: &Tensor<F>,
    i: usize,
    mask: &Mask,
    #[comptime] masked: bool,
    #[comptime] with_residual: bool,
) -> f32 {
    let mut v = f32::cast_from(x[i]);
    if masked {
        v *= mask_at(mask, i);
    }
    if with_residual {
        v += f32::cast_from(residual[i]);
    }
    v
}

/// Row `CUBE_POS` of the rows v [R, H] that [`value`] reads (cubes past the last row do
/// nothing): μ, σ = √(var + ε), x̂ = (v − μ)/σ, y = x̂·γ + β.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel<F: Float>(
    x: &Tensor<F>,
    residual: &Tensor<F>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    y: &mut Tensor<F>,
    x_hat: &mut Tensor<F>,
    sigma: &mut Tensor<F>,
    epsilon: f32,
    key0: u32,
    key1: u32,
    threshold: u32,
    scale: f32,
    #[comptime] masked: bool,
    #[comptime] with_residual: bool,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    if row >= sigma.len() {
        terminate!();
    }
    let mask = Mask {
        key0,
        key1,
        threshold,
        scale,
    };
    let h = gamma.len();
    let start = row * h;
    let n = f32::cast_from(h);
    let mut shared = Shared::<[f32]>::new_slice(units);
    let mut sum = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, h, units) {
        sum += value(x, residual, start + j, &mask, masked, with_residual);
    }
    let mean = cube_sum(&mut shared, sum) / n;
    let mut squares = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, h, units) {
        let c = value(x, residual, start + j, &mask, masked, with_residual) - mean;
        squares += c * c;
    }
    let s = (cube_sum(&mut shared, squares) / n + epsilon).sqrt();
    for j in range_stepped(UNIT_POS as usize, h, units) {
        let xh = (value(x, residual, start + j, &mask, masked, with_residual) - mean) / s;
        x_hat[start + j] = F::cast_from(xh);
        y[start + j] = F::cast_from(xh * f32::cast_from(gamma[j]) + f32::cast_from(beta[j]));
    }
    if UNIT_POS == 0 {
        sigma[row] = F::cast_from(s);
    }
}

/// Row `CUBE_POS` of dx (cubes past the last row do nothing): with g = dy·γ,
/// dx = (g − mean(g) − x̂·mean(g·x̂)) / σ; with a mask on, also dh = dx ⊙ mask (the fused
/// residual LayerNorm's gradient for the dense layer's output; `dh` is unused otherwise).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn backward_kernel<F: Float>(
    dy: &Tensor<F>,
    x_hat: &Tensor<F>,
    gamma: &Tensor<F>,
    sigma: &Tensor<F>,
    dx: &mut Tensor<F>,
    dh: &mut Tensor<F>,
    key0: u32,
    key1: u32,
    threshold: u32,
    scale: f32,
    #[comptime] masked: bool,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    if row >= sigma.len() {
        terminate!();
    }
    let mask = Mask {
        key0,
        key1,
        threshold,
        scale,
    };
    let h = gamma.len();
    let start = row * h;
    let n = f32::cast_from(h);
    let mut shared = Shared::<[f32]>::new_slice(units);
    let mut sum_g = f32::new(0.0);
    let mut sum_gx = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, h, units) {
        let g = f32::cast_from(dy[start + j]) * f32::cast_from(gamma[j]);
        sum_g += g;
        sum_gx += g * f32::cast_from(x_hat[start + j]);
    }
    let mean_g = cube_sum(&mut shared, sum_g) / n;
    let mean_gx = cube_sum(&mut shared, sum_gx) / n;
    let s = f32::cast_from(sigma[row]);
    for j in range_stepped(UNIT_POS as usize, h, units) {
        let i = start + j;
        let g = f32::cast_from(dy[i]) * f32::cast_from(gamma[j]);
        let xh = f32::cast_from(x_hat[i]);
        let d = (g - mean_g - xh * mean_gx) / s;
        dx[i] = F::cast_from(d);
        if masked {
            dh[i] = F::cast_from(d * mask_at(&mask, i));
        }
    }
}

/// The forward kernel over `x` (with `residual` and the dropout of (`seed`, `prob`) when given):
/// (y, x̂, σ).
fn forward(
    x: CubeTensor,
    residual: Option<CubeTensor>,
    gamma: CubeTensor,
    beta: CubeTensor,
    epsilon: f64,
    (seed, prob): (u64, f64),
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let dtype = x.dtype;
    let x = into_contiguous(x);
    let (key0, key1, threshold, scale, masked) = mask_args(seed, prob);
    let with_residual = residual.is_some();
    // Plain LayerNorm reads no residual: x stands in for the argument.
    let residual = residual.map_or_else(|| x.clone(), |r| contiguous_in(r, dtype));
    let (gamma, beta) = (contiguous_in(gamma, dtype), contiguous_in(beta, dtype));
    let shape = x.meta.shape().clone();
    let rows = shape.num_elements() / shape[shape.num_dims() - 1];
    let (y, x_hat) = (empty_like(&x, shape.clone()), empty_like(&x, shape.clone()));
    let sigma = empty_like(&x, per_row(&shape));
    // SAFETY: x, the residual, y and x̂ hold rows × H contiguous elements, γ and β H, σ rows;
    // cube r reads row r of x and the residual and writes row r of y and x̂ (and σ[r]) only.
    unsafe {
        forward_kernel::launch_unchecked(
            &x.client,
            row_cubes(rows),
            CubeDim::new_1d(UNITS as u32),
            x.clone().into_tensor_arg(),
            residual.into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            x_hat.clone().into_tensor_arg(),
            sigma.clone().into_tensor_arg(),
            epsilon as f32,
            key0,
            key1,
            threshold,
            scale,
            masked,
            with_residual,
            UNITS,
            dtype_to_storage_type(dtype),
        );
    }
    (y, x_hat, sigma)
}

/// The backward kernel and the column sums: (dx, dh, dγ, dβ), dh = dx ⊙ the dropout mask of
/// (`seed`, `prob`) (dx itself at prob 0).
fn backward(
    dy: CubeTensor,
    x_hat: CubeTensor,
    gamma: CubeTensor,
    sigma: CubeTensor,
    (seed, prob): (u64, f64),
) -> [CubeTensor; 4] {
    let dtype = dy.dtype;
    let dy = into_contiguous(dy);
    let (key0, key1, threshold, scale, masked) = mask_args(seed, prob);
    let (x_hat, gamma, sigma) = (
        contiguous_in(x_hat, dtype),
        contiguous_in(gamma, dtype),
        contiguous_in(sigma, dtype),
    );
    let shape = dy.meta.shape().clone();
    let h = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / h;
    let dx = empty_like(&dy, shape.clone());
    // Without a mask the kernel writes no dh: one element stands in for the argument.
    let dh = empty_like(&dy, if masked { shape } else { Shape::new([1]) });
    // SAFETY: dy, x̂, dx (and dh with a mask) hold rows × H contiguous elements, γ H, σ rows;
    // cube r reads row r (and σ[r]) and writes row r of dx (and dh) only.
    unsafe {
        backward_kernel::launch_unchecked(
            &dy.client,
            row_cubes(rows),
            CubeDim::new_1d(UNITS as u32),
            dy.clone().into_tensor_arg(),
            x_hat.clone().into_tensor_arg(),
            gamma.into_tensor_arg(),
            sigma.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            dh.clone().into_tensor_arg(),
            key0,
            key1,
            threshold,
            scale,
            masked,
            UNITS,
            dtype_to_storage_type(dtype),
        );
    }
    // dβ = Σ_rows dy, dγ = Σ_rows dy·x̂: column sums over [rows, H], by CubeCL's reductions
    // (launched here directly, not through fusion).
    let column_sum = |t: CubeTensor| {
        let t = CubeBackend::float_reshape(t, Shape::from(vec![rows, h]));
        CubeBackend::float_reshape(CubeBackend::float_sum_dim(t, 0), Shape::from(vec![h]))
    };
    let d_gamma = column_sum(CubeBackend::float_mul(dy.clone(), x_hat));
    let d_beta = column_sum(dy);
    let dh = if masked { dh } else { dx.clone() };
    [dx, dh, d_gamma, d_beta]
}

impl LayerNormOps for CubeBackend {
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        forward(x, None, gamma, beta, epsilon, (0, 0.0))
    }

    fn layer_norm_backward(
        dy: FloatTensor<Self>,
        x_hat: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        sigma: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [dx, _, d_gamma, d_beta] = backward(dy, x_hat, gamma, sigma, (0, 0.0));
        (dx, d_gamma, d_beta)
    }

    #[allow(clippy::too_many_arguments)]
    fn residual_layer_norm_forward(
        h: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        seed: u64,
        prob: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        forward(h, Some(residual), gamma, beta, epsilon, (seed, prob))
    }

    fn residual_layer_norm_backward(
        dy: FloatTensor<Self>,
        x_hat: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        sigma: FloatTensor<Self>,
        seed: u64,
        prob: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let [dx, dh, d_gamma, d_beta] = backward(dy, x_hat, gamma, sigma, (seed, prob));
        (dh, dx, d_gamma, d_beta)
    }
}
