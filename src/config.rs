//! One typed configuration tree: built-in defaults < TOML file < `--set section.key=value`.
//!
//! Every key is known: an unknown section or key is an error that names it. Every value is
//! checked once, in [`Config::validate`], with a message that says what is wrong and what is
//! allowed; nothing downstream re-checks. `[model]` keys are Hugging Face `BertConfig` names so
//! that `config.json` export is a direct copy.

use crate::error::UsageError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The default run (`masklm train` without `--config`), embedded so that the binary always has it.
pub const DEFAULT_TOML: &str = include_str!("../configs/default.toml");

/// The largest `[model]` size accepted (each of hidden_size, layers, heads, intermediate_size,
/// max_position_embeddings, type_vocab_size), far above any BERT; bounds keep the parameter and
/// memory arithmetic inside u64, so a mistyped size is refused here, not wrapped around.
pub const MAX_MODEL_SIZE: usize = 1 << 20;
/// The largest vocabulary accepted, for tokenizers trained and read (BERT: 30,522).
pub const MAX_VOCAB_SIZE: usize = 1 << 24;
/// The most micro-batches a step may accumulate.
pub const MAX_GRAD_ACCUM_STEPS: usize = 1 << 16;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub model: ModelConfig,
    pub tokenizer: TokenizerConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
}

/// HF `BertConfig` names and defaults (bert-base-uncased).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The word embedding's rows; 0 (the default) makes it the tokenizer's id count. More pads
    /// the vocabulary, as NVIDIA's BERT pads 30522 to 30528 (a multiple of 8) for tensor cores:
    /// the rows past the tokenizer's ids are never an input or a label. Fewer is refused.
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
}

impl ModelConfig {
    /// Whether `self` and `other` give the word embedding as many rows over a tokenizer of
    /// `tokenizer_ids` ids (`vocab_size` 0 and the id count are the same embedding).
    pub fn same_rows(&self, other: &ModelConfig, tokenizer_ids: usize) -> bool {
        self.rows(tokenizer_ids) == other.rows(tokenizer_ids)
    }

    /// The word embedding's rows over a tokenizer of `tokenizer_ids` ids, unchecked (see
    /// [`Self::vocab_rows`]): `vocab_size`, or the id count when it is 0.
    pub fn rows(&self, tokenizer_ids: usize) -> usize {
        match self.vocab_size {
            0 => tokenizer_ids,
            v => v,
        }
    }

    /// The word embedding's rows over a tokenizer of `tokenizer_ids` ids: `vocab_size`, or the
    /// tokenizer's when it is 0. Refuses fewer rows than ids (an id past the embedding would
    /// index nothing); `tokenizer` names the tokenizer in the message.
    pub fn vocab_rows(&self, tokenizer_ids: usize, tokenizer: &str) -> Result<usize, UsageError> {
        match self.rows(tokenizer_ids) {
            v if v >= tokenizer_ids => Ok(v),
            v => Err(UsageError::new(format!(
                "model.vocab_size {v} is smaller than the {tokenizer_ids} ids of the tokenizer \
                 {tokenizer}: every id needs an embedding row; use at least {tokenizer_ids}, or 0 \
                 for exactly the tokenizer's"
            ))),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            vocab_size: 0,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    /// Loaded if the file exists, else trained on `data.train` and saved here.
    pub path: PathBuf,
    pub vocab_size: usize,
    pub lowercase: bool,
    /// transformers' `clean_up_tokenization_spaces`: decoded text loses the space before
    /// punctuation and contractions (`do n't .` → `don't.`). Off, as in transformers 5; `import`
    /// takes it from tokenizer_config.json and `export` writes it there.
    pub clean_up_tokenization_spaces: bool,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("tokenizer.json"),
            vocab_size: 30522,
            lowercase: true,
            clean_up_tokenization_spaces: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Packing {
    /// HF `group_texts`: documents concatenated, cut into blocks of seq_len - 2, each wrapped in
    /// `[CLS]` … `[SEP]`. No padding.
    Packed,
    /// One line per row, truncated to seq_len (specials included) and padded.
    Line,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub train: Vec<PathBuf>,
    /// When empty, the first `validation_split_percentage`% of the training rows are held out
    /// (HF `run_mlm.py` takes `train[:5%]` the same way).
    pub valid: Vec<PathBuf>,
    pub validation_split_percentage: f64,
    pub seq_len: usize,
    pub packing: Packing,
    pub mask_prob: f64,
    pub mask_token_prob: f64,
    pub random_token_prob: f64,
    pub whole_word_masking: bool,
    /// The field of each `.jsonl` record that holds its text.
    pub text_field: String,
    /// Where tokenized corpora are cached; empty means `$XDG_CACHE_HOME/masklm` or
    /// `~/.cache/masklm`.
    pub cache_dir: PathBuf,
    /// Evaluation scores only the first this many validation rows (HF `max_eval_samples`); 0
    /// scores them all. The held-out rows stay out of training either way.
    pub max_eval_samples: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            train: Vec::new(),
            valid: Vec::new(),
            validation_split_percentage: 5.0,
            seq_len: 128,
            packing: Packing::Packed,
            mask_prob: 0.15,
            mask_token_prob: 0.8,
            random_token_prob: 0.1,
            whole_word_masking: false,
            text_field: crate::data::corpus::DEFAULT_TEXT_FIELD.to_string(),
            cache_dir: PathBuf::new(),
            max_eval_samples: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Linear,
    Cosine,
    /// Constant after the warmup: HF's `constant_with_warmup` (HF's `constant` ignores the
    /// warmup; here that is `warmup_steps = 0`).
    #[serde(alias = "constant_with_warmup")]
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    Flex,
    Ndarray,
    Wgpu,
    Vulkan,
    Cuda,
}

impl BackendName {
    /// Whether it computes on the CPU (flex, ndarray) rather than a GPU.
    pub fn is_cpu(self) -> bool {
        matches!(self, BackendName::Flex | BackendName::Ndarray)
    }
}

/// The backend as a config names it (`"flex"`, `"wgpu"`, …).
impl std::fmt::Display for BackendName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendName::Flex => "flex",
            BackendName::Ndarray => "ndarray",
            BackendName::Wgpu => "wgpu",
            BackendName::Vulkan => "vulkan",
            BackendName::Cuda => "cuda",
        })
    }
}

