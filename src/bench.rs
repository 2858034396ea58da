//! Training-step throughput: whole optimizer steps (forward, masked loss, backward, global-norm
//! clipping, AdamW) on real batches from the pipeline, timed after warm-up.
//!
//! Tokens count every position of every micro-batch, padding included, as PyTorch's side of the
//! comparison (`bench/compare_pytorch.py`) counts them.

use crate::config::{BackendName, Config, Precision};
use crate::data::batches::TrainStream;
use crate::data::{Datasets, corruption, load_or_train_tokenizer, save_tokenizer};
use crate::model::BertConfig;
use crate::train::scaler::LossScaler;
use crate::train::step::{self, Outcome};
use crate::train::{DeviceInfo, checked_device, device_info, gpu_reserved_mb, optim, seed_device};
use anyhow::Result;
use serde::Serialize;
use std::time::{Duration, Instant};

/// The shapes a measurement is about.
#[derive(Debug, Clone, Serialize)]
pub struct BenchShapes {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub seq_len: usize,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub tokens_per_sec: f64,
    pub sec_per_step: f64,
    /// Peak resident memory of the process from the moment the rows were ready (Linux VmHWM,
    /// reset then), in MiB: the steps' memory, whether or not this run prepared the data.
    pub peak_rss_mb: f64,
    /// On the GPU backends, what CubeCL's memory pools hold after the timed steps, in MiB
    /// (`train::device::gpu_reserved_mb`: about the steps' peak); `None` on the CPU backends.
    pub gpu_reserved_mb: Option<f64>,
    pub backend: BackendName,
    /// What the matrix products computed in (`train.precision`).
    pub precision: Precision,
    /// Steps skipped by the f16 loss scaler (warm-up included) and the scale after the last.
    pub skipped_steps: u64,
    pub loss_scale: f64,
    /// The adapter the steps ran on.
    pub device: DeviceInfo,
    pub config: BenchShapes,
    /// Timed steps.
    pub steps: u64,
    /// Timed steps that selected no token to mask and so did no work (small batches of short
    /// rows): they make tokens/s read high.
    pub idle_steps: u64,
    /// Share of the timed wall time spent preparing batches (corruption and batching), which
    /// training does on a background thread; here it runs inline so it can be timed.
    pub data_share: f64,
    /// The loss of the last step that selected tokens: a guard that the timed work was real
    /// training.
    pub last_loss: f64,
    /// Wall time of the first (warm-up) step: on GPUs, kernel compilation and autotuning.
    pub first_step_s: f64,
    /// Seconds from the start until the rows were ready: the tokenizer loaded and the token
    /// stores opened (or, the first time, prepared).
    pub data_ready_s: f64,
    /// On the GPU backends, what burn's fusion server processed per timed step (host work the
    /// device waits for when its kernels are short): `None` on the CPU backends.
    pub fusion: Option<FusionPerStep>,
}

/// Per timed step: operations registered with burn's fusion and blocks it ran (a fused kernel,
/// or one operation alone), `train::fusion_ops`.
#[derive(Debug, Clone, Serialize)]
pub struct FusionPerStep {
    pub operations: f64,
    pub blocks: f64,
}

