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

/// Shown after training: plain sentences whose blanks a model of English should fill.
const EXAMPLES: [&str; 4] = [
    "once upon a time, there was a little [MASK] named lily.",
    "she was very [MASK] and wanted to play with her friends.",
    "the dog ran to the [MASK] and barked.",
    "he said, \"thank you, [MASK]!\"",
];

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
        println!("held-out: {r}");
    }
    if s.checkpoint.as_os_str().is_empty() {
        return Ok(());
    }
    let device = burn::prelude::Device::flex();
    let ck = crate::train::checkpoint::load(&s.checkpoint, &device)?;
    println!(
        "fill-mask examples (masklm fill-mask --checkpoint {}):",
        ck.dir.display()
    );
    for text in EXAMPLES {
        let per_mask = crate::fill_mask::fill_mask(
            &ck.model,
            &ck.tokenizer,
            text,
            5,
            cfg.model.max_position_embeddings,
            &device,
        )?;
        super::fill_mask::print_readable(text, &per_mask);
    }
    Ok(())
}
