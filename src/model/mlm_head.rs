//! `BertOnlyMLMHead` (HF `cls.predictions`): transform (dense → GELU → LayerNorm), then the
//! decoder whose weight IS the word-embedding matrix plus its own bias.

use super::gelu::gelu;
use super::layer_norm::LayerNorm;
use super::precision::{dense, matmul};
use super::{BertConfig, linear};
use crate::config::Precision;
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct BertPredictionHeadTransform {
    pub dense: Linear,
    /// HF `LayerNorm`.
    pub layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct BertLMPredictionHead {
    pub transform: BertPredictionHeadTransform,
    /// HF `cls.predictions.bias` `[V]`. There is no decoder weight here: the decoder uses the
    /// word embeddings themselves (one parameter used twice; a stored copy would drift apart
    /// from the embedding after the first optimizer step).
    pub bias: Param<Tensor<1>>,
}

impl BertLMPredictionHead {
    pub fn new(c: &BertConfig, device: &Device) -> Self {
        Self {
            transform: BertPredictionHeadTransform {
                dense: linear(c.hidden_size, c.hidden_size, c, device),
                layer_norm: LayerNorm::new(c.hidden_size, c.layer_norm_eps, device),
            },
            bias: Param::from_tensor(Tensor::zeros([c.vocab_size], device)),
        }
    }

    /// `h` [N, H] and the word embeddings [V, H] → logits [N, V] (f32; the products in `p`).
    pub fn forward(&self, h: Tensor<2>, word_embeddings: Tensor<2>, p: Precision) -> Tensor<2> {
        let t = self
            .transform
            .layer_norm
            .forward(gelu(dense(&self.transform.dense, h, p)));
        // The bias's [1, V] view before the product: registered between the product and the
        // addition, a view ends burn's fusion block there, and the addition ran as a kernel of
        // its own instead of in the product's epilogue (`precision::dense`).
        let bias = self.bias.val().unsqueeze_dim(0);
        matmul(t, word_embeddings.transpose(), p) + bias
    }
}
