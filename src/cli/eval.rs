//! `masklm eval`: masked-token loss, perplexity and accuracy of a checkpoint.

use crate::config::{BackendName, Config, Precision, Source};
use crate::data::{rows_from, validation_rows};
use crate::eval::evaluate;
use crate::train::{BackendKey, Pass, check_batch_fits, checkpoint, device_for};
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A run folder (its newest checkpoint) or one checkpoint-N folder
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Corpus files or folders to score, all their rows unless --set data.max_eval_samples caps
    /// them (default: data.valid of the checkpoint's config, or its held-out slice of
    /// data.train, capped as the run capped it)
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub corpus: Vec<PathBuf>,
    /// Print {"loss","perplexity","accuracy","top5_accuracy","masked_tokens", "baseline_accuracy"}
    #[arg(long)]
    pub json: bool,
    /// Backend to evaluate on
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: BackendName,
    /// Change where the text comes from or how it is read and batched: data.train, data.valid,
    /// data.validation_split_percentage, data.seq_len, data.packing, data.text_field,
    /// data.cache_dir, data.max_eval_samples or train.batch_size (e.g. --set
    /// data.text_field=body); the rest is the checkpoint's
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

/// The keys `eval --set` may change: where the text comes from and how it becomes rows and
/// batches. The weights fix `[model]` and the tokenizer, and the masking is evaluation's own.
pub const EVAL_MAY_CHANGE: [&str; 9] = [
    "data.train",
    "data.valid",
    "data.validation_split_percentage",
    "data.seq_len",
    "data.packing",
    "data.text_field",
    "data.cache_dir",
    "data.max_eval_samples",
    "train.batch_size",
];

/// Says when `--set data.seq_len` makes rows longer than the checkpoint's run trained on: the
/// position embeddings past its rows are as initialised (unless it started from imported
/// weights), which would lower the scores for a reason that is not the text.
fn note_untrained_positions(ck: &checkpoint::Loaded, cfg: &Config) {
    let Some(trained) = ck.trained_len() else {
        return;
    };
    if cfg.data.seq_len > trained {
        crate::errln!(
            "note: data.seq_len {} is longer than the rows this checkpoint was trained on \
             ({trained}): the position embeddings past {trained} are as initialised (unless the \
             run started from imported weights), so the scores are lower for it",
            cfg.data.seq_len
        );
    }
}

/// Says when `eval --set` makes the held-out slice of `data.train` reach rows the checkpoint's
/// run trained on: a larger `data.validation_split_percentage` than the run's, or the slice of a
/// run that held out `data.valid` instead (and so trained on all of `data.train`).
fn note_trained_rows(saved: &Config, cfg: &Config) {
    let (was, now) = (&saved.data, &cfg.data);
    if !now.valid.is_empty() || now.train != was.train {
        return;
    }
    let why = if !was.valid.is_empty() {
        "its run held out data.valid and trained on all of data.train".to_string()
    } else if now.validation_split_percentage > was.validation_split_percentage {
        format!(
            "its run held out only the first {}%",
            was.validation_split_percentage
        )
    } else {
        return;
    };
    crate::errln!(
        "note: scoring the first {}% of data.train's rows scores text this checkpoint trained on: \
         {why}",
        now.validation_split_percentage
    );
}

/// The checkpoint's config with `sets` applied, refusing a key outside [`EVAL_MAY_CHANGE`].
fn with_sets(saved: &Config, dir: &Path, sets: &[String]) -> Result<Config> {
    if sets.is_empty() {
        return Ok(saved.clone());
    }
    let source = Source::File(dir.join(checkpoint::CONFIG_FILE));
    let cfg = Config::parse(&saved.to_toml(), &source, sets)?;
    // The general message would advise raising max_position_embeddings, which the weights fix.
    let max_len = saved.model.max_position_embeddings;
    if cfg.data.seq_len > max_len && cfg.model == saved.model {
        crate::usage!(
            "eval --set data.seq_len={}: the checkpoint's model reads at most \
             max_position_embeddings {max_len} tokens a row; use at most that",
            cfg.data.seq_len
        );
    }
    cfg.validate()?;
    for (key, _, _) in crate::config::differences(saved, &cfg) {
        if EVAL_MAY_CHANGE.contains(&key.as_str()) {
            continue;
        }
        let why = if key.starts_with("data.") {
            "evaluation masks at BERT's fixed 15% with 80/10/10 from a fixed seed, so that every \
             checkpoint is scored on the same positions"
        } else {
            "the checkpoint fixes it"
        };
        crate::usage!(
            "eval --set {key}: {why}; eval --set takes {}",
            EVAL_MAY_CHANGE.join(", ")
        );
    }
    Ok(cfg)
}

