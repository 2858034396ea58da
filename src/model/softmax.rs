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
//! On GPUs the whole of attention's core is one operation for autodiff ([`attention_context`]:
//! the heads of the Q, K and V projections, taken side by side from one product, the scores'
//! product, this softmax with attention's dropout, the context's product), and it keeps q, k, v
//! and two numbers a row (the row's max and sum), not the [B, heads, S, S] probabilities: its
//! backward computes the scores' product again and recomputes p from them, to the bit, as
//! memory-efficient attention kernels do, and writes Q's, K's and V's gradients side by side in
//! one pass. At BERT-base, batch 128 × 128, that is 151 MB a layer not kept (p in f32, its
//! dropped-out copy in f16), at rows of 512 four times as much per token, for one more product of
//! 2·S·dh FLOPs per query and head. The forward kernel writes only the dropped-out probabilities
//! (the mask is GPU dropout's hash, `model::dropout`) and the row's max and sum; the backward
//! kernel writes dscores and the dropped-out probabilities again (for v's gradient), applying the
//! mask to their gradient as it reads it. For burn's fusion the forward and the backward are one
//! operation each ([`AttentionSoftmaxOps::attention_context_forward`] and `_backward`), which
//! fusion's inner backend runs as the split, the products and the probabilities' kernel: the
//! host registers 2 operations a layer instead of about 30, and the kernels are the same.
//! masklm's CPU path takes the softmax alone; on GPUs its kernels (`softmax_cube.rs`) are what
//! the tests compare the one operation against, to the bit.

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use super::dropout::hashed_dropout;
use super::heads::AttentionHeadsOps;
use super::precision::cast_primitive;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Scalar, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::Slice;

