//! [`DropoutOps::dropout`] on CubeCL devices: one unit per element, the keep decision a hash of
//! (call seed, index) computed in the kernel, so no mask is drawn, written or kept (`dropout.rs`).

use crate::model::dropout::{DropoutOps, hash_params};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

/// Whether element `i` is kept: `dropout::hashed_keep`, in the kernels' 32-bit arithmetic.
#[cube]
pub fn hashed_keep(i: usize, key0: u32, key1: u32, threshold: u32) -> bool {
    triple32(triple32(u32::cast_from(i) ^ key0) + key1) < threshold
}

/// A hashed dropout mask as kernels that drop out while they compute take it: the keys and
/// threshold of `dropout::hash_params`, and the scale of the kept elements.
#[derive(CubeType, Clone)]
pub struct Mask {
    pub key0: u32,
    pub key1: u32,
    pub threshold: u32,
    pub scale: f32,
}

/// The mask at element `i`: `scale` kept, 0 dropped.
#[cube]
pub fn mask_at(mask: &Mask, i: usize) -> f32 {
    let keep = hashed_keep(i, mask.key0, mask.key1, mask.threshold);
    select(keep, mask.scale, f32::new(0.0))
}

/// A kernel's mask arguments for the hashed dropout of (`seed`, `prob`): keys, threshold,
/// scale, and whether there is a mask (not at prob 0, where the threshold, 2³² − 1, would still
/// drop the one index hashing to it).
pub fn mask_args(seed: u64, prob: f64) -> (u32, u32, u32, f32, bool) {
    let ([key0, key1], threshold) = hash_params(seed, prob);
    (
        key0,
        key1,
        threshold,
        (1.0 / (1.0 - prob)) as f32,
        prob != 0.0,
    )
}

/// `dropout::triple32`, in the kernel's 32-bit arithmetic (u32 products wrap in every shader
/// language).
#[cube]
fn triple32(x: u32) -> u32 {
    let x = x ^ (x >> 17);
    let x = x * 0xed5a_d4bb;
    let x = x ^ (x >> 11);
    let x = x * 0xac4c_1b51;
    let x = x ^ (x >> 15);
    let x = x * 0x3184_8bab;
    x ^ (x >> 14)
}

/// y[i] = x[i] · (scale where `dropout::hashed_keep(keys, threshold, i)`, else 0), in f32 and
/// written in y's dtype `O`, for every i below x's length (units past it do nothing).
#[cube(launch_unchecked)]
fn dropout_kernel<F: Float, O: Float>(
    x: &Tensor<F>,
    y: &mut Tensor<O>,
    key0: u32,
    key1: u32,
    threshold: u32,
    scale: f32,
    #[define(F, O)] _dtypes: [ElemType; 2],
) {
    let i = ABSOLUTE_POS;
    if i >= x.len() {
        terminate!();
    }
    let m = select(hashed_keep(i, key0, key1, threshold), scale, f32::new(0.0));
    // x · m, as the host mask multiplies: a dropped inf or NaN stays NaN.
    y[i] = O::cast_from(f32::cast_from(x[i]) * m);
}

impl DropoutOps for CubeBackend {
    fn dropout(x: FloatTensor<Self>, seed: u64, prob: f64, dtype: DType) -> FloatTensor<Self> {
        let x = into_contiguous(x);
        let shape = x.meta.shape().clone();
        let n = shape.num_elements();
        let y = empty_device_dtype(x.client.clone(), x.device.clone(), shape, dtype);
        let ([key0, key1], threshold) = hash_params(seed, prob);
        let cube_dim = CubeDim::new_1d(256);
        // SAFETY: x and y hold n contiguous elements; unit i reads x[i] and writes y[i] only,
        // and units past n stop first.
        unsafe {
            dropout_kernel::launch_unchecked(
                &x.client,
                cubecl::calculate_cube_count_elemwise(&x.client, n, cube_dim),
                cube_dim,
                x.clone().into_tensor_arg(),
                y.clone().into_tensor_arg(),
                key0,
                key1,
                threshold,
                (1.0 / (1.0 - prob)) as f32,
                [dtype_to_storage_type(x.dtype), dtype_to_storage_type(dtype)],
            );
        }
        y
    }
}
