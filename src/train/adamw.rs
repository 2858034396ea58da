//! The AdamW update of every parameter as one backend operation: the gradient's unscaling and
//! clipping factor, both moments and the weight update in a single pass over each parameter
//! (PyTorch's `AdamW(fused=True)`, which also takes the whole list of parameters at once).
//!
//! burn's AdamW is 15 tensor operations per parameter. On a GPU each is registered with burn's
//! fusion server, which searches them for kernels to merge: at BERT-base's 202 parameters 3,100
//! operations a step, for arithmetic that fusion merged into about one kernel per parameter. One
//! operation per parameter still cost the host about 30 ms of a 0.24 s BERT-base step (the
//! stand-in driver, BENCHMARKS "Host work per step through the stand-in driver"). Here it is one
//! operation for all of them ([`adamw_updates`]): on CubeCL devices one launch per 32
//! parameters inside it (`adamw_cube.rs`); on the CPU backends burn's AdamW, operation for operation
//! ([`adamw_update_default`]), so CPU results are burn's to the bit (`tests/it/adamw.rs`). The
//! moments live in [`crate::train::optimizer::AdamWOptimizer`].
//!
//! burn 0.22.1's `#[backend_extension]` takes no list of tensors, so the routing from
//! `Dispatch` (`dispatch_lists.rs`) and fusion's registration (below) are written out.

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
use burn::backend::{Backend, DispatchTensor, Scalar, TensorMetadata};
use burn::optim::LearningRate;
use burn::prelude::*;

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
    /// At step `time` (1 at the first update of a parameter).
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

/// AdamW's settings (no AMSGrad): BERT's are β₁ 0.9, β₂ 0.999, ε 1e-6, weight decay 0.01.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

/// `(param, moment_1, moment_2)` after one step with gradient `grad · factor[0]`, where `factor`
/// is a `[1]` tensor (unscaling and clipping, computed on the device). The moments are zeros at
/// the first step. All tensors share `param`'s shape but `factor`.
///
/// burn 0.22.1's `AdamW::step` (without AMSGrad), operation for operation, after the
/// multiplication by the factor that clipping did before.
pub fn adamw_update_default<B: Backend>(
    [param, grad, moment_1, moment_2]: [FloatTensor<B>; 4],
    factor: FloatTensor<B>,
    c: &AdamWCoefficients,
) -> [FloatTensor<B>; 3] {
    let dtype = param.dtype();
    let s = |x: f64| Scalar::new(x, &dtype);
    let sf = |x: f32| Scalar::new(x, &dtype);
    let rank = grad.shape().num_dims();
    let factor = B::float_reshape(factor, Shape::from(vec![1; rank]));
    let grad = B::float_mul(grad, factor);
    // m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²
    let moment_1 = B::float_add(
        B::float_mul_scalar(moment_1, sf(c.beta_1)),
        B::float_mul_scalar(grad.clone(), sf(c.one_minus_beta_1)),
    );
    let moment_2 = B::float_add(
        B::float_mul_scalar(moment_2, sf(c.beta_2)),
        B::float_mul_scalar(B::float_powi_scalar(grad, 2.into()), sf(c.one_minus_beta_2)),
    );
    // Δ = m̂ / (√v̂ + ε), with m̂ = m / (1−β₁ᵗ), v̂ = v / (1−β₂ᵗ)
    let m_hat = B::float_div_scalar(moment_1.clone(), sf(c.correction_1));
    let v_hat = B::float_div_scalar(moment_2.clone(), sf(c.correction_2));
    let delta = B::float_div(
        m_hat,
        B::float_add_scalar(B::float_sqrt(v_hat), sf(c.epsilon)),
    );
    // θ ← θ(1 − lr·λ) − lr·Δ
    let decayed = if c.decay_rate == 0.0 {
        param
    } else {
        B::float_mul_scalar(param, s(1.0 - c.decay_rate))
    };
    let param = B::float_sub(decayed, B::float_mul_scalar(delta, s(c.lr)));
    [param, moment_1, moment_2]
}

pub trait AdamWOps: Backend {
    /// [`adamw_update_default`] of each `[param, grad, moment_1, moment_2]` of `updates` with its
    /// coefficients `cs[i]`, all with the one gradient factor `factor` (`[1]`). CubeCL devices: a
    /// kernel per parameter, updating parameter and moments in place (`adamw_cube.rs`).
    fn adamw_updates(
        updates: Vec<[FloatTensor<Self>; 4]>,
        factor: FloatTensor<Self>,
        cs: &[AdamWCoefficients],
    ) -> Vec<[FloatTensor<Self>; 3]> {
        updates
            .into_iter()
            .zip(cs)
            .map(|(u, c)| adamw_update_default::<Self>(u, factor.clone(), c))
            .collect()
    }
}

impl AdamWOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl AdamWOps for burn::backend::NdArray {}

/// The handles burn's fusion keeps for the tensors of a backend `B` it wraps.
#[cfg(feature = "cube")]
type FusionHandle<B> = <<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle;

