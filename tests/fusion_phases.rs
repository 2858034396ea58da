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

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use masklm::config::{BackendName, Precision, TrainConfig};
use masklm::data::batches::Batch;
use masklm::data::masking::IGNORE_LABEL;
use masklm::model::BertConfig;
use masklm::train::fusion_ops::FusionCounter;
use masklm::train::{device_for, optim, step};

/// `rows` rows of 16 tokens for a vocabulary of 99, a quarter of them selected.
fn batch(rows: usize, k: usize) -> Batch {
    let s = 16;
    let mut b = Batch {
        batch_size: rows,
        seq_len: s,
        input_ids: vec![],
        attention_mask: vec![],
        labels: vec![],
        original_ids: vec![],
        selected: 0,
    };
    for r in 0..rows {
        for i in 0..s {
            let id = if i == 0 {
                2
            } else {
                5 + ((r * 31 + i * 7 + k * 13) % 94) as u32
            };
            let selected = i > 0 && (i + r + k).is_multiple_of(4);
            b.original_ids.push(id);
            b.input_ids.push(if selected { 4 } else { id });
            b.attention_mask.push(1);
            b.labels
                .push(if selected { id as i32 } else { IGNORE_LABEL });
            b.selected += selected as usize;
        }
    }
    b
}

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
    let config = BertConfig {
        vocab_size: 99,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 37,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
        layer_norm_eps: 1e-12,
        initializer_range: 0.02,
        pad_token_id: 0,
    };
    let mut model = config.init(&dev).with_precision(precision);
    let mut params = CountParams(0);
    model.visit(&mut params);
    let mut opt = optim::adamw(&TrainConfig::default());
    let mut out = [(0, 0); 4];
    for k in 0..3 {
        let micro = [batch(4, k)];
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
