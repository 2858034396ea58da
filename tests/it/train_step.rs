//! The optimizer step's arithmetic: accumulation equals one large batch, the decoder stays the
//! embedding matrix, weight decay skips biases and LayerNorm, global-norm clipping, a non-finite
//! gradient never reaches the weights, and one device→host read per step.

use crate::common;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use masklm::config::TrainConfig;
use masklm::data::batcher::TensorBatch;
use masklm::data::batches::Batch;
use masklm::data::masking::IGNORE_LABEL;
use masklm::model::{BertConfig, BertForMaskedLM};
use masklm::train::scaler::LossScaler;
use masklm::train::step::{self, Outcome, loss_and_grads};
use masklm::train::{checkpoint, optim};
use std::collections::HashMap;

fn config() -> BertConfig {
    common::tiny_bert(
        0.0, /* no dropout: both computations must see the same function */
    )
}

/// `rows` rows of seq 7 with a varying number of selected positions (row 2 of each micro-batch
/// has none) and some padding, from a simple deterministic pattern.
fn batch(rows: usize, seed: usize, skip_vocab_from: u32) -> Batch {
    let s = 7;
    let mut b = common::empty_batch(rows, s);
    for r in 0..rows {
        let len = 4 + (r + seed) % 4; // real tokens, the rest is padding
        for i in 0..s {
            let id = if i == 0 {
                2
            } else if i < len {
                5 + ((r * 31 + i * 7 + seed * 13) as u32 % (skip_vocab_from - 5))
            } else {
                0
            };
            let selected = i > 0 && i < len && r % 3 != 2 && (i + r + seed).is_multiple_of(3);
            b.original_ids.push(id);
            b.input_ids.push(if selected { 4 } else { id });
            b.attention_mask.push((i < len) as u8);
            b.labels
                .push(if selected { id as i32 } else { IGNORE_LABEL });
            b.selected += selected as usize;
        }
    }
    b
}

fn concat(parts: &[Batch]) -> Batch {
    let mut all = parts[0].clone();
    for p in &parts[1..] {
        all.batch_size += p.batch_size;
        all.input_ids.extend(&p.input_ids);
        all.attention_mask.extend(&p.attention_mask);
        all.labels.extend(&p.labels);
        all.original_ids.extend(&p.original_ids);
        all.selected += p.selected;
    }
    all
}

struct Collect<'a> {
    grads: &'a GradientsParams,
    out: HashMap<ParamId, Vec<f32>>,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            self.out
                .insert(p.id, g.into_data().try_to_vec::<f32>().unwrap());
        }
    }
}

fn grads_of(model: &BertForMaskedLM, g: &GradientsParams) -> HashMap<ParamId, Vec<f32>> {
    let mut c = Collect {
        grads: g,
        out: HashMap::new(),
    };
    model.visit(&mut c);
    c.out
}

#[test]
fn four_micro_batches_equal_one_batch_of_four_times_the_rows() {
    let dev = Device::flex().autodiff();
    let model = config().init_seeded(5, &dev);
    let micro: Vec<Batch> = (0..4).map(|k| batch(3, k, 99)).collect();
    let (loss_a, grads_a) = loss_and_grads(&model, &micro, 1.0, &dev).unwrap();
    let (loss_b, grads_b) = loss_and_grads(&model, &[concat(&micro)], 1.0, &dev).unwrap();
    let (loss_a, loss_b) = (loss_a.into_scalar::<f64>(), loss_b.into_scalar::<f64>());
    assert!((loss_a - loss_b).abs() < 1e-5, "{loss_a} vs {loss_b}");
    let (ga, gb) = (grads_of(&model, &grads_a), grads_of(&model, &grads_b));
    assert_eq!(ga.len(), gb.len());
    assert!(ga.len() > 30, "every parameter gets a gradient");
    for (id, a) in &ga {
        for (x, y) in a.iter().zip(&gb[id]) {
            assert!((x - y).abs() < 1e-5, "gradient differs: {x} vs {y}");
        }
    }
    // A step with nothing selected gives no loss and no update, never a NaN.
    let mut empty = batch(3, 0, 99);
    empty.labels.fill(IGNORE_LABEL);
    empty.selected = 0;
    assert!(loss_and_grads(&model, &[empty], 1.0, &dev).is_none());
}

/// The loss and gradients of one micro-batch with its selected positions padded to a multiple of
/// `multiple` (`TensorBatch::padded`, as GPU backends take them).
fn padded_loss_and_grads(
    model: &BertForMaskedLM,
    b: &Batch,
    multiple: usize,
    dev: &Device,
) -> (f64, HashMap<ParamId, Vec<f32>>) {
    let nll = step::nll_sum(model, TensorBatch::padded(b, dev, multiple));
    let loss = nll.div_scalar(b.selected as f64);
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let value = loss.into_scalar::<f64>();
    (value, grads_of(model, &grads))
}

