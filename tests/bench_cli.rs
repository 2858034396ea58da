//! `masklm bench`: the JSON that bench/compare.py reads, and a refused `--steps 0`.

mod common;
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
    let run = masklm(&args).ok();
    let r: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    for key in ["tokens_per_sec", "sec_per_step", "peak_rss_mb", "last_loss"] {
        let v = r[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{key}: {}", r[key]);
    }
    assert_eq!(r["backend"], "flex");
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
    let tokens = 5.0 * 24.0;
    let implied = tokens / r["sec_per_step"].as_f64().unwrap();
    let reported = r["tokens_per_sec"].as_f64().unwrap();
    assert!(
        (implied / reported - 1.0).abs() < 1e-9,
        "{implied} vs {reported}"
    );
    assert!(r["data_share"].as_f64().unwrap() < 1.0);
}

#[test]
fn bench_refuses_zero_steps() {
    masklm(&["bench", "--config", "configs/tiny.toml", "--steps", "0"]).usage_error(&["--steps 0"]);
}