/// What the matrix products compute in (HF's `fp16` / `bf16` flags). Weights, optimizer state,
/// LayerNorm, softmax, the loss and the gradient norm stay f32 in every mode (`model::precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// f16 products with dynamic loss scaling (`train::scaler`), as PyTorch's autocast + GradScaler.
    F16,
    /// bf16 products; no loss scaling (bf16 has f32's range).
    Bf16,
}

/// The precision as a config names it (`"f32"`, `"f16"`, `"bf16"`).
impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub out_dir: PathBuf,
    pub steps: u64,
    pub batch_size: usize,
    pub grad_accum_steps: usize,
    pub learning_rate: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    pub weight_decay: f64,
    /// AdamW's β1, β2 and ε (HF's `adam_beta1`, `adam_beta2`, `adam_epsilon`); the defaults are
    /// BERT's (HF's ε is 1e-8; RoBERTa trained with β2 0.98).
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Global-norm clipping threshold; 0 disables clipping (as in HF).
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Evaluate every N optimizer steps; 0 evaluates only at the end.
    pub eval_every: u64,
    /// Checkpoint every N optimizer steps; 0 checkpoints only at the end.
    pub save_every: u64,
    /// Print and log (metrics.jsonl) every N optimizer steps, the mean loss since the last row
    /// (HF `logging_steps`); the last step is always logged.
    pub logging_steps: u64,
    pub keep_checkpoints: usize,
    pub backend: BackendName,
    /// The matrix products' precision: `"f32"`, `"f16"` (with dynamic loss scaling) or `"bf16"`.
    pub precision: Precision,
    /// Worker threads for the CPU backends and tokenization; 0 uses every core.
    pub threads: usize,
    /// Texts with `[MASK]` that the end of `train` fills in as a first look at the model; empty
    /// picks a few held-out sentences with a frequent word masked.
    pub fill_mask_examples: Vec<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            out_dir: PathBuf::from("checkpoints/run"),
            steps: 1000,
            batch_size: 32,
            grad_accum_steps: 1,
            learning_rate: 1e-4,
            warmup_steps: 100,
            schedule: Schedule::Linear,
            weight_decay: 0.01,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-6,
            max_grad_norm: 1.0,
            seed: 42,
            eval_every: 500,
            save_every: 500,
            logging_steps: 1,
            keep_checkpoints: 3,
            backend: BackendName::Flex,
            precision: Precision::F32,
            threads: 0,
            fill_mask_examples: Vec::new(),
        }
    }
}

/// The most worker threads `train.threads` may ask for.
pub const MAX_THREADS: usize = 1024;

/// Where a configuration comes from, for messages.
#[derive(Debug, Clone)]
pub enum Source {
    Embedded,
    File(PathBuf),
}

