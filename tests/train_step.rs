//! The optimizer step's arithmetic: accumulation equals one large batch, and the decoder stays
//! the embedding matrix through optimizer steps.

mod common;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use masklm::config::TrainConfig;
use masklm::data::batches::Batch;
use masklm::data::masking::IGNORE_LABEL;
use masklm::model::{BertConfig, BertForMaskedLM};
use masklm::train::{optim, step::loss_and_grads};
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
    dev.seed(5);
    let model = config().init(&dev);
    let micro: Vec<Batch> = (0..4).map(|k| batch(3, k, 99)).collect();
    let (loss_a, grads_a) = loss_and_grads(&model, &micro, &dev).unwrap();
    let (loss_b, grads_b) = loss_and_grads(&model, &[concat(&micro)], &dev).unwrap();
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
    assert!(loss_and_grads(&model, &[empty], &dev).is_none());
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
    dev.seed(9);
    let mut model = config().init(&dev);
    let n_params = model.num_params();
    let before = word_embeddings(&model);
    let mut opt = optim::adamw(&TrainConfig::default());
    // Inputs use ids below 60 only: rows 60..99 change only through the decoder's gradient.
    for k in 0..3 {
        let (_, g) = loss_and_grads(&model, &[batch(4, k, 60)], &dev).unwrap();
        model = opt.step(1e-3, model, g);
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
    let manual = eval
        .cls
        .predictions
        .forward(hidden, eval.bert.embeddings.word_embeddings.weight.val());
    let diff = (logits - manual).abs().max().into_scalar::<f32>();
    assert!(diff < 1e-6);
}
