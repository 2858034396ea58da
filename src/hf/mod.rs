//! Hugging Face interoperability: a masklm checkpoint ↔ a `transformers` BERT masked-LM folder.
//!
//! The HF folder is what `BertForMaskedLM.save_pretrained` and a BERT tokenizer's
//! `save_pretrained` write: `config.json` ([`config`]), `model.safetensors` ([`weights`]) and the
//! tokenizer files ([`tokenizer`]). The model's module tree already mirrors HF's, so the whole
//! name mapping is the two-row table [`RENAMED`] plus burn-store's PyTorch adapters (Linear
//! weights `[in, out]` ↔ `[out, in]`, LayerNorm `gamma`/`beta` ↔ `weight`/`bias`).

pub mod config;
pub mod tokenizer;
pub mod weights;

use crate::config::Config;
use crate::error::UsageError;
use crate::model::BertConfig;
use crate::train::checkpoint::{self, TrainState};
use anyhow::{Context, Result};
use burn::prelude::*;
use std::path::{Path, PathBuf};

/// The one name table: Rust field name ↔ HF module name, for the only two fields whose names
/// differ (`LayerNorm` is not snake case, `self` is a Rust keyword). Every other path segment is
/// HF's own (`bert.encoder.layer.0.attention.output.dense.weight` is the Rust path too).
pub const RENAMED: [(&str, &str); 2] = [("layer_norm", "LayerNorm"), ("self_attn", "self")];

/// The HF key of a burn parameter path (LayerNorm `gamma`/`beta` already renamed by the adapter).
pub fn hf_key(burn_path: &str) -> String {
    map_segments(burn_path, |s| {
        RENAMED.iter().find(|(b, _)| *b == s).map(|(_, h)| *h)
    })
}

/// The burn parameter path of an HF key (the inverse of [`hf_key`]).
pub fn burn_path(hf_key: &str) -> String {
    map_segments(hf_key, |s| {
        RENAMED.iter().find(|(_, h)| *h == s).map(|(b, _)| *b)
    })
}

fn map_segments<'a>(key: &'a str, rename: impl Fn(&'a str) -> Option<&'a str>) -> String {
    key.split('.')
        .map(|s| rename(s).unwrap_or(s))
        .collect::<Vec<_>>()
        .join(".")
}

/// The files an export writes, in the order it writes them.
pub const EXPORT_FILES: [&str; 6] = [
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// The files an import writes.
const IMPORT_FILES: [&str; 5] = [
    checkpoint::MODEL_FILE,
    checkpoint::TOKENIZER_FILE,
    checkpoint::CONFIG_FILE,
    checkpoint::STATE_FILE,
    checkpoint::CHECKSUMS_FILE,
];

/// Files of an HF folder that export does not write and transformers would read with its files:
/// the added tokens of another tokenizer, a sharded checkpoint's index.
const STALE_HF_FILES: [&str; 3] = [
    "added_tokens.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
];

/// Refuses to write into `out` when it is a file, or a non-empty folder without `force`, or
/// when it is a new folder named by `.` or `..` (`gone/..`: it has no name to be made by), or
/// when one of the files `writes` would replace is a folder there (found before the first file
/// is moved in, not after).
fn check_out_dir(out: &Path, force: bool, writes: &[&str]) -> Result<()> {
    if !out.is_dir()
        && !matches!(
            out.components().next_back(),
            Some(std::path::Component::Normal(_))
        )
    {
        crate::usage!(
            "--out {} does not exist and ends in `.` or `..`, so it names no folder to make; \
             give the new folder by its name",
            out.display()
        );
    }
    crate::io::check_output_dir(out, "--out")?;
    if let Some(dir) = writes.iter().map(|n| out.join(n)).find(|p| p.is_dir()) {
        crate::usage!(
            "--out {}: {} is a folder, where a file of the same name is written; move it away or \
             choose another --out",
            out.display(),
            dir.display()
        );
    }
    // What a killed export or import left (`io::write_folder`'s hidden folder) is not the
    // user's: the write removes it.
    let non_empty = out.is_dir()
        && std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !crate::io::is_dead_temporary(&name, crate::io::FOLDER_TMP_PREFIX, "")
            });
    if non_empty && !force {
        crate::usage!(
            "--out {} exists and is not empty; pass --force to overwrite the files masklm writes \
             there, or choose another folder",
            out.display()
        );
    }
    Ok(())
}