impl Config {
    /// Defaults < `file` (or the embedded default when `None`) < each `--set` in order.
    pub fn load(file: Option<&Path>, sets: &[String]) -> anyhow::Result<Config> {
        let cfg = Self::load_unvalidated(file, sets)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// [`Config::load`] without [`Config::validate`], for a caller that replaces a section first
    /// (`import` takes `[model]` from config.json) and validates the result.
    pub fn load_unvalidated(file: Option<&Path>, sets: &[String]) -> anyhow::Result<Config> {
        let (text, source) = match file {
            Some(p) => {
                // A config is a few KB: a huge file is refused before it is read into memory.
                let limit = crate::io::MAX_SETTINGS_BYTES;
                let text = crate::io::read_to_string_capped(p, limit).map_err(|e| {
                    let hint = if p.is_dir() {
                        "it is a folder; give a TOML file such as configs/default.toml".to_string()
                    } else if e.kind() == std::io::ErrorKind::FileTooLarge {
                        format!(
                            "{e}; a masklm config is a small TOML file (at most {}), such as \
                             configs/default.toml",
                            crate::io::size_words(limit)
                        )
                    } else if e.kind() == std::io::ErrorKind::InvalidData {
                        "it is not UTF-8 text; save it as UTF-8".to_string()
                    } else {
                        format!("{e}; check the path (shipped configs are in configs/)")
                    };
                    UsageError::new(format!("cannot read config file {}: {hint}", p.display()))
                })?;
                (text, Source::File(p.to_path_buf()))
            }
            None => (DEFAULT_TOML.to_string(), Source::Embedded),
        };
        Self::parse(&text, &source, sets)
    }

    pub fn from_toml_str(text: &str, source: &Source, sets: &[String]) -> anyhow::Result<Config> {
        let cfg = Self::parse(text, source, sets)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// `text` with `sets` applied, deserialized: every key known and of its type, no value
    /// checked.
    pub fn parse(text: &str, source: &Source, sets: &[String]) -> anyhow::Result<Config> {
        let name = match source {
            Source::Embedded => "the embedded configs/default.toml".to_string(),
            Source::File(p) => p.display().to_string(),
        };
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| UsageError::new(format!("{name} is not valid TOML: {e}")))?;
        for set in sets {
            apply_set(&mut table, set)?;
        }
        check_keys(&table, &name)?;
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                // toml's own last line names the key again (``\nin `train.steps` ``).
                let inner = e.inner().to_string();
                let inner = match inner.trim_end().rsplit_once('\n') {
                    Some((first, last)) if last.starts_with("in `") => first.to_string(),
                    _ => inner,
                };
                // HF 5 reads a warmup_steps below 1 as a share of the steps.
                let hint = if path == "train.warmup_steps" && inner.contains("float") {
                    "; it is a number of steps here (HF's warmup ratio × train.steps)"
                } else {
                    ""
                };
                UsageError::new(format!(
                    "config key `{path}` (from {name} or --set): {inner}{hint}"
                ))
            })?;
        Ok(cfg)
    }

    /// Every rule on values, checked once. Each message names the key, the value and what is
    /// allowed.
    pub fn validate(&self) -> Result<(), UsageError> {
        let mut errs: Vec<String> = Vec::new();
        let m = &self.model;
        for (key, v) in [
            ("hidden_size", m.hidden_size),
            ("num_hidden_layers", m.num_hidden_layers),
            ("num_attention_heads", m.num_attention_heads),
            ("intermediate_size", m.intermediate_size),
            ("type_vocab_size", m.type_vocab_size),
            ("max_position_embeddings", m.max_position_embeddings),
        ] {
            if v == 0 {
                errs.push(format!("model.{key} is 0; it must be at least 1"));
            }
            if v > MAX_MODEL_SIZE {
                errs.push(format!(
                    "model.{key} is {v}; it must be at most {MAX_MODEL_SIZE} (BERT-large: \
                     hidden_size 1024, 24 layers, 16 heads, intermediate_size 4096)"
                ));
            }
        }
        if m.num_attention_heads > 0 && !m.hidden_size.is_multiple_of(m.num_attention_heads) {
            errs.push(format!(
                "model.hidden_size {} is not divisible by model.num_attention_heads {}; pick sizes \
                 where hidden_size = num_attention_heads × head size (e.g. 256 and 4)",
                m.hidden_size, m.num_attention_heads
            ));
        }
        for (key, v) in [
            ("hidden_dropout_prob", m.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                m.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&v) {
                errs.push(format!("model.{key} is {v}; it must be in [0, 1)"));
            }
        }
        // Each float the model or optimizer computes with is an f32: a value that rounds to 0
        // or 1 there is refused too.
        if !(m.layer_norm_eps > 0.0 && m.layer_norm_eps < 1.0 && m.layer_norm_eps as f32 > 0.0) {
            errs.push(format!(
                "model.layer_norm_eps is {}; it must be in (0, 1) and not 0 as an f32, BERT uses \
                 1e-12",
                m.layer_norm_eps
            ));
        }
        let positive_f32 = |v: f64| v as f32 > 0.0 && (v as f32).is_finite();
        if !positive_f32(m.initializer_range) {
            errs.push(format!(
                "model.initializer_range is {}; it must be > 0 and finite as an f32, BERT uses 0.02",
                m.initializer_range
            ));
        }

        if m.vocab_size > MAX_VOCAB_SIZE {
            errs.push(format!(
                "model.vocab_size {} is above {MAX_VOCAB_SIZE}, the most masklm accepts; 0 takes the \
                 tokenizer's",
                m.vocab_size
            ));
        }

        let t = &self.tokenizer;
        if t.vocab_size <= crate::tokenizer::SPECIAL_TOKENS.len() {
            errs.push(format!(
                "tokenizer.vocab_size {} is too small: the {} special tokens {} need room, so it \
                 must be at least {} (BERT uses 30522)",
                t.vocab_size,
                crate::tokenizer::SPECIAL_TOKENS.len(),
                crate::tokenizer::SPECIAL_TOKENS.join(" "),
                crate::tokenizer::SPECIAL_TOKENS.len() + 1
            ));
        }
        if t.vocab_size > MAX_VOCAB_SIZE {
            errs.push(format!(
                "tokenizer.vocab_size {} is above {MAX_VOCAB_SIZE}, the most masklm accepts (BERT \
                 uses 30522)",
                t.vocab_size
            ));
        }
        if t.path.as_os_str().is_empty() {
            errs.push("tokenizer.path is empty; give a file such as \"tokenizer.json\"".into());
        }

        let d = &self.data;
        if d.train.is_empty() {
            errs.push(
                "data.train is empty; list corpus files or folders, e.g. --set 'data.train=[\"corpus.txt\"]'"
                    .into(),
            );
        }
        // Unused when data.valid names the held-out files (as in HF's run_mlm.py).
        let split = d.validation_split_percentage;
        if d.valid.is_empty() && !(split > 0.0 && split <= 50.0) {
            errs.push(format!(
                "data.validation_split_percentage is {split}; it must be in (0, 50], or set \
                 data.valid to held-out files"
            ));
        }
        if d.seq_len < 3 {
            errs.push(format!(
                "data.seq_len {} is below 3; a row needs [CLS], one token and [SEP]",
                d.seq_len
            ));
        } else if d.seq_len > m.max_position_embeddings {
            errs.push(format!(
                "data.seq_len {} exceeds model.max_position_embeddings {}; lower seq_len or raise \
                 max_position_embeddings",
                d.seq_len, m.max_position_embeddings
            ));
        }
        if d.text_field.is_empty() {
            errs.push(
                "data.text_field is empty; name the JSON field that holds each .jsonl record's \
                 text, e.g. \"text\""
                    .into(),
            );
        }
        // Masking draws against p × 2^64 (`masking::threshold`): below 2^-64 nothing is chosen.
        if !(d.mask_prob >= 2f64.powi(-64) && d.mask_prob < 1.0) {
            errs.push(format!(
                "data.mask_prob is {}; it must be in [2^-64, 1) (below, nothing is ever masked), \
                 BERT uses 0.15",
                d.mask_prob
            ));
        }
        for (key, v) in [
            ("mask_token_prob", d.mask_token_prob),
            ("random_token_prob", d.random_token_prob),
        ] {
            if !(0.0..=1.0).contains(&v) {
                errs.push(format!("data.{key} is {v}; it must be in [0, 1]"));
            }
        }
        if d.mask_token_prob + d.random_token_prob > 1.0 + 1e-12 {
            errs.push(format!(
                "data.mask_token_prob {} + data.random_token_prob {} = {} exceeds 1; the rest \
                 (1 - both) is the share left unchanged (BERT: 0.8 + 0.1, 0.1 unchanged)",
                d.mask_token_prob,
                d.random_token_prob,
                d.mask_token_prob + d.random_token_prob
            ));
        }

        let r = &self.train;
        if r.steps == 0 {
            errs.push("train.steps is 0; it must be at least 1".into());
        }
        if r.batch_size == 0 {
            errs.push("train.batch_size is 0; it must be at least 1".into());
        }
        if r.grad_accum_steps == 0 {
            errs.push(
                "train.grad_accum_steps is 0; it must be at least 1 (1 = no accumulation)".into(),
            );
        }
        if r.grad_accum_steps > MAX_GRAD_ACCUM_STEPS {
            errs.push(format!(
                "train.grad_accum_steps is {}; it must be at most {MAX_GRAD_ACCUM_STEPS} (raise \
                 train.batch_size for larger steps)",
                r.grad_accum_steps
            ));
        }
        if !(r.learning_rate > 0.0 && r.learning_rate < 1.0 && r.learning_rate as f32 > 0.0) {
            errs.push(format!(
                "train.learning_rate is {}; it must be in (0, 1) and not 0 as an f32",
                r.learning_rate
            ));
        }
        if !(r.weight_decay >= 0.0 && (r.weight_decay as f32).is_finite()) {
            errs.push(format!(
                "train.weight_decay is {}; it must be >= 0 and finite as an f32",
                r.weight_decay
            ));
        }
        for (key, v) in [("adam_beta1", r.adam_beta1), ("adam_beta2", r.adam_beta2)] {
            if !(0.0..1.0).contains(&v) || v as f32 == 1.0 {
                errs.push(format!(
                    "train.{key} is {v}; it must be in [0, 1), and below 1 as an f32 (at most \
                     0.99999994) (BERT: 0.9 and 0.999)"
                ));
            }
        }
        if !(r.adam_epsilon > 0.0 && r.adam_epsilon < 1.0 && r.adam_epsilon as f32 > 0.0) {
            errs.push(format!(
                "train.adam_epsilon is {}; it must be in (0, 1) and not 0 as an f32 (BERT: 1e-6, \
                 HF: 1e-8)",
                r.adam_epsilon
            ));
        }
        if !(r.max_grad_norm == 0.0 || positive_f32(r.max_grad_norm)) {
            errs.push(format!(
                "train.max_grad_norm is {}; it must be 0 (no clipping) or > 0 and finite as an f32",
                r.max_grad_norm
            ));
        }
        if r.logging_steps == 0 {
            errs.push("train.logging_steps is 0; it must be at least 1 (1 logs every step)".into());
        }
        for (i, text) in r.fill_mask_examples.iter().enumerate() {
            if !text.contains("[MASK]") {
                errs.push(format!(
                    "train.fill_mask_examples[{i}] {text:?} has no [MASK]; write the word to \
                     predict as [MASK], e.g. \"the cat sat on the [MASK].\""
                ));
            }
        }
        if r.keep_checkpoints == 0 {
            errs.push(
                "train.keep_checkpoints is 0; it must be at least 1 (to keep every checkpoint, \
                 as HF's save_total_limit None does, give train.steps / train.save_every or more)"
                    .into(),
            );
        }
        // Each thread is an OS thread: a mistyped count would stall the machine creating them.
        if r.threads > MAX_THREADS {
            errs.push(format!(
                "train.threads is {}; it must be at most {MAX_THREADS} (0 uses one per core)",
                r.threads
            ));
        }
        if r.out_dir.as_os_str().is_empty() {
            errs.push("train.out_dir is empty; give a folder such as \"checkpoints/run\"".into());
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(UsageError::new(format!(
                "invalid config:\n  - {}",
                errs.join("\n  - ")
            )))
        }
    }

    /// The exact TOML that reproduces this configuration (saved into every run folder).
    pub fn to_toml(&self) -> String {
        // Serializing a plain struct tree of strings, numbers and lists cannot fail.
        toml::to_string_pretty(self).expect("config serializes to TOML")
    }
}

