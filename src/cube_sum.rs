//! The sum of one value per unit over a CubeCL cube, shared by masklm's reduction kernels
//! (`model/layer_norm_cube.rs`, `train/squared_norm_cube.rs`).

use cubecl::prelude::*;

/// Σ of every unit's `value` over the cube, returned to every unit: pairwise in `shared`, which
/// holds one f32 per unit (the cube's units a power of two). Ends with a barrier, so `shared`
/// may be written again right after.
#[cube]
pub fn cube_sum(shared: &mut Shared<[f32]>, value: f32) -> f32 {
    let unit = UNIT_POS as usize;
    shared[unit] = value;
    sync_cube();
    let mut half = CUBE_DIM as usize / 2;
    while half > 0 {
        if unit < half {
            let sum = shared[unit] + shared[unit + half];
            shared[unit] = sum;
        }
        sync_cube();
        half /= 2;
    }
    let total = shared[0];
    sync_cube();
    total
}
