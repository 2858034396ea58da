//! `masklm fill-mask`: top-k predictions for each [MASK], in HF's fill-mask format.

use crate::error::UsageError;
use crate::fill_mask::{fill_mask, to_hf_json};
use crate::train::checkpoint;
use anyhow::{Context, Result};
use burn::prelude::*;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct FillMaskArgs {
    /// A run folder (its newest checkpoint) or one checkpoint-N folder
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Candidates per mask
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top_k: usize,
    /// One JSON value per input line, as HF's pipeline("fill-mask") returns it
    #[arg(long)]
    pub json: bool,
    /// Texts with one or more [MASK]
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
    /// A file with one text per line
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
}

pub fn run(a: FillMaskArgs) -> Result<()> {
    if a.top_k == 0 {
        crate::usage!("--top-k 0 asks for no candidates; use 1 or more");
    }
    let mut texts = a.texts.clone();
    if let Some(f) = &a.input {
        let body = std::fs::read_to_string(f)
            .map_err(|e| UsageError::new(format!("cannot read --input {}: {e}", f.display())))?;
        texts.extend(
            body.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    if texts.is_empty() {
        if let Some(f) = &a.input {
            crate::usage!(
                "--input {} has no non-blank line; write one text with [MASK] per line",
                f.display()
            );
        }
        crate::usage!("no input: give TEXT arguments with [MASK], or --input FILE");
    }
    let device = Device::flex();
    let ck = checkpoint::load(&a.checkpoint, &device).context("loading the checkpoint")?;
    let max_len = ck.config.model.max_position_embeddings;
    let mut failed = 0;
    for text in &texts {
        match fill_mask(&ck.model, &ck.tokenizer, text, a.top_k, max_len, &device) {
            Ok(per_mask) if a.json => println!("{}", to_hf_json(&per_mask)),
            Ok(per_mask) => print_readable(text, &per_mask),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    if failed > 0 {
        crate::usage!(
            "{failed} of {} inputs could not be filled (see above)",
            texts.len()
        );
    }
    Ok(())
}

/// `text`, then each mask's candidates with their probabilities.
pub fn print_readable(text: &str, per_mask: &[Vec<crate::fill_mask::Candidate>]) {
    println!("{text}");
    for (m, cands) in per_mask.iter().enumerate() {
        let list: Vec<String> = cands
            .iter()
            .map(|c| format!("{} ({:.3})", c.token_str, c.score))
            .collect();
        println!("  [MASK] {}: {}", m + 1, list.join(", "));
    }
}
