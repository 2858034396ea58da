//! The post-LN BERT encoder, one struct per HF submodule (`BertSelfAttention`, `BertSelfOutput`,
//! `BertAttention`, `BertIntermediate`, `BertOutput`, `BertLayer`, `BertEncoder`), so that every
//! parameter path maps to its HF key by one table.

use super::dropout::Dropout;
use super::gelu::{gelu, gelu_to};
use super::heads::{merge_heads, split_heads};
use super::layer_norm::LayerNorm;
use super::precision::{dense, dense_side_by_side, matmul_low};
use super::softmax::{attention_context, attention_softmax};
use super::{BertConfig, linear, on_host};
use crate::config::Precision;
use burn::nn::Linear;
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct BertSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub dropout: Dropout,
    pub num_attention_heads: usize,
}

impl BertSelfAttention {
    fn new(c: &BertConfig, device: &Device) -> Self {
        let h = c.hidden_size;
        Self {
            query: linear(h, h, c, device),
            key: linear(h, h, c, device),
            value: linear(h, h, c, device),
            dropout: Dropout::new(c.attention_probs_dropout_prob),
            num_attention_heads: c.num_attention_heads,
        }
    }

    /// `x` [B·S, H] (the rows of a [B, S] batch), `mask_bias` [B, 1, 1, S] (0 on real keys, a
    /// large negative on padding) → context [B·S, H]. The scores are scaled, biased and
    /// softmaxed in f32 whatever `p`: f32::MIN would be -inf in f16, and a fully padded row then
    /// NaN.
    fn forward(
        &self,
        x: Tensor<2>,
        [b, _]: [usize; 2],
        mask_bias: Tensor<4>,
        p: Precision,
    ) -> Tensor<2> {
        let (h, device) = (x.dims()[1], x.device());
        let (nh, dh) = (self.num_attention_heads, h / self.num_attention_heads);
        let scale = 1.0 / (dh as f64).sqrt();
        // [B, nh, S, dh], in the products' precision.
        let context = if on_host(&device) {
            // [B·S, H] → [B, nh, S, dh] (views on the CPU), in the products' precision: under
            // f16 each epilogue writes f16, so no f32 copy is made and cast down (and no f16 →
            // f32 → f16 round trip of its gradient); under f32, burn's `Linear` (`dense`).
            let project = |l: &Linear, x: Tensor<2>| match p.low() {
                Some(_) => dense_side_by_side(&[l], x, p, p.products_dtype()),
                None => dense(l, x, p),
            };
            let q = project(&self.query, x.clone());
            let k = project(&self.key, x.clone());
            let v = project(&self.value, x);
            let heads = |t: Tensor<2>| split_heads(t, b, nh);
            let (q, k, v) = (heads(q), heads(k), heads(v));
            // [B, nh, S, S], left in the products' precision: the softmax reads it so and
            // computes in f32. The padding bias applies to keys, broadcast over heads and
            // queries. Dropped out straight into the products' precision.
            let scores = matmul_low(q, k.swap_dims(2, 3), p);
            let probs = attention_softmax(scores, mask_bias, scale);
            matmul_low(self.dropout.forward_as(probs, p.products_dtype()), v, p)
        } else {
            // [B·S, 3H]: Q, K and V as one product, then one operation whose backward computes
            // the scores again instead of keeping [B, nh, S, S] probabilities
            // (`softmax::attention_context`); outside training without dropout.
            let projections = [&self.query, &self.key, &self.value];
            let qkv = dense_side_by_side(&projections, x, p, p.products_dtype());
            let call = self.dropout.gpu_call(&device).unwrap_or((0, 0.0));
            attention_context(qkv, mask_bias, nh, scale, call)
        };
        // [B, nh, S, dh] → [B·S, H], in the products' precision: the output dense takes it so.
        merge_heads(context)
    }
}

/// Dense, dropout, residual, LayerNorm: HF `BertSelfOutput` and `BertOutput` have this shape.
#[derive(Module, Debug)]
pub struct BertSelfOutput {
    pub dense: Linear,
    /// HF `LayerNorm`.
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl BertSelfOutput {
    fn new(d_in: usize, c: &BertConfig, device: &Device) -> Self {
        Self {
            dense: linear(d_in, c.hidden_size, c, device),
            layer_norm: LayerNorm::new(c.hidden_size, c.layer_norm_eps, device),
            dropout: Dropout::new(c.hidden_dropout_prob),
        }
    }

    /// `LayerNorm(dropout(dense(x)) + residual)`, [B·S, ·] → [B·S, H].
    fn forward(&self, x: Tensor<2>, residual: Tensor<2>, p: Precision) -> Tensor<2> {
        self.layer_norm
            .forward_residual(dense(&self.dense, x, p), residual, &self.dropout)
    }
}

/// HF `BertOutput`: the same computation after the feed-forward layer.
pub type BertOutput = BertSelfOutput;

#[derive(Module, Debug)]
pub struct BertAttention {
    /// HF `self`.
    pub self_attn: BertSelfAttention,
    pub output: BertSelfOutput,
}

#[derive(Module, Debug)]
pub struct BertIntermediate {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
}

impl BertLayer {
    fn new(c: &BertConfig, device: &Device) -> Self {
        Self {
            attention: BertAttention {
                self_attn: BertSelfAttention::new(c, device),
                output: BertSelfOutput::new(c.hidden_size, c, device),
            },
            intermediate: BertIntermediate {
                dense: linear(c.hidden_size, c.intermediate_size, c, device),
            },
            output: BertSelfOutput::new(c.intermediate_size, c, device),
        }
    }

    /// Post-LN: attention → dense → dropout → +x → LayerNorm; dense → GELU(erf) → dense →
    /// dropout → +residual → LayerNorm. [B·S, H] → [B·S, H].
    fn forward(
        &self,
        x: Tensor<2>,
        batch: [usize; 2],
        mask_bias: Tensor<4>,
        p: Precision,
    ) -> Tensor<2> {
        let ctx = self
            .attention
            .self_attn
            .forward(x.clone(), batch, mask_bias, p);
        let a = self.attention.output.forward(ctx, x, p);
        let h = dense(&self.intermediate.dense, a.clone(), p);
        // [B·S, I]: in mixed precision left in the products' precision for the output dense
        // layer, GELU's input kept so for backward (`gelu::gelu_to`).
        let i = match p.low() {
            Some(dtype) => gelu_to(h, dtype.into()),
            None => gelu(h),
        };
        self.output.forward(i, a, p)
    }
}

#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

impl BertEncoder {
    pub fn new(c: &BertConfig, device: &Device) -> Self {
        Self {
            layer: (0..c.num_hidden_layers)
                .map(|_| BertLayer::new(c, device))
                .collect(),
        }
    }

    /// `x` [B, S, H] → [B, S, H]. Every dense layer runs on the [B·S, ·] rows as one 2-D matmul:
    /// a [B, S, ·] input would make burn's `Linear` a batched matmul against the broadcast
    /// weight, whose gradient is then B per-row-block products summed over B on one thread.
    /// The products compute in `p` (`model::precision`).
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>, p: Precision) -> Tensor<3> {
        let [b, s, h] = x.dims();
        let mut x = x.reshape([b * s, h]);
        for layer in &self.layer {
            x = layer.forward(x, [b, s], mask_bias.clone(), p);
        }
        x.reshape([b, s, h])
    }
}
