//! LayerNorm over the last axis (HF `nn.LayerNorm`), as one operation with a backward of its own.
//!
//! burn 0.22.1's `layer_norm` is eleven tensor operations (two means, a subtraction, a square, a
//! square root, a division, the affine part), and autodiff records and differentiates each of
//! them. Here the forward keeps `x̂` and `σ` (as PyTorch keeps mean and rstd) and the backward
//! is the closed form, one operation for autodiff:
//!
//! with `x̂ = (x − μ) / σ`, `σ = √(var + ε)`, `y = x̂·γ + β` and `g = dy·γ`:
//!   `dβ = Σ_rows dy`, `dγ = Σ_rows dy·x̂`, `dx = (g − mean(g) − x̂·mean(g·x̂)) / σ`.
//!
//! In training the forward is burn's computation, operation for operation (what autodiff ran
//! before), so outputs are unchanged to the bit; the backward computes the same gradients in
//! fewer operations, so gradients differ from autodiff's at the rounding level
//! (`tests/it/layer_norm.rs` checks both). Outside training it is burn's own `layer_norm`. The
//! CPU backends run the default bodies below; CubeCL devices run one kernel for the forward and
//! one (with two column sums) for the backward (`layer_norm_cube.rs`), each one operation for
//! burn's fusion instead of 10 and 14. In GPU training, HF's `LayerNorm(dropout(h) + residual)`
//! is one operation too ([`LayerNormOps::residual_normalize`]): the same kernels, which apply
//! dropout's hashed mask (`model::dropout`) and add the residual as they load h.

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Scalar, TensorMetadata, backend_extension};
use burn::module::{Initializer, Param};
use burn::prelude::*;

use super::dropout::{Dropout, hashed_dropout};

