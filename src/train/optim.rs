//! AdamW as BERT trains: betas 0.9 / 0.999, eps 1e-6, weight decay on every weight but biases
//! and LayerNorm parameters, and clipping by the global norm of all gradients together (burn's
//! own clipping is per tensor).

use crate::config::TrainConfig;
use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;

/// Biases (`….bias`, `cls.predictions.bias`) and LayerNorm `gamma`/`beta` get no weight decay.
pub const NO_DECAY: &str = r"(\.bias|\.gamma|\.beta)$";

pub fn adamw(c: &TrainConfig) -> ModuleOptimizer {
    let base = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-6)
        .with_weight_decay(c.weight_decay as f32);
    let no_decay = ParamGroup::from_regex(NO_DECAY).expect("the pattern above is a valid regex");
    base.init()
        .with_group(no_decay, base.clone().with_weight_decay(0.0).build(), None)
}

/// Sums `Σ g²` over every parameter's gradient into one [1] tensor on the device.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            let s = g.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

/// Multiplies every gradient by one [1] factor on the device.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: Tensor<1>,
    /// The factor reshaped to [1; D], by rank D: one reshape per rank, not one per parameter
    /// (on a GPU each reshape is an operation of its own for burn's fusion to process).
    shaped: Vec<(usize, burn::tensor::DispatchTensor)>,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(p.id) {
            let f = match self.shaped.iter().find(|(rank, _)| *rank == D) {
                Some((_, f)) => Tensor::<D>::from_dispatch(f.clone()),
                None => {
                    let f = self.factor.clone().reshape([1; D]);
                    self.shaped.push((D, f.clone().into_dispatch()));
                    f
                }
            };
            self.grads.register(p.id, g * f);
        }
    }
}

/// The global L2 norm of `grads` over `model`'s parameters, as a [1] tensor on the gradients'
/// device (no read); `None` when no parameter has a gradient.
pub fn global_norm<M: Module>(model: &M, grads: &GradientsParams) -> Option<Tensor<1>> {
    let mut v = SquaredNorm { grads, sum: None };
    model.visit(&mut v);
    v.sum.map(Tensor::sqrt)
}

/// `grads`, the gradients of the loss times `loss_scale` (1 without loss scaling), divided by
/// `loss_scale` and scaled so that their global norm is at most `max_norm` (0 = no clipping), as
/// PyTorch's `GradScaler.unscale_` then `clip_grad_norm_`: factor = max_norm / (norm + 1e-6),
/// applied only when below 1, with `norm` ([1], from [`global_norm`]) the scaled gradients' norm
/// divided by `loss_scale`. Unscaling and clipping are one factor, computed and applied on the
/// device: no read.
pub fn clip_to<M: Module>(
    model: &M,
    mut grads: GradientsParams,
    norm: Tensor<1>,
    max_norm: f64,
    loss_scale: f64,
) -> GradientsParams {
    let unscale = |t: Tensor<1>| {
        if loss_scale == 1.0 {
            t
        } else {
            t.div_scalar(loss_scale)
        }
    };
    let factor = if max_norm > 0.0 {
        // (norm + 1e-6)⁻¹ · max_norm, capped at 1: gradients below the threshold stay as they are.
        let clip = unscale(norm)
            .add_scalar(1e-6)
            .recip()
            .mul_scalar(max_norm)
            .clamp_max(1.0);
        unscale(clip)
    } else if loss_scale != 1.0 {
        Tensor::<1>::ones([1], &norm.device()).div_scalar(loss_scale)
    } else {
        return grads;
    };
    model.visit(&mut Scale {
        grads: &mut grads,
        factor,
        shaped: Vec::new(),
    });
    grads
}
