//! `masklm bench`: training-step throughput of a config (tokens/s, seconds per step, peak memory).

use super::ConfigArgs;
use crate::error::UsageError;
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Timed optimizer steps
    #[arg(long, default_value_t = 10)]
    pub steps: u64,
    /// Untimed steps first (allocator, caches, GPU kernel compilation)
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Print one JSON object: {"tokens_per_sec","sec_per_step","peak_rss_mb","backend","config":{..},..}
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.steps == 0 {
        return Err(UsageError::new("--steps 0: time at least one step (e.g. --steps 10)").into());
    }
    if a.warmup.checked_add(a.steps).is_none() {
        return Err(UsageError::new(format!(
            "--warmup {} plus --steps {} overflows a step counter; give the steps you mean to run \
             (e.g. --warmup 2 --steps 10)",
            a.warmup, a.steps
        ))
        .into());
    }
    let cfg = a.config.load()?;
    super::set_threads(cfg.train.threads);
    let r = crate::bench::bench(&cfg, a.steps, a.warmup)?;
    if a.json {
        crate::outln!("{}", serde_json::to_string(&r)?)?;
    } else {
        let c = &r.config;
        crate::outln!(
            "{:?}: vocab {} hidden {} layers {} heads {} intermediate {} batch {} x {}",
            r.backend,
            c.vocab_size,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
            c.batch_size,
            c.seq_len
        )?;
        crate::outln!(
            "{:.0} tokens/s, {:.3} s/step over {} steps; peak RSS {:.0} MiB; data {:.2}% of a step; last loss {:.4}",
            r.tokens_per_sec,
            r.sec_per_step,
            r.steps,
            r.peak_rss_mb,
            100.0 * r.data_share,
            r.last_loss
        )?;
        if r.skipped_steps > 0 {
            crate::outln!(
                "note: {} steps (warm-up included) were skipped for an f16 overflow; they did a \
                 step's work but applied no update",
                r.skipped_steps
            )?;
        }
        if r.idle_steps > 0 {
            crate::outln!(
                "note: {} of the {} timed steps selected no token to mask and did no work, so \
                 tokens/s reads high; raise train.batch_size",
                r.idle_steps,
                r.steps
            )?;
        }
    }
    Ok(())
}
