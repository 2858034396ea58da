//! The attention probabilities `softmax(scores · scale + bias)` over the keys, as one operation
//! with a backward of its own.
//!
//! Written as burn operations, the scaling, the bias and burn's softmax are eight operations on
//! the [B, heads, S, S] scores, and autodiff differentiates each, keeping their intermediates for
//! backward. Here the forward keeps only the probabilities `p` and the backward is the closed form
//! (`dscores = scale · p ⊙ (dp − Σ_keys dp ⊙ p)`), one operation for autodiff.
//!
//! On the CPU backends the forward is the computation it replaces, operation for operation
//! (burn's `softmax` after `mul_scalar` and the bias: the default bodies below), so probabilities
//! are unchanged to the bit; gradients agree with autodiff's at the rounding level
//! (`tests/it/softmax.rs`). CubeCL devices run one kernel for each (`softmax_cube.rs`), one
//! operation for burn's fusion instead of 7 and 5. The bias (the padding mask's) is a constant:
//! no gradient flows to it.
//!
//! In GPU training the attention dropout joins it ([`attention_probs`]): one kernel writes `p`
//! (kept for backward) and the dropped-out probabilities in the products' precision, and the
//! backward kernel applies the mask (GPU dropout's hash, `model::dropout`) to the gradient as it
//! reads it, so neither the softmax's output nor the dropout's gradient makes a pass over
//! [B, heads, S, S] of its own.

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use super::dropout::hashed_dropout;
use super::precision::cast_primitive;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Scalar, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::DType;

/// The attention softmax as backend operations: the forward, its backward, and autodiff's one
/// recorded operation.
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "wgpu"),
    Fusion: cfg(feature = "wgpu"),
)]
pub trait AttentionSoftmaxOps: Backend {
    /// `scores` [B, nh, S, S], `bias` broadcastable to it (CubeCL devices: [B, 1, 1, S]) → `p`
    /// [B, nh, S, S], the softmax over the last axis of `scores · scale + bias`, computed and
    /// returned in the bias's dtype (f32) whatever the scores' (f16 or bf16 under mixed
    /// precision, as the products leave them: autocast's softmax takes them so too).
    #[fusion(dtype = bias, shape = scores)]
    fn attention_softmax(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let dtype = bias.dtype();
        let scores = cast_primitive::<Self>(scores, dtype);
        let last = scores.shape().num_dims() - 1;
        let z = Self::float_add(
            Self::float_mul_scalar(scores, Scalar::new(scale, &dtype)),
            bias,
        );
        // burn 0.22.1's `softmax`, without its detach (nothing here is tracked).
        let max = Self::float_max_dim(z.clone(), last);
        let exp = Self::float_exp(Self::float_sub(z, max));
        let sum = Self::float_sum_dim(exp.clone(), last);
        Self::float_div(exp, sum)
    }

    /// `dscores` [B, nh, S, S] in `scores_dtype` (the forward's scores') from `dp` and the
    /// forward's `p` (both in p's dtype, in which it is computed).
    #[fusion(dtype = *scores_dtype, shape = dp)]
    fn attention_softmax_backward(
        dp: FloatTensor<Self>,
        p: FloatTensor<Self>,
        scale: f64,
        scores_dtype: DType,
    ) -> FloatTensor<Self> {
        let dtype = dp.dtype();
        let last = dp.shape().num_dims() - 1;
        let dot = Self::float_sum_dim(Self::float_mul(dp.clone(), p.clone()), last);
        let dscores = Self::float_mul_scalar(
            Self::float_mul(p, Self::float_sub(dp, dot)),
            Scalar::new(scale, &dtype),
        );
        cast_primitive::<Self>(dscores, scores_dtype)
    }

