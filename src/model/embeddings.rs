//! `BertEmbeddings`: word + position + token-type embeddings, LayerNorm, dropout.
//! Mirrors HF `transformers.models.bert.modeling_bert.BertEmbeddings`.

use super::dropout::Dropout;
use super::layer_norm::LayerNorm;
use super::{BertConfig, normal};
use burn::module::Param;
use burn::nn::Embedding;
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    /// HF `LayerNorm`.
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl BertEmbeddings {
    pub fn new(c: &BertConfig, device: &Device) -> Self {
        // HF zeroes the padding row of the word embeddings at init (`padding_idx`).
        let word = normal([c.vocab_size, c.hidden_size], c.initializer_range, device).slice_assign(
            [c.pad_token_id..c.pad_token_id + 1, 0..c.hidden_size],
            Tensor::zeros([1, c.hidden_size], device),
        );
        let emb = |t: Tensor<2>| Embedding {
            weight: Param::from_tensor(t),
        };
        Self {
            word_embeddings: emb(word),
            position_embeddings: emb(normal(
                [c.max_position_embeddings, c.hidden_size],
                c.initializer_range,
                device,
            )),
            token_type_embeddings: emb(normal(
                [c.type_vocab_size, c.hidden_size],
                c.initializer_range,
                device,
            )),
            layer_norm: LayerNorm::new(c.hidden_size, c.layer_norm_eps, device),
            dropout: Dropout::new(c.hidden_dropout_prob),
        }
    }

    /// `input_ids` [B, S] → [B, S, H]. Positions are 0..S and every token is of type 0 (no
    /// sentence pairs in MLM pretraining), as HF does when `token_type_ids` is omitted.
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = input_ids.dims();
        let words = self.word_embeddings.forward(input_ids);
        let h = words.dims()[2];
        // [S, H] → [1, S, H], broadcast over the batch.
        let pos = self
            .position_embeddings
            .weight
            .val()
            .slice([0..s, 0..h])
            .unsqueeze_dim::<3>(0);
        let typ = self
            .token_type_embeddings
            .weight
            .val()
            .slice([0..1, 0..h])
            .unsqueeze_dim::<3>(0);
        let x = words + pos + typ;
        debug_assert_eq!(x.dims(), [b, s, h]);
        self.dropout.forward(self.layer_norm.forward(x))
    }
}
