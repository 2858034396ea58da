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

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            self.sum += g.square().sum().into_scalar::<f64>();
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(p.id) {
            self.grads.register(p.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of `grads` over `model`'s parameters, and `grads` scaled so that norm is
/// at most `max_norm` (0 = no clipping), as PyTorch's `clip_grad_norm_`:
/// factor = max_norm / (norm + 1e-6), applied only when below 1.
pub fn clip_global_norm<M: Module>(
    model: &M,
    mut grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let mut v = SquaredNorm {
        grads: &grads,
        sum: 0.0,
    };
    model.visit(&mut v);
    let norm = v.sum.sqrt();
    let factor = max_norm / (norm + 1e-6);
    if max_norm > 0.0 && factor < 1.0 {
        model.visit(&mut Scale {
            grads: &mut grads,
            factor,
        });
    }
    (grads, norm)
}
