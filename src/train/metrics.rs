//! `out_dir/metrics.jsonl`: one JSON object per line, per logged optimizer step
//! (`step, epoch, loss, lr, grad_norm, tokens_per_sec, elapsed_s`; a run's first row adds
//! `device`: backend, adapter, CubeCL's fingerprint of it, vendor, cooperative-matrix types;
//! under f16, every row adds `loss_scale` and `skipped_steps`) and per evaluation
//! (`step, eval_loss, eval_accuracy, eval_top5_accuracy, eval_perplexity, eval_masked_tokens,
//! eval_baseline_accuracy`).

use crate::eval::EvalReport;
use crate::train::scaler::LossScaler;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

pub const FILE: &str = "metrics.jsonl";

/// What a training row of metrics.jsonl says: the mean loss since the last row and the rest.
#[derive(Debug, Clone, Copy)]
pub struct StepRow {
    pub step: u64,
    /// Training rows read so far over the training rows (HF's fractional `epoch`).
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    pub elapsed_s: f64,
}

pub struct MetricsLog {
    file: File,
    path: PathBuf,
}

impl MetricsLog {
    pub fn open(out_dir: &Path) -> Result<Self> {
        let path = out_dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file, path })
    }

    fn write(&mut self, row: Value) -> Result<()> {
        // One write per line: a kill leaves at most a partial last line, which resume drops.
        let line = format!("{row}\n");
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("appending to {}", self.path.display()))
    }

    /// A training row; under f16 loss scaling it adds the scale of the next step and the steps
    /// skipped so far (`loss_scale`, `skipped_steps`), and a run's first row the device.
    pub fn step(
        &mut self,
        r: &StepRow,
        scaler: Option<&LossScaler>,
        device: Option<&crate::train::DeviceInfo>,
    ) -> Result<()> {
        let mut row = json!({"step": r.step, "epoch": r.epoch, "loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm, "tokens_per_sec": r.tokens_per_sec, "elapsed_s": r.elapsed_s});
        if let Some(s) = scaler {
            row["loss_scale"] = json!(s.scale);
            row["skipped_steps"] = json!(s.skipped_steps);
        }
        if let Some(d) = device {
            row["device"] = serde_json::to_value(d)?;
        }
        self.write(row)
    }

    pub fn eval(&mut self, step: u64, r: &EvalReport) -> Result<()> {
        self.write(json!({
            "step": step,
            "eval_loss": r.loss,
            "eval_accuracy": r.accuracy,
            "eval_top5_accuracy": r.top5_accuracy,
            "eval_perplexity": r.perplexity,
            "eval_masked_tokens": r.masked_tokens,
            "eval_baseline_accuracy": r.baseline_accuracy,
        }))
    }
}

/// What the rows of steps up to `step` hold, for a run resumed at `step`.
#[derive(Debug, Default, PartialEq)]
pub struct Logged {
    /// A row says the device (a run's first row does).
    pub device: bool,
    /// An evaluation row at `step` itself.
    pub eval_at_step: bool,
    /// The training loss of the last step row.
    pub last_loss: Option<f64>,
}

/// Reads what the rows of steps up to `step` hold (streamed; a missing file holds nothing).
pub fn logged_up_to(out_dir: &Path, step: u64) -> Result<Logged> {
    let path = out_dir.join(FILE);
    let mut logged = Logged::default();
    let Ok(file) = File::open(&path) else {
        return Ok(logged);
    };
    for line in BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let Ok(row) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        match row["step"].as_u64() {
            Some(s) if s <= step => {
                logged.device |= row.get("device").is_some();
                logged.eval_at_step |= s == step && row.get("eval_loss").is_some();
                if let Some(loss) = row.get("loss").and_then(Value::as_f64) {
                    logged.last_loss = Some(loss);
                }
            }
            _ => {}
        }
    }
    Ok(logged)
}

/// Keeps the rows of steps up to `step` (rows logged after the checkpoint a run resumes from
/// would otherwise appear twice) and drops a partial last line. Missing file: nothing to do.
/// Streams: a long run's log (about 250 bytes a step) never sits in memory whole.
pub fn truncate_after(out_dir: &Path, step: u64) -> Result<()> {
    let path = out_dir.join(FILE);
    let Ok(file) = File::open(&path) else {
        return Ok(());
    };
    crate::io::replace_with(&path, |tmp| {
        let mut out = BufWriter::new(File::create(tmp)?);
        for line in BufReader::new(file).split(b'\n') {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            let keep = serde_json::from_slice::<Value>(&line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step);
            if keep {
                out.write_all(&line)?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_rows_up_to_the_step_and_drops_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let rows = "{\"step\":1,\"loss\":2.0}\n{\"step\":2,\"loss\":1.5}\n\
                    {\"step\":2,\"eval_loss\":1.4}\n{\"step\":3,\"loss\":1.2}\n{\"step\":4,\"lo";
        std::fs::write(dir.path().join(FILE), rows).unwrap();
        truncate_after(dir.path(), 2).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            "{\"step\":1,\"loss\":2.0}\n{\"step\":2,\"loss\":1.5}\n{\"step\":2,\"eval_loss\":1.4}\n"
        );
        // No log yet (a run that never logged): nothing to do, nothing created.
        let empty = tempfile::tempdir().unwrap();
        truncate_after(empty.path(), 2).unwrap();
        assert!(!empty.path().join(FILE).exists());
    }
}
