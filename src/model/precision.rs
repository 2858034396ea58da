//! Mixed precision as PyTorch's autocast places it: the matrix products (Q/K/V and the other dense
//! layers, attention scores and context, the tied decoder) take their operands in f16 or bf16,
//! while the weights, LayerNorm, softmax, the attention-mask bias and the loss stay f32.
//!
//! Each product casts its operands down and its result back up to f32, except in attention: Q, K,
//! V are cast down where their bias is added, the scores go to the softmax as they are (it reads
//! them low and computes in f32, as autocast's softmax does), and the context stays low between
//! its two products.
//! burn's autodiff casts gradients back through each cast, so the weights' gradients arrive in
//! f32 (the master weights'), and an f16 overflow in any product's backward reaches them as inf
//! (which the loss scaler, `train::scaler`, then catches).

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use crate::config::Precision;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, TensorMetadata, backend_extension};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

impl Precision {
    /// The dtype the products compute in, `None` for f32 (no cast at all).
    pub fn low(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::F16 => Some(FloatDType::F16),
            Precision::Bf16 => Some(FloatDType::BF16),
        }
    }

    /// The dtype the products take their operands in: f16 or bf16, or f32.
    pub fn products_dtype(self) -> DType {
        self.low().map_or(DType::F32, DType::from)
    }
}

/// `a` [.., M, K] · `b` [.., K, N] → [.., M, N] in f32, computed in `p`'s precision.
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>, p: Precision) -> Tensor<D> {
    match p.low() {
        None => a.matmul(b),
        Some(_) => matmul_low(a, b, p).cast(FloatDType::F32),
    }
}

/// `a` · `b` as [`matmul`], its result left in `p`'s precision: for a product whose result only
/// feeds another product through views (attention's context), where casting up and back down
/// would be two exact conversions and two operations for nothing. On GPUs a 2-D product is
/// [`ProductOps::product`].
pub fn matmul_low<const D: usize>(a: Tensor<D>, b: Tensor<D>, p: Precision) -> Tensor<D> {
    let (a, b) = (low(a, p), low(b, p));
    if D == 2 && !super::on_host(&a.device()) {
        Tensor::from_dispatch(<Dispatch as ProductOps>::product(
            a.into_dispatch(),
            b.into_dispatch(),
        ))
    } else {
        a.matmul(b)
    }
}

/// A matrix product whose backward is one operation, for GPUs.
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait ProductOps: Backend {
    /// `a` [M, K] · `b` [K, N] → [M, N]: burn's `float_matmul` (under fusion burn's own
    /// operation, which merges the epilogue that follows into its kernel as before). Autodiff
    /// records it with [`ProductOps::product_backward`] as its backward.
    #[fusion(default)]
    fn product(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(a, b)
    }

    /// (`da`, `db`) = (`g`·bᵀ, aᵀ·`g`) for the product's gradient `g` [M, N]: what burn's
    /// autodiff runs for `float_matmul` (the transposes are views), as one operation for burn's
    /// fusion instead of two products and two transposes.
    #[fusion(meta = |g, a, b| {
        use burn::backend::fusion::custom::TensorSpec;
        (
            TensorSpec::new(a.shape.clone(), g.dtype),
            TensorSpec::new(b.shape.clone(), g.dtype),
        )
    })]
    fn product_backward(
        g: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let da = Self::float_matmul(g.clone(), Self::float_transpose(b));
        let db = Self::float_matmul(Self::float_transpose(a), g);
        (da, db)
    }
}

impl ProductOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl ProductOps for burn::backend::NdArray {}
#[cfg(feature = "cube")]
impl ProductOps for burn_cubecl::CubeBackend {}

/// The backward of [`ProductOps::product`]; its state is (a, b).
#[derive(Debug)]
struct ProductGrad;