/// Keys a resumed run may change (`--resume` with an edited config): they decide when things
/// happen, how many steps there are and where files go, not what a step computes. `train.steps`
/// also sets where the learning-rate schedule ends, so a longer run decays more slowly from here
/// on. `[tokenizer]` is compared by the tokenizer's content instead (a moved file is the same
/// tokenizer).
pub const RESUME_MAY_CHANGE: [&str; 11] = [
    "train.steps",
    "train.eval_every",
    "data.max_eval_samples",
    "train.save_every",
    "train.logging_steps",
    "train.keep_checkpoints",
    "train.threads",
    "train.out_dir",
    "train.fill_mask_examples",
    "data.cache_dir",
    "tokenizer.*",
];

/// `(section.key, value in a, value in b)` of every key whose values differ, values as TOML.
pub fn differences(a: &Config, b: &Config) -> Vec<(String, String, String)> {
    let flat = |c: &Config| -> Vec<(String, toml::Value)> {
        // A plain struct tree of strings, numbers and lists always serializes.
        let table = toml::Table::try_from(c).expect("config serializes to TOML");
        let mut out = Vec::new();
        for (section, v) in table {
            if let toml::Value::Table(t) = v {
                out.extend(t.into_iter().map(|(k, v)| (format!("{section}.{k}"), v)));
            }
        }
        out
    };
    // Both sides have every key: they are the same struct.
    flat(a)
        .into_iter()
        .zip(flat(b))
        .filter(|((_, x), (_, y))| x != y)
        .map(|((k, x), (_, y))| (k, x.to_string(), y.to_string()))
        .collect()
}