#[test]
fn padding_the_selected_positions_changes_neither_loss_nor_gradients() {
    let dev = Device::flex().autodiff();
    let model = config().init_seeded(8, &dev);
    let b = concat(&[batch(3, 1, 99), batch(3, 2, 99)]);
    let padded = TensorBatch::padded(&b, &dev, 64);
    assert_eq!(padded.selected, b.selected);
    assert_eq!(padded.positions.dims(), [64]);
    assert_eq!(padded.labels.dims(), [64]);
    let weights = padded
        .weights
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(weights.iter().filter(|&&w| w == 1.0).count(), b.selected);
    assert!(weights[b.selected..].iter().all(|&w| w == 0.0));
    // A count already a multiple is left as it is.
    assert!(TensorBatch::padded(&b, &dev, b.selected).weights.is_none());

    let (loss, grads) = padded_loss_and_grads(&model, &b, 1, &dev);
    let (loss_p, grads_p) = padded_loss_and_grads(&model, &b, 64, &dev);
    assert!((loss - loss_p).abs() < 1e-6, "{loss} vs {loss_p}");
    assert_eq!(grads.len(), grads_p.len());
    for (id, g) in &grads {
        for (x, y) in g.iter().zip(&grads_p[id]) {
            assert!(
                (x - y).abs() <= 1e-6 + 1e-5 * x.abs(),
                "gradient differs: {x} vs {y}"
            );
        }
    }
}

#[test]
#[allow(deprecated)] // Device::ndarray: still one of masklm's CPU backends
fn only_gpu_backends_pad_and_to_a_power_of_two_of_the_tokens() {
    use masklm::train::device::selection_multiple;
    assert_eq!(selection_multiple(&Device::flex().autodiff(), 128 * 128), 1);
    assert_eq!(selection_multiple(&Device::ndarray(), 128 * 128), 1);
    #[cfg(feature = "vulkan")]
    {
        let gpu = common::vulkan();
        assert_eq!(selection_multiple(&gpu, 4 * 7), 64);
        assert_eq!(selection_multiple(&gpu, 32 * 128), 256);
        assert_eq!(selection_multiple(&gpu.clone().autodiff(), 128 * 128), 1024);
        assert_eq!(selection_multiple(&gpu, 100 * 128), 1024);
    }
}

fn word_embeddings(model: &BertForMaskedLM) -> Vec<f32> {
    model
        .bert
        .embeddings
        .word_embeddings
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn the_tied_decoder_stays_the_embedding_matrix_through_optimizer_steps() {
    let dev = Device::flex().autodiff();
    let mut model = config().init_seeded(9, &dev);
    let n_params = model.num_params();
    let before = word_embeddings(&model);
    // No weight decay: with it every row would move whether or not the decoder is tied.
    let mut opt = optim::adamw(&no_decay());
    // Inputs use ids below 60 only: rows 60..99 change only through the decoder's gradient.
    for k in 0..3 {
        let (next, r) = step::optimizer_step(
            model,
            &mut opt,
            &[batch(4, k, 60)],
            1e-3,
            1.0,
            &mut LossScaler::off(),
            &dev,
        );
        assert_eq!(r.outcome, Outcome::Applied);
        model = next;
    }
    assert_eq!(
        model.num_params(),
        n_params,
        "no second copy of the embedding appeared"
    );
    let after = word_embeddings(&model);
    let h = 32;
    let moved = |row: usize| (0..h).any(|j| before[row * h + j] != after[row * h + j]);
    assert!(
        (60..99).all(moved),
        "the decoder's gradient reaches the embedding rows"
    );
    // The logits use the updated embedding: recomputing them by hand from the weight agrees.
    let eval = model.valid();
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(vec![2i32, 7, 9, 3], [1, 4]),
        &Device::flex(),
    );
    let mask = Tensor::<2, Int>::ones([1, 4], &Device::flex());
    let logits = eval.forward(ids.clone(), mask.clone()).reshape([4, 99]);
    let hidden = eval.encode(ids, mask).reshape([4, h]);
    let manual = eval.cls.predictions.forward(
        hidden,
        eval.bert.embeddings.word_embeddings.weight.val(),
        masklm::config::Precision::F32,
    );
    let diff = (logits - manual).abs().max().into_scalar::<f32>();
    assert!(diff < 1e-6);
}

fn no_decay() -> TrainConfig {
    TrainConfig {
        weight_decay: 0.0,
        ..TrainConfig::default()
    }
}

