//! [`GeluBackend::erf_gelu_backward`] on CubeCL devices: one unit per element, x and the gradient
//! read in their dtypes and GELU' computed in f32, the result written in the requested dtype.
//! Written here because the same computation as burn's operations is two casts and eleven
//! element-wise operations, which fusion merges into about one kernel too, but only after the
//! host registered and searched all thirteen, in every layer of every step.

use crate::model::gelu::GeluBackend;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

/// out[i] = grad[i] · (Φ(x[i]) + x[i]·φ(x[i])) in f32, written in `O`, for every i below x's
/// length (units past it do nothing).
#[cube(launch_unchecked)]
fn gelu_backward_kernel<X: Float, G: Float, O: Float>(
    x: &Tensor<X>,
    grad: &Tensor<G>,
    out: &mut Tensor<O>,
    #[define(X, G, O)] _dtypes: [ElemType; 3],
) {
    let i = ABSOLUTE_POS;
    if i >= x.len() {
        terminate!();
    }
    let x = f32::cast_from(x[i]);
    // The operations and their order of `gelu::exact_gelu_backward`.
    let cdf =
        (Erf::erf(x * f32::new(std::f32::consts::FRAC_1_SQRT_2)) + f32::new(1.0)) * f32::new(0.5);
    let pdf = f32::exp(x * x * f32::new(-0.5)) * f32::new(FRAC_1_SQRT_2PI);
    out[i] = O::cast_from(f32::cast_from(grad[i]) * (cdf + x * pdf));
}

/// 1/√(2π), φ(0).
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

impl GeluBackend for CubeBackend {
    fn erf_gelu_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        dtype: DType,
    ) -> FloatTensor<Self> {
        let (x, grad) = (into_contiguous(x), into_contiguous(grad));
        let shape = x.meta.shape().clone();
        assert_eq!(
            &shape,
            grad.meta.shape(),
            "GELU's input and gradient have one shape"
        );
        let n = shape.num_elements();
        let out = empty_device_dtype(x.client.clone(), x.device.clone(), shape, dtype);
        let cube_dim = CubeDim::new_1d(256);
        // SAFETY: x, grad and out hold n contiguous elements; unit i reads x[i] and grad[i] and
        // writes out[i] only, and units past n stop first.
        unsafe {
            gelu_backward_kernel::launch_unchecked(
                &x.client,
                cubecl::calculate_cube_count_elemwise(&x.client, n, cube_dim),
                cube_dim,
                x.clone().into_tensor_arg(),
                grad.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                [
                    dtype_to_storage_type(x.dtype),
                    dtype_to_storage_type(grad.dtype),
                    dtype_to_storage_type(dtype),
                ],
            );
        }
        out
    }
}
