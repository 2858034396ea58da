//! What one optimizer step asks of burn's fusion server on a GPU backend, phase by phase
//! (forward and backward, the gradient norm, clipping, AdamW): operations registered and blocks
//! run, on lavapipe here. On a GPU whose kernels are short, this host work is what a step waits
//! for (BENCHMARKS.md, "GPU"), so the phases whose cost should not grow with the parameter count
//! beyond one operation each are held to it.
//!
//! A binary of its own: burn's fusion observer is process-wide, and GPU tests running beside it
//! would be counted too. `cargo test --release --test fusion_phases -- --nocapture` prints the
//! table.
#![cfg(feature = "vulkan")]

#[path = "it/common/mod.rs"]
mod common;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use masklm::config::{BackendName, Precision, TrainConfig};
use masklm::train::fusion_ops::FusionCounter;
use masklm::train::{device_for, optim, step};

struct CountParams(usize);

impl ModuleVisitor for CountParams {
    fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
        self.0 += 1;
    }
}

/// (operations, blocks) of each phase of the third step (the first ones compile and tune).
fn phases(precision: Precision) -> ([(u64, u64); 4], usize) {
    let base = device_for(BackendName::Vulkan).expect("a Vulkan adapter (mesa-vulkan-drivers)");
    let dev = base.clone().autodiff();
    // HF's test sizes (vocab 99, hidden 32, intermediate 37), 2 layers of 4 heads.
    let config = common::tiny_bert(0.1);
    let mut model = config.init(&dev).with_precision(precision);
    let mut params = CountParams(0);
    model.visit(&mut params);
    let mut opt = optim::adamw(&TrainConfig::default());
    let mut out = [(0, 0); 4];
    for k in 0..3 {
        let micro = [common::pattern_batch(4, k)];
        base.sync().unwrap();
        let counter = FusionCounter::start();
        let mut marks = vec![counter.read()];
        let mut mark = |base: &Device| {
            base.sync().unwrap();
            marks.push(counter.read());
        };
        let (loss, grads) = step::loss_and_grads(&model, &micro, 1.0, &dev).unwrap();
        mark(&base);
        let norm = optim::global_norm(&model, &grads).unwrap();
        let _ = Tensor::cat(vec![loss, norm.clone()], 0).into_data();
        mark(&base);
        let grads = optim::clip_to(&model, grads, norm, 1.0, 1.0);
        mark(&base);
        model = opt.step(1e-4, model, grads);
        mark(&base);
        for (i, w) in marks.windows(2).enumerate() {
            out[i] = (w[1].0 - w[0].0, w[1].1 - w[0].1);
        }
    }
    (out, params.0)
}

#[test]
fn the_step_phases_that_touch_every_parameter_cost_fusion_one_operation_each() {
    // The phases held here run in f32 whatever the precision (only forward and backward differ).
    let ([fwd_bwd, norm, clip, adamw], params) = phases(Precision::F32);
    println!(
        "{params} parameters: forward+backward {fwd_bwd:?}, norm {norm:?}, clip {clip:?}, \
         AdamW {adamw:?} (operations, blocks)"
    );
    assert!(fwd_bwd.0 > 100 && fwd_bwd.1 > 0, "{fwd_bwd:?}");
    // Σ g² per parameter: a square, a sum, an add.
    assert!(norm.0 <= 3 * params as u64 + 8, "norm: {norm:?}");
    // One multiply per parameter and the factor's few scalar operations: 50 operations in 21
    // blocks for 42 parameters when written; reshaping the factor per parameter, as before, made
    // it 64 operations in 60 blocks.
    assert!(clip.0 <= params as u64 + 12, "clip: {clip:?}");
    // AdamW's element-wise chain fuses into at most one kernel per parameter.
    assert!(adamw.1 <= params as u64, "AdamW: {adamw:?}");
}
