//! A run that dies keeps its work: SIGKILL in the middle of checkpoint writes, then `--resume`,
//! ends with the weights of an uninterrupted run; a NaN loss stops the run and keeps the last
//! good checkpoint.

mod common;
use burn::module::Module;
use burn::prelude::*;
use common::masklm;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `train --config configs/tiny.toml` inside `dir`, with `extra` `--set` values.
fn train_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--config", "configs/tiny.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(common::isolated(dir));
    for s in extra {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args
}

/// The hidden folder a checkpoint is written into before it is renamed into place.
fn unfinished_checkpoint(run: &Path) -> Option<PathBuf> {
    std::fs::read_dir(run).ok()?.find_map(|e| {
        let p = e.ok()?.path();
        let name = p.file_name()?.to_string_lossy().into_owned();
        (name.starts_with(".checkpoint-") && name.contains(".tmp-")).then_some(p)
    })
}

/// The step of the newest complete checkpoint, 0 when there is none.
fn newest_step(run: &Path) -> u64 {
    masklm::train::checkpoint::list(run)
        .unwrap()
        .last()
        .map_or(0, |(step, _)| *step)
}

#[test]
fn sigkill_during_checkpoint_writes_then_resume_ends_as_an_uninterrupted_run() {
    const STEPS: &str = "train.steps=40";
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // A checkpoint after every step, so that most of the run's time is spent writing them.
    let settings = [STEPS, "train.save_every=1", "train.eval_every=0"];
    let args = train_args(dir.path(), &settings);

    let mut kills_inside_a_write = 0;
    for _attempt in 0..30 {
        if kills_inside_a_write == 5 {
            break;
        }
        let start_step = newest_step(&run);
        let mut a = args.clone();
        if masklm::train::checkpoint::latest(&run).unwrap().is_some() {
            a.push("--resume".into());
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_masklm"))
            .args(&a)
            .current_dir(common::ROOT)
            .env("BURN_DEVICE", "flex")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Once this attempt has saved a checkpoint of its own (so every attempt makes progress),
        // wait until the next one is being written, then kill (SIGKILL on Unix) at once.
        let deadline = Instant::now() + Duration::from_secs(120);
        let progressed = |run: &Path| newest_step(run) > start_step;
        while !(progressed(&run) && unfinished_checkpoint(&run).is_some())
            && child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            std::hint::spin_loop();
        }
        if child.try_wait().unwrap().is_some() {
            break; // the run finished before another write was caught
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if unfinished_checkpoint(&run).is_some() {
            kills_inside_a_write += 1;
        }
    }
    assert!(
        kills_inside_a_write >= 5,
        "only {kills_inside_a_write} kills landed inside a checkpoint write"
    );
    // Finish the run, then run the same config uninterrupted elsewhere.
    let mut a = args.clone();
    a.push("--resume".into());
    masklm(&a).ok();
    assert!(
        unfinished_checkpoint(&run).is_none(),
        "a resumed run removes what killed writers left"
    );
    // The same tokenizer: HF's WordPiece trainer may number tokens differently from run to run.
    let clean = tempfile::tempdir().unwrap();
    let tok = "tokenizer.json";
    std::fs::copy(dir.path().join(tok), clean.path().join(tok)).unwrap();
    masklm(&train_args(clean.path(), &settings)).ok();

    // Every row but the timings: steps, losses, learning rates, gradient norms, evaluations.
    let rows = |d: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("run/metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut row: serde_json::Value = serde_json::from_str(l).unwrap();
                let row_map = row.as_object_mut().unwrap();
                row_map.remove("tokens_per_sec");
                row_map.remove("elapsed_s");
                row
            })
            .collect()
    };
    let (killed, uninterrupted) = (rows(dir.path()), rows(clean.path()));
    assert_eq!(
        killed.len(),
        uninterrupted.len(),
        "metrics.jsonl row counts"
    );
    for (k, u) in killed.iter().zip(&uninterrupted) {
        assert_eq!(k, u, "metrics.jsonl rows differ");
    }
    let weights = |d: &Path| common::checkpoint_tensors(&d.join("run/checkpoint-40"));
    assert!(weights(clean.path()).len() > 10, "the model's parameters");
    assert!(
        weights(dir.path()) == weights(clean.path()),
        "killed and resumed weights differ from the uninterrupted run's"
    );
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        "train.save_every=1",
        "train.eval_every=0",
        "train.warmup_steps=0",
    ];
    let with_steps = |n: &str| {
        let mut s = settings.to_vec();
        s.push(n);
        train_args(dir.path(), &s)
    };
    masklm(&with_steps("train.steps=2")).ok();
    // Poison the newest checkpoint's weights (as a diverged update would): the word embeddings
    // become NaN, keeping their parameter id so the optimizer state still matches.
    let ck_dir = dir.path().join("run/checkpoint-2");
    let ck = masklm::train::checkpoint::load(&ck_dir, &Device::flex()).unwrap();
    let mut model = ck.model;
    let w = &mut model.bert.embeddings.word_embeddings.weight;
    *w = w.clone().map(|t| t.mul_scalar(f32::NAN));
    model.save_file(ck_dir.join("model.bpk")).unwrap();

    let mut args = with_steps("train.steps=4");
    args.push("--resume".into());
    let run = masklm(&args);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    for needle in [
        "the loss became NaN at step 3",
        "checkpoint-2",
        "learning_rate",
    ] {
        assert!(
            run.stderr.contains(needle),
            "lacks {needle:?}: {}",
            run.stderr
        );
    }
    let names: Vec<_> = std::fs::read_dir(dir.path().join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    assert!(
        names.contains(&"checkpoint-2".to_string()) && !names.contains(&"checkpoint-3".to_string()),
        "nothing is saved after the NaN: {names:?}"
    );
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["loss"].is_number())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2], "no row for the NaN step");
}