/// LayerNorm as backend operations: the forward with what its backward keeps, the backward, and
/// the differentiable operation that autodiff records as one.
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait LayerNormOps: Backend {
    /// `x` [.., H], `gamma` `[H]`, `beta` `[H]` → (`y` [.., H], `x̂` [.., H], `σ` [.., 1]), burn's
    /// `layer_norm` operation for operation (CubeCL devices: one kernel, `layer_norm_cube.rs`).
    #[fusion(meta = |x, _gamma, _beta, _epsilon| {
        let sigma = burn::backend::fusion::custom::TensorSpec::new(per_row(&x.shape), x.dtype);
        (x.clone(), x.clone(), sigma)
    })]
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = x.dtype();
        let shape = x.shape();
        let last = shape.num_dims() - 1;
        let mean = Self::float_mean_dim(x.clone(), last);
        let centered = Self::float_sub(x, mean);
        let var = Self::float_mean_dim(Self::float_mul(centered.clone(), centered.clone()), last);
        let sigma = Self::float_sqrt(Self::float_add_scalar(var, Scalar::new(epsilon, &dtype)));
        let x_hat = Self::float_div(centered, sigma.clone());
        let row = row_shape(&shape);
        let y = Self::float_add(
            Self::float_mul(x_hat.clone(), Self::float_reshape(gamma, row.clone())),
            Self::float_reshape(beta, row),
        );
        (y, x_hat, sigma)
    }

    /// The gradients (`dx` [.., H], `dγ` `[H]`, `dβ` `[H]`) from `dy` [.., H] and what
    /// [`LayerNormOps::layer_norm_forward`] kept (CubeCL devices: one kernel for dx and two
    /// column sums, `layer_norm_cube.rs`).
    #[fusion(meta = |dy, _x_hat, gamma, _sigma| (dy.clone(), gamma.clone(), gamma.clone()))]
    fn layer_norm_backward(
        dy: FloatTensor<Self>,
        x_hat: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        sigma: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let shape = dy.shape();
        let last = shape.num_dims() - 1;
        let h = shape[last];
        // [.., H] → [N, H]: γ and β are shared by every row.
        let rows = Shape::from(vec![shape.num_elements() / h, h]);
        let column_sum = |t: FloatTensor<Self>| {
            Self::float_reshape(
                Self::float_sum_dim(Self::float_reshape(t, rows.clone()), 0),
                Shape::from(vec![h]),
            )
        };
        let d_beta = column_sum(dy.clone());
        let d_gamma = column_sum(Self::float_mul(dy.clone(), x_hat.clone()));
        let g = Self::float_mul(dy, Self::float_reshape(gamma, row_shape(&shape)));
        let mean_g = Self::float_mean_dim(g.clone(), last);
        let mean_gx = Self::float_mean_dim(Self::float_mul(g.clone(), x_hat.clone()), last);
        let dx = Self::float_div(
            Self::float_sub(Self::float_sub(g, mean_g), Self::float_mul(x_hat, mean_gx)),
            sigma,
        );
        (dx, d_gamma, d_beta)
    }

    /// (`y`, `x̂`, `σ`) of LayerNorm(`h` ⊙ mask + `residual`), the mask GPU dropout's hashed one
    /// of (`seed`, `prob`) over h's elements (`model::dropout`; none at prob 0): HF's
    /// `LayerNorm(dropout(dense(x)) + residual)` in `BertSelfOutput` and `BertOutput`, for GPU
    /// training. CubeCL devices run it as one kernel (`layer_norm_cube.rs`), which writes
    /// neither the dropped-out h nor the sum.
    #[fusion(meta = |h, _residual, _gamma, _beta, _epsilon, _seed, _prob| {
        let sigma = burn::backend::fusion::custom::TensorSpec::new(per_row(&h.shape), h.dtype);
        (h.clone(), h.clone(), sigma)
    })]
    #[allow(clippy::too_many_arguments)]
    fn residual_layer_norm_forward(
        h: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        seed: u64,
        prob: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = h.dtype();
        let h = if prob == 0.0 {
            h
        } else {
            hashed_dropout::<Self>(h, seed, prob, dtype)
        };
        Self::layer_norm_forward(Self::float_add(h, residual), gamma, beta, epsilon)
    }

    /// (`dh`, `dresidual`, `dγ`, `dβ`) of [`LayerNormOps::residual_layer_norm_forward`] from `dy`
    /// and what it kept: `dresidual` is LayerNorm's dx, `dh` = dx ⊙ mask.
    #[fusion(meta = |dy, _x_hat, gamma, _sigma, _seed, _prob| {
        (dy.clone(), dy.clone(), gamma.clone(), gamma.clone())
    })]
    fn residual_layer_norm_backward(
        dy: FloatTensor<Self>,
        x_hat: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        sigma: FloatTensor<Self>,
        seed: u64,
        prob: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let (dx, d_gamma, d_beta) = Self::layer_norm_backward(dy, x_hat, gamma, sigma);
        let dtype = dx.dtype();
        let dh = if prob == 0.0 {
            dx.clone()
        } else {
            hashed_dropout::<Self>(dx.clone(), seed, prob, dtype)
        };
        (dh, dx, d_gamma, d_beta)
    }

    /// `y` of [`LayerNormOps::residual_layer_norm_forward`] alone; autodiff records it as one
    /// operation with [`LayerNormOps::residual_layer_norm_backward`].
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn residual_normalize(
        h: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        seed: u64,
        prob: f64,
    ) -> FloatTensor<Self> {
        Self::residual_layer_norm_forward(h, residual, gamma, beta, epsilon, seed, prob).0
    }

    /// `y` alone; autodiff records it as one operation with [`LayerNormOps::layer_norm_backward`].
    /// Untracked, it is burn's own `layer_norm` (flex's is one fused pass).
    #[fusion(default)]
    fn normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::layer_norm(x, gamma, Some(beta), epsilon)
    }
}

/// `[1, .., 1, H]` for a tensor of `shape` [.., H]: γ and β broadcast over the rows.
fn row_shape(shape: &Shape) -> Shape {
    let rank = shape.num_dims();
    Shape::from(
        (0..rank)
            .map(|i| if i + 1 == rank { shape[i] } else { 1 })
            .collect::<Vec<_>>(),
    )
}

/// `[.., 1]` for a tensor of `shape` [.., H]: one σ per row (the GPU path's output shape).
#[cfg(feature = "cube")]
pub(crate) fn per_row(shape: &Shape) -> Shape {
    let rank = shape.num_dims();
    Shape::from(
        (0..rank)
            .map(|i| if i + 1 == rank { 1 } else { shape[i] })
            .collect::<Vec<_>>(),
    )
}

impl LayerNormOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl LayerNormOps for burn::backend::NdArray {}

