//! Checkpoints: `out_dir/checkpoint-{step}/` holding model.bpk, optimizer.bpk, state.json,
//! config.toml and tokenizer.json.
//!
//! A checkpoint is written into a hidden temporary folder, every file synced, then renamed into
//! place in one step: a crash or kill at any instant leaves either no new checkpoint or a whole
//! one, and the previous checkpoint untouched. `checksums.json` records the BLAKE3 hash of every
//! other file, so a checkpoint damaged later (a truncated copy, a bad disk) is reported by file
//! name instead of being loaded as garbage; `--resume` then falls back to an older one. One
//! writer per run folder: training holds an advisory lock on `out_dir/.train.lock`. The learning-rate schedule and the dropout
//! generator are pure functions of (seed, step), and the data position of the step, so `step`
//! and `position` are all the state a resume needs beyond weights and optimizer moments.

use crate::model::BertForMaskedLM;
use crate::train::optimizer::AdamWOptimizer;
use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.toml";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const CHECKSUMS_FILE: &str = "checksums.json";
pub const LOCK_FILE: &str = ".train.lock";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Rows of the training stream consumed: the next batch starts here.
    pub position: u64,
    /// Wall-clock seconds of training so far, across resumes.
    pub elapsed_s: f64,
    /// The masklm version that wrote it.
    pub version: String,
    /// The f16 loss scaler's state (off in f32 and bf16 runs, and in checkpoints from before it).
    #[serde(default)]
    pub scaler: crate::train::scaler::LossScaler,
    /// [`crate::data::Datasets::fingerprint`] of the rows the run trains on; `None` in imported
    /// checkpoints and in those from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The steps since the last metrics row, which the next row averages over: saved so that a
    /// resumed run writes the rows an uninterrupted one does.
    #[serde(default)]
    pub unlogged: Unlogged,
}

/// What the next metrics row averages over (HF logs the mean loss since the last row).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unlogged {
    /// Optimizer steps, and those of them applied (not skipped by the f16 loss scaler).
    pub steps: u64,
    pub applied: u64,
    /// The applied steps' losses, summed.
    pub loss_sum: f64,
    /// The steps' seconds alone, evaluations and checkpoints excluded, for tokens_per_sec.
    pub seconds: f64,
    /// The last applied step's gradient norm.
    pub grad_norm: Option<f64>,
}

pub struct Saved<'a> {
    pub model: &'a BertForMaskedLM,
    pub optimizer: &'a AdamWOptimizer,
    pub state: &'a TrainState,
    pub config_toml: &'a str,
    pub tokenizer_json: &'a str,
}

pub fn dir_name(step: u64) -> String {
    format!("checkpoint-{step}")
}

/// Finds the first parameter (by module path, e.g. `bert.embeddings.word_embeddings.weight`)
/// holding a NaN or infinite value.
#[derive(Default)]
struct NonFinite {
    path: Vec<String>,
    found: Option<String>,
}

impl ModuleVisitor for NonFinite {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if self.found.is_none() && !p.val().is_finite().all().into_scalar::<bool>() {
            self.found = Some(self.path.join("."));
        }
    }
}

/// The path of the first parameter of `model` that is not finite everywhere.
pub fn first_non_finite(model: &BertForMaskedLM) -> Option<String> {
    let mut v = NonFinite::default();
    model.visit(&mut v);
    v.found
}

/// Refuses weights read from `file` that hold a NaN or an infinity (an import of a diverged
/// model, a file damaged where no checksum covers it): everything downstream would run on them
/// without a word (fill-mask's scores, eval's loss, an export) or blame the training settings.
pub fn check_finite(model: &BertForMaskedLM, file: &Path) -> Result<()> {
    match first_non_finite(model) {
        None => Ok(()),
        Some(param) => Err(crate::error::UsageError::new(format!(
            "{}: parameter {param} holds NaN or infinite values; use weights that are finite \
             everywhere (an earlier checkpoint of the run that made these)",
            file.display()
        ))
        .into()),
    }
}

