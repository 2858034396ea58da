//! Σ x² of every gradient as one backend operation, for the global gradient norm of clipping
//! (`optim::global_norm`).
//!
//! As tensor operations the sum is a flattening view, a square and a reduction per parameter,
//! then a concatenation: at BERT-base's 202 parameters 484 operations and 356 blocks of fusion's
//! host work a step, for arithmetic that is one pass over each gradient. One operation per
//! parameter (a kernel each) and their concatenation still took BERT-base's host 47 ms of its
//! 0.24 s step (the stand-in driver, BENCHMARKS "Host work per step through the stand-in
//! driver"). Here it is one operation for all of them: on CubeCL devices one launch per 32
//! gradients (`squared_norm_cube.rs`), each gradient leaving its per-cube partial sums in one
//! shared output; on the CPU backends the same operations as before (the default body below),
//! so that CPU results are unchanged to the bit, which `tests/it/squared_norm.rs` checks for
//! every shape it tries.
//!
//! burn 0.22.1's `#[backend_extension]` takes no list of tensors, so what it would generate is
//! written out: the routing from burn's `Dispatch` tensors to a backend (`dispatch_lists.rs`)
//! and fusion's registration of the operation (below, as the macro registers one of one
//! tensor).

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends.
#![allow(deprecated)]

#[cfg(feature = "cube")]
use super::dispatch_lists::from_cube;
#[cfg(feature = "ndarray")]
use super::dispatch_lists::from_ndarray;
use super::dispatch_lists::{OnBackend, from_flex};
#[cfg(feature = "cube")]
use burn::backend::fusion::{FusionBackend, FusionRuntime};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DispatchTensor, TensorMetadata};
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

pub trait SquaredNormOps: Backend {
    /// Partial sums of x² over every element of every tensor of `xs` (at least one, all of one
    /// dtype and device), a rank-1 tensor of that dtype whose sum is Σ x² over all of them: one
    /// partial sum per tensor on the CPU backends, [`cube_partials`] per tensor on CubeCL devices
    /// (one per cube, so that no second launch is needed), in the order of `xs`.
    ///
    /// The default body is the per-tensor fallback: Σ x² of each tensor with burn's operations.
    fn squared_norms(xs: Vec<FloatTensor<Self>>) -> FloatTensor<Self> {
        let sums = xs
            .into_iter()
            .map(|x| {
                let n = x.shape().num_elements();
                let flat = Self::float_reshape(x, Shape::new([n]));
                Self::float_sum_dim(Self::float_powi_scalar(flat, 2.into()), 0)
            })
            .collect();
        Self::float_cat(sums, 0)
    }
}

impl SquaredNormOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl SquaredNormOps for burn::backend::NdArray {}

/// The handles burn's fusion keeps for the tensors of a backend `B` it wraps.
#[cfg(feature = "cube")]
type FusionHandle<B> = <<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle;

/// The operation registered with burn's fusion: one operation whatever the number of tensors,
/// run by the inner backend when fusion executes it. Its output's length is the inner
/// backend's, [`cube_partials`] per tensor (fusion wraps CubeCL backends only).
#[cfg(feature = "cube")]
impl<B: FusionBackend + SquaredNormOps> SquaredNormOps for burn::backend::fusion::Fusion<B> {
    fn squared_norms(xs: Vec<FloatTensor<Self>>) -> FloatTensor<Self> {
        use burn::backend::fusion::custom::{
            CustomOpIr, HandleContainer, OperationFn, OperationIr, StreamId, TensorIr,
        };
        let first = xs.first().expect("squared_norms of at least one tensor");
        let (client, dtype) = (first.client.clone(), first.dtype);
        let partials = xs
            .iter()
            .map(|x| cube_partials(x.shape.num_elements()))
            .sum::<usize>();
        let inputs: Vec<TensorIr> = xs.into_iter().map(|x| x.into_ir()).collect();
        let output = TensorIr::uninit(client.create_empty_handle(), Shape::new([partials]), dtype);
        let desc = CustomOpIr {
            id: "squared_norms".into(),
            inputs: inputs.clone(),
            outputs: vec![output.clone()],
            scalars: Vec::new(),
        };
        let op = OperationFn(move |handles: &mut HandleContainer<FusionHandle<B>>| {
            let xs = inputs
                .iter()
                .map(|x| handles.get_float_tensor::<B>(x))
                .collect();
            handles.register_float_tensor::<B>(&output.id, B::squared_norms(xs));
            Ok(())
        });
        client
            .register(StreamId::current(), OperationIr::Custom(desc), op)
            .pop()
            .expect("one output")
    }
}

/// Partial sums of Σ x² over all elements of all of `xs` (at least one tensor, of any rank, all
/// on one device and none tracked by autodiff), on their device (no read): see
/// [`SquaredNormOps::squared_norms`]. `xs` are [`Tensor::into_dispatch`]'s primitives, so that
/// tensors of different ranks go in one list.
pub fn squared_norms(xs: Vec<DispatchTensor>) -> Tensor<1> {
    Tensor::from_dispatch(match OnBackend::of(xs, "squared_norms") {
        OnBackend::Flex(v) => from_flex(burn::backend::Flex::squared_norms(v)),
        #[cfg(feature = "ndarray")]
        OnBackend::NdArray(v) => from_ndarray(burn::backend::NdArray::squared_norms(v)),
        #[cfg(feature = "cube")]
        OnBackend::Cube(v) => from_cube(burn::backend::Cube::squared_norms(v)),
    })
}

/// Partial sums of Σ x² over `x`'s elements: [`squared_norms`] of one tensor.
pub fn squared_norm<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    squared_norms(vec![x.into_dispatch()])
}
