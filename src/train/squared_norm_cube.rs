//! [`SquaredNormOps::squared_norms`] on CubeCL devices: one launch per gradient, each cube summing
//! x² over a grid stride of elements in f32 and leaving one partial sum, every gradient's partial
//! sums side by side in one output. Written here because burn's reductions need the square as an
//! operation of its own before them, which fusion does not merge into the reduction
//! (`squared_norm.rs`).

use crate::cube_reduce::cube_sum;
use crate::train::squared_norm::{CUBE_UNITS, SquaredNormOps, cube_partials};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

#[cube(launch_unchecked)]
fn squared_norm_kernel<F: Float>(
    x: &Tensor<F>,
    partials: &mut Tensor<F>,
    offset: u32,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    // Σ x² over elements i ≡ ABSOLUTE_POS (mod every unit of every cube), accumulated in f32
    // whatever x's dtype; the partial sums are written in x's dtype (masklm's gradients are the
    // f32 master weights').
    let stride = CUBE_COUNT * units;
    let mut acc = f32::new(0.0);
    for i in range_stepped(ABSOLUTE_POS, x.len(), stride) {
        let v = f32::cast_from(x[i]);
        acc += v * v;
    }
    // The cube's units add their sums: [units] → [1].
    let mut shared = Shared::<[f32]>::new_slice(units);
    let total = cube_sum(&mut shared, acc);
    if UNIT_POS == 0 {
        partials[offset as usize + CUBE_POS] = F::cast_from(total);
    }
}

impl SquaredNormOps for CubeBackend {
    fn squared_norms(xs: Vec<FloatTensor<Self>>) -> FloatTensor<Self> {
        let first = xs.first().expect("squared_norms of at least one tensor");
        let (client, device, dtype) = (first.client.clone(), first.device.clone(), first.dtype);
        let total = xs
            .iter()
            .map(|x| cube_partials(x.meta.shape().num_elements()))
            .sum::<usize>();
        let partials = empty_device_dtype(client.clone(), device, [total].into(), dtype);
        let mut offset = 0;
        for x in xs {
            // Each element once, wherever it lies: a permuted view of a dense buffer sums as it
            // is; anything else (a broadcast, a slice) is made contiguous first.
            let x = if x.is_contiguous_buffer() {
                x
            } else {
                into_contiguous(x)
            };
            let cubes = cube_partials(x.meta.shape().num_elements());
            // SAFETY: `x` holds exactly its n elements in its buffer (checked above) and the
            // kernel reads indices below x.len() only; it writes `partials` at offset + the cube,
            // below offset + cubes ≤ total.
            unsafe {
                squared_norm_kernel::launch_unchecked(
                    &client,
                    CubeCount::Static(cubes as u32, 1, 1),
                    CubeDim::new_1d(CUBE_UNITS as u32),
                    x.into_tensor_arg(),
                    partials.clone().into_tensor_arg(),
                    offset as u32,
                    CUBE_UNITS,
                    dtype_to_storage_type(dtype),
                );
            }
            offset += cubes;
        }
        partials
    }
}