/// Writes checkpoint `s.state.step` atomically and keeps the newest `keep`. A model with a
/// non-finite weight is refused before anything is written: no checkpoint ever holds one.
pub fn save(out_dir: &Path, s: &Saved, keep: usize) -> Result<PathBuf> {
    if let Some(param) = first_non_finite(s.model) {
        anyhow::bail!(
            "not saving checkpoint {} of {}: parameter {param} holds NaN or infinite values",
            s.state.step,
            out_dir.display()
        );
    }
    let final_dir = out_dir.join(dir_name(s.state.step));
    let tmp = out_dir.join(format!(
        ".{}.tmp-{}",
        dir_name(s.state.step),
        std::process::id()
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let write = || -> Result<()> {
        s.model
            .clone()
            .save_file(tmp.join(MODEL_FILE))
            .map_err(|e| anyhow::anyhow!("saving model: {e:?}"))?;
        s.optimizer
            .save(s.model, &tmp.join(OPTIMIZER_FILE))
            .context("saving optimizer")?;
        fs::write(tmp.join(STATE_FILE), serde_json::to_string_pretty(s.state)?)?;
        fs::write(tmp.join(CONFIG_FILE), s.config_toml)?;
        fs::write(tmp.join(TOKENIZER_FILE), s.tokenizer_json)?;
        write_checksums(&tmp)?;
        for f in fs::read_dir(&tmp)? {
            File::open(f?.path())?.sync_all()?;
        }
        // Saving again at a step that already has a checkpoint (a resumed run that was already
        // finished) replaces it; the old one is first renamed out of the way, so a kill between
        // the two renames leaves a temporary that the next start removes, never a half folder.
        if final_dir.exists() {
            let old = trash_name(out_dir, &final_dir);
            fs::rename(&final_dir, &old)?;
            fs::rename(&tmp, &final_dir)?;
            remove_or_warn(&old, &final_dir);
        } else {
            fs::rename(&tmp, &final_dir)?;
        }
        File::open(out_dir)?.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e.context(format!("writing checkpoint {}", final_dir.display())));
    }
    prune(out_dir, keep, &final_dir)?;
    Ok(final_dir)
}

/// Checkpoint folders of `out_dir`, oldest first.
pub fn list(out_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    if !out_dir.is_dir() {
        return Ok(found);
    }
    for entry in fs::read_dir(out_dir)? {
        let path = entry?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("checkpoint-"))
            .and_then(|n| n.parse::<u64>().ok());
        if let (Some(step), true) = (step, path.join(STATE_FILE).is_file()) {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

pub fn latest(out_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(out_dir)?.pop().map(|(_, p)| p))
}

/// `out_dir/.NAME.trash-PID`: where a checkpoint folder goes before it is deleted.
fn trash_name(out_dir: &Path, dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    out_dir.join(format!(".{name}.trash-{}", std::process::id()))
}

/// Deletes all but the newest `keep` checkpoints up to `written`, the one just saved, which is
/// always kept. Checkpoints past it are damaged ones the run fell back from (`latest_valid`):
/// left alone, replaced when the run reaches their step. Each is renamed to a hidden name first
/// (one atomic step), so a kill during the deletion never leaves a half-deleted `checkpoint-N`.
/// A checkpoint that cannot be removed (write-protected) is kept with a warning: the new one is
/// saved, so the run goes on.
fn prune(out_dir: &Path, keep: usize, written: &Path) -> Result<()> {
    let all = list(out_dir)?;
    let Some(&(newest, _)) = all.iter().find(|(_, dir)| dir == written) else {
        return Ok(());
    };
    let older: Vec<&PathBuf> = all
        .iter()
        .filter(|(step, _)| *step < newest)
        .map(|(_, dir)| dir)
        .collect();
    for old in older.iter().take((older.len() + 1).saturating_sub(keep)) {
        let trash = trash_name(out_dir, old);
        match fs::rename(old, &trash) {
            Ok(()) => remove_or_warn(&trash, old),
            Err(e) => crate::errln!(
                "warning: old checkpoint {} cannot be removed ({e}); it is kept",
                old.display()
            ),
        }
    }
    Ok(())
}

/// Removes `trash`, the renamed `was`; on failure says so and renames it back where it can, so
/// nothing is hidden.
fn remove_or_warn(trash: &Path, was: &Path) {
    if let Err(e) = fs::remove_dir_all(trash) {
        let back = if was.exists() {
            trash
        } else if fs::rename(trash, was).is_ok() {
            was
        } else {
            trash
        };
        crate::errln!(
            "warning: old checkpoint {} cannot be removed ({e}); it is kept as {}",
            was.display(),
            back.display()
        );
    }
}

/// Removes what killed writers left behind in `out_dir`: hidden `.checkpoint-N.tmp-PID`
/// (unfinished) and `.checkpoint-N.trash-PID` (being deleted) folders. Called when a run starts,
/// before it writes anything.
pub fn remove_stale_temporaries(out_dir: &Path) -> Result<()> {
    if !out_dir.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(out_dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let stale = name.starts_with(".checkpoint-")
            && (name.contains(".tmp-") || name.contains(".trash-"));
        if stale
            && path.is_dir()
            && let Err(e) = fs::remove_dir_all(&path)
        {
            crate::errln!(
                "warning: the unfinished {} cannot be removed ({e}); remove it by hand",
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes `dir/checksums.json`: the BLAKE3 hash of every other file of the folder, by name.
pub fn write_checksums(dir: &Path) -> Result<()> {
    let mut sums = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if path.is_file() && name != CHECKSUMS_FILE {
            let sum = hash_file(&path).with_context(|| format!("reading {}", path.display()))?;
            sums.insert(name, sum);
        }
    }
    fs::write(
        dir.join(CHECKSUMS_FILE),
        serde_json::to_string_pretty(&sums)?,
    )
    .with_context(|| format!("writing {}", dir.join(CHECKSUMS_FILE).display()))
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Checks every file listed in `dir/checksums.json`; the error names the first file that is
/// missing or whose content changed. A folder without checksums.json (written before masklm
/// recorded them) is accepted as it is; one whose checksums.json cannot be read is not.
pub fn verify(dir: &Path) -> Result<()> {
    let list = dir.join(CHECKSUMS_FILE);
    let text = match fs::read_to_string(&list) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(damaged(&list, &format!("it cannot be read ({e})"))),
    };
    let sums: std::collections::BTreeMap<String, String> = serde_json::from_str(&text)
        .map_err(|e| damaged(&list, &format!("it is not a checksum list ({e})")))?;
    for (name, expected) in &sums {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(damaged(&path, "it is missing"));
        }
        let sum = hash_file(&path).map_err(|e| {
            crate::error::UsageError::new(format!(
                "checkpoint file {} cannot be read ({e}); make it readable, or use another \
                 checkpoint",
                path.display()
            ))
        })?;
        if &sum != expected {
            return Err(damaged(
                &path,
                "its content does not match checksums.json (truncated or altered)",
            ));
        }
    }
    Ok(())
}

fn damaged(path: &Path, why: &str) -> anyhow::Error {
    crate::error::UsageError::new(format!(
        "checkpoint file {} is damaged: {why}; use another checkpoint (an older checkpoint-N of \
         the run), or retrain",
        path.display()
    ))
    .into()
}

/// The newest checkpoint of `out_dir` that passes [`verify`], with one warning per newer one
/// that does not (printed to stderr, naming the damaged file).
pub fn latest_valid(out_dir: &Path) -> Result<Option<PathBuf>> {
    for (_, dir) in list(out_dir)?.into_iter().rev() {
        match verify(&dir) {
            Ok(()) => return Ok(Some(dir)),
            Err(e) => crate::errln!("warning: {e:#}; falling back to the previous checkpoint"),
        }
    }
    Ok(None)
}

/// An exclusive, advisory lock on a run folder, held while this value lives. The kernel drops
/// it when the process dies, however it dies, so a crashed run never blocks the next one.
pub struct RunLock {
    _file: File,
}

/// Takes `out_dir`'s writer lock, or refuses naming the process that holds it.
pub fn lock(out_dir: &Path) -> Result<RunLock> {
    use std::io::{Read, Seek, Write};
    let path = out_dir.join(LOCK_FILE);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            file.read_to_string(&mut pid).ok();
            let pid = pid.trim();
            crate::usage!(
                "{} is in use by another masklm train (process {}); wait for it to finish or stop \
                 it (kill {}), or choose another train.out_dir",
                out_dir.display(),
                if pid.is_empty() { "unknown" } else { pid },
                if pid.is_empty() { "PID" } else { pid }
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(anyhow::Error::new(e).context(format!("locking {}", path.display())));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(RunLock { _file: file })
}

pub fn read_state(dir: &Path) -> Result<TrainState> {
    let p = dir.join(STATE_FILE);
    let text = crate::io::read_to_string_capped(&p, crate::io::MAX_SETTINGS_BYTES)
        .with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// A checkpoint folder from `DIR`: `DIR` itself when it holds a model, else the newest
/// checkpoint of the run folder `DIR`.
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    if dir.join(MODEL_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    if dir.is_file() {
        crate::usage!(
            "checkpoint {} is a file; give a run folder (train.out_dir) or one of its \
             checkpoint-N folders",
            dir.display()
        );
    }
    if !dir.is_dir() {
        return Err(crate::error::UsageError::new(format!(
            "checkpoint {} does not exist; give a run folder (train.out_dir) or one of its checkpoint-N folders",
            dir.display()
        ))
        .into());
    }
    let hf_weights = ["model.safetensors", "pytorch_model.bin"];
    if dir.join("config.json").is_file() && hf_weights.iter().any(|w| dir.join(w).is_file()) {
        crate::usage!(
            "{0} is a Hugging Face folder, not a masklm checkpoint; turn it into one with \
             masklm import --hf {0} --out CHECKPOINT_DIR, then give that folder",
            dir.display()
        );
    }
    latest(dir)?.ok_or_else(|| {
        crate::error::UsageError::new(format!(
            "{} holds no checkpoint (no {MODEL_FILE}, no checkpoint-N folder); train first or give a checkpoint folder",
            dir.display()
        ))
        .into()
    })
}

/// What inference needs from a checkpoint folder: its config, its tokenizer and its weights
/// in eval mode on `device`.
pub struct Loaded {
    pub dir: PathBuf,
    pub config: crate::config::Config,
    pub tokenizer: crate::tokenizer::BertTokenizer,
    pub model: BertForMaskedLM,
    /// The optimizer steps its weights were trained for: 0 for an imported or untrained model.
    pub step: u64,
}

impl Loaded {
    /// The row length masklm trained these weights on; `None` at step 0 (imported weights
    /// bring their positions from elsewhere, and untrained ones know none).
    pub fn trained_len(&self) -> Option<usize> {
        (self.step > 0).then_some(self.config.data.seq_len)
    }

    /// The sizes of its model: its config's `[model]` over its tokenizer.
    pub fn bert_config(&self) -> crate::model::BertConfig {
        let pad = self.tokenizer.specials().pad;
        crate::model::BertConfig::new(&self.config.model, self.tokenizer.vocab_size(), pad)
    }
}

/// The config a checkpoint folder was trained with (its `config.toml`).
pub fn read_config(dir: &Path) -> Result<crate::config::Config> {
    let path = dir.join(CONFIG_FILE);
    let text = crate::io::read_to_string_capped(&path, crate::io::MAX_SETTINGS_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    crate::config::Config::from_toml_str(&text, &crate::config::Source::File(path), &[])
}

/// `cfg` with `model.vocab_size` as the checkpoint `dir` wrote it in `saved` when both give the
/// word embedding the same rows over the checkpoint's tokenizer (0 and its id count are the same
/// embedding), so that comparing `cfg` with `saved` shows only real differences.
pub fn with_saved_rows(
    cfg: &crate::config::Config,
    saved: &crate::config::Config,
    dir: &Path,
) -> Result<crate::config::Config> {
    let ids = crate::tokenizer::BertTokenizer::load(&dir.join(TOKENIZER_FILE))?.vocab_size();
    let mut cfg = cfg.clone();
    if cfg.model.same_rows(&saved.model, ids) {
        cfg.model.vocab_size = saved.model.vocab_size;
    }
    Ok(cfg)
}

pub fn load(dir: &Path, device: &burn::prelude::Device) -> Result<Loaded> {
    let dir = resolve(dir)?;
    load_resolved(&dir, device).map_err(|e| {
        if dir.is_dir() {
            return e;
        }
        crate::error::UsageError::new(format!(
            "checkpoint {} was removed while it was being read (its run is still training and \
             keeps only its newest train.keep_checkpoints); run the command again, or give a \
             checkpoint the run no longer rotates (a copy)",
            dir.display()
        ))
        .into()
    })
}

/// A module record read whole into memory. burn's `try_load_file` maps the file and reads each
/// tensor when it is first used, so a checkpoint deleted meanwhile (a run rotating its
/// checkpoints under an eval) would fail later, inside a tensor operation, with a panic.
pub fn read_record(path: &Path) -> Result<burn::store::ModuleRecord> {
    let bad = |why: String| crate::error::UsageError::new(format!("{}: {why}", path.display()));
    let bytes = fs::read(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
    let bytes = burn::tensor::Bytes::from_bytes_vec(bytes);
    Ok(burn::store::ModuleRecord::from_bytes(bytes).map_err(|e| {
        bad(format!(
            "is not a burnpack weights file ({e:?}); use another checkpoint (an older \
                 checkpoint-N of the run), or retrain"
        ))
    })?)
}

fn load_resolved(dir: &Path, device: &burn::prelude::Device) -> Result<Loaded> {
    let dir = dir.to_path_buf();
    verify(&dir)?;
    let config = read_config(&dir)?;
    let tokenizer = crate::tokenizer::BertTokenizer::load(&dir.join(TOKENIZER_FILE))?
        .with_clean_up_tokenization_spaces(config.tokenizer.clean_up_tokenization_spaces);
    let tokenizer_name = dir.join(TOKENIZER_FILE).display().to_string();
    config
        .model
        .vocab_rows(tokenizer.vocab_size(), &tokenizer_name)?;
    let bert = crate::model::BertConfig::new(
        &config.model,
        tokenizer.vocab_size(),
        tokenizer.specials().pad,
    );
    let record = read_record(&dir.join(MODEL_FILE))?;
    let model = bert
        .init_for_load(device)
        .try_load_record(record)
        .map_err(|e| {
            // burn lists every tensor that does not fit: the first few say enough.
            let why = format!("{e:?}");
            let mut shown: String = why.chars().take(400).collect();
            if shown.len() < why.len() {
                shown.push('…');
            }
            crate::error::UsageError::new(format!(
                "{} does not fit this checkpoint's config.toml and tokenizer (vocab {}): {shown}; \
                 restore the config.toml it was saved with, or use another checkpoint",
                dir.join(MODEL_FILE).display(),
                bert.vocab_size
            ))
        })?;
    check_finite(&model, &dir.join(MODEL_FILE))?;
    let step = read_state(&dir).map_or(0, |s| s.step);
    Ok(Loaded {
        dir,
        config,
        tokenizer,
        model,
        step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_f64_in_state_json_reads_back_as_written() {
        // serde_json's default parser gave 10.4004168510437 for this loss sum (one ulp off),
        // and a resumed run's next logged loss then differed from the uninterrupted run's.
        for x in [10.400416851043701_f64, 5.258621374766032, 1e-300, 0.1 + 0.2] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x}");
        }
    }

    #[test]
    fn list_orders_by_step_and_ignores_partial_folders() {
        let dir = tempfile::tempdir().unwrap();
        for step in [20, 3, 100] {
            let d = dir.path().join(dir_name(step));
            fs::create_dir(&d).unwrap();
            fs::write(d.join(STATE_FILE), "{}").unwrap();
        }
        fs::create_dir(dir.path().join(".checkpoint-200.tmp-1")).unwrap();
        fs::create_dir(dir.path().join("checkpoint-300")).unwrap(); // no state.json
        let steps: Vec<u64> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![3, 20, 100]);
        prune(dir.path(), 2, &dir.path().join(dir_name(100))).unwrap();
        let steps: Vec<u64> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![20, 100]);
        remove_stale_temporaries(dir.path()).unwrap();
        assert!(!dir.path().join(".checkpoint-200.tmp-1").exists());
        assert!(dir.path().join(dir_name(100)).is_dir());
    }

    #[test]
    fn verify_checks_listed_files_and_accepts_only_a_missing_list() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("model.bpk"), "weights").unwrap();
        verify(d).unwrap(); // no list: a checkpoint from before masklm wrote one
        write_checksums(d).unwrap();
        verify(d).unwrap();
        fs::write(d.join("model.bpk"), "weightz").unwrap();
        let e = verify(d).unwrap_err().to_string();
        assert!(
            e.contains("model.bpk") && e.contains("does not match"),
            "{e}"
        );
        // A list that is there but cannot be read is no reason to skip the check.
        fs::remove_file(d.join(CHECKSUMS_FILE)).unwrap();
        fs::create_dir(d.join(CHECKSUMS_FILE)).unwrap();
        let e = verify(d).unwrap_err().to_string();
        assert!(
            e.contains(CHECKSUMS_FILE) && e.contains("cannot be read"),
            "{e}"
        );
    }

    #[test]
    fn pruning_keeps_the_checkpoint_just_written_and_leaves_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let steps = || -> Vec<u64> {
            list(dir.path())
                .unwrap()
                .into_iter()
                .map(|(s, _)| s)
                .collect()
        };
        // A run fell back from a damaged checkpoint-1000 to 500 and has just written 800.
        for step in [500, 800, 1000] {
            let d = dir.path().join(dir_name(step));
            fs::create_dir(&d).unwrap();
            fs::write(d.join(STATE_FILE), "{}").unwrap();
        }
        prune(dir.path(), 1, &dir.path().join(dir_name(800))).unwrap();
        assert_eq!(steps(), vec![800, 1000]);
        prune(dir.path(), 1, &dir.path().join(dir_name(800))).unwrap();
        assert_eq!(steps(), vec![800, 1000]);
    }
}
