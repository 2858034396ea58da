//! What one optimizer step asks of burn's fusion server on a GPU backend, phase by phase
//! (forward and backward, the gradient norm, the clipping factor, AdamW): operations registered and blocks
//! run, on lavapipe here. On a GPU whose kernels are short, this host work is what a step waits
//! for (BENCHMARKS.md, "GPU"), so the phases whose cost should not grow with the parameter count
//! beyond one operation each are held to it.
//!
//! A binary of its own: burn's fusion observer is process-wide, and GPU tests running beside it
//! would be counted too. `cargo test --release --test fusion_phases -- --nocapture` prints the
//! counts; with `FUSION_PHASES_BERT_BASE=1` it measures BERT-base's structure instead (12 layers
//! of 12 heads, at widths 48 and 192), in f32 and f16, and also prints which operations ran as
//! blocks of their own (the figures of BENCHMARKS.md, "Host work per step").
//! `FUSION_PHASES_TRACE=FILE` writes the third step's blocks in the order they ran, one a line
//! (the names of its operations), to FILE.f32 and FILE.f16.
#![cfg(feature = "vulkan")]

#[path = "it/common/mod.rs"]
mod common;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn_fusion::observer::{BlockOperations, FusionObservation, FusionObserver};
use masklm::config::{BackendName, Precision, TrainConfig};
use masklm::train::fusion_ops::FusionCounter;
use masklm::train::{BackendKey, device_for, optim, step};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The operations fusion ran as blocks of their own, by kind (`Matmul`, `Reshape`, …), and the
/// number of fused blocks; and every block in order, its operations' names, a block a line.
#[derive(Default)]
struct LoneBlocks(Mutex<BTreeMap<String, u64>>, Mutex<Vec<String>>);

/// An operation's name: in `Float(F32, Matmul(MatmulOpIr { … }))` or
/// `BaseFloat(Reshape(ShapeOpIr { … }))`, the last word before the innermost parenthesis.
fn op_name(op: &burn_ir::OperationIr) -> String {
    let debug = format!("{op:?}");
    let head: Vec<&str> = debug.split('{').next().unwrap_or("").split('(').collect();
    let outer = head.len().saturating_sub(2);
    head[outer]
        .rsplit([' ', ','])
        .next()
        .unwrap_or("?")
        .to_string()
}

impl FusionObserver for LoneBlocks {
    fn registered(&self, _: &burn_ir::OperationIr) {}

    fn block_starts(&self, block: BlockOperations<'_>) {
        let names: Vec<String> = block.iter().map(op_name).collect();
        let kind = match names.as_slice() {
            [name] => name.clone(),
            _ => "(fused block)".into(),
        };
        *self.0.lock().unwrap().entry(kind).or_default() += 1;
        self.1.lock().unwrap().push(names.join(" "));
    }

    fn block_ran(&self) {}
}

struct CountParams(usize);

impl ModuleVisitor for CountParams {
    fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
        self.0 += 1;
    }
}

/// Whether to measure BERT-base's structure (`FUSION_PHASES_BERT_BASE=1`) rather than the tiny
/// model.
fn bert_base_structure() -> bool {
    std::env::var("FUSION_PHASES_BERT_BASE").is_ok_and(|v| v == "1")
}

/// (operations, blocks) of each phase of the third step (the first ones compile and tune), the
/// number of parameters, and the third step's lone blocks by kind.
fn phases(precision: Precision) -> ([(u64, u64); 4], usize, BTreeMap<String, u64>) {
    let base = device_for(BackendName::Vulkan, BackendKey::Config)
        .expect("a Vulkan adapter (mesa-vulkan-drivers)");
    let dev = base.clone().autodiff();
    // HF's test sizes (vocab 99, hidden 32, intermediate 37), 2 layers of 4 heads.
    let mut config = common::tiny_bert(0.1);
    if bert_base_structure() {
        config.hidden_size = 48;
        config.num_hidden_layers = 12;
        config.num_attention_heads = 12;
        config.intermediate_size = 192;
    }
    let mut model = config.init(&dev).with_precision(precision);
    let mut params = CountParams(0);
    model.visit(&mut params);
    let mut opt = optim::adamw(&TrainConfig::default());
    let mut out = [(0, 0); 4];
    let lone = Arc::new(LoneBlocks::default());
    for k in 0..3 {
        let micro = [common::pattern_batch(4, k)];
        base.sync().unwrap();
        let _kinds = (k == 2).then(|| FusionObservation::new(lone.clone()));
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
        let factor = optim::grad_factor(norm, 1.0, 1.0);
        mark(&base);
        model = opt.step(1e-4, model, grads, factor);
        mark(&base);
        for (i, w) in marks.windows(2).enumerate() {
            out[i] = (w[1].0 - w[0].0, w[1].1 - w[0].1);
        }
    }
    if let Ok(path) = std::env::var("FUSION_PHASES_TRACE") {
        let trace = lone.1.lock().unwrap().join("\n");
        std::fs::write(format!("{path}.{precision}"), trace).unwrap();
    }
    let kinds = lone.0.lock().unwrap().clone();
    (out, params.0, kinds)
}

#[test]
fn the_step_phases_that_touch_every_parameter_cost_fusion_one_operation_each() {
    // The phases held here run in f32 whatever the precision (only forward and backward differ).
    let precisions: &[Precision] =
        if bert_base_structure() || std::env::var("FUSION_PHASES_TRACE").is_ok() {
            &[Precision::F32, Precision::F16]
        } else {
            &[Precision::F32]
        };
    for &precision in precisions {
        let ([fwd_bwd, norm, factor, adamw], params, kinds) = phases(precision);
        println!(
            "{precision}, {params} parameters: forward+backward {fwd_bwd:?}, norm {norm:?}, \
             clipping factor {factor:?}, AdamW {adamw:?} (operations, blocks)"
        );
        if bert_base_structure() {
            let mut kinds: Vec<_> = kinds.into_iter().collect();
            kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            println!("  blocks of the whole step by kind: {kinds:?}");
        }
        assert!(fwd_bwd.0 > 100 && fwd_bwd.1 > 0, "{fwd_bwd:?}");
        // Σ g² of every gradient: one operation (`train::squared_norm`, a kernel per gradient
        // inside it); then a sum and a square root: none per parameter. Per parameter it was
        // one operation and one block each, 46 of each for 42 parameters.
        assert!(norm.0 <= 5, "norm: {norm:?}");
        assert!(norm.1 <= 5, "norm: {norm:?}");
        // The clipping factor: a few operations on one [1] tensor, none per parameter (applying
        // it to every gradient is the update's job).
        assert!(factor.0 <= 12, "clipping factor: {factor:?}");
        // AdamW: one operation for every parameter (`train::adamw`, a kernel per parameter
        // inside it), and the factor's release. burn's AdamW was 15 operations per parameter
        // (630 in 26 blocks for 42 parameters), and applying the factor one more each; one
        // operation per parameter was 43 in 43 blocks.
        assert!(adamw.0 <= 3, "AdamW: {adamw:?}");
        assert!(adamw.1 <= 3, "AdamW: {adamw:?}");
    }
}
