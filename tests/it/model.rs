//! The encoder and the masked loss, on odd sizes so that a transposed shape fails loudly.

use crate::common;
use burn::prelude::*;
use masklm::model::loss::masked_nll_sum;
use masklm::model::{BertConfig, BertForMaskedLM};

fn config() -> BertConfig {
    common::tiny_bert(0.1)
}

/// Seeded through `init_seeded`, which holds flex's process-wide generator while it draws:
/// seeding it here directly would reseed it under another test's draws.
fn model(device: &Device) -> BertForMaskedLM {
    config().init_seeded(11, device)
}

fn ints<const D: usize>(v: Vec<i32>, shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn shapes_dense_and_sparse() {
    let dev = Device::flex();
    let m = model(&dev);
    let (b, s) = (13, 7);
    let ids = ints(
        (0..b * s).map(|i| 5 + (i as i32 * 7) % 94).collect(),
        [b, s],
        &dev,
    );
    let mask = ints(vec![1; b * s], [b, s], &dev);
    assert_eq!(m.forward(ids.clone(), mask.clone()).dims(), [13, 7, 99]);
    let pos = ints(vec![0, 8, 90], [3], &dev);
    let sparse = m.forward_selected(ids.clone(), mask.clone(), pos);
    assert_eq!(sparse.dims(), [3, 99]);
    // Sparse logits are the dense logits at those positions.
    let dense = values(
        m.forward(ids, mask)
            .reshape([b * s, 99])
            .select(0, ints(vec![0, 8, 90], [3], &dev)),
    );
    for (x, y) in values(sparse).iter().zip(&dense) {
        assert!((x - y).abs() < 1e-5);
    }
}

#[test]
fn appending_padding_does_not_change_predictions() {
    let dev = Device::flex();
    let m = model(&dev);
    let row = vec![2, 17, 33, 45, 3];
    let short = m.forward(
        ints(row.clone(), [1, 5], &dev),
        ints(vec![1; 5], [1, 5], &dev),
    );
    let mut padded = row.clone();
    padded.extend([0; 6]);
    let mut mask = vec![1; 5];
    mask.extend([0; 6]);
    let long = m.forward(ints(padded, [1, 11], &dev), ints(mask, [1, 11], &dev));
    let long = values(long.slice([0..1, 0..5, 0..99]));
    for (x, y) in values(short).iter().zip(&long) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
}

#[test]
fn fully_padded_row_gives_no_nan() {
    let dev = Device::flex();
    let m = model(&dev);
    let ids = ints(vec![2, 9, 3, 0, 0, 0, 0, 0], [2, 4], &dev);
    let mask = ints(vec![1, 1, 1, 0, 0, 0, 0, 0], [2, 4], &dev);
    assert!(values(m.forward(ids, mask)).iter().all(|x| x.is_finite()));
}

#[test]
fn loss_matches_a_hand_computed_reference() {
    let dev = Device::flex();
    let logits = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0], [2, 3]),
        &dev,
    );
    let labels = ints(vec![2, 0], [2], &dev);
    let got = masked_nll_sum(logits, labels).into_scalar::<f32>();
    let lse = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
    let want = (lse - 3.0) + 3f32.ln();
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

#[test]
fn initialised_as_bert_with_one_tied_decoder() {
    let dev = Device::flex();
    let m = model(&dev);
    let c = config();
    let (v, h, i, p, t, l) = (
        c.vocab_size,
        c.hidden_size,
        c.intermediate_size,
        c.max_position_embeddings,
        c.type_vocab_size,
        c.num_hidden_layers,
    );
    // HF BertForMaskedLM's parameter count, with the decoder weight tied (not a second [V, H]).
    let embeddings = v * h + p * h + t * h + 2 * h;
    let layer = 4 * (h * h + h) + 2 * (2 * h) + (h * i + i) + (i * h + h);
    let head = h * h + h + 2 * h + v;
    assert_eq!(m.num_params(), embeddings + l * layer + head);
    let word = values(m.bert.embeddings.word_embeddings.weight.val());
    assert!(
        word[..h].iter().all(|&x| x == 0.0),
        "the [PAD] row starts at zero, as in HF"
    );
    let std = (word[h..].iter().map(|x| x * x).sum::<f32>() / (word.len() - h) as f32).sqrt();
    assert!((std - 0.02).abs() < 0.002, "word embedding std {std}");
    let q = &m.bert.encoder.layer[0].attention.self_attn.query;
    assert!(
        values(q.bias.as_ref().unwrap().val())
            .iter()
            .all(|&x| x == 0.0)
    );
    let ln = &m.bert.encoder.layer[1].output.layer_norm;
    assert!(values(ln.gamma.val()).iter().all(|&x| x == 1.0));
}

#[test]
fn the_parameter_count_from_the_sizes_is_the_models() {
    use burn::module::Module;
    let c = config();
    assert_eq!(
        c.num_parameters(),
        model(&Device::flex()).num_params() as u64
    );
    // HF's BertForMaskedLM for bert-base-uncased (no pooler, decoder tied): 109,514,298.
    let mut base = c.clone();
    (base.vocab_size, base.hidden_size, base.num_hidden_layers) = (30522, 768, 12);
    (base.intermediate_size, base.max_position_embeddings) = (3072, 512);
    (base.type_vocab_size, base.num_attention_heads) = (2, 12);
    assert_eq!(base.num_parameters(), 109_514_298);
}