/// `masklm export`: writes checkpoint `ck` as an HF folder `out`; returns the files written.
pub fn export(ck: &checkpoint::Loaded, out: &Path, force: bool) -> Result<Vec<PathBuf>> {
    // A checkpoint's tokenizer.json would be replaced by the HF one (its checksums then fail);
    // a run folder's may be the run's tokenizer.path.
    let is_checkpoint = [checkpoint::MODEL_FILE, checkpoint::STATE_FILE]
        .iter()
        .any(|f| out.join(f).exists());
    if is_checkpoint || (out.is_dir() && checkpoint::latest(out)?.is_some()) {
        crate::usage!(
            "--out {} is a masklm checkpoint or run folder; export writes a Hugging Face folder, \
             which must not share it (even with --force): choose another --out, e.g. {}-hf",
            out.display(),
            out.display()
        );
    }
    check_out_dir(out, force, &EXPORT_FILES)?;
    let bert = ck.bert_config();
    let config_json = serde_json::to_string_pretty(&config::to_json(&bert))?;
    let mut files = vec![("config.json", config_json)];
    files.extend(tokenizer::hf_files(
        &ck.tokenizer,
        ck.config.model.max_position_embeddings,
    )?);
    crate::io::write_folder(out, force, |tmp| {
        weights::save(&ck.model, &tmp.join(EXPORT_FILES[0]))?;
        let mut names = vec![EXPORT_FILES[0].to_string()];
        for (name, text) in &files {
            std::fs::write(tmp.join(name), format!("{text}\n"))
                .with_context(|| format!("writing {}", tmp.join(name).display()))?;
            names.push(name.to_string());
        }
        Ok(names)
    })?;
    // Files of an earlier model that transformers reads with this one (`--force` keeps them).
    for stale in STALE_HF_FILES
        .iter()
        .map(|n| out.join(n))
        .filter(|p| p.exists())
    {
        crate::errln!(
            "note: {} is not masklm's (it was in --out before); transformers reads it with the \
             export, so remove it",
            stale.display()
        );
    }
    Ok(EXPORT_FILES.iter().map(|n| out.join(n)).collect())
}

/// What `masklm import` did.
pub struct Imported {
    pub dir: PathBuf,
    /// The weights file read (model.safetensors, pytorch_model.bin, or a sharded checkpoint's
    /// index).
    pub weights_file: PathBuf,
    /// Where the tokenizer came from (tokenizer.json or vocab.txt).
    pub tokenizer_source: PathBuf,
    pub tensors: usize,
    /// Checkpoint tensors that are not part of a masked LM (pooler, next-sentence head).
    pub ignored: Vec<String>,
    /// The masked-LM head's keys, initialised from `train.seed`: the checkpoint had no head.
    pub initialised: Vec<String>,
    /// `data.seq_len` lowered to the model's `max_position_embeddings`, when it was.
    pub seq_len_lowered: Option<(usize, usize)>,
    /// `(embedding rows, tokenizer ids)` of a padded vocabulary, kept as `model.vocab_size`.
    pub padded_vocab: Option<(usize, usize)>,
}

/// `masklm import`: reads the HF folder `hf_dir` and writes the checkpoint folder `out`
/// (model.bpk, config.toml, tokenizer.json, state.json at step 0; no optimizer state).
/// `base` supplies every setting but `[model]`, which comes from config.json.
/// Everything is read and checked before the first file is written.
pub fn import(hf_dir: &Path, base: &Config, out: &Path, force: bool) -> Result<Imported> {
    if out.is_dir() && checkpoint::latest(out)?.is_some() {
        crate::usage!(
            "--out {} is a training run's folder (it holds checkpoint-N folders); import writes \
             one checkpoint folder, which must not share it (even with --force): choose another \
             --out",
            out.display()
        );
    }
    // An imported checkpoint (step 0, no optimizer state) may be imported over; a trained one
    // would lose its training and leave its optimizer state beside another model's weights.
    let trained = out.join(checkpoint::OPTIMIZER_FILE).exists()
        || checkpoint::read_state(out).is_ok_and(|s| s.step > 0);
    if trained {
        crate::usage!(
            "--out {} holds a trained checkpoint; import writes a new one, which must not replace \
             it (even with --force): choose another --out",
            out.display()
        );
    }
    check_out_dir(out, force, &IMPORT_FILES)?;
    if !hf_dir.is_dir() {
        crate::usage!(
            "--hf {} is not a folder; give a folder written by transformers' save_pretrained",
            hf_dir.display()
        );
    }
    let hf = config::read(&hf_dir.join("config.json"))?;
    let tokenizer::HfTokenizer {
        json: tok_json,
        source: tokenizer_source,
        clean_up_tokenization_spaces,
    } = tokenizer::read_hf(hf_dir)?;
    let tok = crate::tokenizer::BertTokenizer::from_json(
        &tok_json,
        &tokenizer_source.display().to_string(),
    )?;
    // A vocabulary of the special tokens alone (an empty WordPiece vocab beside its added
    // tokens), checked here: validate() would blame a too small tokenizer.vocab_size "in
    // config.json".
    if tok.non_special_tokens() == 0 {
        crate::usage!(
            "{} holds no token beside the special ones: every word would be [UNK]; give the \
             tokenizer the model was trained with",
            tokenizer_source.display()
        );
    }
    if hf.vocab_size < tok.vocab_size() {
        crate::usage!(
            "{} has vocab_size {} but the tokenizer ({}) has {} ids: the ids past the embedding \
             would index nothing; give the tokenizer the model was trained with",
            hf_dir.join("config.json").display(),
            hf.vocab_size,
            tokenizer_source.display(),
            tok.vocab_size()
        );
    }
    let mut cfg = base.clone();
    cfg.model = hf.model_config();
    // A padded vocabulary (NVIDIA's BERT: 30528 rows for 30522 ids) keeps its rows.
    if hf.vocab_size > tok.vocab_size() {
        cfg.model.vocab_size = hf.vocab_size;
    }
    cfg.tokenizer.path = out.join(checkpoint::TOKENIZER_FILE);
    cfg.tokenizer.vocab_size = tok.vocab_size();
    cfg.tokenizer.lowercase = tokenizer::lowercases(&tok_json);
    cfg.tokenizer.clean_up_tokenization_spaces = clean_up_tokenization_spaces;
    let max_len = cfg.model.max_position_embeddings;
    let seq_len_lowered = (cfg.data.seq_len > max_len).then(|| {
        let before = cfg.data.seq_len;
        cfg.data.seq_len = max_len;
        (before, max_len)
    });
    // Sizes are checked here, before the model is built from them.
    cfg.validate().map_err(|e| {
        UsageError::new(format!(
            "{} gives a config masklm cannot use: {e}",
            hf_dir.join("config.json").display()
        ))
    })?;
    let bert = BertConfig::new(&cfg.model, tok.vocab_size(), tok.specials().pad);
    let loaded = weights::load(&bert, cfg.train.seed, hf_dir, &hf)?;

    crate::io::write_folder(out, force, |tmp| {
        write_checkpoint(tmp, &loaded.model, &cfg, &tok)
    })?;
    Ok(Imported {
        dir: out.to_path_buf(),
        weights_file: loaded.file,
        tokenizer_source,
        tensors: loaded.tensors,
        ignored: loaded.ignored,
        initialised: loaded.initialised,
        seq_len_lowered,
        padded_vocab: (cfg.model.vocab_size > 0).then(|| (cfg.model.vocab_size, tok.vocab_size())),
    })
}

