//! The training loop: one story from config to checkpoints, read top to bottom.

pub mod checkpoint;
pub mod metrics;
pub mod optim;
pub mod schedule;
pub mod step;

use crate::config::{BackendName, Config};
use crate::data::batches::{Batch, TrainStream};
use crate::data::masking::mix;
use crate::data::{Datasets, corruption, tokenizer_for};
use crate::eval::{EvalReport, evaluate};
use crate::model::BertConfig;
use anyhow::{Context, Result};
use burn::module::Module;
use burn::prelude::*;
use checkpoint::{Saved, TrainState};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub final_step: u64,
    pub last_loss: f64,
    pub eval: Option<EvalReport>,
    pub checkpoint: std::path::PathBuf,
}

/// The device of a backend name. wgpu without any adapter is a clear error, not a panic.
pub fn device_for(backend: BackendName) -> Result<Device> {
    let device = match backend {
        BackendName::Flex => Device::flex(),
        #[allow(deprecated)]
        BackendName::Ndarray => Device::ndarray(),
        BackendName::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
    };
    if backend == BackendName::Wgpu {
        // wgpu looks for an adapter on first use and panics when there is none.
        let probe = device.clone();
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let ok = std::panic::catch_unwind(move || {
            Tensor::<1>::ones([1], &probe).sum().into_scalar::<f32>()
        })
        .is_ok();
        std::panic::set_hook(hook);
        if !ok {
            anyhow::bail!(
                "train.backend = \"wgpu\" found no GPU adapter; install a Vulkan driver (on Debian without \
                 a GPU: apt-get install mesa-vulkan-drivers) or use --set train.backend=flex"
            );
        }
    }
    Ok(device)
}

