//! `masklm plot RUN_DIR`: loss.png and accuracy.png from the run's metrics.jsonl.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A run folder (train.out_dir) holding metrics.jsonl
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
}

pub fn run(a: PlotArgs) -> Result<()> {
    for p in crate::plot::plot_run(&a.run_dir)? {
        crate::outln!("wrote {}", p.display())?;
    }
    Ok(())
}