/// Every float parameter's module path (`bert.encoder.layer.0.…`) and values.
#[derive(Default)]
struct Named {
    path: Vec<String>,
    out: Vec<(String, ParamId, Vec<f32>)>,
}

impl ModuleVisitor for Named {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let v = p.val().into_data().try_to_vec::<f32>().unwrap();
        self.out.push((self.path.join("."), p.id, v));
    }
}

fn named(model: &BertForMaskedLM) -> Vec<(String, ParamId, Vec<f32>)> {
    let mut n = Named::default();
    model.visit(&mut n);
    n.out
}

/// A gradient of `value` everywhere for every parameter of `model`.
fn constant_grads(model: &BertForMaskedLM, value: f32) -> GradientsParams {
    struct Fill<'a>(&'a mut GradientsParams, f32);
    impl ModuleVisitor for Fill<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let g = p.val().without_autodiff().zeros_like().add_scalar(self.1);
            self.0.register(p.id, g);
        }
    }
    let mut g = GradientsParams::new();
    model.visit(&mut Fill(&mut g, value));
    g
}

#[test]
fn weight_decay_skips_biases_and_layer_norms_only() {
    let dev = Device::flex().autodiff();
    let model = config().init_seeded(3, &dev);
    let before = named(&model);
    // Zero gradients: AdamW's update is then weight decay alone, w ← w·(1 - lr·wd).
    let cfg = TrainConfig {
        weight_decay: 0.5,
        ..TrainConfig::default()
    };
    let mut opt = optim::adamw(&cfg);
    let zero = constant_grads(&model, 0.0);
    let one = Tensor::<1>::ones([1], &dev.clone().without_autodiff());
    let model = opt.step(0.1, model, zero, one);
    let after = named(&model);
    let (mut decayed, mut kept) = (vec![], vec![]);
    for ((path, _, b), (_, _, a)) in before.iter().zip(&after) {
        let shrunk = b
            .iter()
            .zip(a)
            .all(|(x, y)| (y - x * 0.95).abs() <= 1e-6 * x.abs().max(1.0));
        let same = b == a;
        assert!(shrunk || same, "{path}: neither decayed nor kept");
        if same && b.iter().any(|x| *x != 0.0) {
            kept.push(path.clone());
        } else if !same {
            decayed.push(path.clone());
        }
    }
    for p in &kept {
        assert!(
            p.ends_with(".bias") || p.ends_with(".gamma") || p.ends_with(".beta"),
            "{p} skipped weight decay"
        );
    }
    // LayerNorm gammas are 1 (non-zero), so their absence from `kept` would mean they decayed.
    assert!(
        kept.iter().any(|p| p.ends_with("layer_norm.gamma")),
        "{kept:?}"
    );
    for p in &decayed {
        assert!(p.ends_with(".weight"), "{p} was decayed");
    }
    for want in [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.encoder.layer.0.attention.self_attn.query.weight",
        "bert.encoder.layer.1.output.dense.weight",
        "cls.predictions.transform.dense.weight",
    ] {
        assert!(
            decayed.iter().any(|p| p == want),
            "{want} not in {decayed:?}"
        );
    }
}

#[test]
fn clipping_scales_every_gradient_by_one_factor_to_the_max_norm() {
    let dev = Device::flex().autodiff();
    let model = config().init_seeded(4, &dev);
    let n: usize = named(&model).iter().map(|(_, _, v)| v.len()).sum();
    // Every gradient 0.5: the global norm is 0.5·√n.
    let grads = constant_grads(&model, 0.5);
    let norm = optim::global_norm(&model, &grads).unwrap();
    let want = 0.5 * (n as f64).sqrt();
    let got = norm.clone().into_scalar::<f64>();
    assert!((got - want).abs() < 1e-4 * want, "norm {got} vs {want}");

    // Over the threshold: one factor 1 / (norm + 1e-6) for all, which brings the norm to 1.
    let factor = optim::grad_factor(norm.clone(), 1.0, 1.0).into_scalar::<f64>();
    let expected = 1.0 / (want + 1e-6);
    assert!((factor - expected).abs() < 1e-5 * expected, "{factor}");
    assert!(
        (factor * got - 1.0).abs() < 1e-5,
        "clipped norm {}",
        factor * got
    );
    // Below the threshold (or with clipping off) the gradients are untouched: exactly 1.
    for max in [2.0 * want, 0.0] {
        let f = optim::grad_factor(norm.clone(), max, 1.0).into_scalar::<f32>();
        assert_eq!(f, 1.0, "max {max}");
    }
}

