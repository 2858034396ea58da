//! GELU, the erf form BERT and HF use (`x·Φ(x)`), as masklm's own operation through burn's
//! backend extension, forward and backward on every backend.
//!
//! Why an operation of our own, twice over:
//! - burn 0.22.1's `gelu_backward` is, unless a backend overrides it (flex does; CubeCL's
//!   backends and ndarray do not), the derivative of GELU's *tanh approximation* while the forward
//!   is the erf form: gradients up to 8.7e-4 off (1% at x = −2), so GPU training followed other
//!   gradients than HF's. Here the backward is the exact `Φ(x) + x·φ(x)` everywhere; on GPUs it
//!   is one kernel of masklm's (`gelu_cube.rs`). The forward stays burn's operations there,
//!   which fusion merges into the product's epilogue before it.
//! - burn's flex computes GELU with a scalar `libm::erff` per element, one thread, about a tenth
//!   of a BERT step's CPU time; on flex in f32 this runs `model::vmath`'s kernel, 8-wide and on
//!   the rayon pool (BENCHMARKS.md).
//!
//! Under mixed precision, [`gelu_to`] writes the result in the products' dtype for the next dense
//! layer and keeps x in that dtype for the gradient, as autocast does (its GELU's input is the
//! f16 product), instead of x in f32.

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends; the
// extension macro names it in code it generates beside the trait.
#![allow(deprecated)]

use crate::model::precision::cast_primitive;
use crate::model::vmath;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, Scalar, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{Bytes, DType};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

/// GELU and its exact gradient as backend operations.
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait GeluBackend: Backend {
    /// `GELU(x) = x·Φ(x)` [any shape]: burn's `gelu` (the erf form on every backend).
    #[fusion(default)]
    fn erf_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as ActivationOps<Self>>::gelu(x)
    }

    /// `grad · GELU'(x)` in `dtype`, GELU' = Φ(x) + x·φ(x) exactly: x and grad cast to `dtype`
    /// (x's dtype in the forward), then `exact_gelu_backward`. On GPUs one operation, one
    /// kernel that computes in f32 (`gelu_cube.rs`), instead of two casts and eleven
    /// element-wise operations for burn's fusion to register and merge.
    #[fusion(meta = |x, _grad, dtype| {
        use burn::backend::fusion::custom::TensorSpec;
        TensorSpec::new(x.shape.clone(), *dtype)
    })]
    fn erf_gelu_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        dtype: DType,
    ) -> FloatTensor<Self> {
        exact_gelu_backward::<Self>(
            cast_primitive::<Self>(x, dtype),
            cast_primitive::<Self>(grad, dtype),
        )
    }

    /// `GELU(x)` computed from x as [`GeluBackend::erf_gelu`] does, returned in `dtype` (the
    /// products', for the next dense layer). In training autodiff keeps x in `dtype` too, not
    /// in x's: the backward takes GELU' at x rounded so, as autocast's GELU, whose input is the
    /// f16 product, does (at BERT-base, batch 128 × 128, 100 MB a layer less than x in f32).
    #[fusion(default)]
    fn erf_gelu_to(x: FloatTensor<Self>, dtype: DType) -> FloatTensor<Self> {
        cast_primitive::<Self>(Self::erf_gelu(x), dtype)
    }
}

/// `grad · (Φ(x) + x·φ(x))` by backend operations, in x's dtype: Φ(x) = (1 + erf(x/√2))/2,
/// φ(x) = exp(−x²/2)/√(2π).
fn exact_gelu_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let dtype = x.dtype();
    let c = |v: f64| Scalar::new(v, &dtype);
    let cdf = B::float_mul_scalar(
        B::float_add_scalar(
            B::float_erf(B::float_mul_scalar(
                x.clone(),
                c(std::f64::consts::FRAC_1_SQRT_2),
            )),
            c(1.0),
        ),
        c(0.5),
    );
    let pdf = B::float_mul_scalar(
        B::float_exp(B::float_mul_scalar(
            B::float_mul(x.clone(), x.clone()),
            c(-0.5),
        )),
        c(1.0 / (2.0 * std::f64::consts::PI).sqrt()),
    );
    B::float_mul(grad, B::float_add(cdf, B::float_mul(x, pdf)))
}

