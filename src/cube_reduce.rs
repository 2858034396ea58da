//! What masklm's CubeCL kernels share: the sum and the maximum of one value per unit over a cube
//! (in f32 shared memory), the launch of one cube per row of a [rows, width] tensor
//! (`model/layer_norm_cube.rs`, `model/softmax_cube.rs`, `train/squared_norm_cube.rs`), and how
//! many tensors one launch takes (`train/squared_norm_cube.rs`, `train/adamw_cube.rs`).

use crate::model::precision::cast_primitive;
use burn::prelude::Shape;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Σ of every unit's `value` over the cube, returned to every unit: pairwise in `shared`, which
/// holds one f32 per unit (the cube's units a power of two). Ends with a barrier, so `shared`
/// may be written again right after.
#[cube]
pub fn cube_sum(shared: &mut Shared<[f32]>, value: f32) -> f32 {
    cube_tree(shared, value, false)
}

/// The maximum of every unit's `value` over the cube, as [`cube_sum`] sums them.
#[cube]
pub fn cube_max(shared: &mut Shared<[f32]>, value: f32) -> f32 {
    cube_tree(shared, value, true)
}

/// The tree of [`cube_sum`] and [`cube_max`]: each round, the lower half of the units combines
/// its value with the upper half's (by `max` or by addition), until unit 0 holds the result.
#[cube]
fn cube_tree(shared: &mut Shared<[f32]>, value: f32, #[comptime] max: bool) -> f32 {
    let unit = UNIT_POS as usize;
    shared[unit] = value;
    sync_cube();
    let mut half = CUBE_DIM as usize / 2;
    while half > 0 {
        if unit < half {
            let a = shared[unit];
            let b = shared[unit + half];
            if max {
                shared[unit] = f32::max(a, b);
            } else {
                shared[unit] = a + b;
            }
        }
        sync_cube();
        half /= 2;
    }
    let total = shared[0];
    sync_cube();
    total
}

/// One cube per row, spread over a second axis past the 65,535 cubes that every Vulkan device
/// launches along one (BERT's 512 × 512 tokens are 262,144 rows, and attention has a row per
/// head and query). Kernels find their row at `CUBE_POS` and stop past the last one.
pub fn row_cubes(rows: usize) -> CubeCount {
    const MAX: usize = 65_535;
    let y = rows.div_ceil(MAX).max(1);
    CubeCount::Static(rows.div_ceil(y) as u32, y as u32, 1)
}

/// `t` contiguous, in `dtype` (a parameter or a kept tensor, brought to the data's dtype).
pub fn contiguous_in(t: CubeTensor, dtype: DType) -> CubeTensor {
    into_contiguous(cast_primitive::<CubeBackend>(t, dtype))
}

/// An uninitialised tensor of `shape` on `t`'s device, in `t`'s dtype.
pub fn empty_like(t: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_dtype(t.client.clone(), t.device.clone(), shape, t.dtype)
}

/// At most this many tensors a launch of a kernel over a list (fewer where the device binds fewer
/// buffers): each kernel holds its loop once per tensor, unrolled. 32 tensors of at most 1,024
/// cubes each stay within the 65,535 cubes every Vulkan device launches along one axis.
pub const CHUNK: usize = 32;

/// Tensors a launch may take when each binds `per_tensor` buffers beside `others`: [`CHUNK`], or
/// what the device's binding limit leaves.
pub fn chunk(client: &cubecl::client::Client, per_tensor: usize, others: usize) -> usize {
    let max = client.properties().hardware.max_bindings as usize;
    (max.saturating_sub(others) / per_tensor).clamp(1, CHUNK)
}