/// The corpus keys, which may change on resume when the checkpoint records its rows'
/// fingerprint: the rows are then compared by content (a moved corpus, or one spelled another
/// way, resumes; other text does not).
pub const CORPUS_KEYS: [&str; 2] = ["data.train", "data.valid"];

/// Every key outside [`RESUME_MAY_CHANGE`] (and [`CORPUS_KEYS`] when `rows_recorded`) whose value
/// in `run` differs from `saved` (the checkpoint's config), as `key: VALUE in the checkpoint,
/// VALUE now`. Empty: the resumed run computes exactly what the interrupted one would have.
pub fn resume_differences(saved: &Config, run: &Config, rows_recorded: bool) -> Vec<String> {
    // Validation held out of data.train (no data.valid) or not changes the training rows: a
    // difference no fingerprint can match, refused here before any corpus is read.
    let same_holdout = saved.data.valid.is_empty() == run.data.valid.is_empty();
    let may_change = |key: &str| {
        (rows_recorded && same_holdout && CORPUS_KEYS.contains(&key))
            || RESUME_MAY_CHANGE.iter().any(|k| match k.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => key == *k,
            })
    };
    differences(saved, run)
        .into_iter()
        .filter(|(k, _, _)| !may_change(k))
        .map(|(k, theirs, ours)| format!("{k}: {theirs} in the checkpoint, {ours} now"))
        .collect()
}

/// The `section.key` a `--set section.key=value` changes: its text before the first `=`,
/// trimmed, as [`apply_set`] reads it.
pub fn set_key(set: &str) -> Option<&str> {
    set.split_once('=').map(|(key, _)| key.trim())
}