static EXACT: AtomicBool = AtomicBool::new(false);

/// Runs burn's own GELU and gradient on flex (its scalar `libm::erff` code) instead of
/// `vmath`'s kernel, process wide: for comparisons (`tests/fast_gelu.rs`, A/B measurements),
/// not for training.
pub fn set_exact(exact: bool) {
    EXACT.store(exact, Ordering::Relaxed);
}

/// `GELU(x)` [any shape], with the exact gradient on every backend; f32 on flex through `vmath`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as GeluBackend>::erf_gelu(x.into_dispatch()))
}

/// `GELU(x)` [any shape] cast to `dtype`, keeping x in `dtype` for the gradient
/// ([`GeluBackend::erf_gelu_to`]): for mixed precision, where the next product takes the result
/// in `dtype`. The gradient comes back in x's dtype.
pub fn gelu_to<const D: usize>(x: Tensor<D>, dtype: DType) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as GeluBackend>::erf_gelu_to(
        x.into_dispatch(),
        dtype,
    ))
}

/// Whether flex runs `vmath`'s kernel for a tensor of `dtype`.
fn vmath_on(dtype: DType) -> bool {
    dtype == DType::F32 && !EXACT.load(Ordering::Relaxed)
}

#[cfg(feature = "ndarray")]
impl GeluBackend for burn::backend::NdArray {}

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
    fn erf_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if vmath_on(x.dtype()) {
            flex_gelu(x)
        } else {
            <Self as ActivationOps<Self>>::gelu(x)
        }
    }

    /// flex's own `gelu_backward` is exact too (scalar `libm::erff`).
    fn erf_gelu_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        dtype: DType,
    ) -> FloatTensor<Self> {
        let (x, grad) = (
            cast_primitive::<Self>(x, dtype),
            cast_primitive::<Self>(grad, dtype),
        );
        if vmath_on(dtype) {
            flex_gelu_backward(x, grad)
        } else {
            <Self as ActivationOps<Self>>::gelu_backward(x, grad)
        }
    }
}

/// The backward of [`GeluBackend::erf_gelu`]: `grad · GELU'(x)`, `x` kept from the forward (a
/// checkpointed input, as burn's own GELU keeps it).
#[derive(Debug)]
struct GeluGrad;

impl<B: GeluBackend> Backward<B, 1> for GeluGrad {
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(ops.state);
        let dtype = x.dtype();
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::erf_gelu_backward(x, grad, dtype)
        });
    }
}

/// The backward of [`GeluBackend::erf_gelu_to`]: `grad · GELU'(x)` in x's dtype, from x kept in
/// the result's dtype (the state: that copy and x's dtype).
#[derive(Debug)]
struct GeluToGrad;

impl<B: GeluBackend> Backward<B, 1> for GeluToGrad {
    type State = (FloatTensor<B>, DType);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x_low, x_dtype) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::erf_gelu_backward(x_low, grad, x_dtype)
        });
    }
}

impl<B: GeluBackend, C: CheckpointStrategy> GeluBackend for Autodiff<B, C> {
    fn erf_gelu_to(x: FloatTensor<Self>, dtype: DType) -> FloatTensor<Self> {
        let (node, x_dtype) = (x.node(), x.dtype());
        let x = x.into_primitive();
        match GeluToGrad.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let x_low = cast_primitive::<B>(x.clone(), dtype);
                prep.finish((x_low, x_dtype), B::erf_gelu_to(x, dtype))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::erf_gelu_to(x, dtype)),
        }
    }

    fn erf_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluGrad.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                prep.finish(state, B::erf_gelu(x.primitive().clone()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::erf_gelu(x.into_primitive())),
        }
    }
}
