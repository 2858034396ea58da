//! A dense layer (`x · W + b`, `model::precision::dense_side_by_side`'s computation) as one
//! differentiable operation, for GPUs: its forward is the same burn operations as before, which
//! burn's fusion merges into the product's kernel and epilogue as before; its backward is one
//! operation for fusion instead of about eight (the bias's cast and column sum, the reshape of
//! its gradient, two products and two transposes, the weight gradient's cast to f32) and, for
//! the query, key and value layers side by side, six slices more.
//!
//! The backward computes what burn's autodiff computed for the operations it replaces, in the
//! same order: `dy` = g in the product's dtype, `db` = Σ_rows g in the bias's dtype (f32),
//! `dx` = dy · Wᵀ and `dW` = xᵀ · dy in the product's dtype, then cast to x's and W's dtypes. On
//! CubeCL devices the two products write x's and W's dtypes themselves, from their f32
//! accumulators (so an f32 gradient is not first rounded to f16 or bf16).

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use super::precision::cast_primitive;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, Slice};

/// Dense layers as backend operations: one layer, three side by side, and their backwards.
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait DenseOps: Backend {
    /// `x` [N, K] · `w` [K, d] + `b` `[d]` → [N, d] in `out`, the product in `low` (x and w cast
    /// to it) and the bias added in b's dtype: `forward`.
    #[fusion(default)]
    fn dense(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        low: DType,
        out: DType,
    ) -> FloatTensor<Self> {
        forward::<Self>(x, vec![w], vec![b], low, out).0
    }

    /// Three dense layers side by side, their outputs in order along the last axis: [N, 3d].
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn dense3(
        x: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        bq: FloatTensor<Self>,
        bk: FloatTensor<Self>,
        bv: FloatTensor<Self>,
        low: DType,
        out: DType,
    ) -> FloatTensor<Self> {
        forward::<Self>(x, vec![wq, wk, wv], vec![bq, bk, bv], low, out).0
    }

    /// (`dx` [N, K] in `x_dtype`, `dw` [K, d] in `w_dtype`, `db` `[d]` in `b_dtype`) from the
    /// output's gradient `g` [N, d] and what `forward` kept: x and w in the product's dtype.
    #[fusion(meta = |_g, x_low, w_low, x_dtype, w_dtype, b_dtype| {
        use burn::backend::fusion::custom::TensorSpec;
        (
            TensorSpec::new(x_low.shape.clone(), *x_dtype),
            TensorSpec::new(w_low.shape.clone(), *w_dtype),
            TensorSpec::new(Shape::new([w_low.shape[1]]), *b_dtype),
        )
    })]
    fn dense_backward(
        g: FloatTensor<Self>,
        x_low: FloatTensor<Self>,
        w_low: FloatTensor<Self>,
        x_dtype: DType,
        w_dtype: DType,
        b_dtype: DType,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let grads = backward::<Self>(
            g,
            x_low,
            w_low,
            [x_dtype, w_dtype, b_dtype],
            product_cast::<Self>,
        );
        one_layer::<Self>(grads)
    }

    /// [`DenseOps::dense_backward`] of [`DenseOps::dense3`]: (dx, dwq, dwk, dwv, dbq, dbk, dbv),
    /// each layer's gradients its third of the side-by-side ones.
    #[fusion(meta = |_g, x_low, w_low, x_dtype, w_dtype, b_dtype| {
        use burn::backend::fusion::custom::TensorSpec;
        let [k, d] = [w_low.shape[0], w_low.shape[1] / 3];
        let w = || TensorSpec::new(Shape::new([k, d]), *w_dtype);
        let b = || TensorSpec::new(Shape::new([d]), *b_dtype);
        (TensorSpec::new(x_low.shape.clone(), *x_dtype), w(), w(), w(), b(), b(), b())
    })]
    #[allow(clippy::type_complexity)]
    fn dense3_backward(
        g: FloatTensor<Self>,
        x_low: FloatTensor<Self>,
        w_low: FloatTensor<Self>,
        x_dtype: DType,
        w_dtype: DType,
        b_dtype: DType,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let grads = backward::<Self>(
            g,
            x_low,
            w_low,
            [x_dtype, w_dtype, b_dtype],
            product_cast::<Self>,
        );
        three_layers::<Self>(grads)
    }
}

impl DenseOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl DenseOps for burn::backend::NdArray {}

/// On CubeCL devices the backward's two products write their gradients in the dtypes asked for
/// straight from the products' f32 accumulators (`product_into`), instead of in the operands'
/// dtype and then cast: up to two kernels and two allocations fewer per dense layer and step (one
/// where x is in the products' dtype already), and the weights' f32 gradients are not rounded
/// to the products' precision on the way.
#[cfg(feature = "cube")]
impl DenseOps for burn_cubecl::CubeBackend {
    fn dense_backward(
        g: FloatTensor<Self>,
        x_low: FloatTensor<Self>,
        w_low: FloatTensor<Self>,
        x_dtype: DType,
        w_dtype: DType,
        b_dtype: DType,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let grads = backward::<Self>(g, x_low, w_low, [x_dtype, w_dtype, b_dtype], product_into);
        one_layer::<Self>(grads)
    }