/// Writes into the new folder `out` the checkpoint files `checkpoint::load` reads, plus
/// state.json at step 0 and, last, checksums.json; returns their names in that order.
fn write_checkpoint(
    out: &Path,
    model: &crate::model::BertForMaskedLM,
    cfg: &Config,
    tok: &crate::tokenizer::BertTokenizer,
) -> Result<Vec<String>> {
    let model_path = out.join(checkpoint::MODEL_FILE);
    model
        .clone()
        .save_file(&model_path)
        .map_err(|e| anyhow::anyhow!("saving {}: {e:?}", model_path.display()))?;
    let state = TrainState {
        step: 0,
        position: 0,
        elapsed_s: 0.0,
        version: env!("CARGO_PKG_VERSION").into(),
        scaler: Default::default(),
        data: None,
        unlogged: Default::default(),
    };
    let files = [
        (checkpoint::TOKENIZER_FILE, tok.to_json()?),
        (checkpoint::CONFIG_FILE, cfg.to_toml()),
        (
            checkpoint::STATE_FILE,
            serde_json::to_string_pretty(&state)?,
        ),
    ];
    let mut names = vec![checkpoint::MODEL_FILE.to_string()];
    for (name, text) in files {
        std::fs::write(out.join(name), text.as_bytes())
            .with_context(|| format!("writing {}", out.join(name).display()))?;
        names.push(name.to_string());
    }
    checkpoint::write_checksums(out)?;
    names.push(checkpoint::CHECKSUMS_FILE.to_string());
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_table_maps_both_ways() {
        let pairs = [
            (
                "bert.encoder.layer.3.attention.self_attn.query.weight",
                "bert.encoder.layer.3.attention.self.query.weight",
            ),
            (
                "bert.embeddings.layer_norm.weight",
                "bert.embeddings.LayerNorm.weight",
            ),
            (
                "cls.predictions.transform.layer_norm.bias",
                "cls.predictions.transform.LayerNorm.bias",
            ),
            ("cls.predictions.bias", "cls.predictions.bias"),
        ];
        for (burn, hf) in pairs {
            assert_eq!(hf_key(burn), hf);
            assert_eq!(burn_path(hf), burn);
        }
    }

    #[test]
    fn every_model_parameter_has_a_distinct_hf_key_without_rust_names() {
        let c = crate::model::BertConfig {
            vocab_size: 11,
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 5,
            max_position_embeddings: 6,
            type_vocab_size: 2,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
            pad_token_id: 0,
        };
        let keys = weights::expected(&c.init_for_load(&Device::flex()));
        // HF BertForMaskedLM without pooler and tied decoder: 5 embedding + 16 per layer + 5 head.
        assert_eq!(keys.len(), 5 + 16 * 2 + 5);
        let names: std::collections::BTreeSet<_> = keys.keys().collect();
        assert_eq!(names.len(), keys.len());
        for k in keys.keys() {
            assert!(!k.contains("layer_norm") && !k.contains("self_attn") && !k.contains("gamma"));
        }
        assert_eq!(
            keys["bert.encoder.layer.1.intermediate.dense.weight"],
            vec![5, 8],
            "Linear weights are [out, in]"
        );
        assert_eq!(
            keys["bert.encoder.layer.1.output.LayerNorm.weight"],
            vec![8]
        );
    }
}
