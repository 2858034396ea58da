//! wgpu and vulkan against flex: the same weights and batches give the same logits and training
//! losses. Without a GPU, both run on Mesa's software Vulkan (lavapipe, Debian
//! `mesa-vulkan-drivers`), which `.ci/run` installs; with the default `vulkan` feature built in,
//! both compile SPIR-V there (CubeCL's shared-memory kernels crashed lavapipe until
//! `patches/cubecl-spirv`).

use crate::common;

use burn::prelude::*;
use common::masklm;
use masklm::config::BackendName;
use std::path::Path;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn gpu(backend: BackendName) -> Device {
    masklm::train::device_for(backend, masklm::train::BackendKey::Config)
        .expect("these tests need a Vulkan adapter: apt-get install mesa-vulkan-drivers")
}

/// Logits [3, 9, 99] of a batch whose last row is partly padding.
fn logits(seed: u64, device: &Device) -> Vec<f32> {
    let model = common::tiny_bert(0.0).init_seeded(seed, device);
    let ids: Vec<i64> = (0..27).map(|i| (i * 37 % 94 + 5) as i64).collect();
    let mask: Vec<i64> = (0..27).map(|i| (i < 22) as i64).collect();
    let ids = Tensor::<1, Int>::from_ints(ids.as_slice(), device).reshape([3, 9]);
    let mask = Tensor::<1, Int>::from_ints(mask.as_slice(), device).reshape([3, 9]);
    model
        .forward(ids, mask)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// The logits of one seeded model on flex and on `backend` agree within 1e-4.
fn forward_matches_flex(backend: BackendName) {
    let d = max_abs_diff(&logits(3, &Device::flex()), &logits(3, &gpu(backend)));
    assert!(d < 1e-4, "max |flex - {backend}| logit = {d}");
}

#[test]
fn wgpu_forward_matches_flex_from_the_same_seed() {
    forward_matches_flex(BackendName::Wgpu);
}

#[cfg(feature = "vulkan")]
#[test]
fn vulkan_forward_matches_flex_from_the_same_seed() {
    forward_matches_flex(BackendName::Vulkan);
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect()
}

/// Six training steps of `configs/tiny.toml` without dropout on flex and on `gpu_backend`, from
/// one tokenizer and token store: their logged losses agree within 1e-3, and the first metrics
/// row names each device.
fn tiny_run_matches_flex(gpu_backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let run = |backend: &str| {
        let out = dir.path().join(backend);
        let mut args: Vec<String> = ["train", "--config", "configs/tiny.toml"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for s in [
            format!("train.backend={backend:?}"),
            format!("train.out_dir={out:?}"),
            // One tokenizer for both runs: training one is not bit-reproducible across runs.
            format!("tokenizer.path={:?}", dir.path().join("tokenizer.json")),
            format!("data.cache_dir={:?}", dir.path().join("cache")),
            // Dropout draws from each backend's own generator: switch it off to compare.
            "model.hidden_dropout_prob=0.0".into(),
            "model.attention_probs_dropout_prob=0.0".into(),
            "train.steps=6".into(),
            "train.eval_every=0".into(),
            "train.save_every=0".into(),
        ] {
            args.extend(["--set".into(), s]);
        }
        masklm(&args).ok();
        losses(&out)
    };
    let flex = run("flex");
    let gpu = run(gpu_backend);
    // The first metrics row says what each run computed on.
    let device = |backend: &str| -> serde_json::Value {
        let m = std::fs::read_to_string(dir.path().join(backend).join("metrics.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(m.lines().next().unwrap()).unwrap();
        first["device"].clone()
    };
    let (cpu, adapter) = (device("flex"), device(gpu_backend));
    assert_eq!(cpu["backend"], "flex");
    assert!(cpu["adapter"].is_null(), "{cpu}");
    assert_eq!(adapter["backend"], gpu_backend);
    assert!(
        adapter["adapter"].as_str().is_some_and(|n| !n.is_empty()),
        "{adapter}"
    );
    assert!(adapter["fingerprint"].is_string(), "{adapter}");
    // lavapipe offers no tensor cores, the CPU backend no GPU features at all.
    assert_eq!(
        adapter["cooperative_matrix"],
        serde_json::json!([]),
        "{adapter}"
    );
    assert!(cpu["cooperative_matrix"].is_null(), "{cpu}");
    assert_eq!(flex.len(), 6);
    assert_eq!(gpu.len(), 6);
    for (step, (a, b)) in flex.iter().zip(&gpu).enumerate() {
        assert!(
            (a - b).abs() < 1e-3,
            "step {}: flex {a} vs {gpu_backend} {b}",
            step + 1
        );
    }
    // Evaluation on the GPU (its selected positions padded to one shape, its sums read at the
    // end) scores the flex run's checkpoint as flex does.
    let flex_run = dir.path().join("flex");
    let eval = |backend: &str| -> serde_json::Value {
        let args = ["eval", "--checkpoint", flex_run.to_str().unwrap()];
        let out = masklm(&[&args[..], &["--backend", backend, "--json"]].concat()).ok();
        serde_json::from_str(&out.stdout).unwrap()
    };
    let (cpu, gpu) = (eval("flex"), eval(gpu_backend));
    let num = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    assert!(num(&cpu, "masked_tokens") > 100.0, "{cpu}");
    assert_eq!(cpu["masked_tokens"], gpu["masked_tokens"]);
    assert!(
        (num(&cpu, "loss") - num(&gpu, "loss")).abs() < 1e-3,
        "{cpu} vs {gpu}"
    );
    // A near tie between two tokens may rank them the other way round on another device.
    for k in ["accuracy", "top5_accuracy"] {
        assert!(
            (num(&cpu, k) - num(&gpu, k)).abs() < 0.01,
            "{k}: {cpu} vs {gpu}"
        );
    }
    // fill-mask on the GPU (its rows and masks padded to shared shapes) answers as flex does.
    let fill = |backend: &str| -> Vec<serde_json::Value> {
        let args = ["fill-mask", "--checkpoint", flex_run.to_str().unwrap()];
        let texts = ["a [MASK] .", "the [MASK] ran to the [MASK] ."];
        let out = masklm(&[&args[..], &texts, &["--backend", backend, "--json"]].concat()).ok();
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (cpu, gpu) = (fill("flex"), fill(gpu_backend));
    // [text][mask][rank] candidates; one mask's answer is its list alone, as HF's pipeline.
    let candidates = |answers: &[serde_json::Value]| -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        for a in answers {
            let lists = if a[0].is_array() {
                a.as_array().unwrap().clone()
            } else {
                vec![a.clone()]
            };
            all.extend(
                lists
                    .into_iter()
                    .flat_map(|l| l.as_array().unwrap().clone()),
            );
        }
        all
    };
    let (cpu, gpu) = (candidates(&cpu), candidates(&gpu));
    assert_eq!(cpu.len(), 3 * 5);
    assert_eq!(cpu.len(), gpu.len());
    for (a, b) in cpu.iter().zip(&gpu) {
        let d = (num(a, "score") - num(b, "score")).abs();
        // A near tie may swap two candidates' ranks; their scores agree by rank either way.
        assert!(d < 1e-4, "flex {a} vs {gpu_backend} {b}");
    }
}

#[test]
fn a_tiny_run_on_wgpu_logs_the_losses_of_the_same_run_on_flex() {
    tiny_run_matches_flex("wgpu");
}

#[cfg(feature = "vulkan")]
#[test]
fn a_tiny_run_on_vulkan_logs_the_losses_of_the_same_run_on_flex() {
    tiny_run_matches_flex("vulkan");
}

/// `train --config configs/tiny.toml` on wgpu, its files kept in `dir`, with `sets` added.
fn tiny_wgpu_train(dir: &Path, sets: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--config", "configs/tiny.toml"]
        .map(String::from)
        .into();
    args.extend(common::isolated(dir));
    for s in ["train.backend=\"wgpu\""].iter().chain(sets) {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args
}

#[test]
fn a_batch_llvmpipe_would_sum_wrongly_is_refused_before_any_work() {
    // 2,731 rows of 24 tokens: 65,544 tokens, past llvmpipe's 65,532.
    let dir = tempfile::tempdir().unwrap();
    let args = tiny_wgpu_train(dir.path(), &["train.batch_size=2731"]);
    masklm(&args).usage_error(&[
        "train.batch_size × data.seq_len = 65544 tokens",
        "llvmpipe",
        "use at most 65532 tokens a batch (train.grad_accum_steps",
    ]);
    assert!(!dir.path().join("tokenizer.json").exists() && !dir.path().join("run").exists());
}

#[test]
fn wgpu_without_any_adapter_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let args = tiny_wgpu_train(dir.path(), &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_masklm"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("BURN_DEVICE", "flex")
        // No Vulkan driver for the loader to find, and no EGL vendor for wgpu's GL fallback.
        .env("VK_ICD_FILENAMES", dir.path().join("none.json"))
        .env("VK_DRIVER_FILES", dir.path().join("none.json"))
        .env(
            "__EGL_VENDOR_LIBRARY_FILENAMES",
            dir.path().join("none.json"),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("could not start a device"), "{stderr}");
    assert!(stderr.contains("mesa-vulkan-drivers"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !dir.path().join("tokenizer.json").exists(),
        "the adapter is checked before any work"
    );
}

#[test]
fn wgpu_with_only_an_opengl_adapter_is_refused_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let args = tiny_wgpu_train(dir.path(), &[]);
    // No Vulkan driver, Mesa's OpenGL one left as it is: wgpu falls back to GL, where a run hung.
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_masklm"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("BURN_DEVICE", "flex")
        .env("VK_ICD_FILENAMES", dir.path().join("none.json"))
        .env("VK_DRIVER_FILES", dir.path().join("none.json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while run.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(300) {
            run.kill().unwrap();
            panic!("still running after 300 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Where the machine has no OpenGL driver either, this is the no-adapter refusal.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mesa-vulkan-drivers"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.path().join("tokenizer.json").exists());
}

#[test]
fn a_precision_the_adapter_does_not_compute_is_refused_before_any_work() {
    // burn's WGSL kernels store bf16 but do not compute it; lavapipe computes f16.
    let dir = tempfile::tempdir().unwrap();
    let args = tiny_wgpu_train(dir.path(), &["train.precision=bf16"]);
    masklm(&args).usage_error(&[
        "train.precision = \"bf16\": the wgpu device",
        "does not compute bf16",
        "use train.precision = \"f16\" or \"f32\"",
    ]);
    assert!(
        !dir.path().join("tokenizer.json").exists() && !dir.path().join("run").exists(),
        "refused before the tokenizer or the run folder"
    );
}
