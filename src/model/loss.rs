//! The masked-LM loss: cross-entropy over the selected positions only.
//!
//! On the CPU it is burn's operations (`log_softmax`, `gather`, the weighting and the sum), whose
//! backward autodiff composes. On GPUs the same computation is one operation forward and one
//! backward ([`NllOps`], CubeCL kernels in `loss_cube.rs`): as burn's operations it is about 30
//! operations a step that burn's fusion registers and mostly runs as kernels of their own (its
//! reductions, gather and scatter end fusion blocks), the same number at any depth.

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::log_softmax;

/// Summed negative log-likelihood of `labels` `[N]` under `logits` [N, V] → `[1]`.
///
/// A sum, not a mean: the caller divides by the number of selected positions of the whole
/// optimizer step, so that with gradient accumulation the loss is the mean over every selected
/// position of every micro-batch (not a mean of per-micro-batch means).
pub fn masked_nll_sum(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    if !super::on_host(&logits.device()) {
        let weights = Tensor::ones([labels.dims()[0]], &logits.device());
        return nll_op(logits, labels, weights);
    }
    log_softmax(logits, 1)
        .gather(1, labels.unsqueeze_dim(1))
        .sum()
        .neg()
}

/// [`masked_nll_sum`] with each position's NLL multiplied by `weights` `[N]` first: 1 on selected
/// positions, 0 on the padding rows of `TensorBatch::padded` (which contribute nothing, to the
/// loss or to any gradient).
pub fn weighted_nll_sum(
    logits: Tensor<2>,
    labels: Tensor<1, Int>,
    weights: Tensor<1>,
) -> Tensor<1> {
    if !super::on_host(&logits.device()) {
        return nll_op(logits, labels, weights);
    }
    let n = weights.dims()[0];
    log_softmax(logits, 1)
        .gather(1, labels.unsqueeze_dim(1))
        .mul(weights.reshape([n, 1]))
        .sum()
        .neg()
}

/// [`weighted_nll_sum`] as [`NllOps::nll`], whatever the device (the tests compare it with the
/// composition on the CPU).
pub fn nll_op(logits: Tensor<2>, labels: Tensor<1, Int>, weights: Tensor<1>) -> Tensor<1> {
    let (total, _) = <Dispatch as NllOps>::nll(
        logits.into_dispatch(),
        labels.into_dispatch(),
        weights.into_dispatch(),
    );
    Tensor::from_dispatch(total)
}

/// The weighted NLL sum and its gradient as backend operations.
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait NllOps: Backend {
    /// (−Σᵢ wᵢ·log_softmax(logits)[i, labelᵢ] `[1]`, the rows' log Σⱼ exp(logits[i, j]) `[N]`) for
    /// `logits` [N, V], `labels` `[N]`, `weights` `[N]`, in the logits' dtype: the first as
    /// [`weighted_nll_sum`]'s operations compute it; the second for the backward.
    #[fusion(meta = |logits, _labels, _weights| {
        use burn::backend::fusion::custom::TensorSpec;
        (
            TensorSpec::new(Shape::new([1]), logits.dtype),
            TensorSpec::new(Shape::new([logits.shape[0]]), logits.dtype),
        )
    })]
    fn nll(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [n, v] = [logits.shape()[0], logits.shape()[1]];
        let max = Self::float_max_dim(logits.clone(), 1);
        let shifted = Self::float_sub(logits, Self::float_expand(max.clone(), Shape::new([n, v])));
        let log_sum = Self::float_log(Self::float_sum_dim(Self::float_exp(shifted.clone()), 1));
        let log_p = Self::float_sub(
            shifted,
            Self::float_expand(log_sum.clone(), Shape::new([n, v])),
        );
        let labels = Self::int_reshape(labels, Shape::new([n, 1]));
        let picked = Self::float_gather(1, log_p, labels);
        let weighted = Self::float_mul(picked, Self::float_reshape(weights, Shape::new([n, 1])));
        let total = Self::float_neg(Self::float_sum(weighted));
        let lse = Self::float_add(max, log_sum);
        (total, Self::float_reshape(lse, Shape::new([n])))
    }

    /// The gradient of [`NllOps::nll`]'s total with respect to the logits, for its gradient `g`
    /// `[1]`: g·wᵢ·(softmax(logits)[i, j] − [j = labelᵢ]) [N, V], softmax as exp(logits − lse).
    #[fusion(meta = |_g, logits, _labels, _weights, _lse| {
        use burn::backend::fusion::custom::TensorSpec;
        TensorSpec::new(logits.shape.clone(), logits.dtype)
    })]
    fn nll_backward(
        g: FloatTensor<Self>,
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        weights: FloatTensor<Self>,
        lse: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let shape = logits.shape();
        let [n, v] = [shape[0], shape[1]];
        let column = |t: FloatTensor<Self>| {
            Self::float_expand(Self::float_reshape(t, Shape::new([n, 1])), shape.clone())
        };
        let p = Self::float_exp(Self::float_sub(logits.clone(), column(lse)));
        let (device, dtype) = (logits.device(), logits.dtype().into());
        let zeros = Self::float_zeros(shape.clone(), &device, dtype);
        let ones = Self::float_ones(Shape::new([n, 1]), &device, dtype);
        let labels = Self::int_reshape(labels, Shape::new([n, 1]));
        let one_hot = Self::float_scatter(1, zeros, labels, ones, IndexingUpdateOp::Add);
        let scale = Self::float_mul(
            column(weights),
            Self::float_expand(
                Self::float_reshape(g, Shape::new([1, 1])),
                Shape::new([n, v]),
            ),
        );
        Self::float_mul(Self::float_sub(p, one_hot), scale)
    }
}

impl NllOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl NllOps for burn::backend::NdArray {}

/// The backward of [`NllOps::nll`]; its one parent is the logits.
#[derive(Debug)]
struct NllGrad;

impl<B: NllOps> Backward<B, 1> for NllGrad {
    /// The logits, labels, weights and the rows' log Σ exp.
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let (logits, labels, weights, lse) = ops.state;
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, B::nll_backward(g, logits, labels, weights, lse));
        }
    }
}

impl<B: NllOps, C: CheckpointStrategy> NllOps for Autodiff<B, C> {
    fn nll(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let node = logits.node();
        let (logits, weights) = (logits.into_primitive(), weights.into_primitive());
        let (total, lse) = B::nll(logits.clone(), labels.clone(), weights.clone());
        let lse_out = <Self as burn::backend::AutodiffBackend>::from_inner(lse.clone());
        let total = match NllGrad.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((logits, labels, weights, lse), total),
            OpsKind::UnTracked(prep) => prep.finish(total),
        };
        (total, lse_out)
    }
}
