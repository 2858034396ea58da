//! The training loop: one story from config to checkpoints, read top to bottom.

pub mod adamw;
#[cfg(feature = "cube")]
mod adamw_cube;
pub mod checkpoint;
pub mod device;
mod dispatch_lists;
#[cfg(feature = "cube")]
pub mod fusion_ops;
pub mod metrics;
pub mod optim;
pub mod optimizer;
pub mod scaler;
pub mod schedule;
pub mod squared_norm;
#[cfg(feature = "cube")]
mod squared_norm_cube;
pub mod step;

use crate::config::Config;
use crate::data::batches::{Batch, TrainStream};
use crate::data::masking::{TokenTable, mix};
use crate::data::store::TokenStore;
use crate::data::{Datasets, corruption, load_or_train_tokenizer, save_tokenizer};
use crate::eval::{EvalReport, evaluate};
use crate::fill_mask;
use crate::model::BertConfig;
use crate::tokenizer::BertTokenizer;
use anyhow::{Context, Result};
use burn::module::Module;
use checkpoint::{Saved, TrainState};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};
use step::Outcome;

pub use device::{
    BackendKey, DeviceInfo, Pass, check_batch_fits, checked_device, device_for, device_info,
    gpu_reserved_mb, seed_device,
};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub final_step: u64,
    pub last_loss: f64,
    /// Steps skipped for an f16 overflow over the whole run (0 without loss scaling).
    pub skipped_steps: u64,
    pub eval: Option<EvalReport>,
    pub checkpoint: std::path::PathBuf,
    /// Texts with `[MASK]` to show the trained model on (`train.fill_mask_examples` or held-out
    /// sentences).
    pub examples: Vec<String>,
}

/// `train.fill_mask_examples`, or when it is empty up to four sentences from the start of the
/// held-out text (`data.valid`, else `data.train`, whose first rows are the ones held out) with
/// their rarest frequent word masked (`fill_mask::pick_examples`).
fn fill_mask_examples(
    cfg: &Config,
    tok: &BertTokenizer,
    table: &TokenTable,
    train: &TokenStore,
) -> Result<Vec<String>> {
    let max_len = cfg.model.max_position_embeddings;
    if !cfg.train.fill_mask_examples.is_empty() {
        // Checked now, not after the run: a text the model cannot take would fail at the end.
        for (i, text) in cfg.train.fill_mask_examples.iter().enumerate() {
            let n = tok.encode_with_specials(text)?.len();
            if n > max_len {
                crate::usage!(
                    "train.fill_mask_examples[{i}] {text:?} is {n} tokens with [CLS] and [SEP], \
                     more than model.max_position_embeddings {max_len}; shorten it"
                );
            }
        }
        return Ok(cfg.train.fill_mask_examples.clone());
    }
    let source = if cfg.data.valid.is_empty() {
        &cfg.data.train
    } else {
        &cfg.data.valid
    };
    let files = crate::data::corpus::expand_paths(source)?;
    let mut lines = Vec::new();
    let pieces = crate::data::corpus::PieceReader::new(files, &cfg.data.text_field);
    for piece in pieces.take(200) {
        for s in fill_mask::sentences(&piece?.text) {
            lines.push((s.to_string(), tok.encode_with_offsets(s)?));
        }
    }
    // Frequencies from the first 10 M training tokens: enough to rank the frequent words.
    let counted = train.first_ids(10_000_000)?;
    let freq = fill_mask::maskable_frequencies(&counted, tok);
    Ok(fill_mask::pick_examples(&lines, &freq, table, max_len, 4))
}

