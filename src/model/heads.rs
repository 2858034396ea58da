//! Attention's two layouts of the same values: rows [B·S, H] (what the dense layers read and
//! write) and heads [B, nh, S, dh] (what the attention products take), as operations of their
//! own that are each other's backward.
//!
//! Written as views (`reshape` then `swap_dims`), the heads are [B, nh, S, dh] with strides
//! [S·H, dh, H, 1]: the head stride dh is smaller than the row stride H, a layout CubeCL's
//! matrix products do not read (`MatrixBatchLayout::HighlyPermuted`), so every attention product
//! would copy its operands before it ran — Q, K and V in the forward and again in the backward,
//! the gradients too — and none could be fused with anything. On CubeCL devices these operations
//! copy each once into the contiguous layout (burn's own copy kernel, vectorised along dh, which
//! is contiguous on both sides), and the products take their operands as they are. On the CPU
//! backends, whose products read any strides, they are the views.

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, TensorMetadata, backend_extension};
use burn::prelude::*;

/// [B·S, H] rows → [B, nh, S, dh] heads and back.
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait AttentionHeadsOps: Backend {
    /// `x` [B·S, H] (B = `batch`) → [B, nh, S, H / nh] (nh = `heads`), in x's dtype: element
    /// (b, h, s, d) is x[b·S + s, h·dh + d]. The default body is the view.
    #[fusion(dtype = x, shape = heads_shape(x, *batch, *heads))]
    fn split_heads(x: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self> {
        heads_view::<Self>(x, batch, heads)
    }

    /// `x` [B, nh, S, dh] (any strides) → [B·S, nh·dh], in x's dtype: the inverse of
    /// [`AttentionHeadsOps::split_heads`]. The default body is the view and burn's reshape (which
    /// copies, the view not being contiguous).
    #[fusion(dtype = x, shape = rows_shape(x))]
    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let rows = rows_shape(&x.shape());
        Self::float_reshape(Self::float_swap_dims(x, 1, 2), rows)
    }
}

/// The [B, nh, S, dh] view of rows `x` [B·S, H]: `reshape([B, S, nh, dh])` then
/// `swap_dims(1, 2)`, strides [S·H, dh, H, 1].
fn heads_view<B: Backend>(x: FloatTensor<B>, batch: usize, heads: usize) -> FloatTensor<B> {
    let shape = heads_shape(&x.shape(), batch, heads);
    let [b, nh, s, dh] = [shape[0], shape[1], shape[2], shape[3]];
    B::float_swap_dims(B::float_reshape(x, Shape::new([b, s, nh, dh])), 1, 2)
}

/// [B·S, H] → [B, nh, S, H / nh]: the heads' shape of rows `x` of `batch` sequences.
fn heads_shape(x: &Shape, batch: usize, heads: usize) -> Shape {
    let [n, h] = [x[0], x[1]];
    Shape::new([batch, heads, n / batch, h / heads])
}

/// [B, nh, S, dh] → [B·S, nh·dh].
fn rows_shape(x: &Shape) -> Shape {
    Shape::new([x[0] * x[2], x[1] * x[3]])
}

impl AttentionHeadsOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl AttentionHeadsOps for burn::backend::NdArray {}

#[cfg(feature = "cube")]
impl AttentionHeadsOps for burn_cubecl::CubeBackend {
    fn split_heads(x: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self> {
        burn_cubecl::kernel::into_contiguous(heads_view::<Self>(x, batch, heads))
    }

    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        use burn::backend::ops::FloatTensorOps;
        let rows = rows_shape(&x.shape());
        // [B, S, nh, dh] contiguous, so the reshape to rows is a view.
        let x = burn_cubecl::kernel::into_contiguous(Self::float_swap_dims(x, 1, 2));
        Self::float_reshape(x, rows)
    }
}

/// The backward of [`AttentionHeadsOps::split_heads`]: the gradient merged back into rows.
#[derive(Debug)]
struct SplitHeadsGrad;

impl<B: AttentionHeadsOps> Backward<B, 1> for SplitHeadsGrad {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<B, _>(ops.parents, ops.node, grads, B::merge_heads);
    }
}

/// The backward of [`AttentionHeadsOps::merge_heads`]: the gradient split into heads again; its
/// state is (B, nh).
#[derive(Debug)]
struct MergeHeadsGrad;

impl<B: AttentionHeadsOps> Backward<B, 1> for MergeHeadsGrad {
    type State = (usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (batch, heads) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |g| {
            B::split_heads(g, batch, heads)
        });
    }
}

impl<B: AttentionHeadsOps, C: CheckpointStrategy> AttentionHeadsOps for Autodiff<B, C> {
    fn split_heads(x: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self> {
        let node = x.node();
        let y = B::split_heads(x.into_primitive(), batch, heads);
        SplitHeadsGrad
            .prepare::<C>([node])
            .compute_bound()
            .stateless(y)
    }

    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (node, shape) = (x.node(), x.shape());
        let y = B::merge_heads(x.into_primitive());
        match MergeHeadsGrad
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((shape[0], shape[1]), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// `x` [B·S, H] (rows of `batch` sequences) → [B, `heads`, S, H / heads], contiguous on CubeCL
/// devices (a view elsewhere). Its gradient is [`merge_heads`]'s.
pub fn split_heads(x: Tensor<2>, batch: usize, heads: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as AttentionHeadsOps>::split_heads(
        x.into_dispatch(),
        batch,
        heads,
    ))
}

/// `x` [B, nh, S, dh] → [B·S, nh·dh], contiguous: the inverse of [`split_heads`].
pub fn merge_heads(x: Tensor<4>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as AttentionHeadsOps>::merge_heads(
        x.into_dispatch(),
    ))
}