    fn dense3_backward(
        g: FloatTensor<Self>,
        x_low: FloatTensor<Self>,
        w_low: FloatTensor<Self>,
        x_dtype: DType,
        w_dtype: DType,
        b_dtype: DType,
    ) -> Grads3<Self> {
        let grads = backward::<Self>(g, x_low, w_low, [x_dtype, w_dtype, b_dtype], product_into);
        let (dx, dwq, dwk, dwv, dbq, dbk, dbv) = three_layers::<Self>(grads);
        // Each weight's gradient is a column slice of the side-by-side one: copied once here into
        // a buffer of its own, instead of by the gradient norm and again by AdamW, which take
        // contiguous tensors. (A bias's slice, one row, is contiguous already.)
        let [dwq, dwk, dwv] = [dwq, dwk, dwv].map(burn_cubecl::kernel::into_contiguous);
        (dx, dwq, dwk, dwv, dbq, dbk, dbv)
    }
}

/// (dx, dW, db) of one layer, db as the bias's [d].
fn one_layer<B: Backend>(
    (dx, dw, db): (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>),
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let d = dw.shape()[1];
    (dx, dw, B::float_reshape(db, Shape::new([d])))
}

/// The gradients of [`DenseOps::dense3`]'s inputs: (dx, dwq, dwk, dwv, dbq, dbk, dbv).
type Grads3<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
);

/// [`Grads3`] from the side-by-side (dx, dW [K, 3d], db [1, 3d]): each layer's third.
fn three_layers<B: Backend>(
    (dx, dw, db): (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>),
) -> Grads3<B> {
    let [k, d] = [dw.shape()[0], dw.shape()[1] / 3];
    let third = |t: &FloatTensor<B>, rows: usize, i: usize| {
        let cols = Slice::new((i * d) as isize, Some(((i + 1) * d) as isize), 1);
        B::float_slice(t.clone(), &[Slice::new(0, Some(rows as isize), 1), cols])
    };
    let [dwq, dwk, dwv] = [0, 1, 2].map(|i| third(&dw, k, i));
    let [dbq, dbk, dbv] = [0, 1, 2].map(|i| B::float_reshape(third(&db, 1, i), Shape::new([d])));
    (dx, dwq, dwk, dwv, dbq, dbk, dbv)
}

/// `a` · `b` in `dtype`, as a backward wants a gradient: the product in the operands' dtype, then
/// cast (what burn's autodiff computed for the operations `forward` replaces).
fn product_cast<B: Backend>(a: FloatTensor<B>, b: FloatTensor<B>, dtype: DType) -> FloatTensor<B> {
    cast_primitive::<B>(B::float_matmul(a, b), dtype)
}

/// `a` · `b` written in `dtype` by CubeCL's (autotuned) product itself, which accumulates in f32
/// whatever the operands' dtype.
#[cfg(feature = "cube")]
fn product_into(
    a: FloatTensor<burn_cubecl::CubeBackend>,
    b: FloatTensor<burn_cubecl::CubeBackend>,
    dtype: DType,
) -> FloatTensor<burn_cubecl::CubeBackend> {
    use burn_cubecl::kernel::matmul::{MatmulStrategy, matmul};
    matmul(a, b, None, MatmulStrategy::default(), dtype)
        .unwrap_or_else(|e| panic!("a dense layer's backward product into {dtype:?}: {e:?}"))
}

/// (`y` [N, Σd] in `out`, x and the side-by-side weights [K, Σd] in `low`): burn's operations in
/// the order `dense_side_by_side` registered them (the bias's [1, Σd] view first, then the
/// input's cast and the weights', then the product and its epilogue), which fusion runs as one
/// kernel with the epilogue.
fn forward<B: Backend>(
    x: FloatTensor<B>,
    ws: Vec<FloatTensor<B>>,
    bs: Vec<FloatTensor<B>>,
    low: DType,
    out: DType,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let side_by_side = |mut ts: Vec<FloatTensor<B>>, dim: usize| match ts.len() {
        1 => ts.remove(0),
        _ => B::float_cat(ts, dim),
    };
    let b = side_by_side(bs, 0);
    let d = b.shape()[0];
    let (b_dtype, b) = (b.dtype(), B::float_reshape(b, Shape::new([1, d])));
    let x = cast_primitive::<B>(x, low);
    let w = cast_primitive::<B>(side_by_side(ws, 1), low);
    let y = B::float_matmul(x.clone(), w.clone());
    let sum = B::float_add(cast_primitive::<B>(y, b_dtype), b);
    (cast_primitive::<B>(sum, out), x, w)
}