/// The attention softmax as backend operations: the forward, its backward, and autodiff's one
/// recorded operation.
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait AttentionSoftmaxOps: Backend + AttentionHeadsOps {
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
        let (exp, _, sum) = softmax_parts::<Self>(scores, bias, scale);
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

    /// (`pd`, `max`, `sum`) for attention's context in training: `pd` the probabilities of
    /// [`AttentionSoftmaxOps::attention_softmax`] dropped out by GPU dropout's hashed mask of
    /// (`seed`, `prob`) over their elements in row-major order (`model::dropout`; none at prob 0),
    /// in `dtype` (the products'); `max` and `sum` [B, nh, S, 1] in the bias's dtype, per row of
    /// keys the maximum of z = scores·scale + bias and Σ exp(z − max), from which the backward
    /// recomputes p = exp(z − max) / sum to the bit. p itself is not written.
    #[fusion(meta = |scores, bias, _scale, _seed, _prob, dtype| {
        use burn::backend::fusion::custom::TensorSpec;
        let stats = || TensorSpec::new(super::layer_norm::per_row(&scores.shape), bias.dtype);
        (TensorSpec::new(scores.shape.clone(), *dtype), stats(), stats())
    })]
    fn attention_probs_forward(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        seed: u64,
        prob: f64,
        dtype: DType,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (exp, max, sum) = softmax_parts::<Self>(scores, bias, scale);
        let p = Self::float_div(exp, sum.clone());
        (drop_out::<Self>(p, seed, prob, dtype), max, sum)
    }

    /// (`dscores` in the scores' dtype, `pd` in dpd's) from the forward's `scores` (computed
    /// again), `bias`, `max` and `sum`, and pd's gradient `dpd`: p recomputed, pd = p ⊙ mask as
    /// the forward wrote it (for v's gradient), dp = dpd ⊙ mask, then
    /// [`AttentionSoftmaxOps::attention_softmax_backward`].
    #[fusion(meta = |scores, _bias, _max, _sum, dpd, _scale, _seed, _prob| {
        use burn::backend::fusion::custom::TensorSpec;
        (
            TensorSpec::new(scores.shape.clone(), scores.dtype),
            TensorSpec::new(dpd.shape.clone(), dpd.dtype),
        )
    })]
    #[allow(clippy::too_many_arguments)]
    fn attention_probs_backward(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        max: FloatTensor<Self>,
        sum: FloatTensor<Self>,
        dpd: FloatTensor<Self>,
        scale: f64,
        seed: u64,
        prob: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (scores_dtype, dtype, pd_dtype) = (scores.dtype(), bias.dtype(), dpd.dtype());
        let z = scaled_biased::<Self>(scores, bias, scale);
        let p = Self::float_div(Self::float_exp(Self::float_sub(z, max)), sum);
        let pd = drop_out::<Self>(p.clone(), seed, prob, pd_dtype);
        let dp = drop_out::<Self>(dpd, seed, prob, dtype);
        let dscores = Self::attention_softmax_backward(dp, p, scale, scores_dtype);
        (dscores, pd)
    }

    /// Attention's context `dropout(softmax(q·kᵀ·scale + bias))·v` on GPUs: `qkv` [B·S, 3H]
    /// (Q, K and V side by side, in the products' dtype), `bias` [B, 1, 1, S] → [B, nh, S, dh]
    /// (nh = `heads`) in that dtype; the dropout is GPU dropout's (`seed`, `prob`). Autodiff
    /// records it as one operation that keeps q, k, v and two numbers a row, not the [B, nh, S, S]
    /// probabilities: its backward computes the scores again
    /// ([`AttentionSoftmaxOps::attention_context_backward`])
    /// and writes Q's, K's and V's gradients side by side, as `qkv` came.
    #[fusion(default)]
    fn attention_context(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        seed: u64,
        prob: f64,
    ) -> FloatTensor<Self> {
        Self::attention_context_forward(qkv, bias, heads, scale, seed, prob).0
    }

    /// [`AttentionSoftmaxOps::attention_context`]'s forward with what its backward keeps:
    /// (context [B, nh, S, dh], the heads of q, k and v side by side [B, 3·nh, S, dh] in qkv's
    /// dtype, the rows' max and sum [B, nh, S, 1] in the bias's), as burn's operations
    /// `q.matmul(k.swap_dims(2, 3))`, then the probabilities, then `.matmul(v)` would compute it.
    /// One operation for burn's fusion, whose inner backend runs the split, the two products and
    /// the probabilities' kernel (9 operations a layer if registered one by one).
    #[fusion(meta = |qkv, bias, heads, _scale, _seed, _prob| {
        use burn::backend::fusion::custom::TensorSpec;
        let [b, s, dh] = context_dims(&qkv.shape, bias.shape[0], *heads);
        let stats = || TensorSpec::new(Shape::new([b, *heads, s, 1]), bias.dtype);
        (
            TensorSpec::new(Shape::new([b, *heads, s, dh]), qkv.dtype),
            TensorSpec::new(Shape::new([b, 3 * *heads, s, dh]), qkv.dtype),
            stats(),
            stats(),
        )
    })]
    fn attention_context_forward(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        seed: u64,
        prob: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let dtype = qkv.dtype();
        let all = Self::split_heads(qkv, bias.shape()[0], 3 * heads);
        let [q, k, v] = qkv_thirds::<Self>(all.clone());
        let scores = Self::float_matmul(q, Self::float_swap_dims(k, 2, 3));
        let (pd, max, sum) = Self::attention_probs_forward(scores, bias, scale, seed, prob, dtype);
        (Self::float_matmul(pd, v), all, max, sum)
    }

    /// The gradient of [`AttentionSoftmaxOps::attention_context`]'s `qkv` [B·S, 3H] from `dctx`
    /// and what [`AttentionSoftmaxOps::attention_context_forward`] kept: dq, dk, dv by the
    /// products burn's autodiff would run for the forward's three operations (`float_matmul`'s
    /// backward, then `swap_dims`'), plus the scores' product again, then side by side as rows.
    /// One operation for burn's fusion (about 20 a layer registered one by one).
    #[fusion(meta = |dctx, all, _bias, _max, _sum, _scale, _seed, _prob| {
        use burn::backend::fusion::custom::TensorSpec;
        let [b, nh3, s, dh] = [0, 1, 2, 3].map(|i| all.shape[i]);
        TensorSpec::new(Shape::new([b * s, nh3 * dh]), dctx.dtype)
    })]
    #[allow(clippy::too_many_arguments)]
    fn attention_context_backward(
        dctx: FloatTensor<Self>,
        all: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        max: FloatTensor<Self>,
        sum: FloatTensor<Self>,
        scale: f64,
        seed: u64,
        prob: f64,
    ) -> FloatTensor<Self> {
        let [q, k, v] = qkv_thirds::<Self>(all);
        let kt = Self::float_swap_dims(k, 2, 3);
        let scores = Self::float_matmul(q.clone(), kt.clone());
        let dpd = Self::float_matmul(dctx.clone(), Self::float_transpose(v));
        let (dscores, pd) =
            Self::attention_probs_backward(scores, bias, max, sum, dpd, scale, seed, prob);
        let dv = Self::float_matmul(Self::float_transpose(pd), dctx);
        let dq = Self::float_matmul(dscores.clone(), Self::float_transpose(kt));
        let dkt = Self::float_matmul(Self::float_transpose(q), dscores);
        qkv_rows::<Self>([dq, Self::float_swap_dims(dkt, 2, 3), dv])
    }
}

/// [B, S, dh] of attention's context from `qkv`'s shape [B·S, 3H], the batch size and the heads.
#[cfg(feature = "cube")]
fn context_dims(qkv: &Shape, batch: usize, heads: usize) -> [usize; 3] {
    [batch, qkv[0] / batch, qkv[1] / (3 * heads)]
}

/// (exp(z − max), max, Σ exp(z − max)) over the last axis, z = scores·scale + bias in the
/// bias's dtype: burn 0.22.1's `softmax` before its division, without its detach (nothing here
/// is tracked).
fn softmax_parts<B: Backend>(
    scores: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let z = scaled_biased::<B>(scores, bias, scale);
    let last = z.shape().num_dims() - 1;
    let max = B::float_max_dim(z.clone(), last);
    let exp = B::float_exp(B::float_sub(z, max.clone()));
    let sum = B::float_sum_dim(exp.clone(), last);
    (exp, max, sum)
}