/// Applies one `section.key=value`. The value is read as TOML when it parses as a TOML value,
/// else taken as a plain string, so `--set train.backend=flex` works without quotes.
fn apply_set(table: &mut toml::Table, set: &str) -> Result<(), UsageError> {
    let Some((key, raw)) = set.split_once('=') else {
        return Err(UsageError::new(format!(
            "--set {set:?} has no '='; write --set section.key=value, e.g. --set data.mask_prob=0.3"
        )));
    };
    let key = key.trim();
    let Some((section, field)) = key.split_once('.') else {
        return Err(UsageError::new(format!(
            "--set key {key:?} has no section; write section.key, e.g. model.hidden_size"
        )));
    };
    let known = known_keys(section).ok_or_else(|| {
        UsageError::new(format!(
            "--set {key}: unknown section `{section}`; sections are model, tokenizer, data, train"
        ))
    })?;
    if !known.iter().any(|k| k == field) {
        return Err(UsageError::new(format!(
            "--set {key}: unknown key `{field}` in [{section}]{}; known keys: {}",
            unknown_key_hint(section, field),
            known.join(", ")
        )));
    }
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("the key parsed above"),
        // A list, a quoted string or a number that TOML refuses is a mistake in it (an
        // unclosed bracket, an integer past 2^63), not a plain string.
        Err(e) if meant_as_toml(raw) => {
            let fix = if raw.trim().starts_with(['[', '{', '"', '\'']) {
                "write it as in a config file, e.g. --set 'data.train=[\"a.txt\", \"b.txt\"]'"
            } else {
                "a whole number must lie within ±9223372036854775807"
            };
            return Err(UsageError::new(format!(
                "--set {key}={raw}: not a valid TOML value ({}); {fix}",
                e.message().trim()
            )));
        }
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => {
            t.insert(field.to_string(), value);
            Ok(())
        }
        _ => Err(UsageError::new(format!(
            "config `{section}` must be a [section] table"
        ))),
    }
}

/// Whether a `--set` value TOML refused was meant as TOML rather than as a plain string: it
/// opens a list, a table or a quoted string, or it is an integer or decimal number.
fn meant_as_toml(raw: &str) -> bool {
    let raw = raw.trim();
    let digits = raw.strip_prefix(['+', '-']).unwrap_or(raw);
    let number = !digits.is_empty()
        && digits.split('.').count() <= 2
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || c == '_' || c == '.')
        && digits.chars().any(|c| c.is_ascii_digit());
    number || raw.starts_with(['[', '{', '"', '\''])
}

