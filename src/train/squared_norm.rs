//! Σ x² of one gradient as one backend operation, for the global gradient norm of clipping
//! (`optim::global_norm`).
//!
//! As tensor operations the sum is a flattening view, a square and a reduction per parameter:
//! at BERT-base's 202 parameters 484 operations and 356 blocks of fusion's host work a step, for
//! arithmetic that is one pass over each gradient. Here it is one operation per parameter: on
//! CubeCL devices one kernel (`squared_norm_cube.rs`) that leaves per-cube partial sums; on the
//! CPU backends the same three operations as before (the default body below), so CPU results
//! are unchanged to the bit.

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::prelude::*;

/// Units per cube of the CubeCL kernel, and the elements each unit sums at least before another
/// cube is launched: a gradient of up to 256 × 32 elements (every bias and LayerNorm parameter)
/// is one cube and one partial sum.
pub const CUBE_UNITS: usize = 256;
const ELEMENTS_PER_UNIT: usize = 32;
/// At most this many cubes (partial sums) per gradient; above it, units stride over more
/// elements. BERT-base's word embeddings (23 M elements at HF's vocabulary) fill it.
const MAX_CUBES: usize = 1024;

/// How many partial sums the CubeCL kernel leaves for a tensor of `n` elements: one per cube.
pub fn cube_partials(n: usize) -> usize {
    n.div_ceil(CUBE_UNITS * ELEMENTS_PER_UNIT)
        .clamp(1, MAX_CUBES)
}

#[backend_extension(
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait SquaredNormOps: Backend {
    /// Partial sums of x² over every element of `x`, a rank-1 tensor of `x`'s dtype whose sum is
    /// Σ x²: [1] on the CPU backends, [`cube_partials`] of them on CubeCL devices (one per cube,
    /// so that no second launch is needed; the caller sums all parameters' partials at once).
    ///
    /// The default body is what `optim::global_norm` computed before this operation existed.
    #[fusion(dtype = x, shape = Shape::new([cube_partials(x.num_elements())]))]
    fn squared_norm(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let n = x.shape().num_elements();
        let flat = Self::float_reshape(x, Shape::new([n]));
        Self::float_sum_dim(Self::float_powi_scalar(flat, 2.into()), 0)
    }
}

impl SquaredNormOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl SquaredNormOps for burn::backend::NdArray {}

/// Partial sums of Σ x² over `x`'s elements, on `x`'s device (no read): see
/// [`SquaredNormOps::squared_norm`].
pub fn squared_norm<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    use burn::backend::Dispatch;
    Tensor::from_dispatch(<Dispatch as SquaredNormOps>::squared_norm(
        x.into_dispatch(),
    ))
}
