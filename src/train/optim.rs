//! AdamW as BERT trains: betas 0.9 / 0.999 and eps 1e-6 by default (`train.adam_beta1`,
//! `adam_beta2`, `adam_epsilon`), weight decay on every weight but biases and LayerNorm
//! parameters, and clipping by the global norm of all gradients together (burn's own clipping is
//! per tensor). The update itself is `adamw.rs`'s, one operation for all parameters, and the
//! moments are `optimizer.rs`'s.

use crate::config::TrainConfig;
use crate::train::adamw::AdamW;
use crate::train::optimizer::AdamWOptimizer;
use crate::train::squared_norm::squared_norms;
use burn::backend::DispatchTensor;
use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Biases (`….bias`, `cls.predictions.bias`) and LayerNorm `gamma`/`beta` get no weight decay.
pub const NO_DECAY: &str = r"(\.bias|\.gamma|\.beta)$";

pub fn adamw(c: &TrainConfig) -> AdamWOptimizer {
    let base = AdamW {
        beta_1: c.adam_beta1 as f32,
        beta_2: c.adam_beta2 as f32,
        epsilon: c.adam_epsilon as f32,
        weight_decay: c.weight_decay as f32,
    };
    let no_decay = ParamGroup::from_regex(NO_DECAY).expect("the pattern above is a valid regex");
    AdamWOptimizer::new(base, no_decay)
}

/// Every parameter's gradient, in the module's order, for one `squared_norms` of them all.
struct Gradients<'a> {
    grads: &'a GradientsParams,
    found: Vec<DispatchTensor>,
}

impl ModuleVisitor for Gradients<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            self.found.push(g.into_dispatch());
        }
    }
}

/// The global L2 norm of `grads` over `model`'s parameters, as a `[1]` tensor on the gradients'
/// device (no read); `None` when no parameter has a gradient.
pub fn global_norm<M: Module>(model: &M, grads: &GradientsParams) -> Option<Tensor<1>> {
    let mut v = Gradients {
        grads,
        found: Vec::new(),
    };
    model.visit(&mut v);
    // One operation for every gradient's partial sums, then one sum of them all: on a GPU each
    // operation is host work for fusion to register and a launch or more.
    (!v.found.is_empty()).then(|| squared_norms(v.found).sum().sqrt())
}

/// The factor that turns `grads`, the gradients of the loss times `loss_scale` (1 without loss
/// scaling), into the unscaled gradients clipped to a global norm of at most `max_norm` (0 = no
/// clipping), as PyTorch's `GradScaler.unscale_` then `clip_grad_norm_`: 1 / `loss_scale` times
/// max_norm / (norm + 1e-6) where that is below 1, with `norm` (`[1]`, from [`global_norm`]) the
/// scaled gradients' norm divided by `loss_scale`. A `[1]` tensor on the device, no read; the
/// AdamW update multiplies each gradient by it (`AdamWOptimizer::step`).
pub fn grad_factor(norm: Tensor<1>, max_norm: f64, loss_scale: f64) -> Tensor<1> {
    let unscale = |t: Tensor<1>| {
        if loss_scale == 1.0 {
            t
        } else {
            t.div_scalar(loss_scale)
        }
    };
    if max_norm > 0.0 {
        // (norm + 1e-6)⁻¹ · max_norm, capped at 1: gradients below the threshold stay as they are.
        let clip = unscale(norm)
            .add_scalar(1e-6)
            .recip()
            .mul_scalar(max_norm)
            .clamp_max(1.0);
        unscale(clip)
    } else {
        unscale(Tensor::<1>::ones([1], &norm.device()))
    }
}