/// z = scores·scale + bias, in the bias's dtype.
fn scaled_biased<B: Backend>(
    scores: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
) -> FloatTensor<B> {
    let dtype = bias.dtype();
    let scores = cast_primitive::<B>(scores, dtype);
    B::float_add(
        B::float_mul_scalar(scores, Scalar::new(scale, &dtype)),
        bias,
    )
}

/// `x` dropped out by GPU dropout's hashed mask of (`seed`, `prob`) (cast only at prob 0), in
/// `dtype`.
fn drop_out<B: Backend>(x: FloatTensor<B>, seed: u64, prob: f64, dtype: DType) -> FloatTensor<B> {
    if prob == 0.0 {
        cast_primitive::<B>(x, dtype)
    } else {
        hashed_dropout::<B>(x, seed, prob, dtype)
    }
}

/// q, k, v [B, nh, S, dh] from the heads of `qkv` side by side, `all` [B, 3·nh, S, dh]
/// ([`AttentionHeadsOps::split_heads`] of the rows: one copy on CubeCL devices): each third of
/// them as a view, which the products read as it is (a batch stride of 3·nh·S·dh is still a
/// layout CubeCL's products take).
fn qkv_thirds<B: Backend>(all: FloatTensor<B>) -> [FloatTensor<B>; 3] {
    let [b, nh3, s, dh] = [0, 1, 2, 3].map(|i| all.shape()[i]);
    let heads = nh3 / 3;
    [0, 1, 2].map(|i| {
        let whole = |n: usize| Slice::new(0, Some(n as isize), 1);
        let third = Slice::new((i * heads) as isize, Some(((i + 1) * heads) as isize), 1);
        B::float_slice(all.clone(), &[whole(b), third, whole(s), whole(dh)])
    })
}

/// The gradients dq, dk, dv [B, nh, S, dh] as rows [B·S, 3H], side by side as
/// [`qkv_thirds`] took them: one concatenation of their [B, S, nh, dh] views along the heads
/// (one pass, written contiguous, so the rows are a view of it).
fn qkv_rows<B: Backend>(grads: [FloatTensor<B>; 3]) -> FloatTensor<B> {
    let rows = B::float_cat(grads.map(|g| B::float_swap_dims(g, 1, 2)).into(), 2);
    let [b, s, nh, dh] = [0, 1, 2, 3].map(|i| rows.shape()[i]);
    B::float_reshape(rows, Shape::new([b * s, nh * dh]))
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

/// What [`AttentionSoftmaxOps::attention_context`]'s backward keeps: the heads of q, k and v
/// side by side, the bias, the rows' max and sum, then scale, seed and prob.
type ContextState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    f64,
    u64,
    f64,
);

/// The backward of [`AttentionSoftmaxOps::attention_context`].
#[derive(Debug)]
struct AttentionContextGrad;

impl<B: AttentionSoftmaxOps> Backward<B, 1> for AttentionContextGrad {
    type State = ContextState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (all, bias, max, sum, scale, seed, prob) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dctx| {
            B::attention_context_backward(dctx, all, bias, max, sum, scale, seed, prob)
        });
    }
}

impl<B: AttentionSoftmaxOps, C: CheckpointStrategy> AttentionSoftmaxOps for Autodiff<B, C> {
    fn attention_context(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        seed: u64,
        prob: f64,
    ) -> FloatTensor<Self> {
        let node = qkv.node();
        let (qkv, bias) = (qkv.into_primitive(), bias.into_primitive());
        match AttentionContextGrad
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (ctx, all, max, sum) =
                    B::attention_context_forward(qkv, bias.clone(), heads, scale, seed, prob);
                prep.finish((all, bias, max, sum, scale, seed, prob), ctx)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::attention_context(qkv, bias, heads, scale, seed, prob))
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

/// Attention's context `dropout(softmax(q·kᵀ·scale + bias))·v` as one operation, for GPUs:
/// `qkv` [B·S, 3H] (the Q, K and V projections side by side, in the products' dtype; each
/// split into `heads` heads as `heads::split_heads` splits rows), `bias` [B, 1, 1, S] (a
/// constant) → [B, nh, S, dh] in that dtype. The dropout is GPU dropout's hashed mask of
/// (`seed`, `prob`) (`model::dropout`, `Dropout::gpu_call`; none at prob 0).
pub fn attention_context(
    qkv: Tensor<2>,
    bias: Tensor<4>,
    heads: usize,
    scale: f64,
    (seed, prob): (u64, f64),
) -> Tensor<4> {
    let [n, width] = qkv.dims();
    let b = bias.dims()[0];
    assert!(
        width % (3 * heads) == 0 && n % b == 0,
        "attention_context takes qkv [B·S, 3·H] with H a multiple of {heads} heads and B = {b}, \
         got [{n}, {width}]"
    );
    Tensor::from_dispatch(<Dispatch as AttentionSoftmaxOps>::attention_context(
        qkv.into_dispatch(),
        bias.into_dispatch(),
        heads,
        scale,
        seed,
        prob,
    ))
}