/// Refuses to resume the checkpoint `dir` under a config that would compute other steps than
/// the interrupted run (exact resume), naming every difference.
fn check_resume_config(cfg: &Config, dir: &Path, state: &TrainState) -> Result<()> {
    let saved = checkpoint::read_config(dir).context("--resume")?;
    let path = dir.join(checkpoint::CONFIG_FILE);
    let cfg = checkpoint::with_saved_rows(cfg, &saved, dir)?;
    // Where the checkpoint records its rows' fingerprint, the corpus is compared by content once
    // read (`train`), not by how its paths are written.
    let rows_recorded = state.data.is_some();
    let diffs = crate::config::resume_differences(&saved, &cfg, rows_recorded);
    // A new step count moves where the schedule ends: the rate jumps at the next step. The
    // schedule counts the steps taken (an f16 step skipped for an overflow does not count).
    let taken = state.step.saturating_sub(state.scaler.skipped_steps);
    let lr = |step: u64, c: &Config| schedule::learning_rate(step, &c.train);
    let now = lr(taken, &cfg);
    let steps_left = state.step < cfg.train.steps;
    if diffs.is_empty()
        && steps_left
        && saved.train.steps != cfg.train.steps
        && now != lr(taken, &saved)
    {
        crate::errln!(
            "note: train.steps is {} ({} in {}), and the learning-rate schedule ends at the new \
             count: step {} runs at {now:.2e}, after {:.2e} at step {} (HF's schedules do the same \
             on resume)",
            cfg.train.steps,
            saved.train.steps,
            dir.display(),
            state.step + 1,
            lr(taken.saturating_sub(1), &saved),
            state.step
        );
    }
    if diffs.is_empty() && rows_recorded {
        for (key, d) in crate::config::differences(&saved, &cfg)
            .into_iter()
            .filter(|(k, _, _)| crate::config::CORPUS_KEYS.contains(&k.as_str()))
            .map(|(k, theirs, _)| (k, theirs))
        {
            crate::errln!(
                "note: {key} names other paths than {}'s {d}; the run resumes if their tokenized \
                 rows are the same (checked once they are read)",
                dir.display()
            );
        }
    }
    if !diffs.is_empty() {
        // A run folder moved since: the saved config names where it was.
        let here = if saved.train.out_dir == cfg.train.out_dir {
            String::new()
        } else {
            format!(
                " --set train.out_dir={:?}",
                cfg.train.out_dir.display().to_string()
            )
        };
        crate::usage!(
            "--resume: the run's config differs from the one {} was trained with, so the resumed \
             steps would not be the interrupted run's:\n  - {}\nResume with --config {}{here} \
             (only these keys may change: {}), or start a new run in another train.out_dir",
            dir.display(),
            diffs.join("\n  - "),
            path.display(),
            crate::config::RESUME_MAY_CHANGE
                .iter()
                .chain(
                    rows_recorded
                        .then_some(&crate::config::CORPUS_KEYS)
                        .into_iter()
                        .flatten()
                )
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Where `--resume` continues a run: its newest undamaged checkpoint, the state saved there,
/// whether the run's metrics rows up to it already say the device, and whether the evaluation at
/// its step is owed (a kill during the evaluation that follows a checkpoint lost it).
struct ResumePoint {
    dir: std::path::PathBuf,
    state: TrainState,
    device_logged: bool,
    owed_eval: bool,
    /// The loss its last logged step row holds (NaN: none), which the run reports if it logs no
    /// step of its own (only the owed evaluation was left).
    last_loss: f64,
}

/// Finds the [`ResumePoint`] of `cfg`'s run, refusing one without a checkpoint, with another
/// config, or with nothing left to do; reads only the run folder.
fn resume_point(cfg: &Config) -> Result<ResumePoint> {
    let t = &cfg.train;
    let Some(dir) = checkpoint::latest_valid(&t.out_dir)? else {
        let (what, where_) = if checkpoint::latest(&t.out_dir)?.is_some() {
            (
                "only damaged checkpoints (reported above)",
                "in another train.out_dir",
            )
        } else {
            ("no checkpoint", "(this train.out_dir will do)")
        };
        crate::usage!(
            "--resume: {} holds {what} to resume from; start a fresh run without --resume \
             {where_}",
            t.out_dir.display()
        );
    };
    let state = checkpoint::read_state(&dir)?;
    check_resume_config(cfg, &dir, &state)?;
    let logged = metrics::logged_up_to(&t.out_dir, state.step)?;
    let eval_step =
        state.step == t.steps || (t.eval_every > 0 && state.step.is_multiple_of(t.eval_every));
    let owed_eval = eval_step && !logged.eval_at_step;
    if state.step > t.steps || (state.step == t.steps && !owed_eval) {
        crate::usage!(
            "--resume: {} is at step {}, and train.steps is {}: nothing is left to train; to \
             continue the run, raise train.steps above {} (--set train.steps=N)",
            dir.display(),
            state.step,
            t.steps,
            state.step
        );
    }
    Ok(ResumePoint {
        dir,
        state,
        device_logged: logged.device,
        owed_eval,
        last_loss: logged.last_loss.unwrap_or(f64::NAN),
    })
}

/// Refuses a fresh run into an `out_dir` that holds checkpoints (another run's).
fn refuse_checkpoints(out_dir: &Path) -> Result<()> {
    if let Some(dir) = checkpoint::latest(out_dir)? {
        crate::usage!(
            "{} already holds checkpoints ({}); pass --resume to continue that run, or choose \
             another train.out_dir",
            out_dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Held-out rows past which a run says what its evaluations cost.
const LARGE_EVAL_ROWS: usize = 20_000;

/// How often a run whose stderr is not a terminal prints its progress as a line.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Prints `line` above the progress bar, or on stderr where the bar does not draw (not a
/// terminal: it then prints nothing of `println`).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        crate::errln!("{line}");
    } else {
        bar.println(line);
    }
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
    let base = checked_device(cfg)?;
    // Where the run writes, before any minute is spent on data.
    crate::io::check_output_dir(&t.out_dir, "train.out_dir")?;
    crate::data::check_data(cfg)?;
    for f in [metrics::FILE, checkpoint::LOCK_FILE] {
        let path = t.out_dir.join(f);
        if path.is_dir() {
            crate::usage!(
                "{} is a folder, where the run writes its {f}; move it away or choose another \
                 train.out_dir",
                path.display()
            );
        }
    }
    // A folder's corpus files are every .jsonl below it: the run's metrics.jsonl there would
    // become text to the run's own --resume and eval.
    let corpus = [&cfg.data.train[..], &cfg.data.valid[..]].concat();
    let log = t.out_dir.join(metrics::FILE);
    if let Some(folder) = crate::data::corpus::folder_holding(&corpus, &log) {
        crate::usage!(
            "train.out_dir {} is inside the corpus folder {}: its {} would be read as text by \
             every later run on that folder (this run's --resume and eval included); choose a \
             train.out_dir outside it",
            t.out_dir.display(),
            folder.display(),
            metrics::FILE
        );
    }
    // A run folder holds checkpoint-N folders; one checkpoint's or an export's files at its top
    // would be read as the run's by eval, fill-mask and export.
    let holds = |f: &str| t.out_dir.join(f).is_file();
    if holds(checkpoint::MODEL_FILE) || holds(checkpoint::STATE_FILE) {
        crate::usage!(
            "train.out_dir {} is a checkpoint folder; a run writes its checkpoints as folders \
             inside its own: choose another train.out_dir (to train from this checkpoint's \
             weights: --init-from {})",
            t.out_dir.display(),
            t.out_dir.display()
        );
    }
    if holds("config.json") && holds("model.safetensors") {
        crate::usage!(
            "train.out_dir {} is a Hugging Face model folder; choose another train.out_dir (to \
             train from its weights: masklm import, then --init-from)",
            t.out_dir.display()
        );
    }
    if resume && !t.out_dir.is_dir() {
        crate::usage!(
            "--resume: train.out_dir {} does not exist, so there is no run to continue; start a \
             fresh run without --resume, or point train.out_dir at the run's folder",
            t.out_dir.display()
        );
    }
    // The writer lock of an out_dir that exists now (a resume, a rerun) before any minute is
    // spent on data, so a second run into it is refused at once; a new out_dir is created, and
    // locked, only once the run is set to start, so a refused run leaves no empty folder.
    let early_lock = if t.out_dir.is_dir() {
        Some(checkpoint::lock(&t.out_dir)?)
    } else {
        None
    };
    // What to resume from, and whether anything is left to do, before any minute of data.
    let resume_from = if resume {
        Some(resume_point(cfg)?)
    } else {
        refuse_checkpoints(&t.out_dir)?;
        None
    };
    // HF's schedules take a warmup longer than the run (the rate then rises to the end); a
    // short trial run of a config made for a long one meets this, so it is a note, not an error.
    if t.warmup_steps > t.steps {
        crate::errln!(
            "note: train.warmup_steps {} exceeds train.steps {}, so the learning rate is still \
             rising when the run ends, at {:.3} × train.learning_rate in its last step (as in \
             HF's schedules); for a full warmup and decay, lower it (--set \
             train.warmup_steps=N)",
            t.warmup_steps,
            t.steps,
            schedule::learning_rate(t.steps.saturating_sub(1), t) / t.learning_rate
        );
    }
    let data_start = Instant::now();
    // A tokenizer trained now is saved only once the run is set to start (below): a run that
    // fails before then leaves none behind for the next run to pick up.
    let (tok, fresh_tokenizer) = load_or_train_tokenizer(cfg)?;
    let tok = tok.with_clean_up_tokenization_spaces(cfg.tokenizer.clean_up_tokenization_spaces);
    let data = Datasets::prepare(cfg, &tok)?;
    let scored = crate::eval::scored_rows(&data.valid, cfg.data.max_eval_samples);
    let scored_note = if scored.len() < data.valid.len() {
        format!(
            " (evaluation scores the first {}: data.max_eval_samples)",
            scored.len()
        )
    } else {
        String::new()
    };
    crate::errln!(
        "data: {} training rows, {} validation rows{scored_note}, ready in {:.2} s",
        data.train.len(),
        data.valid.len(),
        data_start.elapsed().as_secs_f64()
    );
    // 5% of a large corpus is held out by default and scored whole (HF's defaults), at every
    // evaluation and at the last step: minutes of a short run can go there.
    if scored.len() > LARGE_EVAL_ROWS {
        crate::errln!(
            "note: each evaluation scores {} held-out rows, as many as {} training steps see; \
             data.max_eval_samples (HF's name) caps them, train.eval_every sets how often",
            scored.len(),
            scored.len() as u64 / (t.batch_size as u64 * t.grad_accum_steps as u64).max(1)
        );
    }
    // The stream wraps around the rows, so a step of more rows than there are repeats some.
    let step_rows = (t.batch_size as u64).saturating_mul(t.grad_accum_steps as u64);
    if step_rows > data.train.len() as u64 {
        crate::errln!(
            "note: a step takes {step_rows} rows (train.batch_size × train.grad_accum_steps) but \
             the corpus gives {} training rows, so each step sees some rows more than once; add \
             text or lower train.batch_size",
            data.train.len()
        );
    }
    let corruption = corruption(cfg, &tok);
    crate::eval::ensure_something_to_score(
        &scored,
        corruption.table.clone(),
        corruption.specials,
        t.batch_size,
        crate::eval::HELD_OUT_TEXT,
        scored.len() < data.valid.len(),
    )?;
    let examples = fill_mask_examples(cfg, &tok, &corruption.table, &data.train.store)?;
    let device = device_info(t.backend, &base);
    crate::errln!("device: {device}");
    seed_device(&base, t.seed);
    let train_dev = base.clone().autodiff();
    let bert = BertConfig::new(&cfg.model, tok.vocab_size(), tok.specials().pad);
    let mut model = bert
        .init_seeded(t.seed, &train_dev)
        .with_precision(t.precision);
    if let Some(dir) = init_from {
        let record = checkpoint::read_record(&dir.join(checkpoint::MODEL_FILE))?;
        model = model
            .try_load_record(record)
            .map_err(|e| anyhow::anyhow!("--init-from: loading {}: {e:?}", dir.display()))?;
        checkpoint::check_finite(&model, &dir.join(checkpoint::MODEL_FILE))?;
        crate::errln!(
            "initialised from {} (fresh optimizer, step 0)",
            dir.display()
        );
    }
    let mut optim = optim::adamw(t);
    // The newest checkpoint on disk: what a NaN stop keeps, and what the summary reports.
    let mut last_ckpt = std::path::PathBuf::new();
    // Which rows train and validate, recorded in each checkpoint and checked on resume.
    let fingerprint = data.fingerprint();
    let mut state = TrainState {
        step: 0,
        position: 0,
        elapsed_s: 0.0,
        version: env!("CARGO_PKG_VERSION").into(),
        scaler: scaler::LossScaler::for_precision(t.precision),
        data: Some(fingerprint.clone()),
        unlogged: Default::default(),
    };
    let tokenizer_json = tok.to_json()?;
    let config_toml = cfg.to_toml();
    // Held until training returns; taken before anything in out_dir is touched.
    let _lock = match early_lock {
        Some(lock) => lock,
        None => {
            std::fs::create_dir_all(&t.out_dir)
                .with_context(|| format!("creating {}", t.out_dir.display()))?;
            let lock = checkpoint::lock(&t.out_dir)?;
            // Another run may have made the folder, and trained into it, since the check above.
            refuse_checkpoints(&t.out_dir)?;
            lock
        }
    };
    checkpoint::remove_stale_temporaries(&t.out_dir)?;

    // Whether a row of this run said the device, whether the evaluation at the resumed step is
    // owed (a kill during the evaluation that follows a checkpoint lost it), and the last loss
    // logged.
    let (mut device_logged, mut owed_eval, mut last_loss) = (false, false, f64::NAN);
    if let Some(point) = resume_from {
        let dir = point.dir;
        let tok_path = dir.join(checkpoint::TOKENIZER_FILE);
        let saved_tok = crate::io::read_to_string_capped(&tok_path, crate::io::MAX_TOKENIZER_BYTES)
            .map_err(|e| {
                crate::error::UsageError::new(format!(
                    "--resume: cannot read {}: {e}; the checkpoint is incomplete (restore \
                         the file, or remove the folder to resume from the one before)",
                    tok_path.display()
                ))
            })?;
        if saved_tok != tokenizer_json {
            crate::usage!(
                "--resume: {} was trained with another tokenizer than tokenizer.path {}; point \
                 tokenizer.path at the run's tokenizer: the checkpoint keeps a copy, {} (copy it \
                 out first, as checkpoint folders are rotated)",
                dir.display(),
                cfg.tokenizer.path.display(),
                dir.join(checkpoint::TOKENIZER_FILE).display()
            );
        }
        let saved = point.state;
        if saved.data.as_ref().is_some_and(|d| *d != fingerprint) {
            crate::usage!(
                "--resume: the training or validation rows are not those {} was trained on (a \
                 file of data.train or data.valid changed, or another one is named): its stream \
                 position would point at other rows. Restore the corpus as it was, or start a new \
                 run from these weights with --init-from {} and another train.out_dir",
                dir.display(),
                dir.display()
            );
        }
        let record = checkpoint::read_record(&dir.join(checkpoint::MODEL_FILE))?;
        model = model
            .try_load_record(record)
            .map_err(|e| anyhow::anyhow!("loading {}: {e:?}", dir.display()))?;
        optim = optim
            .load(&model, &dir.join(checkpoint::OPTIMIZER_FILE))
            .with_context(|| format!("loading optimizer of {}", dir.display()))?;
        state = TrainState {
            data: Some(fingerprint.clone()),
            ..saved
        };
        (device_logged, owed_eval, last_loss) =
            (point.device_logged, point.owed_eval, point.last_loss);
        last_ckpt = dir.clone();
        metrics::truncate_after(&t.out_dir, state.step)?;
        crate::errln!(
            "resuming from {} (step {}, stream row {})",
            dir.display(),
            state.step,
            state.position
        );
    } else {
        metrics::truncate_after(&t.out_dir, 0)?;
    }
    if fresh_tokenizer {
        save_tokenizer(cfg, &tok)?;
    }

    // Batches are prepared on a background thread, two steps ahead, so the model never waits.
    let (accum, batch_size, seq_len) = (t.grad_accum_steps, t.batch_size, cfg.data.seq_len);
    let rows_per_step = (accum * batch_size) as u64;
    let train_rows = data.train.len() as f64;
    let (tx, rx) = sync_channel::<Result<Vec<Batch>>>(2);
    let mut stream = TrainStream::new(data.train.clone(), corruption.clone(), batch_size);
    let (first_step, first_pos, steps) = (state.step, state.position, t.steps);
    std::thread::spawn(move || {
        for s in first_step..steps {
            let pos = first_pos + (s - first_step) * rows_per_step;
            let micro = (0..accum as u64)
                .map(|m| stream.batch_at(pos + m * batch_size as u64))
                .collect::<Result<Vec<Batch>>>();
            // After an error (a damaged shard) there is nothing more to send.
            let failed = micro.is_err();
            if tx.send(micro).is_err() || failed {
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
            &scored,
            corruption.table.clone(),
            corruption.specials,
            batch_size,
            &base,
        )
    };
    let mut last_eval = None;
    if owed_eval {
        let r = valid_eval(&model)?;
        let what = "the interrupted run's evaluation";
        say(&bar, format!("step {}: eval {r} ({what})", state.step));
        log.eval(state.step, &r)?;
        last_eval = Some(r);
    }
    let start = Instant::now();
    let mut last_plain = start;
    let elapsed_before = state.elapsed_s;

    while state.step < steps {
        let step = state.step;
        let t0 = Instant::now();
        let micro = rx.recv().context("the batch thread stopped")??;
        // Dropout draws from the device generator (GPUs: from dropout's own seed stream),
        // reseeded per step so that a resumed run draws exactly what an uninterrupted one would.
        seed_device(&base, mix(t.seed ^ mix(step)));
        // As HF's Trainer: the schedule advances only with an update, so f16 steps skipped on
        // overflowing gradients hold it back (a run still ends after train.steps steps).
        let lr = schedule::learning_rate(step.saturating_sub(state.scaler.skipped_steps), t);
        let (next, report) = step::optimizer_step(
            model,
            &mut optim,
            &micro,
            lr,
            t.max_grad_norm,
            &mut state.scaler,
            &train_dev,
        );
        model = next;
        if report.outcome == Outcome::NonFinite {
            bar.abandon();
            let what = if report.loss.is_finite() {
                format!(
                    "the gradient norm became {} at step {} (loss {:.4})",
                    report.grad_norm,
                    step + 1,
                    report.loss
                )
            } else {
                format!("the loss became {} at step {}", report.loss, step + 1)
            };
            let what = if state.scaler.dynamic {
                format!(
                    "{what}, and the f16 loss scale reached {} after {} skipped steps",
                    state.scaler.scale, state.scaler.skipped_steps
                )
            } else {
                what
            };
            let kept = if last_ckpt.as_os_str().is_empty() {
                "No checkpoint was written yet".to_string()
            } else {
                format!("The last good checkpoint is kept ({})", last_ckpt.display())
            };
            // Before the first applied update (f16 skips overflowing steps) the weights are the
            // initial ones: no learning rate made them.
            let fix = if step <= state.scaler.skipped_steps {
                "Nothing was learned yet, so the cause is the model's settings or the data, not \
                 the learning rate: check [model] (a dropout probability p near 1 scales what it \
                 keeps by 1/(1 − p)), then restart"
            } else {
                "Lower train.learning_rate or raise train.warmup_steps (which --resume keeps): \
                 restart, or continue from a good checkpoint with `masklm train --init-from \
                 CHECKPOINT --set train.out_dir=NEW` and the new settings"
            };
            anyhow::bail!("{what}; stopping before the update. {kept}. {fix}");
        }
        state.step += 1;
        state.position += rows_per_step;
        state.elapsed_s = elapsed_before + start.elapsed().as_secs_f64();
        let u = &mut state.unlogged;
        u.steps += 1;
        u.seconds += t0.elapsed().as_secs_f64();
        if report.outcome == Outcome::Applied {
            (u.loss_sum, u.applied) = (u.loss_sum + report.loss, u.applied + 1);
            u.grad_norm = Some(report.grad_norm);
        }
        bar.set_position(state.step);

        let last = state.step == steps;
        // A step that selected nothing is logged with the others; one with no applied step
        // since the last row writes no row (there is no loss to report).
        if (last || state.step.is_multiple_of(t.logging_steps)) && state.unlogged.applied > 0 {
            let u = std::mem::take(&mut state.unlogged);
            let loss = u.loss_sum / u.applied as f64;
            let tokens = (u.steps * rows_per_step) as f64 * seq_len as f64;
            let tokens_per_sec = tokens / u.seconds;
            // The first row of the run's folder says what it ran on (every start prints it to
            // stderr).
            let first = (!std::mem::replace(&mut device_logged, true)).then_some(&device);
            let row = metrics::StepRow {
                step: state.step,
                // HF's fractional epoch: the training rows read so far over their count.
                epoch: state.position as f64 / train_rows,
                loss,
                lr,
                grad_norm: u.grad_norm.unwrap_or(f64::NAN),
                tokens_per_sec,
                elapsed_s: state.elapsed_s,
            };
            let scaler = state.scaler.dynamic.then_some(&state.scaler);
            log.step(&row, scaler, first)?;
            let scale = match scaler {
                Some(s) => format!(" scale {} skipped {}", s.scale, s.skipped_steps),
                None => String::new(),
            };
            let message = format!("loss {loss:.4} lr {lr:.2e} {tokens_per_sec:.0} tok/s{scale}");
            // Without a terminal (`train … | tee log`) the bar draws nothing: the same message
            // as a line, at most one every PLAIN_PROGRESS_EVERY, so that a log shows the run
            // moving between evaluations without a line per step.
            if bar.is_hidden() && (last || last_plain.elapsed() >= PLAIN_PROGRESS_EVERY) {
                crate::errln!("step {}/{steps}: {message}", state.step);
                last_plain = Instant::now();
            }
            bar.set_message(message);
            last_loss = loss;
        }

        // The checkpoint first: a run stopped during a long evaluation keeps its steps.
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
        if last || (t.eval_every > 0 && state.step.is_multiple_of(t.eval_every)) {
            let r = valid_eval(&model)?;
            say(&bar, format!("step {}: eval {r}", state.step));
            log.eval(state.step, &r)?;
            last_eval = Some(r);
        }
    }
    bar.finish();
    Ok(TrainSummary {
        final_step: state.step,
        last_loss,
        skipped_steps: state.scaler.skipped_steps,
        eval: last_eval,
        checkpoint: last_ckpt,
        examples,
    })
}
