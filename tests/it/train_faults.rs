//! A run that dies keeps its work: SIGKILL in the middle of checkpoint writes, then `--resume`,
//! ends with the weights of an uninterrupted run; a NaN loss stops the run and keeps the last
//! good checkpoint.

use crate::common;
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

/// `masklm ARGS` in the background, output discarded (the caller kills it).
fn spawn(args: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_masklm"))
        .args(args)
        .current_dir(common::ROOT)
        .env("BURN_DEVICE", "flex")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
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

/// `MASKLM_KILLS` (default 5, as CI runs it; `MASKLM_KILLS=20` for the full proof):
/// `masklm train` is SIGKILLed that many times, every other kill inside a checkpoint write and
/// the others at a random moment after the attempt saved a checkpoint of its own, resumed with
/// `--resume` each time, and must end with the metrics and weights of an uninterrupted run.
#[test]
fn sigkill_during_checkpoint_writes_then_resume_ends_as_an_uninterrupted_run() {
    let kills_wanted: usize = std::env::var("MASKLM_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let steps = format!("train.steps={}", (8 * kills_wanted).max(40));
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // A checkpoint after every step, so that much of the run's time is spent writing them.
    let settings = [steps.as_str(), "train.save_every=1", "train.eval_every=0"];
    let args = train_args(dir.path(), &settings);
    // xorshift64, seeded from the clock (or MASKLM_KILL_SEED to replay a failure): the random
    // kill moments differ from run to run.
    let seed = std::env::var("MASKLM_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    // Printed with the test's output on failure (cargo test shows a failing test's stdout).
    println!("kill schedule: MASKLM_KILL_SEED={seed}");
    let mut rng = seed | 1;
    let mut random_ms = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };

    let (mut kills, mut kills_inside_a_write) = (0, 0);
    for attempt in 0..kills_wanted * 6 {
        if kills == kills_wanted {
            break;
        }
        let start_step = newest_step(&run);
        let mut a = args.clone();
        if masklm::train::checkpoint::latest(&run).unwrap().is_some() {
            a.push("--resume".into());
        }
        let mut child = spawn(&a);
        // Once this attempt has saved a checkpoint of its own (so every attempt makes progress),
        // kill either as soon as the next one is being written or after a random delay.
        let in_write = attempt % 2 == 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        let progressed = |run: &Path| newest_step(run) > start_step;
        while !(progressed(&run) && (!in_write || unfinished_checkpoint(&run).is_some()))
            && child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            // A short sleep, not a spin: the run being killed needs both cores. A checkpoint of
            // the tiny model takes milliseconds to write, so 200 µs polls still land inside one.
            std::thread::sleep(Duration::from_micros(200));
        }
        if !in_write {
            std::thread::sleep(Duration::from_millis(random_ms(40)));
        }
        if child.try_wait().unwrap().is_some() {
            break; // the run finished before another kill
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        if unfinished_checkpoint(&run).is_some() {
            kills_inside_a_write += 1;
        }
    }
    assert_eq!(kills, kills_wanted, "the run finished after {kills} kills");
    assert!(
        kills_inside_a_write >= kills_wanted / 2,
        "only {kills_inside_a_write} of {kills} kills landed inside a checkpoint write"
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
    let last = format!("run/checkpoint-{}", (8 * kills_wanted).max(40));
    let weights = |d: &Path| common::checkpoint_tensors(&d.join(&last));
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
    // A diverged update is saved whole: its checksums match.
    masklm::train::checkpoint::write_checksums(&ck_dir).unwrap();

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

/// `path` with its last `n` bytes cut off, as a copy interrupted by a full disk leaves it.
fn truncate_by(path: &Path, n: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len - n).unwrap();
}

#[test]
fn a_damaged_checkpoint_is_named_and_resume_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ["train.save_every=2", "train.eval_every=0"];
    let with_steps = |n: &str| {
        let mut s = settings.to_vec();
        s.push(n);
        train_args(dir.path(), &s)
    };
    masklm(&with_steps("train.steps=4")).ok();
    let run = dir.path().join("run");
    let newest = run.join("checkpoint-4");
    truncate_by(&newest.join("model.bpk"), 100);

    // Inference refuses it, naming the file.
    masklm(&["eval".as_ref(), "--checkpoint".as_ref(), run.as_os_str()]).usage_error(&[
        "checkpoint-4/model.bpk",
        "damaged",
        "truncated or altered",
    ]);
    // An altered byte (same length) is caught as well.
    let opt = newest.join("optimizer.bpk");
    let mut bytes = std::fs::read(&opt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&opt, bytes).unwrap();

    // --resume warns and continues from checkpoint-2, and ends where an uninterrupted run ends.
    let mut args = with_steps("train.steps=6");
    args.push("--resume".into());
    let resumed = masklm(&args).ok();
    assert!(
        resumed.stderr.contains("checkpoint-4/model.bpk")
            && resumed.stderr.contains("falling back"),
        "{}",
        resumed.stderr
    );
    assert!(resumed.stderr.contains("resuming from") && resumed.stderr.contains("checkpoint-2"));

    let clean = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("tokenizer.json"),
        clean.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut s = settings.to_vec();
    s.push("train.steps=6");
    masklm(&train_args(clean.path(), &s)).ok();
    assert!(
        common::checkpoint_tensors(&run.join("checkpoint-6"))
            == common::checkpoint_tensors(&clean.path().join("run/checkpoint-6")),
        "the fallback run ends with the uninterrupted run's weights"
    );
}

#[test]
fn a_second_writer_is_refused_naming_the_first_and_a_killed_one_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let settings = [
        "train.steps=1000000",
        "train.save_every=0",
        "train.eval_every=0",
    ];
    let args = train_args(dir.path(), &settings);
    let mut first = spawn(&args);
    // The first run holds the lock once it has logged a step.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.join("metrics.jsonl").is_file()
        || std::fs::metadata(run.join("metrics.jsonl")).unwrap().len() == 0
    {
        assert!(Instant::now() < deadline, "the first run never started");
        assert!(first.try_wait().unwrap().is_none(), "the first run stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = first.id().to_string();
    let second =
        masklm(&args).usage_error(&["in use by another masklm train", &pid, "train.out_dir"]);
    assert!(
        !second.stderr.contains("training rows"),
        "refused before preparing any data:\n{}",
        second.stderr
    );

    first.kill().unwrap();
    first.wait().unwrap();
    // The dead process holds no lock (and saved nothing: save_every=0), so a new run starts.
    let mut short = train_args(
        dir.path(),
        &[
            "train.steps=2",
            "train.eval_every=0",
            "train.warmup_steps=0",
        ],
    );
    short.push("--set".into());
    short.push("train.save_every=0".into());
    masklm(&short).ok();
}

/// Runs `cmd` through `sh -c`; whether it succeeded.
fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A tmpfs mounted at a new folder, unmounted when dropped.
struct Tmpfs(String);

impl Tmpfs {
    /// Mounts `size` (`4m`) at `at`: needs root (or CAP_SYS_ADMIN), as CI and the dev machine
    /// have; `None` where it cannot.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir(at).unwrap();
        let m = at.display().to_string();
        sh(&format!("mount -t tmpfs -o size={size} tmpfs '{m}'")).then_some(Tmpfs(m))
    }

    fn read_only(&self) {
        assert!(sh(&format!("mount -o remount,ro '{}'", self.0)));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        sh(&format!("umount '{}'", self.0));
    }
}

#[test]
fn a_full_disk_or_read_only_out_dir_is_a_clear_error_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    let Some(small) = Tmpfs::mount(&mnt, "4m") else {
        println!("SKIPPED a_full_disk_or_read_only_out_dir…: cannot mount a tmpfs here");
        return;
    };
    let m = small.0.clone();

    let out = mnt.join("run");
    let with = |steps: &str, resume: bool| {
        let settings = [
            steps,
            "train.save_every=1",
            "train.eval_every=0",
            "train.warmup_steps=0",
        ];
        let mut a = train_args(dir.path(), &settings);
        a.push("--set".into());
        a.push(format!("train.out_dir={out:?}"));
        if resume {
            a.push("--resume".into());
        }
        a
    };
    masklm(&with("train.steps=2", false)).ok();
    let ck2 = out.join("checkpoint-2");
    masklm::train::checkpoint::verify(&ck2).unwrap();

    // Fill the disk, then ask for two more steps.
    sh(&format!("dd if=/dev/zero of='{m}/filler' bs=64k"));
    let full = masklm(&with("train.steps=4", true));
    assert_eq!(full.code, 1, "{}", full.stderr);
    assert!(!full.stderr.contains("panicked"), "{}", full.stderr);
    assert!(
        full.stderr.contains("No space left on device"),
        "{}",
        full.stderr
    );
    masklm::train::checkpoint::verify(&ck2).expect("checkpoint-2 intact");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");

    // Read-only: refused before any work, as bad input.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    small.read_only();
    let ro = masklm(&with("train.steps=4", true));
    ro.usage_error(&["train.out_dir", "cannot write in", "Read-only file system"]);
    masklm::train::checkpoint::verify(&ck2).expect("checkpoint-2 intact");
}

#[test]
fn a_read_only_cache_serves_its_current_stores_and_refuses_to_build_one() {
    let dir = tempfile::tempdir().unwrap();
    // `common::isolated` puts the token stores in dir/cache.
    let Some(cache) = Tmpfs::mount(&dir.path().join("cache"), "16m") else {
        println!("SKIPPED a_read_only_cache…: cannot mount a tmpfs here");
        return;
    };
    let steps = [
        "train.steps=2",
        "train.eval_every=0",
        "train.warmup_steps=0",
    ];
    masklm(&train_args(dir.path(), &steps)).ok();
    cache.read_only();

    let run = dir.path().join("run");
    let run = run.to_str().unwrap();
    let scored = masklm(&["eval", "--checkpoint", run, "--json"]).ok();
    assert!(
        scored.stdout.contains("\"masked_tokens\""),
        "{}",
        scored.stdout
    );
    let mut preview: Vec<String> = ["data", "preview", "--config", "configs/tiny.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    preview.extend(common::isolated(dir.path()));
    preview.extend(["--batches".into(), "1".into()]);
    let shown = masklm(&preview).ok();
    assert!(shown.stdout.contains("[CLS]"), "{}", shown.stdout);

    // Text with no store there is refused before it is read.
    let other = dir.path().join("other.txt");
    std::fs::write(&other, common::tiny_corpus().to_uppercase()).unwrap();
    let eval_of = |corpus: &Path| {
        masklm(&[
            "eval",
            "--checkpoint",
            run,
            "--corpus",
            corpus.to_str().unwrap(),
        ])
    };
    eval_of(&other).usage_error(&[
        "data.cache_dir",
        "cannot write in",
        "Read-only file system",
        "the token store of --corpus",
        "would have to be built",
    ]);
    // A path that is not there is named as such, not as the cache's fault.
    eval_of(&dir.path().join("missing.txt")).usage_error(&["--corpus", "missing.txt"]);
}

#[test]
fn a_run_whose_stderr_reader_has_gone_trains_on() {
    let dir = tempfile::tempdir().unwrap();
    let steps = [
        "train.steps=3",
        "train.eval_every=0",
        "train.warmup_steps=0",
    ];
    let mut run = Command::new(env!("CARGO_BIN_EXE_masklm"))
        .args(train_args(dir.path(), &steps))
        .current_dir(common::ROOT)
        .env("BURN_DEVICE", "flex")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `masklm train 2>&1 | head -1` once head has gone: every message meets a closed pipe.
    drop(run.stderr.take());
    let status = run.wait().unwrap();
    assert!(status.success(), "{status:?}");
    masklm::train::checkpoint::verify(&dir.path().join("run/checkpoint-3")).unwrap();
}
