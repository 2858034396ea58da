//! AdamW as one operation per parameter: the gradient's unscaling and clipping factor, both
//! moments and the weight update in a single pass (PyTorch's `fused=True` AdamW).
//!
//! burn's AdamW is 15 tensor operations per parameter. On a GPU each is registered with burn's
//! fusion server, which searches them for kernels to merge; at BERT-base's 202 parameters that
//! is 3,100 operations a step, 42% of all, for arithmetic fusion already merged into about one
//! kernel per parameter. Here it is one operation ([`AdamWOps::adamw_update`]): on CubeCL
//! devices one kernel (`adamw_cube.rs`), which also applies the global clipping factor that was
//! otherwise a pass of its own over every gradient. On the CPU backends the same operation is
//! burn's AdamW, operation for operation (the default body below), so CPU results are unchanged
//! to the bit (`tests/it/adamw.rs`).
//!
//! The state is burn's `AdamWState`, so checkpoints keep their format, and
//! [`crate::train::optim::adamw`] builds the usual `ModuleOptimizer` (parameter groups, records).

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Scalar, TensorMetadata, backend_extension};
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::prelude::*;
use std::cell::RefCell;

/// The host-side numbers of one AdamW update of one parameter, as burn's AdamW computes them
/// (same types, same rounding).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWCoefficients {
    pub beta_1: f32,
    pub beta_2: f32,
    /// 1 − β₁ and 1 − β₂.
    pub one_minus_beta_1: f32,
    pub one_minus_beta_2: f32,
    /// The bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ at step t.
    pub correction_1: f32,
    pub correction_2: f32,
    pub epsilon: f32,
    /// lr · weight decay (0: no decay).
    pub decay_rate: f64,
    pub lr: f64,
}

impl AdamWCoefficients {
    pub fn new(adamw: &AdamW, lr: LearningRate, time: usize) -> Self {
        let t = time as i32;
        Self {
            beta_1: adamw.beta_1,
            beta_2: adamw.beta_2,
            one_minus_beta_1: 1.0 - adamw.beta_1,
            one_minus_beta_2: 1.0 - adamw.beta_2,
            correction_1: 1f32 - adamw.beta_1.powi(t),
            correction_2: 1f32 - adamw.beta_2.powi(t),
            epsilon: adamw.epsilon,
            decay_rate: lr * adamw.weight_decay as f64,
            lr,
        }
    }
}

/// One AdamW update as a backend operation.
#[backend_extension(
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait AdamWOps: Backend {
    /// `(param, moment_1, moment_2)` after one step with gradient `grad · factor[0]`, where
    /// `factor` is a [1] tensor (unscaling and clipping, computed on the device). The moments
    /// are zeros at the first step. All tensors share `param`'s shape but `factor`.
    ///
    /// The default body is burn 0.22.1's `AdamW::step` (without AMSGrad), operation for
    /// operation, after the multiplication by the factor that clipping did before.
    #[fusion(meta = |param, _grad, moment_1, moment_2, _factor, _c| {
        (param.clone(), moment_1.clone(), moment_2.clone())
    })]
    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        factor: FloatTensor<Self>,
        c: AdamWCoefficients,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = param.dtype();
        let s = |x: f64| Scalar::new(x, &dtype);
        let sf = |x: f32| Scalar::new(x, &dtype);
        let rank = grad.shape().num_dims();
        let factor = Self::float_reshape(factor, Shape::from(vec![1; rank]));
        let grad = Self::float_mul(grad, factor);
        // m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²
        let moment_1 = Self::float_add(
            Self::float_mul_scalar(moment_1, sf(c.beta_1)),
            Self::float_mul_scalar(grad.clone(), sf(c.one_minus_beta_1)),
        );
        let moment_2 = Self::float_add(
            Self::float_mul_scalar(moment_2, sf(c.beta_2)),
            Self::float_mul_scalar(
                Self::float_powi_scalar(grad, 2.into()),
                sf(c.one_minus_beta_2),
            ),
        );
        // Δ = m̂ / (√v̂ + ε), with m̂ = m / (1−β₁ᵗ), v̂ = v / (1−β₂ᵗ)
        let m_hat = Self::float_div_scalar(moment_1.clone(), sf(c.correction_1));
        let v_hat = Self::float_div_scalar(moment_2.clone(), sf(c.correction_2));
        let delta = Self::float_div(
            m_hat,
            Self::float_add_scalar(Self::float_sqrt(v_hat), sf(c.epsilon)),
        );
        // θ ← θ(1 − lr·λ) − lr·Δ
        let decayed = if c.decay_rate == 0.0 {
            param
        } else {
            Self::float_mul_scalar(param, s(1.0 - c.decay_rate))
        };
        let param = Self::float_sub(decayed, Self::float_mul_scalar(delta, s(c.lr)));
        (param, moment_1, moment_2)
    }
}

impl AdamWOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl AdamWOps for burn::backend::NdArray {}

thread_local! {
    /// The gradient factor of the optimizer step running on this thread (see [`with_grad_factor`]).
    static GRAD_FACTOR: RefCell<Option<Tensor<1>>> = const { RefCell::new(None) };
}

/// Runs `f` (an optimizer step) with every gradient multiplied by `factor` ([1], on the
/// gradients' device) inside the update: the unscaling and clipping factor of
/// [`crate::train::optim::grad_factor`], applied by the update kernel instead of by a pass of its
/// own. burn's `ModuleOptimizer::step` calls [`Optimizer::step`] on the calling thread, which
/// reads it here.
pub fn with_grad_factor<R>(factor: Tensor<1>, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            GRAD_FACTOR.with(|g| g.borrow_mut().take());
        }
    }
    GRAD_FACTOR.with(|g| *g.borrow_mut() = Some(factor));
    let _reset = Reset;
    f()
}

/// AdamW without AMSGrad, its update one [`AdamWOps::adamw_update`] per parameter.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl Optimizer for AdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let device = grad.device();
        let (moment_1, moment_2, time) = match state {
            Some(s) => (
                s.momentum.moment_1,
                s.momentum.moment_2,
                s.momentum.time + 1,
            ),
            None => (grad.zeros_like(), grad.zeros_like(), 1),
        };
        let factor = GRAD_FACTOR
            .with(|g| g.borrow().clone())
            .unwrap_or_else(|| Tensor::ones([1], &device));
        let c = AdamWCoefficients::new(self, lr, time);
        let (param, moment_1, moment_2) = <Dispatch as AdamWOps>::adamw_update(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            moment_1.into_dispatch(),
            moment_2.into_dispatch(),
            factor.into_dispatch(),
            c,
        );
        let momentum = AdaptiveMomentumState {
            time,
            moment_1: Tensor::from_dispatch(moment_1),
            moment_2: Tensor::from_dispatch(moment_2),
            max_moment_2: None,
        };
        (Tensor::from_dispatch(param), Some(AdamWState { momentum }))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
