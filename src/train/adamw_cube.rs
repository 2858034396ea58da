//! [`AdamWOps::adamw_updates`] on CubeCL devices: one kernel per parameter, one thread per
//! element, updating the parameter and both moments in place. Written here because burn has no
//! fused optimizer kernel; fusion merges burn's 15-operation AdamW into about one kernel too,
//! but only after the host registered and searched all 15 (`adamw.rs`).

use crate::train::adamw::{AdamWCoefficients, AdamWOps};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{calculate_cube_count_elemwise, prelude::*};

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn adamw_kernel<F: Float>(
    param: &mut Tensor<F>,
    moment_1: &mut Tensor<F>,
    moment_2: &mut Tensor<F>,
    grad: &Tensor<F>,
    factor: &Tensor<F>,
    beta_1: f32,
    beta_2: f32,
    one_minus_beta_1: f32,
    one_minus_beta_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    decay: f32,
    lr: f32,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= param.len() {
        terminate!();
    }
    // The same operations in the same order as the default body (burn's AdamW).
    let g = grad[i] * factor[0];
    let m = moment_1[i] * F::cast_from(beta_1) + g * F::cast_from(one_minus_beta_1);
    let v = moment_2[i] * F::cast_from(beta_2) + g * g * F::cast_from(one_minus_beta_2);
    moment_1[i] = m;
    moment_2[i] = v;
    let m_hat = m / F::cast_from(correction_1);
    let v_hat = v / F::cast_from(correction_2);
    let delta = m_hat / (v_hat.sqrt() + F::cast_from(epsilon));
    param[i] = param[i] * F::cast_from(decay) - delta * F::cast_from(lr);
}

/// `t` as a contiguous buffer this update may overwrite: itself when nothing else holds it, a
/// copy otherwise (a parameter the caller still holds a clone of).
fn writable(t: CubeTensor) -> CubeTensor {
    if t.can_mut() && t.is_contiguous() && t.is_contiguous_buffer() {
        t
    } else if t.is_contiguous() {
        t.copy()
    } else {
        into_contiguous(t)
    }
}

impl AdamWOps for CubeBackend {
    fn adamw_updates(
        updates: Vec<[FloatTensor<Self>; 4]>,
        factor: FloatTensor<Self>,
        cs: &[AdamWCoefficients],
    ) -> Vec<[FloatTensor<Self>; 3]> {
        let factor = into_contiguous(factor);
        updates
            .into_iter()
            .zip(cs)
            .map(|(u, c)| update(u, factor.clone(), c))
            .collect()
    }
}

/// One parameter's update: one launch of [`adamw_kernel`].
fn update(
    [param, grad, moment_1, moment_2]: [CubeTensor; 4],
    factor: CubeTensor,
    c: &AdamWCoefficients,
) -> [CubeTensor; 3] {
    let dtype = param.dtype;
    let same = |t: CubeTensor| {
        if t.dtype == dtype {
            t
        } else {
            CubeBackend::float_cast(t, dtype.into())
        }
    };
    let grad = into_contiguous(same(grad));
    let factor = same(factor);
    let (param, moment_1, moment_2) = (
        writable(param),
        writable(same(moment_1)),
        writable(same(moment_2)),
    );
    let n = param.meta.shape().num_elements();
    let client = param.client.clone();
    let cube_dim = CubeDim::new(&client, n);
    let cube_count = calculate_cube_count_elemwise(&client, n, cube_dim);
    // SAFETY: every tensor holds n elements of `dtype` (the same shape, made contiguous above),
    // `factor` one; the kernel reads and writes index i < n only.
    unsafe {
        adamw_kernel::launch_unchecked(
            &client,
            cube_count,
            cube_dim,
            param.clone().into_tensor_arg(),
            moment_1.clone().into_tensor_arg(),
            moment_2.clone().into_tensor_arg(),
            grad.into_tensor_arg(),
            factor.into_tensor_arg(),
            c.beta_1,
            c.beta_2,
            c.one_minus_beta_1,
            c.one_minus_beta_2,
            c.correction_1,
            c.correction_2,
            c.epsilon,
            (1.0 - c.decay_rate) as f32,
            c.lr as f32,
            dtype_to_storage_type(dtype),
        );
    }
    [param, moment_1, moment_2]
}