#[test]
fn loss_scaled_gradients_are_divided_by_the_scale_before_and_with_clipping() {
    let dev = Device::flex().autodiff();
    let model = config().init_seeded(4, &dev);
    let n: usize = named(&model).iter().map(|(_, _, v)| v.len()).sum();
    // The gradients of the loss times 1024: every element 0.5 · 1024, true norm 0.5·√n.
    let scale = 1024.0;
    let scaled = constant_grads(&model, 0.5 * scale as f32);
    let norm = optim::global_norm(&model, &scaled).unwrap();
    let true_norm = 0.5 * (n as f64).sqrt();
    // Under the threshold (and with clipping off): unscaled only. AdamW is nearly blind to a
    // constant factor, so only this test sees a missing unscale.
    for max in [2.0 * true_norm, 0.0] {
        let f = optim::grad_factor(norm.clone(), max, scale).into_scalar::<f64>();
        assert_eq!(f, 1.0 / scale, "max {max}");
    }
    // Over it: clipped to norm 1 from the true norm, as PyTorch's unscale_ then clip_grad_norm_.
    let f = optim::grad_factor(norm.clone(), 1.0, scale).into_scalar::<f64>();
    let clipped = f * norm.into_scalar::<f64>();
    assert!((clipped - 1.0).abs() < 1e-4, "clipped norm {clipped}");
}

#[test]
fn an_infinite_gradient_leaves_the_weights_alone_and_a_nan_model_is_never_saved() {
    let dev = Device::flex().autodiff();
    let model = config().init_seeded(6, &dev);
    let before = named(&model);
    let mut opt = optim::adamw(&TrainConfig::default());
    // A finite loss with one infinite gradient: the clipping factor would be 0, and 0·inf NaN.
    let (loss, mut grads) = loss_and_grads(&model, &[batch(4, 1, 99)], 1.0, &dev).unwrap();
    let id = model.bert.embeddings.word_embeddings.weight.id;
    let g = grads.remove::<2>(id).unwrap();
    grads.register(id, g.add_scalar(f32::INFINITY));
    let (model, r) = step::apply(
        model,
        &mut opt,
        loss,
        grads,
        1e-3,
        1.0,
        &mut LossScaler::off(),
    );
    assert_eq!(r.outcome, Outcome::NonFinite);
    assert!(r.loss.is_finite() && r.grad_norm.is_infinite(), "{r:?}");
    assert!(named(&model) == before, "the weights moved");
    assert_eq!(checkpoint::first_non_finite(&model), None);

    // A poisoned model (as an update with NaN would leave it) is refused by save, which writes
    // nothing.
    let mut poisoned = model.clone();
    let w = &mut poisoned.cls.predictions.bias;
    *w = w.clone().map(|t| t.mul_scalar(f32::NAN));
    assert_eq!(
        checkpoint::first_non_finite(&poisoned).as_deref(),
        Some("cls.predictions.bias")
    );
    let dir = tempfile::tempdir().unwrap();
    let state = checkpoint::TrainState {
        step: 7,
        position: 0,
        elapsed_s: 0.0,
        version: "test".into(),
        scaler: Default::default(),
        data: None,
        unlogged: Default::default(),
    };
    let saved = checkpoint::Saved {
        model: &poisoned,
        optimizer: &opt,
        state: &state,
        config_toml: "",
        tokenizer_json: "",
    };
    let e = checkpoint::save(dir.path(), &saved, 2).unwrap_err();
    assert!(format!("{e:#}").contains("cls.predictions.bias"), "{e:#}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn one_training_step_reads_the_device_once() {
    let dev = Device::flex().autodiff();
    let mut model = config().init_seeded(8, &dev);
    let mut opt = optim::adamw(&TrainConfig::default());
    // Four micro-batches a step: the loss is summed on the device, not read per micro-batch.
    for k in 0..3 {
        let micro: Vec<Batch> = (0..4).map(|m| batch(3, k * 4 + m, 99)).collect();
        let reads = step::host_reads();
        let (next, r) = step::optimizer_step(
            model,
            &mut opt,
            &micro,
            1e-3,
            1.0,
            &mut LossScaler::off(),
            &dev,
        );
        model = next;
        assert_eq!(r.outcome, Outcome::Applied);
        assert_eq!(step::host_reads() - reads, 1, "step {k}");
    }
    let mut empty = batch(3, 0, 99);
    empty.labels.fill(IGNORE_LABEL);
    empty.selected = 0;
    let reads = step::host_reads();
    let (_, r) = step::optimizer_step(
        model,
        &mut opt,
        &[empty],
        1e-3,
        1.0,
        &mut LossScaler::off(),
        &dev,
    );
    assert_eq!(r.outcome, Outcome::NothingSelected);
    assert_eq!(step::host_reads(), reads, "nothing selected, nothing read");
}