    /// (`p`, `pd`): `p` as [`AttentionSoftmaxOps::attention_softmax`] gives it, and `pd` its GPU
    /// dropout (`model::dropout`'s hashed mask of (`seed`, `prob`) over p's elements in
    /// row-major order; none at prob 0) in `dtype`, the products'. CubeCL devices write both in
    /// one pass over the scores (`softmax_cube.rs`).
    #[fusion(meta = |scores, bias, _scale, _seed, _prob, dtype| {
        use burn::backend::fusion::custom::TensorSpec;
        (
            TensorSpec::new(scores.shape.clone(), bias.dtype),
            TensorSpec::new(scores.shape.clone(), *dtype),
        )
    })]
    fn attention_softmax_dropout_forward(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        seed: u64,
        prob: f64,
        dtype: DType,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let p = Self::attention_softmax(scores, bias, scale);
        let pd = if prob == 0.0 {
            cast_primitive::<Self>(p.clone(), dtype)
        } else {
            hashed_dropout::<Self>(p.clone(), seed, prob, dtype)
        };
        (p, pd)
    }

    /// `dscores` in `scores_dtype` from `dpd` (pd's gradient, in pd's dtype) and the forward's
    /// `p`: dp = dpd ⊙ mask in p's dtype, then [`AttentionSoftmaxOps::attention_softmax_backward`].
    #[fusion(dtype = *scores_dtype, shape = dpd)]
    fn attention_softmax_dropout_backward(
        dpd: FloatTensor<Self>,
        p: FloatTensor<Self>,
        scale: f64,
        scores_dtype: DType,
        seed: u64,
        prob: f64,
    ) -> FloatTensor<Self> {
        let p_dtype = p.dtype();
        let dp = if prob == 0.0 {
            cast_primitive::<Self>(dpd, p_dtype)
        } else {
            hashed_dropout::<Self>(dpd, seed, prob, p_dtype)
        };
        Self::attention_softmax_backward(dp, p, scale, scores_dtype)
    }

    /// `pd` of [`AttentionSoftmaxOps::attention_softmax_dropout_forward`] alone; autodiff
    /// records it as one operation whose backward is
    /// [`AttentionSoftmaxOps::attention_softmax_dropout_backward`] and keeps `p`.
    #[fusion(default)]
    fn attention_probs(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        seed: u64,
        prob: f64,
        dtype: DType,
    ) -> FloatTensor<Self> {
        Self::attention_softmax_dropout_forward(scores, bias, scale, seed, prob, dtype).1
    }
}

impl AttentionSoftmaxOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl AttentionSoftmaxOps for burn::backend::NdArray {}

/// The backward of [`AttentionSoftmaxOps::attention_softmax`]: its state is `(p, scale, the
/// scores' dtype)`.
#[derive(Debug)]
struct AttentionSoftmaxGrad;

impl<B: AttentionSoftmaxOps> Backward<B, 1> for AttentionSoftmaxGrad {
    type State = (FloatTensor<B>, f64, DType);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (p, scale, scores_dtype) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dp| {
            B::attention_softmax_backward(dp, p, scale, scores_dtype)
        });
    }
}

/// The backward of [`AttentionSoftmaxOps::attention_probs`]: its state is `(p, scale, the
/// scores' dtype, seed, prob)`.
#[derive(Debug)]
struct AttentionProbsGrad;

impl<B: AttentionSoftmaxOps> Backward<B, 1> for AttentionProbsGrad {
    type State = (FloatTensor<B>, f64, DType, u64, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (p, scale, scores_dtype, seed, prob) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dpd| {
            B::attention_softmax_dropout_backward(dpd, p, scale, scores_dtype, seed, prob)
        });
    }
}

impl<B: AttentionSoftmaxOps, C: CheckpointStrategy> AttentionSoftmaxOps for Autodiff<B, C> {
    fn attention_probs(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        seed: u64,
        prob: f64,
        dtype: DType,
    ) -> FloatTensor<Self> {
        let (node, scores_dtype) = (scores.node(), scores.dtype());
        let (scores, bias) = (scores.into_primitive(), bias.into_primitive());
        match AttentionProbsGrad
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (p, pd) =
                    B::attention_softmax_dropout_forward(scores, bias, scale, seed, prob, dtype);
                prep.finish((p, scale, scores_dtype, seed, prob), pd)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::attention_probs(scores, bias, scale, seed, prob, dtype))
            }
        }
    }

    fn attention_softmax(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let (node, scores_dtype) = (scores.node(), scores.dtype());
        let (scores, bias) = (scores.into_primitive(), bias.into_primitive());
        let p = B::attention_softmax(scores, bias, scale);
        match AttentionSoftmaxGrad
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((p.clone(), scale, scores_dtype), p),
            OpsKind::UnTracked(prep) => prep.finish(p),
        }
    }
}

/// `softmax(scores · scale + bias)` over the last axis: `scores` [B, nh, S, S] (any float
/// dtype), `bias` [B, 1, 1, S] (a constant: it gets no gradient) → [B, nh, S, S] in the bias's
/// dtype; the scores' gradient comes back in theirs.
pub fn attention_softmax(scores: Tensor<4>, bias: Tensor<4>, scale: f64) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as AttentionSoftmaxOps>::attention_softmax(
        scores.into_dispatch(),
        bias.into_dispatch(),
        scale,
    ))
}

/// The attention probabilities `dropout(softmax(scores · scale + bias))` in `dtype` (the
/// products'), as one operation: the dropout is GPU dropout's hashed mask of (`seed`, `prob`)
/// (`model::dropout`, `Dropout::gpu_call`; none at prob 0). Shapes as
/// [`attention_softmax`]'s; the backward keeps `p` in the bias's dtype, not the mask.
pub fn attention_probs(
    scores: Tensor<4>,
    bias: Tensor<4>,
    scale: f64,
    (seed, prob): (u64, f64),
    dtype: DType,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as AttentionSoftmaxOps>::attention_probs(
        scores.into_dispatch(),
        bias.into_dispatch(),
        scale,
        seed,
        prob,
        dtype,
    ))
}