/// Trains `cfg`: from scratch, from the newest checkpoint of `train.out_dir` (`resume`), or from
/// the weights of the checkpoint folder `init_from` with a fresh optimizer at step 0 (the caller
/// has checked that its model and tokenizer are the run's; see `cli::train`).
pub fn train(cfg: &Config, resume: bool, init_from: Option<&Path>) -> Result<TrainSummary> {
    let t = &cfg.train;
    if resume && init_from.is_some() {
        crate::usage!("--init-from starts a new run and --resume continues one; give only one");
    }
    // The device first: a missing GPU adapter is reported before any minute is spent on data.
    let base = device_for(t.backend)?;
    let tok = tokenizer_for(cfg)?;
    let data = Datasets::prepare(cfg, &tok)?;
    let corruption = corruption(cfg, &tok);
    base.seed(t.seed);
    let train_dev = base.clone().autodiff();
    let bert = BertConfig::new(&cfg.model, tok.vocab_size(), tok.specials().pad);
    let mut model = bert.init_seeded(t.seed, &train_dev);
    if let Some(dir) = init_from {
        model = model
            .try_load_file(dir.join(checkpoint::MODEL_FILE))
            .map_err(|e| anyhow::anyhow!("--init-from: loading {}: {e:?}", dir.display()))?;
        eprintln!(
            "initialised from {} (fresh optimizer, step 0)",
            dir.display()
        );
    }
    let mut optim = optim::adamw(t);
    // The newest checkpoint on disk: what a NaN stop keeps, and what the summary reports.
    let mut last_ckpt = std::path::PathBuf::new();
    let mut state = TrainState {
        step: 0,
        position: 0,
        elapsed_s: 0.0,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let tokenizer_json = tok.to_json()?;
    let config_toml = cfg.to_toml();
    std::fs::create_dir_all(&t.out_dir)
        .with_context(|| format!("creating {}", t.out_dir.display()))?;
    // Held until training returns; taken before anything in out_dir is touched.
    let _lock = checkpoint::lock(&t.out_dir)?;
    checkpoint::remove_stale_temporaries(&t.out_dir)?;

    if resume {
        let Some(dir) = checkpoint::latest_valid(&t.out_dir)? else {
            let what = if checkpoint::latest(&t.out_dir)?.is_some() {
                "only damaged checkpoints (reported above)"
            } else {
                "no checkpoint"
            };
            crate::usage!(
                "--resume: {} holds {what} to resume from; start a fresh run without --resume \
                 in another train.out_dir",
                t.out_dir.display()
            );
        };
        let saved_tok = crate::io::read_to_string_capped(
            &dir.join(checkpoint::TOKENIZER_FILE),
            crate::io::MAX_TOKENIZER_BYTES,
        )?;
        if saved_tok != tokenizer_json {
            crate::usage!(
                "--resume: {} was trained with another tokenizer than {}",
                dir.display(),
                cfg.tokenizer.path.display()
            );
        }
        model = model
            .try_load_file(dir.join(checkpoint::MODEL_FILE))
            .map_err(|e| anyhow::anyhow!("loading {}: {e:?}", dir.display()))?;
        optim = optim
            .load(dir.join(checkpoint::OPTIMIZER_FILE))
            .map_err(|e| anyhow::anyhow!("loading optimizer of {}: {e:?}", dir.display()))?;
        state = checkpoint::read_state(&dir)?;
        last_ckpt = dir.clone();
        metrics::truncate_after(&t.out_dir, state.step)?;
        eprintln!(
            "resuming from {} (step {}, stream row {})",
            dir.display(),
            state.step,
            state.position
        );
    } else if let Some(dir) = checkpoint::latest(&t.out_dir)? {
        crate::usage!(
            "{} already holds checkpoints ({}); pass --resume to continue that run, or choose another train.out_dir",
            t.out_dir.display(),
            dir.display()
        );
    } else {
        metrics::truncate_after(&t.out_dir, 0)?;
    }

    // Batches are prepared on a background thread, two steps ahead, so the model never waits.
    let (accum, batch_size, seq_len) = (t.grad_accum_steps, t.batch_size, cfg.data.seq_len);
    let rows_per_step = (accum * batch_size) as u64;
    let (tx, rx) = sync_channel::<Vec<Batch>>(2);
    let mut stream = TrainStream::new(data.train.clone(), corruption.clone(), batch_size);
    let (first_step, first_pos, steps) = (state.step, state.position, t.steps);
    std::thread::spawn(move || {
        for s in first_step..steps {
            let pos = first_pos + (s - first_step) * rows_per_step;
            let micro = (0..accum as u64)
                .map(|m| stream.batch_at(pos + m * batch_size as u64))
                .collect();
            if tx.send(micro).is_err() {
                return;
            }
        }
    });

    let mut log = metrics::MetricsLog::open(&t.out_dir)?;
    let bar = ProgressBar::new(steps).with_position(state.step);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("static template"),
    );
    let valid_eval = |model: &crate::model::BertForMaskedLM| {
        evaluate(
            &model.valid(),
            &data.valid,
            corruption.table.clone(),
            corruption.specials,
            batch_size,
            &base,
        )
    };
    let (mut last_loss, mut last_eval) = (f64::NAN, None);
    let start = Instant::now();
    let elapsed_before = state.elapsed_s;

    while state.step < steps {
        let step = state.step;
        let t0 = Instant::now();
        let micro = rx.recv().context("the batch thread stopped")?;
        // Dropout draws from the device generator, reseeded per step so that a resumed run
        // draws exactly what an uninterrupted one would.
        base.seed(mix(t.seed ^ mix(step)));
        let Some((loss, grads)) = step::loss_and_grads(&model, &micro, &train_dev) else {
            // Nothing selected in the whole step (tiny batches only): no update.
            state.step += 1;
            state.position += rows_per_step;
            continue;
        };
        if !loss.is_finite() {
            bar.abandon();
            anyhow::bail!(
                "the loss became {loss} at step {}; stopping. The last good checkpoint is kept{}. \
                 Lower train.learning_rate or raise train.warmup_steps, then resume or restart",
                step + 1,
                if last_ckpt.as_os_str().is_empty() {
                    String::new()
                } else {
                    format!(" ({})", last_ckpt.display())
                }
            );
        }
        let lr = schedule::learning_rate(step, t);
        let (grads, grad_norm) = optim::clip_global_norm(&model, grads, t.max_grad_norm);
        model = optim.step(lr, model, grads);
        state.step += 1;
        state.position += rows_per_step;
        state.elapsed_s = elapsed_before + start.elapsed().as_secs_f64();
        last_loss = loss;
        let tokens_per_sec = (rows_per_step as usize * seq_len) as f64 / t0.elapsed().as_secs_f64();
        log.step(
            state.step,
            loss,
            lr,
            grad_norm,
            tokens_per_sec,
            state.elapsed_s,
        )?;
        bar.set_position(state.step);
        bar.set_message(format!(
            "loss {loss:.4} lr {lr:.2e} {tokens_per_sec:.0} tok/s"
        ));

        let last = state.step == steps;
        if last || (t.eval_every > 0 && state.step.is_multiple_of(t.eval_every)) {
            let r = valid_eval(&model);
            let line = format!("step {}: eval {r}", state.step);
            // The bar draws only on a terminal, and then prints nothing of println: say it anyway.
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
            log.eval(state.step, &r)?;
            last_eval = Some(r);
        }
        if last || (t.save_every > 0 && state.step.is_multiple_of(t.save_every)) {
            let saved = Saved {
                model: &model,
                optimizer: &optim,
                state: &state,
                config_toml: &config_toml,
                tokenizer_json: &tokenizer_json,
            };
            last_ckpt = checkpoint::save(&t.out_dir, &saved, t.keep_checkpoints)?;
        }
    }
    bar.finish();
    Ok(TrainSummary {
        final_step: state.step,
        last_loss,
        eval: last_eval,
        checkpoint: last_ckpt,
    })
}
