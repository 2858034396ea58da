//! `masklm train`: pretrain from a config, resume a run, or continue pretraining a checkpoint
//! (`--init-from`, e.g. one that `masklm import` wrote).

use super::ConfigArgs;
use crate::config::Config;
use crate::tokenizer::BertTokenizer;
use crate::train::checkpoint;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Continue from the newest checkpoint in train.out_dir
    #[arg(long)]
    pub resume: bool,
    /// Start from the weights of this checkpoint (trained, or written by `masklm import`) with
    /// a fresh optimizer at step 0; the run's [model] and tokenizer must be the checkpoint's
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let cfg = a.config.load()?;
    super::set_threads(cfg.train.threads);
    let init_from = match &a.init_from {
        Some(dir) => Some(check_init_from(&cfg, dir)?),
        None => None,
    };
    let s = crate::train::train(&cfg, a.resume, init_from.as_deref())?;
    // No row was logged when no step selected a token to predict (a tiny data.mask_prob), or
    // when every step that did was skipped for an f16 overflow.
    let loss = if s.last_loss.is_nan() && s.skipped_steps > 0 {
        format!(
            "no loss logged: every step that selected tokens to mask was skipped for an f16 \
             overflow ({} skipped; the loss scale halves at each, so a longer run gets past \
             them, or use train.precision = \"bf16\" or \"f32\")",
            s.skipped_steps
        )
    } else if s.last_loss.is_nan() {
        format!(
            "no loss logged (no step selected a token to mask at data.mask_prob {})",
            cfg.data.mask_prob
        )
    } else {
        format!("last loss {:.4}", s.last_loss)
    };
    // Steps skipped for an f16 overflow applied no update: say how many of the steps did.
    let skipped = match s.skipped_steps {
        0 => String::new(),
        n => format!(" ({n} skipped for an f16 overflow, the weights unchanged by them)"),
    };
    crate::outln!(
        "trained {} steps{skipped}; {loss}; checkpoint {}",
        s.final_step,
        s.checkpoint.display()
    )?;
    if let Some(r) = s.eval {
        crate::outln!("held-out: {r}")?;
    }
    // No examples: a held-out text without a word to mask (every word shorter than three
    // letters, say).
    if s.checkpoint.as_os_str().is_empty() || s.examples.is_empty() {
        return Ok(());
    }
    let device = burn::prelude::Device::flex();
    let ck = crate::train::checkpoint::load(&s.checkpoint, &device)?;
    crate::outln!(
        "fill-mask examples (masklm fill-mask --checkpoint {}):",
        ck.dir.display()
    )?;
    let padding = crate::fill_mask::Padding::for_device(&device);
    for text in &s.examples {
        let per_mask = crate::fill_mask::fill_mask(
            &ck.model,
            &ck.tokenizer,
            text,
            crate::fill_mask::Wanted::top(5),
            cfg.model.max_position_embeddings,
            &device,
            padding,
        )?;
        super::fill_mask::print_readable(text, &per_mask)?;
    }
    Ok(())
}

/// `[model]` keys a run may change from its `--init-from` checkpoint: they shape training, not
/// the weights.
const TRAINING_ONLY: [&str; 3] = [
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
];

/// The checkpoint folder of `--init-from DIR`, once its model and tokenizer are known to be the
/// run's. The run keeps its own config (so a later `--resume` needs nothing more) and refuses a
/// checkpoint that would not fit, naming each difference and the flags that fix it.
fn check_init_from(cfg: &Config, dir: &Path) -> Result<PathBuf> {
    let dir = checkpoint::resolve(dir)?;
    checkpoint::verify(&dir)?;
    let path = dir.join(checkpoint::CONFIG_FILE);
    let theirs = checkpoint::read_config(&dir).context("--init-from")?;
    let their_tok = dir.join(checkpoint::TOKENIZER_FILE);
    let ours = checkpoint::with_saved_rows(cfg, &theirs, &dir)?;
    // `(key, run's value, checkpoint's value)` of each `[model]` key that decides the weights'
    // shapes or computation and differs.
    let diffs: Vec<(String, String, String)> = crate::config::differences(&ours, &theirs)
        .into_iter()
        .filter_map(|(k, ours, t)| Some((k.strip_prefix("model.")?.to_string(), ours, t)))
        .filter(|(k, _, _)| !TRAINING_ONLY.contains(&k.as_str()))
        .collect();
    let same_tokenizer = cfg.tokenizer.path.is_file()
        && BertTokenizer::load(&cfg.tokenizer.path)?.fingerprint()?
            == BertTokenizer::load(&their_tok)?.fingerprint()?;
    // Every difference in one refusal, so that adding the flags it names is enough.
    let (mut said, mut sets): (Vec<String>, Vec<String>) = diffs
        .iter()
        .map(|(k, ours, t)| {
            (
                format!("model.{k} {ours} (run) vs {t} (checkpoint)"),
                format!("--set model.{k}={t}"),
            )
        })
        .unzip();
    if !same_tokenizer {
        said.push(format!(
            "tokenizer.path {} is not the checkpoint's tokenizer (the embeddings are indexed by \
             its ids)",
            cfg.tokenizer.path.display()
        ));
        sets.push(format!(
            "--set tokenizer.path={:?}",
            their_tok.display().to_string()
        ));
    }
    if !said.is_empty() {
        crate::usage!(
            "--init-from {}: the run does not fit the checkpoint: {}; add {} or train with \
             --config {}",
            dir.display(),
            said.join("; "),
            sets.join(" "),
            path.display()
        );
    }
    let (run, saved) = (
        cfg.tokenizer.clean_up_tokenization_spaces,
        theirs.tokenizer.clean_up_tokenization_spaces,
    );
    if run != saved {
        // Only decoding (fill-mask's sequences, the export's tokenizer_config.json) reads it, so
        // the run goes on with its own, said once.
        crate::errln!(
            "note: {} decodes with tokenizer.clean_up_tokenization_spaces = {saved}, this run \
             (and its export) with {run}; add --set tokenizer.clean_up_tokenization_spaces={saved} \
             to keep the checkpoint's",
            dir.display()
        );
    }
    Ok(dir)
}