/// The backward of [`LayerNormOps::normalize`]: its state is `(x̂, γ, σ)`, kept by the forward.
#[derive(Debug)]
struct LayerNormGrad;

impl<B: LayerNormOps> Backward<B, 3> for LayerNormGrad {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x_hat, gamma, sigma) = ops.state;
        let (dx, d_gamma, d_beta) = B::layer_norm_backward(dy, x_hat, gamma, sigma);
        let [x, gamma, beta] = ops.parents;
        for (parent, grad) in [(x, dx), (gamma, d_gamma), (beta, d_beta)] {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// The backward of [`LayerNormOps::residual_normalize`]: its state is `(x̂, γ, σ, seed, prob)`.
#[derive(Debug)]
struct ResidualLayerNormGrad;

type ResidualState<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, u64, f64);

impl<B: LayerNormOps> Backward<B, 4> for ResidualLayerNormGrad {
    type State = ResidualState<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x_hat, gamma, sigma, seed, prob) = ops.state;
        let (dh, d_residual, d_gamma, d_beta) =
            B::residual_layer_norm_backward(dy, x_hat, gamma, sigma, seed, prob);
        let [h, residual, gamma, beta] = ops.parents;
        let pairs = [
            (h, dh),
            (residual, d_residual),
            (gamma, d_gamma),
            (beta, d_beta),
        ];
        for (parent, grad) in pairs {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: LayerNormOps, C: CheckpointStrategy> LayerNormOps for Autodiff<B, C> {
    fn residual_normalize(
        h: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        seed: u64,
        prob: f64,
    ) -> FloatTensor<Self> {
        let nodes = [h.node(), residual.node(), gamma.node(), beta.node()];
        let (h, residual) = (h.into_primitive(), residual.into_primitive());
        let (gamma, beta) = (gamma.into_primitive(), beta.into_primitive());
        match ResidualLayerNormGrad
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, x_hat, sigma) = B::residual_layer_norm_forward(
                    h,
                    residual,
                    gamma.clone(),
                    beta,
                    epsilon,
                    seed,
                    prob,
                );
                prep.finish((x_hat, gamma, sigma, seed, prob), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::residual_normalize(
                h, residual, gamma, beta, epsilon, seed, prob,
            )),
        }
    }

    fn normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        match LayerNormGrad.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, x_hat, sigma) = B::layer_norm_forward(x, gamma.clone(), beta, epsilon);
                prep.finish((x_hat, gamma, sigma), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::normalize(x, gamma, beta, epsilon)),
        }
    }
}

/// HF `nn.LayerNorm` with burn's field names (`gamma`, `beta`: the export adapters rename them
/// `weight`, `bias` for a `Struct:LayerNorm`), computed by [`LayerNormOps`].
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub epsilon: f64,
}

impl LayerNorm {
    /// γ = 1, β = 0 (HF's initialisation) over `d_model` features.
    pub fn new(d_model: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            gamma: Initializer::Ones.init([d_model], device),
            beta: Initializer::Zeros.init([d_model], device),
            epsilon,
        }
    }

    /// `x` [.., H] → [.., H].
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        Tensor::from_dispatch(<Dispatch as LayerNormOps>::normalize(
            x.into_dispatch(),
            self.gamma.val().into_dispatch(),
            self.beta.val().into_dispatch(),
            self.epsilon,
        ))
    }

    /// `LayerNorm(dropout(h) + residual)`, `h` and `residual` [.., H] → [.., H]: in GPU training
    /// one operation that drops out inside its kernel ([`LayerNormOps::residual_normalize`]),
    /// elsewhere the three steps.
    pub fn forward_residual<const D: usize>(
        &self,
        h: Tensor<D>,
        residual: Tensor<D>,
        dropout: &Dropout,
    ) -> Tensor<D> {
        match dropout.gpu_call(&h.device()) {
            Some((seed, prob)) => {
                Tensor::from_dispatch(<Dispatch as LayerNormOps>::residual_normalize(
                    h.into_dispatch(),
                    residual.into_dispatch(),
                    self.gamma.val().into_dispatch(),
                    self.beta.val().into_dispatch(),
                    self.epsilon,
                    seed,
                    prob,
                ))
            }
            None => self.forward(dropout.forward(h) + residual),
        }
    }
}
