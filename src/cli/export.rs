//! `masklm export`: a checkpoint as a Hugging Face `transformers` folder.

use crate::train::checkpoint;
use anyhow::{Context, Result};
use burn::prelude::*;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run folder (its newest checkpoint) or one checkpoint-N folder
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The HF folder to write (config.json, model.safetensors, tokenizer files)
    #[arg(long, value_name = "HF_DIR")]
    pub out: PathBuf,
    /// Write into a folder that is not empty, replacing the files export writes
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let ck = checkpoint::load(&a.checkpoint, &Device::flex()).context("loading the checkpoint")?;
    let written = crate::hf::export(&ck, &a.out, a.force)?;
    crate::outln!("exported {} → {}", ck.dir.display(), a.out.display())?;
    for f in &written {
        crate::outln!("  {}", f.display())?;
    }
    crate::outln!(
        "load it with: pipeline(\"fill-mask\", model={:?})",
        a.out.display().to_string()
    )?;
    Ok(())
}
