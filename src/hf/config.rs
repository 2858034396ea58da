//! `config.json` ↔ [`BertConfig`]. Keys are HF `BertConfig`'s; a key that is absent takes HF's
//! default, as `transformers` does when it loads the file.

use crate::config::ModelConfig;
use crate::error::UsageError;
use crate::model::BertConfig;
use anyhow::Result;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;

/// What masklm reads of an HF `config.json`. Unknown keys (`transformers_version`, `dtype`,
/// `id2label`, …) are ignored, as they do not change the masked-LM computation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct HfConfig {
    pub model_type: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub position_embedding_type: String,
    pub is_decoder: bool,
    pub tie_word_embeddings: bool,
}

/// HF `BertConfig.__init__` defaults (bert-base-uncased).
impl Default for HfConfig {
    fn default() -> Self {
        Self {
            model_type: None,
            architectures: None,
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            position_embedding_type: "absolute".into(),
            is_decoder: false,
            tie_word_embeddings: true,
        }
    }
}

/// The `config.json` of an export. `hidden_act` "gelu" is HF's exact (erf) GELU, which masklm
/// uses; the decoder is tied to the word embeddings, so `tie_word_embeddings` is true.
pub fn to_json(c: &BertConfig) -> Value {
    json!({
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "intermediate_size": c.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": c.hidden_dropout_prob,
        "attention_probs_dropout_prob": c.attention_probs_dropout_prob,
        "max_position_embeddings": c.max_position_embeddings,
        "type_vocab_size": c.type_vocab_size,
        "initializer_range": c.initializer_range,
        "layer_norm_eps": c.layer_norm_eps,
        "pad_token_id": c.pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": true,
        "dtype": "float32",
    })
}

/// Reads and checks `path` (an HF `config.json`).
pub fn read(path: &Path) -> Result<HfConfig> {
    let text = crate::io::read_to_string_capped(path, crate::io::MAX_SETTINGS_BYTES).map_err(|e| {
        UsageError::new(format!(
            "cannot read {}: {e}; an HF model folder has a config.json (save_pretrained writes it)",
            path.display()
        ))
    })?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let hf: HfConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let fix = "it should be the config.json that transformers' save_pretrained writes";
        if e.inner().is_syntax() || e.inner().is_eof() {
            UsageError::new(format!(
                "{} is not valid JSON ({}); {fix}",
                path.display(),
                e.inner()
            ))
        } else {
            UsageError::new(format!(
                "{} key `{}`: {}; {fix}",
                path.display(),
                e.path(),
                e.inner()
            ))
        }
    })?;
    hf.check()
        .map_err(|e| UsageError::new(format!("{}: {e}", path.display())))?;
    Ok(hf)
}

impl HfConfig {
    /// Refuses what masklm's post-LN, absolute-position, erf-GELU encoder cannot compute. Sizes
    /// are checked with the rest of the config by [`crate::config::Config::validate`].
    pub fn check(&self) -> Result<(), String> {
        if let Some(t) = self.model_type.as_deref().filter(|t| *t != "bert") {
            return Err(format!(
                "model_type is {t:?}; masklm imports only \"bert\" (BertForMaskedLM) models"
            ));
        }
        if let Some(a) = &self.architectures
            && self.model_type.is_none()
            && !a.iter().all(|n| n.starts_with("Bert"))
        {
            return Err(format!(
                "no model_type and architectures {a:?}; masklm imports only BERT models"
            ));
        }
        let refuse = |key: &str, found: &str, want: &str| {
            Err(format!(
                "{key} is {found}; masklm's BERT supports only {want}"
            ))
        };
        // "gelu_python" is transformers' same erf GELU written in Python; the tanh ones
        // ("gelu_new", "gelu_pytorch_tanh", "gelu_fast") compute other values.
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_python") {
            return refuse(
                "hidden_act",
                &format!("{:?}", self.hidden_act),
                "\"gelu\" (the exact erf GELU; \"gelu_python\" is the same)",
            );
        }
        if self.position_embedding_type != "absolute" {
            return refuse(
                "position_embedding_type",
                &format!("{:?}", self.position_embedding_type),
                "\"absolute\"",
            );
        }
        if self.is_decoder {
            return refuse("is_decoder", "true", "the bidirectional encoder (false)");
        }
        Ok(())
    }

    /// The `[model]` section of masklm's config, `vocab_size` 0 (the tokenizer's; import sets
    /// it when the weights have more rows than the tokenizer has ids).
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            vocab_size: 0,
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            hidden_dropout_prob: self.hidden_dropout_prob,
            attention_probs_dropout_prob: self.attention_probs_dropout_prob,
            layer_norm_eps: self.layer_norm_eps,
            initializer_range: self.initializer_range,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> HfConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn export_then_read_gives_the_same_model_config() {
        let m = ModelConfig {
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 37,
            max_position_embeddings: 64,
            ..ModelConfig::default()
        };
        let bert = BertConfig::new(&m, 99, 3);
        let back = parse(to_json(&bert));
        assert_eq!(back.check(), Ok(()));
        assert_eq!(back.model_config(), m);
        assert_eq!(back.vocab_size, 99);
    }

    #[test]
    fn absent_keys_take_hf_defaults_and_other_models_are_refused() {
        let c = parse(json!({"model_type": "bert"}));
        assert_eq!(
            (c.hidden_size, c.type_vocab_size, c.vocab_size),
            (768, 2, 30522)
        );
        assert_eq!(parse(json!({"hidden_act": "gelu_python"})).check(), Ok(()));
        for (v, needle) in [
            (json!({"model_type": "roberta"}), "model_type"),
            (json!({"hidden_act": "gelu_new"}), "hidden_act"),
            (
                json!({"position_embedding_type": "relative_key"}),
                "position_embedding_type",
            ),
            (json!({"is_decoder": true}), "is_decoder"),
            (
                json!({"architectures": ["GPT2LMHeadModel"]}),
                "architectures",
            ),
        ] {
            let e = parse(v).check().unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