/// Refuses a key of a config file that no section has, before serde would, to say where the
/// setting lives when it is another section's key or an HF name (`run_mlm.py`,
/// `TrainingArguments`). Unknown sections are left to serde, whose message lists them.
fn check_keys(table: &toml::Table, name: &str) -> Result<(), UsageError> {
    for (section, value) in table {
        let (Some(known), toml::Value::Table(keys)) = (known_keys(section), value) else {
            continue;
        };
        if let Some(field) = keys.keys().find(|k| !known.contains(k)) {
            return Err(UsageError::new(format!(
                "config key `{section}.{field}` (from {name}): unknown key `{field}` in \
                 [{section}]{}; known keys: {}",
                unknown_key_hint(section, field),
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Where a setting named `field`, unknown in `[section]`, lives in masklm: another section's key
/// of that name, or the key for an HF name (`run_mlm.py`'s and `TrainingArguments`'), with what
/// differs. Empty when there is none.
fn unknown_key_hint(section: &str, field: &str) -> String {
    if let Some(other) = ["model", "tokenizer", "data", "train"]
        .into_iter()
        .find(|&s| s != section && known_keys(s).is_some_and(|k| k.iter().any(|k| k == field)))
    {
        return format!(" (it is a key of [{other}]: {other}.{field})");
    }
    let (key, how) = match field {
        "per_device_train_batch_size" | "train_batch_size" | "per_gpu_train_batch_size" => {
            ("train.batch_size", "")
        }
        "gradient_accumulation_steps" => ("train.grad_accum_steps", ""),
        "max_steps" => ("train.steps", ""),
        "num_train_epochs" => (
            "train.steps",
            ", optimizer steps: masklm counts steps, not epochs (an epoch is the training \
             rows ÷ (batch_size × grad_accum_steps) steps; a run prints its rows at start)",
        ),
        "lr" => ("train.learning_rate", ""),
        "lr_scheduler_type" => ("train.schedule", ""),
        "warmup_ratio" => (
            "train.warmup_steps",
            ", a number of steps: the ratio × train.steps",
        ),
        "save_total_limit" => ("train.keep_checkpoints", ""),
        "save_steps" => ("train.save_every", ""),
        "eval_steps" => ("train.eval_every", ""),
        "output_dir" => ("train.out_dir", ""),
        "data_seed" => (
            "train.seed",
            ", which seeds the data order and the masks too",
        ),
        "fp16" | "bf16" | "half_precision_backend" => (
            "train.precision",
            ": \"f16\" (with dynamic loss scaling, as HF's fp16) or \"bf16\"",
        ),
        "use_cpu" | "no_cuda" => ("train.backend", ": \"flex\" is the CPU"),
        "mlm_probability" => ("data.mask_prob", ""),
        "max_seq_length" | "block_size" => {
            ("data.seq_len", ", the row length with [CLS] and [SEP]")
        }
        "line_by_line" => (
            "data.packing",
            ": \"line\" for HF's line_by_line, \"packed\" (the default) for group_texts",
        ),
        "train_file" => ("data.train", ", a list of files and folders"),
        "validation_file" => ("data.valid", ", a list of files and folders"),
        "tokenizer_name" => ("tokenizer.path", ", a tokenizer.json file"),
        "do_lower_case" => ("tokenizer.lowercase", ""),
        _ => return String::new(),
    };
    format!(" (HF's `{field}`; masklm's is {key}{how})")
}

/// Key names of each section, read from the serialized defaults so the list cannot drift from
/// the structs.
fn known_keys(section: &str) -> Option<Vec<String>> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize to TOML");
    match defaults.get(section) {
        Some(toml::Value::Table(t)) => Some(t.keys().cloned().collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "[data]\ntrain = [\"c.txt\"]\n[model]\nhidden_size = 64\nnum_attention_heads = 4\n";

    fn load(text: &str, sets: &[&str]) -> anyhow::Result<Config> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::from_toml_str(text, &Source::File("t.toml".into()), &sets)
    }

    fn err(text: &str, sets: &[&str]) -> String {
        let e = load(text, sets).expect_err("config should be refused");
        assert!(
            e.downcast_ref::<UsageError>().is_some(),
            "a usage error: {e:#}"
        );
        format!("{e:#}")
    }

    #[test]
    fn defaults_then_file_then_set() {
        let c = load(BASE, &["model.hidden_size=96", "train.backend=ndarray"]).unwrap();
        assert_eq!(c.model.hidden_size, 96, "--set beats the file");
        assert_eq!(c.model.num_attention_heads, 4, "the file beats defaults");
        assert_eq!(c.model.intermediate_size, 3072, "defaults fill the rest");
        assert_eq!(
            c.train.backend,
            BackendName::Ndarray,
            "plain strings need no quotes"
        );
        let c = load(
            BASE,
            &["data.train=[\"a.txt\", \"b.txt\"]", "data.mask_prob=0.3"],
        )
        .unwrap();
        assert_eq!(
            c.data.train,
            vec![PathBuf::from("a.txt"), PathBuf::from("b.txt")]
        );
        assert_eq!(c.data.mask_prob, 0.3);
    }

    #[test]
    fn model_vocab_size_pads_the_tokenizers_ids_and_never_cuts_them() {
        let rows = |v: &str| load(BASE, &[v]).map(|c| c.model.vocab_rows(99, "t.json"));
        assert_eq!(rows("model.vocab_size=0").unwrap().unwrap(), 99);
        assert_eq!(rows("model.vocab_size=99").unwrap().unwrap(), 99);
        assert_eq!(rows("model.vocab_size=104").unwrap().unwrap(), 104);
        let e = rows("model.vocab_size=98")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.vocab_size 98 is smaller than the 99 ids of the tokenizer t.json"),
            "{e}"
        );
        let e = err(BASE, &["model.vocab_size=16777217"]);
        assert!(
            e.contains("model.vocab_size 16777217 is above 16777216"),
            "{e}"
        );
        // An older config.toml, without the key, keeps the tokenizer's size.
        assert_eq!(load(BASE, &[]).unwrap().model.vocab_size, 0);
    }

    #[test]
    fn saved_toml_reloads_to_the_same_config() {
        let c = load(BASE, &["data.packing=line"]).unwrap();
        assert_eq!(load(&c.to_toml(), &[]).unwrap(), c);
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(err(&format!("{BASE}[train]\nstepz = 3\n"), &[]).contains("stepz"));
        assert!(err("[modle]\nx = 1\n", &[]).contains("modle"));
        let e = err(BASE, &["train.stepz=3"]);
        assert!(
            e.contains("stepz") && e.contains("steps"),
            "lists the known keys: {e}"
        );
        assert!(err(BASE, &["nosection=3"]).contains("nosection"));
        // An HF name, or another section's key, says where the setting lives.
        let e = err(BASE, &["train.num_train_epochs=3"]);
        assert!(
            e.contains("HF's `num_train_epochs`; masklm's is train.steps"),
            "{e}"
        );
        let e = err("[data]\ntrain = [\"c.txt\"]\nmlm_probability = 0.3\n", &[]);
        assert!(
            e.contains("config key `data.mlm_probability` (from t.toml)")
                && e.contains("masklm's is data.mask_prob"),
            "{e}"
        );
        let schedule = |v: &str| load(BASE, &[v]).unwrap().train.schedule;
        assert_eq!(
            schedule("train.schedule=constant_with_warmup"),
            Schedule::Constant
        );
        let e = err(BASE, &["train.warmup_steps=0.1"]);
        assert!(e.contains("HF's warmup ratio × train.steps"), "{e}");
        let e = err(BASE, &["train.mask_prob=0.3"]);
        assert!(e.contains("it is a key of [data]: data.mask_prob"), "{e}");
        let e = err(&format!("{BASE}[train]\nseq_len = 64\n"), &[]);
        assert!(e.contains("data.seq_len"), "{e}");
        assert!(err(BASE, &["train.steps"]).contains("no '='"));
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = err(BASE, &["model.hidden_size=abc"]);
        assert!(e.contains("model.hidden_size") && e.contains("abc"), "{e}");
        let e = err(BASE, &["data.packing=zip"]);
        assert!(e.contains("data.packing") && e.contains("line"), "{e}");
        assert!(err(&format!("{BASE}[train]\nsteps = -1\n"), &[]).contains("train.steps"));
    }

    #[test]
    fn out_of_range_values_say_what_is_allowed() {
        for (set, needle) in [
            ("data.mask_prob=0", "data.mask_prob"),
            ("data.mask_prob=1e-30", "[2^-64, 1)"),
            ("train.learning_rate=1e-46", "not 0 as an f32"),
            ("model.initializer_range=1e39", "finite as an f32"),
            ("model.initializer_range=1e-46", "finite as an f32"),
            ("train.max_grad_norm=1e-46", "0 (no clipping) or > 0"),
            ("train.threads=100000", "at most 1024"),
            ("train.adam_beta2=1.0", "train.adam_beta2 is 1"),
            ("train.adam_epsilon=0", "train.adam_epsilon"),
            ("data.mask_prob=1.0", "[2^-64, 1)"),
            ("data.mask_token_prob=0.95", "exceeds 1"),
            (
                "model.hidden_size=250",
                "not divisible by model.num_attention_heads 4",
            ),
            ("data.seq_len=2", "below 3"),
            (
                "data.seq_len=1024",
                "exceeds model.max_position_embeddings 512",
            ),
            ("tokenizer.vocab_size=5", "too small"),
            ("train.batch_size=0", "train.batch_size"),
            ("model.hidden_dropout_prob=1.5", "[0, 1)"),
            ("data.validation_split_percentage=0", "or set data.valid"),
            ("train.adam_beta2=0.99999999", "below 1 as an f32"),
            ("train.adam_epsilon=1e-46", "train.adam_epsilon"),
            ("train.weight_decay=1e39", "train.weight_decay"),
            ("model.layer_norm_eps=1e-46", "model.layer_norm_eps"),
            ("model.hidden_size=4611686018427387904", "at most 1048576"),
            ("model.max_position_embeddings=2000000", "at most 1048576"),
            ("tokenizer.vocab_size=3052230522", "above 16777216"),
            ("train.grad_accum_steps=100000", "at most 65536"),
        ] {
            let e = err(BASE, &[set]);
            assert!(e.contains(needle), "--set {set}: {e}");
        }
        // With held-out files the split is unused, so any value passes.
        let valid = "data.valid=[\"v.txt\"]";
        load(BASE, &[valid, "data.validation_split_percentage=0"]).unwrap();
        assert!(err("", &[]).contains("data.train is empty"));
    }

    #[test]
    fn resume_refuses_what_changes_the_computation_and_allows_cadence() {
        let saved = load(BASE, &[]).unwrap();
        let same_math = load(
            BASE,
            &[
                "train.steps=5000",
                "train.eval_every=7",
                "train.save_every=9",
                "train.logging_steps=10",
                "train.keep_checkpoints=1",
                "train.threads=1",
                "train.out_dir=elsewhere",
                "data.cache_dir=/tmp/c",
                "tokenizer.path=moved.json",
            ],
        )
        .unwrap();
        assert_eq!(
            resume_differences(&saved, &same_math, false),
            Vec::<String>::new()
        );
        // Other corpus files: compared by their rows' fingerprint where the checkpoint has one.
        let moved = load(BASE, &["data.train=[\"moved/c.txt\"]"]).unwrap();
        assert_eq!(
            resume_differences(&saved, &moved, true),
            Vec::<String>::new()
        );
        let d = resume_differences(&saved, &moved, false);
        assert!(d.len() == 1 && d[0].starts_with("data.train"), "{d:?}");
        // A validation set where there was none changes the training rows: refused at once.
        let held = load(BASE, &["data.valid=[\"v.txt\"]"]).unwrap();
        let d = resume_differences(&saved, &held, true);
        assert!(d.len() == 1 && d[0].starts_with("data.valid"), "{d:?}");
        let changed = load(
            BASE,
            &[
                "train.batch_size=64",
                "train.grad_accum_steps=2",
                "data.seq_len=64",
                "data.packing=line",
                "train.seed=1",
                "data.mask_prob=0.3",
                "model.num_hidden_layers=2",
                "train.backend=ndarray",
            ],
        )
        .unwrap();
        let d = resume_differences(&saved, &changed, true);
        for key in [
            "train.batch_size: 32 in the checkpoint, 64 now",
            "train.grad_accum_steps",
            "data.seq_len",
            "data.packing",
            "train.seed",
            "data.mask_prob",
            "model.num_hidden_layers: 12 in the checkpoint, 2 now",
            "train.backend",
        ] {
            assert!(d.iter().any(|l| l.starts_with(key)), "{key} not in {d:?}");
        }
        assert_eq!(d.len(), 8, "{d:?}");
    }

    #[test]
    fn shipped_configs_are_valid() {
        for name in ["default", "tiny", "bert-base"] {
            let p = PathBuf::from(format!("configs/{name}.toml"));
            Config::load(Some(&p), &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        assert_eq!(
            Config::load(None, &[]).unwrap(),
            Config::load(Some(Path::new("configs/default.toml")), &[]).unwrap()
        );
    }
}
