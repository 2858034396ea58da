//! `masklm bench`: the JSON that bench/compare.py reads, and refused step counts (`--steps 0`,
//! a sum that overflows).

use crate::common;
use common::masklm;

#[test]
fn bench_json_reports_throughput_memory_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = ["bench", "--config", "configs/tiny.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(common::isolated(dir.path()));
    args.extend(["--steps", "3", "--warmup", "1", "--json"].map(String::from));
    let t0 = std::time::Instant::now();
    let run = masklm(&args).ok();
    let wall = t0.elapsed().as_secs_f64();
    let r: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    for key in ["tokens_per_sec", "sec_per_step", "peak_rss_mb", "last_loss"] {
        let v = r[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{key}: {}", r[key]);
    }
    assert_eq!(r["backend"], "flex");
    assert!(
        r["fusion"].is_null(),
        "no fusion on the CPU: {}",
        r["fusion"]
    );
    assert_eq!(r["device"]["backend"], "flex");
    assert!(
        r["device"]["adapter"].is_null(),
        "the CPU backends name no adapter"
    );
    assert_eq!(r["steps"], 3);
    let c = &r["config"];
    // configs/tiny.toml: batch 5 x 24, hidden 32, 2 layers, 4 heads, intermediate 37.
    assert_eq!(
        (c["hidden_size"].as_u64(), c["intermediate_size"].as_u64()),
        (Some(32), Some(37))
    );
    assert_eq!(
        (c["batch_size"].as_u64(), c["seq_len"].as_u64()),
        (Some(5), Some(24))
    );
    // The timed steps happen inside the process: their time cannot exceed its wall time.
    let timed = r["sec_per_step"].as_f64().unwrap() * 3.0;
    assert!(timed < wall, "3 steps of {timed} s in a {wall} s process");
    // Real training steps on a fresh model: the loss is near ln(vocab), the uniform guess.
    let uniform = (c["vocab_size"].as_u64().unwrap() as f64).ln();
    let loss = r["last_loss"].as_f64().unwrap();
    assert!(
        loss > 0.7 * uniform && loss < 1.3 * uniform,
        "last loss {loss} vs ln(vocab) {uniform}"
    );
}

/// On a GPU backend (lavapipe here) bench counts what burn's fusion processed per timed step.
#[cfg(feature = "vulkan")]
#[test]
fn bench_on_vulkan_reports_fusion_work_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = ["bench", "--config", "configs/tiny.toml"]
        .map(String::from)
        .into();
    args.extend(common::isolated(dir.path()));
    args.extend(["--set", "train.backend=\"vulkan\""].map(String::from));
    args.extend(["--steps", "2", "--warmup", "1", "--json"].map(String::from));
    let run = masklm(&args).ok();
    let r: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let (ops, blocks) = (
        r["fusion"]["operations"].as_f64().unwrap(),
        r["fusion"]["blocks"].as_f64().unwrap(),
    );
    // Two layers forward and backward, the gradient norm, clipping and AdamW over 42
    // parameters: 1,480 operations a step when written, 493 once AdamW, Σ g² and LayerNorm were
    // one operation per parameter each, about 200 once AdamW and Σ g² were one for all of them
    // and attention and the dense layers' backwards one each; each block runs at least one.
    assert!(ops > 100.0, "{ops} operations a step");
    assert!(
        blocks > 0.0 && blocks <= ops,
        "{blocks} blocks for {ops} operations"
    );
}

#[test]
fn bench_refuses_zero_steps_and_counts_that_overflow() {
    masklm(&["bench", "--config", "configs/tiny.toml", "--steps", "0"]).usage_error(&["--steps 0"]);
    let max = u64::MAX.to_string();
    masklm(&["bench", "--config", "configs/tiny.toml", "--steps", &max])
        .usage_error(&["--warmup 2 plus --steps", "overflows"]);
}

#[test]
fn steps_that_select_nothing_are_counted_not_fatal() {
    // Rows of four words, one a step: at 15%, some steps select no token and do no work.
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("short.txt");
    std::fs::write(&corpus, "the dog ran home\n".repeat(50)).unwrap();
    let mut args: Vec<String> = ["bench", "--config", "configs/tiny.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(common::isolated(dir.path()));
    for set in [
        format!("data.train=[{corpus:?}]"),
        "data.packing=line".into(),
        "train.batch_size=1".into(),
    ] {
        args.extend(["--set".into(), set]);
    }
    args.extend(["--steps", "10", "--warmup", "1", "--json"].map(String::from));
    let r: serde_json::Value = serde_json::from_str(masklm(&args).ok().stdout.trim()).unwrap();
    let idle = r["idle_steps"].as_u64().unwrap();
    assert!(idle > 0 && idle < 10, "{idle} idle of 10");
    assert!(r["last_loss"].as_f64().is_some_and(f64::is_finite), "{r}");
    // One token a row, half of them selected: with this seed the last of 4 steps selects none,
    // and last_loss is the loss of the step before it.
    let mut args: Vec<String> = ["bench", "--config", "configs/tiny.toml"]
        .map(String::from)
        .into();
    let other = tempfile::tempdir().unwrap();
    args.extend(common::isolated(other.path()));
    for set in ["train.batch_size=1", "data.seq_len=3", "data.mask_prob=0.5"] {
        args.extend(["--set".into(), set.into()]);
    }
    args.extend(["--steps", "4", "--warmup", "0", "--json"].map(String::from));
    let r: serde_json::Value = serde_json::from_str(masklm(&args).ok().stdout.trim()).unwrap();
    assert!(r["idle_steps"].as_u64().unwrap() > 0, "{r}");
    assert!(r["last_loss"].as_f64().is_some_and(f64::is_finite), "{r}");
}