impl<B: ProductOps> Backward<B, 2> for ProductGrad {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let (a, b) = ops.state;
        let (da, db) = B::product_backward(g, a, b);
        for (parent, grad) in ops.parents.into_iter().zip([da, db]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: ProductOps, C: CheckpointStrategy> ProductOps for Autodiff<B, C> {
    fn product(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [a.node(), b.node()];
        let (a, b) = (a.into_primitive(), b.into_primitive());
        match ProductGrad.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((a.clone(), b.clone()), B::product(a, b)),
            OpsKind::UnTracked(prep) => prep.finish(B::product(a, b)),
        }
    }
}

/// `t` in `p`'s product precision: cast down (f32 → f16/bf16), or as it is when it already is
/// (autodiff would record even a cast to the same dtype), or under f32.
pub fn low<const D: usize>(t: Tensor<D>, p: Precision) -> Tensor<D> {
    match p.low() {
        Some(dt) if t.dtype() != dt.into() => t.cast(dt),
        _ => t,
    }
}

/// `x` [N, d_in] (f32, or already in `p`'s precision) through `l` (weight [d_in, d_out], bias
/// `[d_out]`) → [N, d_out] in f32, the product in `p`'s precision and the bias added in f32.
///
/// In f32 on the CPU this is burn's `Linear::forward`. Elsewhere the bias's [1, d_out] view is
/// taken first (burn's `linear` takes it after the product): a view registered between the
/// product and the operations on its result ends burn's fusion block there (fusion merges a view
/// only of an input the block already reads), so the bias addition (and under f16 the casts
/// around it) ran as a kernel of its own, writing the product's f32 result and reading it back,
/// instead of in the product's epilogue. Then the input's cast and the weight's: of the orders
/// measured (BENCHMARKS.md), this one runs every encoder dense layer's forward as one kernel
/// with its epilogue at BERT-base's structure.
pub fn dense(l: &Linear, x: Tensor<2>, p: Precision) -> Tensor<2> {
    if p.low().is_none() && super::on_host(&x.device()) {
        return l.forward(x);
    }
    dense_side_by_side(&[l], x, p, DType::F32)
}

/// `x` [N, d_in] through the layers `ls` side by side as one product: [N, Σ d_out] in `out` (f32,
/// or the products' dtype where a product takes the result next: Q, K and V), the layers'
/// outputs in order along the last axis, as [`dense`] computes each (their weights and
/// biases concatenated along d_out for this call; autodiff's concatenation hands each layer its
/// slice of the gradient). For the attention's Q, K and V on GPUs: x is cast and read once, one
/// product instead of three forward and one instead of three (and two additions) for x's
/// gradient.
pub fn dense_side_by_side(ls: &[&Linear], x: Tensor<2>, p: Precision, out: DType) -> Tensor<2> {
    let biases: Vec<_> = ls.iter().filter_map(|l| l.bias.as_ref()).collect();
    assert!(
        biases.is_empty() || biases.len() == ls.len(),
        "dense_side_by_side takes layers that all have a bias or none"
    );
    // On GPUs the same computation as one differentiable operation (`model::dense`), whose
    // backward is one operation for burn's fusion.
    if !super::on_host(&x.device()) && biases.len() == ls.len() && matches!(ls.len(), 1 | 3) {
        let ws: Vec<_> = ls.iter().map(|l| l.weight.val()).collect();
        let bs: Vec<_> = biases.iter().map(|b| b.val()).collect();
        return super::dense::dense(x, &ws, &bs, p.products_dtype(), out);
    }
    let bias = (!biases.is_empty())
        .then(|| side_by_side(biases.iter().map(|b| b.val()).collect(), 0).unsqueeze_dim(0));
    let x = low(x, p);
    let w = low(
        side_by_side(ls.iter().map(|l| l.weight.val()).collect(), 1),
        p,
    );
    let y = matmul_low(x, w, p);
    match bias {
        Some(b) => biased_to(y, b, out),
        None if y.dtype() == out => y,
        None => y.cast(out),
    }
}

/// `y` [N, d] (a product's result) + `bias` [1, d] (f32), added in f32 and returned in `out`: the
/// product's epilogue as one operation for autodiff, whose backward hands y the output's
/// gradient in y's dtype and the bias its column sums in f32. Recorded as burn's casts and
/// addition, the gradient of an f16 output went f16 → f32 (the cast's backward), was summed for
/// the bias, and went f32 → f16 again (the other cast's backward) for the product: two passes
/// over [N, d] that change no value (f16 → f32 → f16 is exact).
pub fn biased_to(y: Tensor<2>, bias: Tensor<2>, out: DType) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as EpilogueOps>::biased_to(
        y.into_dispatch(),
        bias.into_dispatch(),
        out,
    ))
}

/// A product's epilogue as a backend operation ([`biased_to`]).
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait EpilogueOps: Backend {
    /// `y` [N, d] + `bias` [1, d], computed in the bias's dtype and returned in `dtype`: burn's
    /// casts and addition, which fusion merges into the product's kernel as before.
    #[fusion(default)]
    fn biased_to(y: FloatTensor<Self>, bias: FloatTensor<Self>, dtype: DType) -> FloatTensor<Self> {
        let sum = Self::float_add(cast_primitive::<Self>(y, bias.dtype()), bias);
        cast_primitive::<Self>(sum, dtype)
    }
}

impl EpilogueOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl EpilogueOps for burn::backend::NdArray {}
#[cfg(feature = "cube")]
impl EpilogueOps for burn_cubecl::CubeBackend {}

/// The backward of [`EpilogueOps::biased_to`]; its state is (y's dtype, the bias's dtype).
#[derive(Debug)]
struct BiasedGrad;

impl<B: EpilogueOps> Backward<B, 2> for BiasedGrad {
    type State = (DType, DType);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (y_dtype, bias_dtype) = ops.state;
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |g| cast_primitive::<B>(g, y_dtype),
            |g| B::float_sum_dim(cast_primitive::<B>(g, bias_dtype), 0),
        );
    }
}

impl<B: EpilogueOps, C: CheckpointStrategy> EpilogueOps for Autodiff<B, C> {
    fn biased_to(y: FloatTensor<Self>, bias: FloatTensor<Self>, dtype: DType) -> FloatTensor<Self> {
        let state = (y.dtype(), bias.dtype());
        let nodes = [y.node(), bias.node()];
        let out = B::biased_to(y.into_primitive(), bias.into_primitive(), dtype);
        match BiasedGrad.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// `ts` concatenated along `dim`, or the one tensor itself (burn's `cat` would copy it).
fn side_by_side<const D: usize>(mut ts: Vec<Tensor<D>>, dim: usize) -> Tensor<D> {
    match ts.len() {
        1 => ts.remove(0),
        _ => Tensor::cat(ts, dim),
    }
}

/// A backend tensor in `dtype`, without an operation when it already is: for the bodies of
/// masklm's backend operations, which take tensors of one dtype and return another.
pub(crate) fn cast_primitive<B: burn::backend::Backend>(
    t: burn::backend::tensor::FloatTensor<B>,
    dtype: burn::tensor::DType,
) -> burn::backend::tensor::FloatTensor<B> {
    use burn::backend::TensorMetadata;
    if t.dtype() == dtype {
        t
    } else {
        B::float_cast(t, dtype.into())
    }
}