/// The operation registered with burn's fusion: one operation whatever the number of
/// parameters, run by the inner backend when fusion executes it.
#[cfg(feature = "cube")]
impl<B: FusionBackend + AdamWOps> AdamWOps for burn::backend::fusion::Fusion<B> {
    fn adamw_updates(
        updates: Vec<[FloatTensor<Self>; 4]>,
        factor: FloatTensor<Self>,
        cs: &[AdamWCoefficients],
    ) -> Vec<[FloatTensor<Self>; 3]> {
        use burn::backend::fusion::custom::{
            CustomOpIr, HandleContainer, OperationFn, OperationIr, StreamId, TensorIr,
        };
        let client = factor.client.clone();
        let n = updates.len();
        let (mut inputs, mut outputs) = (Vec::with_capacity(4 * n + 1), Vec::with_capacity(3 * n));
        for u in updates {
            // The new parameter and moments take the parameter's shape and dtype.
            let (shape, dtype) = (u[0].shape.clone(), u[0].dtype);
            for _ in 0..3 {
                let handle = client.create_empty_handle();
                outputs.push(TensorIr::uninit(handle, shape.clone(), dtype));
            }
            inputs.extend(u.map(|t| t.into_ir()));
        }
        inputs.push(factor.into_ir());
        let desc = CustomOpIr {
            id: "adamw_updates".into(),
            inputs: inputs.clone(),
            outputs: outputs.clone(),
            scalars: Vec::new(),
        };
        let cs = cs.to_vec();
        let op = OperationFn(move |handles: &mut HandleContainer<FusionHandle<B>>| {
            let mut xs: Vec<_> = inputs
                .iter()
                .map(|x| handles.get_float_tensor::<B>(x))
                .collect();
            let factor = xs.pop().expect("the factor is the last input");
            let updates = in_fours(xs);
            let new = B::adamw_updates(updates, factor, &cs);
            for (t, ir) in new.into_iter().flatten().zip(&outputs) {
                handles.register_float_tensor::<B>(&ir.id, t);
            }
            Ok(())
        });
        let new = client.register(StreamId::current(), OperationIr::Custom(desc), op);
        in_threes(new)
    }
}

/// `xs` four by four: `[param, grad, moment_1, moment_2]` of each parameter.
fn in_fours<T>(xs: Vec<T>) -> Vec<[T; 4]> {
    let mut it = xs.into_iter();
    let mut out = Vec::new();
    while let (Some(a), Some(b), Some(c), Some(d)) = (it.next(), it.next(), it.next(), it.next()) {
        out.push([a, b, c, d]);
    }
    out
}

/// `xs` three by three: `[param, moment_1, moment_2]` after the update of each parameter.
#[cfg(feature = "cube")]
fn in_threes<T>(xs: Vec<T>) -> Vec<[T; 3]> {
    let mut it = xs.into_iter();
    let mut out = Vec::new();
    while let (Some(a), Some(b), Some(c)) = (it.next(), it.next(), it.next()) {
        out.push([a, b, c]);
    }
    out
}

/// One parameter's update, its tensors as [`Tensor::into_dispatch`]'s primitives so that
/// parameters of different ranks go in one list.
pub struct Update {
    pub param: DispatchTensor,
    pub grad: DispatchTensor,
    pub moment_1: DispatchTensor,
    pub moment_2: DispatchTensor,
    pub c: AdamWCoefficients,
}

/// `[param, moment_1, moment_2]` after the update of each of `updates` (at least one, all on
/// one device, none tracked by autodiff), with every gradient multiplied by `factor` (`[1]`, on
/// that device): see [`AdamWOps::adamw_updates`]. One operation for the device, whatever the
/// number of parameters.
pub fn adamw_updates(updates: Vec<Update>, factor: Tensor<1>) -> Vec<[DispatchTensor; 3]> {
    let cs: Vec<AdamWCoefficients> = updates.iter().map(|u| u.c).collect();
    let mut xs = Vec::with_capacity(4 * updates.len() + 1);
    for u in updates {
        xs.extend([u.param, u.grad, u.moment_1, u.moment_2]);
    }
    xs.push(factor.into_dispatch());
    match OnBackend::of(xs, "adamw_updates") {
        OnBackend::Flex(v) => run::<burn::backend::Flex>(v, &cs, from_flex),
        #[cfg(feature = "ndarray")]
        OnBackend::NdArray(v) => run::<burn::backend::NdArray>(v, &cs, from_ndarray),
        #[cfg(feature = "cube")]
        OnBackend::Cube(v) => run::<burn::backend::Cube>(v, &cs, from_cube),
    }
}

/// [`AdamWOps::adamw_updates`] on backend `B` of the flat list `[p, g, m, v, …, factor]`.
fn run<B: AdamWOps>(
    mut xs: Vec<FloatTensor<B>>,
    cs: &[AdamWCoefficients],
    wrap: fn(FloatTensor<B>) -> DispatchTensor,
) -> Vec<[DispatchTensor; 3]> {
    let factor = xs.pop().expect("the factor is the last tensor");
    B::adamw_updates(in_fours(xs), factor, cs)
        .into_iter()
        .map(|new| new.map(wrap))
        .collect()
}
