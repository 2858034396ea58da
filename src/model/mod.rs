//! Post-LN BERT exactly as HF `BertForMaskedLM`, so that weights interchange.
//!
//! The module tree mirrors HF's: `bert.embeddings…`, `bert.encoder.layer.N.attention.self…`,
//! `cls.predictions…`. Rust field names differ from HF keys in two places only: `LayerNorm` is
//! `layer_norm` and `self` is `self_attn`.

pub mod dense;
pub mod dropout;
#[cfg(feature = "cube")]
mod dropout_cube;
pub mod embeddings;
pub mod encoder;
pub mod gelu;
#[cfg(feature = "cube")]
mod gelu_cube;
pub mod heads;
pub mod layer_norm;
#[cfg(feature = "cube")]
mod layer_norm_cube;
pub mod loss;
#[cfg(feature = "cube")]
mod loss_cube;
pub mod mlm_head;
pub mod precision;
pub mod softmax;
#[cfg(feature = "cube")]
mod softmax_cube;
pub mod vmath;

use crate::config::{ModelConfig, Precision};
use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use embeddings::BertEmbeddings;
use encoder::BertEncoder;
use mlm_head::BertLMPredictionHead;
use serde::{Deserialize, Serialize};

/// HF `BertConfig`: the `[model]` section plus what the tokenizer decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub layer_norm_eps: f64,
    pub initializer_range: f64,
    pub pad_token_id: usize,
}

impl BertConfig {
    /// `[model]` over a tokenizer of `tokenizer_ids` ids: the embedding has `model.vocab_size`
    /// rows, or one per id when that is 0 (entry points refuse fewer rows than ids first, with
    /// [`ModelConfig::vocab_rows`]).
    pub fn new(m: &ModelConfig, tokenizer_ids: usize, pad_token_id: u32) -> Self {
        Self {
            vocab_size: m.rows(tokenizer_ids),
            hidden_size: m.hidden_size,
            num_hidden_layers: m.num_hidden_layers,
            num_attention_heads: m.num_attention_heads,
            intermediate_size: m.intermediate_size,
            max_position_embeddings: m.max_position_embeddings,
            type_vocab_size: m.type_vocab_size,
            hidden_dropout_prob: m.hidden_dropout_prob,
            attention_probs_dropout_prob: m.attention_probs_dropout_prob,
            layer_norm_eps: m.layer_norm_eps,
            initializer_range: m.initializer_range,
            pad_token_id: pad_token_id as usize,
        }
    }

    /// The number of parameters [`init`](Self::init) makes, from the sizes alone (no tensor):
    /// embeddings (word, position, token type, LayerNorm), per layer Q, K, V, the attention
    /// output, the intermediate and output dense layers with biases and two LayerNorms, and the
    /// head's transform, LayerNorm and decoder bias (its weight is the word embeddings').
    pub fn num_parameters(&self) -> u64 {
        let (v, h, i) = (
            self.vocab_size as u64,
            self.hidden_size as u64,
            self.intermediate_size as u64,
        );
        let (p, t, l) = (
            self.max_position_embeddings as u64,
            self.type_vocab_size as u64,
            self.num_hidden_layers as u64,
        );
        let embeddings = (v + p + t) * h + 2 * h;
        let layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h;
        let head = (h * h + h) + 2 * h + v;
        embeddings + l * layer + head
    }

    /// A freshly initialised model, as BERT initialises: Normal(0, initializer_range) weights,
    /// zero biases, LayerNorm weight 1 and bias 0.
    pub fn init(&self, device: &Device) -> BertForMaskedLM {
        BertForMaskedLM {
            bert: BertModel {
                embeddings: BertEmbeddings::new(self, device),
                encoder: BertEncoder::new(self, device),
            },
            cls: BertOnlyMLMHead {
                predictions: BertLMPredictionHead::new(self, device),
            },
            precision: Precision::F32,
        }
    }

    /// BERT's initialisation drawn on the CPU (flex) from `seed`, then placed on `device`: the
    /// same seed gives the same initial weights on every backend (each backend has its own
    /// generator), so a wgpu run can be checked against a flex run step by step.
    pub fn init_seeded(&self, seed: u64, device: &Device) -> BertForMaskedLM {
        let _only_us = cpu_generator();
        let cpu = Device::flex();
        cpu.seed(seed);
        let weights = self.init(&cpu).into_record();
        self.init(device).load_record(weights)
    }