/// (dx, dW, db [1, d]) as burn's autodiff computed them for `forward`'s operations, in the
/// dtypes of x, the weights and the biases, the products by `product` ([`product_cast`], or on
/// CubeCL devices `product_into`).
fn backward<B: Backend>(
    g: FloatTensor<B>,
    x_low: FloatTensor<B>,
    w_low: FloatTensor<B>,
    [x_dtype, w_dtype, b_dtype]: [DType; 3],
    product: fn(FloatTensor<B>, FloatTensor<B>, DType) -> FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let dy = cast_primitive::<B>(g.clone(), w_low.dtype());
    let db = B::float_sum_dim(cast_primitive::<B>(g, b_dtype), 0);
    let dx = product(dy.clone(), B::float_transpose(w_low), x_dtype);
    let dw = product(B::float_transpose(x_low), dy, w_dtype);
    (dx, dw, db)
}

/// What a dense layer's backward keeps: x and the weights in the product's dtype, then the
/// dtypes of x, the weights and the biases.
type State<B> = (FloatTensor<B>, FloatTensor<B>, DType, DType, DType);

/// The backward of [`DenseOps::dense`]; its parents are x, w and b.
#[derive(Debug)]
struct DenseGrad;

impl<B: DenseOps> Backward<B, 3> for DenseGrad {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let (x_low, w_low, x_dtype, w_dtype, b_dtype) = ops.state;
        let (dx, dw, db) = B::dense_backward(g, x_low, w_low, x_dtype, w_dtype, b_dtype);
        for (parent, grad) in ops.parents.into_iter().zip([dx, dw, db]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// The backward of [`DenseOps::dense3`]; its parents are x, the three weights, the three biases.
#[derive(Debug)]
struct Dense3Grad;

impl<B: DenseOps> Backward<B, 7> for Dense3Grad {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 7>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let (x_low, w_low, x_dtype, w_dtype, b_dtype) = ops.state;
        let (dx, dwq, dwk, dwv, dbq, dbk, dbv) =
            B::dense3_backward(g, x_low, w_low, x_dtype, w_dtype, b_dtype);
        let all = [dx, dwq, dwk, dwv, dbq, dbk, dbv];
        for (parent, grad) in ops.parents.into_iter().zip(all) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: DenseOps, C: CheckpointStrategy> DenseOps for Autodiff<B, C> {
    fn dense(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        low: DType,
        out: DType,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), w.node(), b.node()];
        let dtypes = (x.dtype(), w.dtype(), b.dtype());
        let (x, w, b) = (x.into_primitive(), w.into_primitive(), b.into_primitive());
        match DenseGrad.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, x_low, w_low) = forward::<B>(x, vec![w], vec![b], low, out);
                prep.finish((x_low, w_low, dtypes.0, dtypes.1, dtypes.2), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::dense(x, w, b, low, out)),
        }
    }

    fn dense3(
        x: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        bq: FloatTensor<Self>,
        bk: FloatTensor<Self>,
        bv: FloatTensor<Self>,
        low: DType,
        out: DType,
    ) -> FloatTensor<Self> {
        let nodes = [&x, &wq, &wk, &wv, &bq, &bk, &bv].map(|t| t.node());
        let dtypes = (x.dtype(), wq.dtype(), bq.dtype());
        let x = x.into_primitive();
        let ws = [wq, wk, wv].map(|t| t.into_primitive());
        let bs = [bq, bk, bv].map(|t| t.into_primitive());
        match Dense3Grad.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, x_low, w_low) = forward::<B>(x, ws.into(), bs.into(), low, out);
                prep.finish((x_low, w_low, dtypes.0, dtypes.1, dtypes.2), y)
            }
            OpsKind::UnTracked(prep) => {
                let [wq, wk, wv] = ws;
                let [bq, bk, bv] = bs;
                prep.finish(B::dense3(x, wq, wk, wv, bq, bk, bv, low, out))
            }
        }
    }
}

/// `x` [N, K] through one layer (`w` [K, d], `b` `[d]`) or three side by side (`ws`, `bs` of
/// three each): [N, Σd] in `out`, the product in `low`. One differentiable operation.
pub fn dense(
    x: Tensor<2>,
    ws: &[Tensor<2>],
    bs: &[Tensor<1>],
    low: DType,
    out: DType,
) -> Tensor<2> {
    let d = |t: &Tensor<2>| t.clone().into_dispatch();
    let b = |t: &Tensor<1>| t.clone().into_dispatch();
    let x = x.into_dispatch();
    Tensor::from_dispatch(match (ws, bs) {
        ([w], [bias]) => <Dispatch as DenseOps>::dense(x, d(w), b(bias), low, out),
        ([wq, wk, wv], [bq, bk, bv]) => {
            <Dispatch as DenseOps>::dense3(x, d(wq), d(wk), d(wv), b(bq), b(bk), b(bv), low, out)
        }
        _ => panic!(
            "dense takes one or three layers with a bias each, got {} weights and {} biases",
            ws.len(),
            bs.len()
        ),
    })
}
