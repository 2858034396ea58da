//! The encoder runs its dense layers on [B·S, H] rows (one 2-D matmul per weight gradient,
//! issue 5). Before that optimisation they ran on [B, S, H] through burn's `Linear`, a batched
//! matmul against the broadcast weight. This test keeps that earlier computation as a reference
//! forward, written out here from the model's own parameters, and checks that training with
//! either gives the same losses within 1e-4 (the summation order of the gradients differs).

mod common;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use masklm::config::TrainConfig;
use masklm::data::batcher::TensorBatch;
use masklm::model::loss::masked_nll_sum;
use masklm::model::{BertForMaskedLM, mask_bias};
use masklm::train::{optim, step::loss_and_grads};

/// Logits at the selected positions, every dense layer applied to [B, S, ·] tensors (no
/// dropout: the test model has none).
fn reference_logits(m: &BertForMaskedLM, tb: &TensorBatch) -> Tensor<2> {
    let mut x = m.bert.embeddings.forward(tb.input_ids.clone());
    let bias = mask_bias(tb.attention_mask.clone());
    for l in &m.bert.encoder.layer {
        let a = &l.attention.self_attn;
        let [b, s, h] = x.dims();
        let (nh, dh) = (a.num_attention_heads, h / a.num_attention_heads);
        let heads = |t: Tensor<3>| t.reshape([b, s, nh, dh]).swap_dims(1, 2);
        let q = heads(a.query.forward(x.clone()));
        let k = heads(a.key.forward(x.clone()));
        let v = heads(a.value.forward(x.clone()));
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(1.0 / (dh as f64).sqrt())
            + bias.clone();
        let ctx = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, s, h]);
        let out = &l.attention.output;
        let attn = out.layer_norm.forward(out.dense.forward(ctx) + x);
        let i = gelu(l.intermediate.dense.forward(attn.clone()));
        x = l
            .output
            .layer_norm
            .forward(l.output.dense.forward(i) + attn);
    }
    let [b, s, d] = x.dims();
    let selected = x.reshape([b * s, d]).select(0, tb.positions.clone());
    m.cls
        .predictions
        .forward(selected, m.bert.embeddings.word_embeddings.weight.val())
}

#[test]
fn training_on_rows_matches_the_batched_dense_path_within_1e4() {
    let dev = Device::flex().autodiff();
    dev.seed(11);
    let mut config = common::tiny_bert(0.0);
    config.max_position_embeddings = 16;
    let mut rows_model = config.init(&dev);
    let mut ref_model = rows_model.clone();
    let (mut opt_rows, mut opt_ref) = (
        optim::adamw(&TrainConfig::default()),
        optim::adamw(&TrainConfig::default()),
    );
    let mut losses = vec![];
    for k in 0..5 {
        let batch = common::pattern_batch(6, k);
        let (loss_rows, g) =
            loss_and_grads(&rows_model, std::slice::from_ref(&batch), &dev).unwrap();
        rows_model = opt_rows.step(1e-3, rows_model, g);

        let tb = TensorBatch::new(&batch, &dev);
        let loss = masked_nll_sum(reference_logits(&ref_model, &tb), tb.labels)
            .div_scalar(batch.selected as f64);
        let loss_ref = loss.clone().into_scalar::<f64>();
        let g = GradientsParams::from_grads(loss.backward(), &ref_model);
        ref_model = opt_ref.step(1e-3, ref_model, g);

        assert!(
            (loss_rows - loss_ref).abs() < 1e-4,
            "step {k}: {loss_rows} on rows vs {loss_ref} batched"
        );
        losses.push(loss_rows);
    }
    assert!(losses[4] < losses[0], "the model learns: {losses:?}");
}
