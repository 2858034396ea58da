//! GELU, the erf form BERT and HF use (`x·Φ(x)`), as masklm's own op through burn's backend
//! extension: on the CPU backend (flex, with or without autodiff) it runs `model::vmath`'s
//! vectorized kernel forward and backward; every other backend runs burn's own `gelu`.
//!
//! Why an op of our own: burn's flex computes GELU with a scalar `libm::erff` per element, one
//! thread, about a tenth of a BERT step's CPU time; this one is 8-wide and uses the rayon pool
//! (BENCHMARKS.md).

use crate::model::{on_flex, vmath};
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::{Bytes, DType};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

/// GELU as a backend operation: flex and autodiff-over-flex implement it here.
#[backend_extension(Autodiff, Flex)]
pub trait GeluBackend: Backend {
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

static EXACT: AtomicBool = AtomicBool::new(false);

/// Runs burn's own GELU (flex's scalar `libm::erff` code) instead of `vmath`'s kernel, process
/// wide: for comparisons (`tests/fast_gelu.rs`, A/B measurements), not for training.
pub fn set_exact(exact: bool) {
    EXACT.store(exact, Ordering::Relaxed);
}

/// `GELU(x)` [any shape], f32 on flex through `vmath`, burn's `gelu` elsewhere (other backends,
/// other dtypes).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let fast = !EXACT.load(Ordering::Relaxed);
    if fast && on_flex(&x.device()) && x.dtype() == DType::F32 {
        Tensor::from_dispatch(<Dispatch as GeluBackend>::fast_gelu(x.into_dispatch()))
    } else {
        burn::tensor::activation::gelu(x)
    }
}

/// `x` as one contiguous run of f32 values starting at offset 0.
fn contiguous(x: FlexTensor) -> FlexTensor {
    match x.layout().contiguous_offsets() {
        Some((0, _)) => x,
        _ => x.to_contiguous(),
    }
}

/// A new f32 tensor of `shape`, its `n` elements written by `fill`.
fn filled(shape: burn::tensor::Shape, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> FlexTensor {
    let n = shape.num_elements();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    fill(&mut out.spare_capacity_mut()[..n]);
    // SAFETY: `fill` is one of vmath's `*_into`, which write every element.
    unsafe { out.set_len(n) };
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// GELU on a flex f32 tensor, in place when nothing else holds its storage.
fn flex_gelu(x: FlexTensor) -> FlexTensor {
    let mut x = contiguous(x);
    let shape = x.layout().shape().clone();
    let n = shape.num_elements();
    if let Some(a) = x.try_storage_mut::<f32>() {
        vmath::gelu_inplace(&mut a[..n]);
        return x;
    }
    filled(shape, |out| vmath::gelu_into(&x.storage::<f32>()[..n], out))
}

/// `grad · GELU'(x)` on flex f32 tensors of one shape, in place in `grad` when it is not shared.
fn flex_gelu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let mut grad = contiguous(grad);
    let shape = grad.layout().shape().clone();
    let n = shape.num_elements();
    let xs = &x.storage::<f32>()[..n];
    if let Some(g) = grad.try_storage_mut::<f32>() {
        vmath::gelu_grad_inplace(xs, &mut g[..n]);
        return grad;
    }
    filled(shape, |out| {
        vmath::gelu_grad_into(xs, &grad.storage::<f32>()[..n], out)
    })
}

impl GeluBackend for Flex {
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_gelu(x)
    }
}

/// The backward of [`GeluBackend::fast_gelu`] on flex: `grad · GELU'(x)`, `x` kept from the
/// forward (a checkpointed input, as burn's own GELU keeps it).
#[derive(Debug)]
struct GeluGrad;

impl Backward<Flex, 1> for GeluGrad {
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let x: FlexTensor = checkpointer.retrieve_node_output(ops.state);
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            flex_gelu_backward(x, grad)
        });
    }
}

impl<C: CheckpointStrategy> GeluBackend for Autodiff<Flex, C> {
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluGrad.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                prep.finish(state, flex_gelu(x.primitive().clone()))
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_gelu(x.into_primitive())),
        }
    }
}
