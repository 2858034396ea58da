//! `masklm train`: pretrain from a config, or resume a run.

use super::ConfigArgs;
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Continue from the newest checkpoint in train.out_dir
    #[arg(long)]
    pub resume: bool,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let cfg = a.config.load()?;
    super::set_threads(cfg.train.threads);
    let s = crate::train::train(&cfg, a.resume)?;
    println!(
        "trained {} steps; last loss {:.4}; checkpoint {}",
        s.final_step,
        s.last_loss,
        s.checkpoint.display()
    );
    if let Some(r) = s.eval {
        println!(
            "held-out: loss {:.4}, perplexity {:.2}, accuracy {:.2}% (most-frequent-token baseline {:.2}%), top-5 accuracy {:.2}% over {} masked tokens",
            r.loss,
            r.perplexity,
            100.0 * r.accuracy,
            100.0 * r.baseline_accuracy,
            100.0 * r.top5_accuracy,
            r.masked_tokens
        );
    }
    Ok(())
}
