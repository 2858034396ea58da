//! `masklm eval`: masked-token loss, perplexity and accuracy of a checkpoint.

use crate::config::BackendName;
use crate::data::{rows_from, validation_rows};
use crate::eval::evaluate;
use crate::train::{checkpoint, device_for};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A run folder (its newest checkpoint) or one checkpoint-N folder
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Corpus files or folders to score (default: data.valid of the checkpoint's config, or its
    /// held-out slice of data.train)
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub corpus: Vec<PathBuf>,
    /// Print {"loss","perplexity","accuracy","top5_accuracy","masked_tokens", "baseline_accuracy"}
    #[arg(long)]
    pub json: bool,
    /// Backend to evaluate on
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: BackendName,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let device = device_for(a.backend)?;
    let ck = checkpoint::load(&a.checkpoint, &device).context("loading the checkpoint")?;
    let rows = if a.corpus.is_empty() {
        validation_rows(&ck.config, &ck.tokenizer)?
    } else {
        rows_from(&a.corpus, &ck.config, &ck.tokenizer, "evaluation")?
    };
    let table = Arc::new(ck.tokenizer.token_table());
    let r = evaluate(
        &ck.model,
        &rows,
        table,
        ck.tokenizer.specials(),
        ck.config.train.batch_size,
        &device,
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("checkpoint {}", ck.dir.display());
        println!("masked tokens     {}", r.masked_tokens);
        println!("loss              {:.4}", r.loss);
        println!("perplexity        {:.2}", r.perplexity);
        println!("accuracy          {:.2}%", 100.0 * r.accuracy);
        println!("top-5 accuracy    {:.2}%", 100.0 * r.top5_accuracy);
        println!(
            "baseline accuracy {:.2}% (always the commonest token)",
            100.0 * r.baseline_accuracy
        );
    }
    Ok(())
}
