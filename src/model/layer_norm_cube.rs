//! [`LayerNormOps`] forward and backward on CubeCL devices: one cube per row, the row's sums in
//! f32 shared memory. Written here because the default bodies are 10 and 14 tensor operations
//! that burn's fusion registers one by one and runs as several kernels (its reductions are
//! kernels of their own); each is one operation for fusion here (`layer_norm.rs`).

use crate::cube_reduce::{contiguous_in, cube_sum, empty_like, row_cubes};
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

/// Row `CUBE_POS` of `x` [R, H] (cubes past the last row do nothing): μ, σ = √(var + ε),
/// x̂ = (x − μ)/σ, y = x̂·γ + β.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel<F: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    y: &mut Tensor<F>,
    x_hat: &mut Tensor<F>,
    sigma: &mut Tensor<F>,
    epsilon: f32,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    if row >= sigma.len() {
        terminate!();
    }
    let h = gamma.len();
    let start = row * h;
    let n = f32::cast_from(h);
    let mut shared = Shared::<[f32]>::new_slice(units);
    let mut sum = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, h, units) {
        sum += f32::cast_from(x[start + j]);
    }
    let mean = cube_sum(&mut shared, sum) / n;
    let mut squares = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, h, units) {
        let c = f32::cast_from(x[start + j]) - mean;
        squares += c * c;
    }
    let s = (cube_sum(&mut shared, squares) / n + epsilon).sqrt();
    for j in range_stepped(UNIT_POS as usize, h, units) {
        let xh = (f32::cast_from(x[start + j]) - mean) / s;
        x_hat[start + j] = F::cast_from(xh);
        y[start + j] = F::cast_from(xh * f32::cast_from(gamma[j]) + f32::cast_from(beta[j]));
    }
    if UNIT_POS == 0 {
        sigma[row] = F::cast_from(s);
    }
}

/// Row `CUBE_POS` of dx (cubes past the last row do nothing): with g = dy·γ,
/// dx = (g − mean(g) − x̂·mean(g·x̂)) / σ.
#[cube(launch_unchecked)]
fn backward_kernel<F: Float>(
    dy: &Tensor<F>,
    x_hat: &Tensor<F>,
    gamma: &Tensor<F>,
    sigma: &Tensor<F>,
    dx: &mut Tensor<F>,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    if row >= sigma.len() {
        terminate!();
    }
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
        let g = f32::cast_from(dy[start + j]) * f32::cast_from(gamma[j]);
        let xh = f32::cast_from(x_hat[start + j]);
        dx[start + j] = F::cast_from((g - mean_g - xh * mean_gx) / s);
    }
}

impl LayerNormOps for CubeBackend {
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = x.dtype;
        let x = into_contiguous(x);
        let (gamma, beta) = (contiguous_in(gamma, dtype), contiguous_in(beta, dtype));
        let shape = x.meta.shape().clone();
        let rows = shape.num_elements() / shape[shape.num_dims() - 1];
        let (y, x_hat) = (empty_like(&x, shape.clone()), empty_like(&x, shape.clone()));
        let sigma = empty_like(&x, per_row(&shape));
        // SAFETY: x, y, x̂ hold rows × H contiguous elements, γ and β H, σ rows; cube r reads
        // and writes row r (and σ[r]) only.
        unsafe {
            forward_kernel::launch_unchecked(
                &x.client,
                row_cubes(rows),
                CubeDim::new_1d(UNITS as u32),
                x.clone().into_tensor_arg(),
                gamma.into_tensor_arg(),
                beta.into_tensor_arg(),
                y.clone().into_tensor_arg(),
                x_hat.clone().into_tensor_arg(),
                sigma.clone().into_tensor_arg(),
                epsilon as f32,
                UNITS,
                dtype_to_storage_type(dtype),
            );
        }
        (y, x_hat, sigma)
    }

    fn layer_norm_backward(
        dy: FloatTensor<Self>,
        x_hat: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        sigma: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = dy.dtype;
        let dy = into_contiguous(dy);
        let (x_hat, gamma, sigma) = (
            contiguous_in(x_hat, dtype),
            contiguous_in(gamma, dtype),
            contiguous_in(sigma, dtype),
        );
        let shape = dy.meta.shape().clone();
        let h = shape[shape.num_dims() - 1];
        let rows = shape.num_elements() / h;
        let dx = empty_like(&dy, shape);
        // SAFETY: dy, x̂ and dx hold rows × H contiguous elements, γ H, σ rows; cube r reads
        // row r (and σ[r]) and writes row r of dx only.
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
                UNITS,
                dtype_to_storage_type(dtype),
            );
        }
        // dβ = Σ_rows dy, dγ = Σ_rows dy·x̂: column sums over [rows, H], by CubeCL's reductions
        // (launched here directly, not through fusion).
        let column_sum = |t: CubeTensor| {
            let t = Self::float_reshape(t, Shape::from(vec![rows, h]));
            Self::float_reshape(Self::float_sum_dim(t, 0), Shape::from(vec![h]))
        };
        let d_gamma = column_sum(Self::float_mul(dy.clone(), x_hat));
        let d_beta = column_sum(dy);
        (dx, d_gamma, d_beta)
    }
}