    /// A model whose weights a load (checkpoint, HF import) will replace: initialised as
    /// [`init`](Self::init) does, its throwaway draws made while holding flex's generator so
    /// that they cannot fall between another thread's seeded draws.
    pub fn init_for_load(&self, device: &Device) -> BertForMaskedLM {
        let _only_us = cpu_generator();
        self.init(device)
    }
}

/// flex has one random generator per process: two threads drawing at once interleave their
/// draws, and the same seed then gives other weights. Every draw masklm makes outside a training
/// loop (seeded initialisation, and the initialisation a load overwrites) holds this.
fn cpu_generator() -> std::sync::MutexGuard<'static, ()> {
    static CPU_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    CPU_GENERATOR.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `device` computes on this machine's CPU (flex or ndarray, with or without autodiff):
/// where the model keeps the CPU's computations (dropout's host mask, burn's `Linear`) rather
/// than the operations arranged for GPU kernels and burn's fusion.
pub(crate) fn on_host(device: &Device) -> bool {
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if device.clone().without_autodiff() == Device::ndarray() {
        return true;
    }
    device.clone().without_autodiff() == Device::flex()
}

/// Normal(0, std) values of `shape`, drawn now (not lazily) from the device's seeded generator.
fn normal<const D: usize>(shape: [usize; D], std: f64, device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, std), device)
}

/// A `Linear` as BERT initialises it: weight [d_in, d_out] ~ Normal(0, initializer_range), bias 0.
fn linear(d_in: usize, d_out: usize, c: &BertConfig, device: &Device) -> Linear {
    let mut l = LinearConfig::new(d_in, d_out).init(device);
    l.weight = Param::from_tensor(normal([d_in, d_out], c.initializer_range, device));
    l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    l
}

#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
}

#[derive(Module, Debug)]
pub struct BertOnlyMLMHead {
    pub predictions: BertLMPredictionHead,
}

#[derive(Module, Debug)]
pub struct BertForMaskedLM {
    pub bert: BertModel,
    pub cls: BertOnlyMLMHead,
    /// What the matrix products compute in (f32 unless [`Self::with_precision`] says otherwise);
    /// not a weight, so neither saved nor loaded.
    #[module(skip)]
    pub precision: Precision,
}

/// The additive attention bias of a padding mask: `attention_mask` [B, S] (1 real, 0 padding)
/// → [B, 1, 1, S] with 0 on real keys and f32::MIN on padding (HF uses the dtype's minimum).
/// A fully padded row gets the same bias everywhere, so its softmax is uniform, never NaN.
pub fn mask_bias(attention_mask: Tensor<2, Int>) -> Tensor<4> {
    let [b, s] = attention_mask.dims();
    let padding = attention_mask.equal_elem(0);
    Tensor::<2>::zeros([b, s], &padding.device())
        .mask_fill(padding, f32::MIN)
        .reshape([b, 1, 1, s])
}

impl BertForMaskedLM {
    /// The same weights, computing their products in `p` (`model::precision`).
    pub fn with_precision(mut self, p: Precision) -> Self {
        self.precision = p;
        self
    }

    /// `input_ids`, `attention_mask` [B, S] → hidden states [B, S, H].
    pub fn encode(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Tensor<3> {
        let x = self.bert.embeddings.forward(input_ids);
        self.bert
            .encoder
            .forward(x, mask_bias(attention_mask), self.precision)
    }

    /// Logits at the selected positions only (sparse prediction, as Google's and NVIDIA's BERT):
    /// `positions` `[N]` holds `b * S + s` of each selected token → [N, V]. The head's FLOPs scale
    /// with N (~15% of B·S) instead of B·S.
    pub fn forward_selected(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        positions: Tensor<1, Int>,
    ) -> Tensor<2> {
        let h = self.encode(input_ids, attention_mask);
        let [b, s, d] = h.dims();
        let selected = h.reshape([b * s, d]).select(0, positions);
        self.cls.predictions.forward(
            selected,
            self.bert.embeddings.word_embeddings.weight.val(),
            self.precision,
        )
    }

    /// Logits at every position, [B, S, V], as HF's `BertForMaskedLM` returns them (the parity
    /// tests).
    pub fn forward(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Tensor<3> {
        let h = self.encode(input_ids, attention_mask);
        let [b, s, d] = h.dims();
        let logits = self.cls.predictions.forward(
            h.reshape([b * s, d]),
            self.bert.embeddings.word_embeddings.weight.val(),
            self.precision,
        );
        let v = logits.dims()[1];
        logits.reshape([b, s, v])
    }
}