/// Runs `warmup` untimed then `steps` timed optimizer steps of `cfg`.
pub fn bench(cfg: &Config, steps: u64, warmup: u64) -> Result<BenchReport> {
    let t = &cfg.train;
    let base = checked_device(cfg)?;
    crate::data::check_data(cfg)?;
    let start = Instant::now();
    // A tokenizer trained now is saved once the data is ready: a corpus refused leaves none.
    let (tok, fresh) = load_or_train_tokenizer(cfg)?;
    let data = Datasets::prepare(cfg, &tok)?;
    if fresh {
        save_tokenizer(cfg, &tok)?;
    }
    let data_ready_s = start.elapsed().as_secs_f64();
    // A first run tokenizes the corpus in this process: its memory is not the steps'.
    reset_peak_rss();
    seed_device(&base, t.seed);
    let train_dev = base.clone().autodiff();
    let bert = BertConfig::new(&cfg.model, tok.vocab_size(), tok.specials().pad);
    let mut model = bert.init(&train_dev).with_precision(t.precision);
    let mut scaler = LossScaler::for_precision(t.precision);
    let mut optim = optim::adamw(t);
    let mut stream = TrainStream::new(data.train, corruption(cfg, &tok), t.batch_size);
    let (accum, batch_size) = (t.grad_accum_steps, t.batch_size as u64);

    let (mut data_time, mut last_loss, mut idle_steps) = (Duration::ZERO, f64::NAN, 0);
    let mut timed_from = (warmup == 0).then(Instant::now);
    let mut first_step_s = f64::NAN;
    let mut counter = if warmup == 0 {
        fusion_counter(t.backend)
    } else {
        None
    };
    for s in 0..warmup + steps {
        let t0 = Instant::now();
        let micro = (0..accum as u64)
            .map(|m| stream.batch_at((s * accum as u64 + m) * batch_size))
            .collect::<Result<Vec<_>>>()?;
        let t_data = t0.elapsed();
        let (next, report) = step::optimizer_step(
            model,
            &mut optim,
            &micro,
            t.learning_rate,
            t.max_grad_norm,
            &mut scaler,
            &train_dev,
        );
        model = next;
        match report.outcome {
            // A skipped step (an f16 overflow) did the same work as an applied one.
            Outcome::Applied | Outcome::Skipped => {}
            // As in training, a step that selected nothing does no work; counted, not timed apart.
            Outcome::NothingSelected => idle_steps += u64::from(s >= warmup),
            Outcome::NonFinite => anyhow::bail!(
                "benchmark step {s}: loss {} and gradient norm {}; lower train.learning_rate",
                report.loss,
                report.grad_norm
            ),
        }
        // GPU backends queue work: the clock is read after waiting for it, but only where a
        // measurement ends (the first step, the warm-up, the last step), as PyTorch's side waits:
        // waiting after every step would keep the host from preparing step k+1 while the device
        // finishes step k's update, which training never does.
        let ends_a_measurement = s == 0 || s + 1 == warmup || s + 1 == warmup + steps;
        if ends_a_measurement {
            base.sync()
                .map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
        }
        if s == 0 {
            first_step_s = t0.elapsed().as_secs_f64();
        }
        if s + 1 == warmup {
            timed_from = Some(Instant::now());
            counter = fusion_counter(t.backend);
        }
        if s >= warmup {
            data_time += t_data;
        }
        if report.outcome != Outcome::NothingSelected {
            last_loss = report.loss;
        }
    }
    // With no warm-up, the first step's end is the start of the clock.
    let timed = timed_from.map_or(Duration::ZERO, |t| t.elapsed());
    // The device was synced after the last step: the server has processed every step's work.
    let fusion = counter.map(|c| {
        let (operations, blocks) = c.read();
        FusionPerStep {
            operations: operations as f64 / steps as f64,
            blocks: blocks as f64 / steps as f64,
        }
    });
    if idle_steps == steps {
        crate::usage!(
            "no timed step selected a token to mask (data.mask_prob {} of {} rows a \
             micro-batch), so nothing was measured; raise train.batch_size or data.mask_prob, \
             or give text with tokens other than special ones",
            cfg.data.mask_prob,
            t.batch_size
        );
    }
    let secs = timed.as_secs_f64();
    let tokens = steps as f64 * (accum as u64 * batch_size) as f64 * cfg.data.seq_len as f64;
    Ok(BenchReport {
        tokens_per_sec: tokens / secs,
        sec_per_step: secs / steps as f64,
        peak_rss_mb: peak_rss_mb().unwrap_or(f64::NAN),
        gpu_reserved_mb: gpu_reserved_mb(&base),
        backend: t.backend,
        precision: t.precision,
        skipped_steps: scaler.skipped_steps,
        loss_scale: scaler.scale,
        device: device_info(t.backend, &base),
        config: BenchShapes {
            vocab_size: bert.vocab_size,
            hidden_size: cfg.model.hidden_size,
            num_hidden_layers: cfg.model.num_hidden_layers,
            num_attention_heads: cfg.model.num_attention_heads,
            intermediate_size: cfg.model.intermediate_size,
            seq_len: cfg.data.seq_len,
            batch_size: t.batch_size * accum,
        },
        steps,
        idle_steps,
        data_share: data_time.as_secs_f64() / secs,
        last_loss,
        first_step_s,
        data_ready_s,
        fusion,
    })
}

/// A counter of fusion's work on the GPU backends, `None` on the CPU ones (no fusion there).
#[cfg(feature = "cube")]
fn fusion_counter(backend: BackendName) -> Option<crate::train::fusion_ops::FusionCounter> {
    (!backend.is_cpu()).then(crate::train::fusion_ops::FusionCounter::start)
}

/// Without a GPU backend in the build there is no fusion server to count.
#[cfg(not(feature = "cube"))]
enum NoFusion {}

#[cfg(not(feature = "cube"))]
impl NoFusion {
    fn read(&self) -> (u64, u64) {
        match *self {}
    }
}

#[cfg(not(feature = "cube"))]
fn fusion_counter(_backend: BackendName) -> Option<NoFusion> {
    None
}

/// Hands freed memory back to the kernel and restarts the peak resident set from what is
/// resident now (Linux: `malloc_trim`, then `5` written to /proc/self/clear_refs). Elsewhere, or
/// where either fails, the peak stays the whole process's.
fn reset_peak_rss() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free heap memory to the kernel.
        unsafe { libc::malloc_trim(0) };
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
}

/// The process's peak resident set (Linux `VmHWM` in /proc/self/status), in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_read_on_linux() {
        let mb = super::peak_rss_mb().expect("/proc/self/status has VmHWM");
        assert!(mb > 1.0 && mb < 1e6, "{mb}");
    }
}
