//! The command line: one file per subcommand.

mod bench;
mod data;
mod eval;
mod export;
mod fill_mask;
mod import;
mod plot;
mod tokenizer;
mod train;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "masklm",
    version,
    about = "BERT-style masked-language-model pretraining"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// The doc comments are `--help` text: a `[MASK]` there is the token, not a rustdoc link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a WordPiece tokenizer (BERT's: [PAD] [UNK] [CLS] [SEP] [MASK], ## continuations)
    Tokenizer(tokenizer::TokenizerArgs),
    /// Pretrain a BERT masked-LM (default: configs/default.toml)
    Train(train::TrainArgs),
    /// Inspect the data pipeline
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Masked-token loss, perplexity, top-1/top-5 accuracy of a checkpoint
    Eval(eval::EvalArgs),
    /// Top-k predictions for each [MASK] of a text (HF fill-mask format with --json)
    FillMask(fill_mask::FillMaskArgs),
    /// Draw loss.png and accuracy.png from a run's metrics.jsonl
    Plot(plot::PlotArgs),
    /// Write a checkpoint as a Hugging Face folder (transformers' BertForMaskedLM)
    Export(export::ExportArgs),
    /// Turn a Hugging Face BERT masked-LM folder into a masklm checkpoint
    Import(import::ImportArgs),
    /// Time whole training steps: tokens/s, seconds per step, peak memory
    Bench(bench::BenchArgs),
}

/// `--config FILE` and repeatable `--set section.key=value`, shared by every subcommand that
/// reads a config.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// TOML config file (default: the embedded configs/default.toml)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. --set data.mask_prob=0.3 or --set 'data.train=["a.txt"]'
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ConfigArgs {
    pub fn load(&self) -> anyhow::Result<crate::config::Config> {
        crate::config::Config::load(self.config.as_deref(), &self.sets)
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    check_rayon_threads()?;
    match cli.command {
        Command::Tokenizer(a) => tokenizer::run(a),
        Command::Data(c) => data::run(c),
        Command::Train(a) => train::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Eval(a) => eval::run(a),
        Command::FillMask(a) => fill_mask::run(a),
        Command::Export(a) => export::run(a),
        Command::Import(a) => import::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

/// rayon sizes its pool from `RAYON_NUM_THREADS` (or the older `RAYON_RS_NUM_CPUS` when that is
/// not a number) wherever masklm does not (train.threads 0, and the commands without it): the
/// same ceiling as train.threads, since a mistyped count would spawn threads for minutes. rayon
/// reads them as it does here, ignoring what does not parse.
fn check_rayon_threads() -> Result<(), crate::error::UsageError> {
    let read = |name: &str| -> Option<(String, usize)> {
        let v = std::env::var(name).ok()?;
        let n = v.parse::<usize>().ok()?;
        Some((format!("{name}={v}"), n))
    };
    match read("RAYON_NUM_THREADS").or_else(|| read("RAYON_RS_NUM_CPUS")) {
        Some((var, n)) if n > crate::config::MAX_THREADS => {
            Err(crate::error::UsageError::new(format!(
                "{var} asks for more than {} threads; unset it (one thread per core) or give a \
                 smaller count",
                crate::config::MAX_THREADS
            )))
        }
        _ => Ok(()),
    }
}

/// Sizes the global rayon pool (CPU backends and tokenization); 0 keeps one thread per core.
pub fn set_threads(threads: usize) {
    if threads > 0 {
        // Fails only if the pool was already built, which keeps the earlier size: harmless.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global();
    }
}