pub fn run(a: EvalArgs) -> Result<()> {
    let device = device_for(a.backend, BackendKey::Flag)?;
    let ck = checkpoint::load(&a.checkpoint, &device).context("loading the checkpoint")?;
    let cfg = with_sets(&ck.config, &ck.dir, &a.sets)?;
    // The held-out rows come from data.valid, else from a split of data.train.
    let scored = match (a.corpus.is_empty(), cfg.data.valid.is_empty()) {
        (false, _) => ("--corpus", &a.corpus[..]),
        (true, false) => ("data.valid", &cfg.data.valid[..]),
        (true, true) => ("data.train", &cfg.data.train[..]),
    };
    crate::data::check_cache_dir(&cfg, || Some(ck.tokenizer.clone()), &[scored])?;
    note_untrained_positions(&ck, &cfg);
    if a.corpus.is_empty() {
        note_trained_rows(&ck.config, &cfg);
    }
    let rows = if a.corpus.is_empty() {
        validation_rows(&cfg, &ck.tokenizer).with_context(|| {
            let changed = if a.sets.is_empty() {
                String::new()
            } else {
                format!(" as --set {} changes it", a.sets.join(" --set "))
            };
            format!(
                "scoring {} of the checkpoint's config {}{changed} (its paths are relative to \
                 the current folder; --corpus, or --set data.valid=[...], scores other text)",
                crate::eval::HELD_OUT_TEXT,
                ck.dir.join(checkpoint::CONFIG_FILE).display()
            )
        })?
    } else {
        rows_from(&a.corpus, &cfg, &ck.tokenizer, "evaluation")?
    };
    // The run's cap is for its held-out text: text named with --corpus is scored whole unless
    // --set caps it.
    let cap_set = a
        .sets
        .iter()
        .any(|s| crate::config::set_key(s) == Some("data.max_eval_samples"));
    let cap = if a.corpus.is_empty() || cap_set {
        cfg.data.max_eval_samples
    } else {
        0
    };
    let all = rows.len();
    let rows = crate::eval::scored_rows(&rows, cap);
    if rows.len() < all {
        crate::errln!(
            "note: scoring the first {} of {all} rows (data.max_eval_samples; --set \
             data.max_eval_samples=0 scores them all)",
            rows.len()
        );
    }
    // A batch is at most all the rows; evaluation runs in f32 (see `evaluate`).
    let bert = ck.bert_config();
    let batch = cfg.train.batch_size.min(rows.len());
    check_batch_fits(
        a.backend,
        &bert,
        Precision::F32,
        Pass::Eval,
        batch,
        rows.seq_len,
    )?;
    let table = Arc::new(ck.tokenizer.token_table());
    let what = if a.corpus.is_empty() {
        crate::eval::HELD_OUT_TEXT.to_string()
    } else {
        let names: Vec<String> = a.corpus.iter().map(|p| p.display().to_string()).collect();
        format!("--corpus {}", names.join(" "))
    };
    crate::eval::ensure_something_to_score(
        &rows,
        table.clone(),
        ck.tokenizer.specials(),
        cfg.train.batch_size,
        &what,
        rows.len() < all,
    )?;
    let unknown =
        crate::eval::unknown_clause(crate::eval::unknown_share(&rows, &ck.tokenizer.specials())?);
    if !unknown.is_empty() {
        crate::errln!("note: {what} is scored on its known tokens only{unknown}");
    }
    let r = evaluate(
        &ck.model,
        &rows,
        table,
        ck.tokenizer.specials(),
        cfg.train.batch_size,
        &device,
    )?;
    if a.json {
        crate::outln!("{}", serde_json::to_string(&r)?)?;
    } else {
        crate::outln!("checkpoint {}", ck.dir.display())?;
        crate::outln!("masked tokens     {}", r.masked_tokens)?;
        crate::outln!("loss              {:.4}", r.loss)?;
        crate::outln!(
            "perplexity        {}",
            crate::eval::perplexity_text(r.perplexity)
        )?;
        crate::outln!("accuracy          {:.2}%", 100.0 * r.accuracy)?;
        crate::outln!("top-5 accuracy    {:.2}%", 100.0 * r.top5_accuracy)?;
        crate::outln!(
            "baseline accuracy {:.2}% (always the commonest token)",
            100.0 * r.baseline_accuracy
        )?;
    }
    Ok(())
}
