//! Helpers shared by the end-to-end tests: run the real binary from the project root.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The text of `configs/tiny.toml`'s corpus.
pub fn tiny_corpus() -> String {
    std::fs::read_to_string(
        Path::new(ROOT).join("corpora/tinystories/tinystories-validation-head.txt"),
    )
    .unwrap()
}

pub fn masklm<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_masklm"))
        .args(args)
        .current_dir(ROOT)
        .env("BURN_DEVICE", "flex")
        .output()
        .expect("masklm runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "masklm failed:\n{}", self.stderr);
        self
    }

    /// A refused input: exit 2, a message containing each needle, and no panic.
    pub fn usage_error(self, needles: &[&str]) -> Run {
        assert_eq!(
            self.code, 2,
            "expected exit 2, got {}:\n{}",
            self.code, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "panic:\n{}", self.stderr);
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "message lacks {n:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// `--set` arguments that keep a test's tokenizer, cache and output inside `dir`.
pub fn isolated(dir: &Path) -> Vec<String> {
    vec![
        "--set".into(),
        format!("tokenizer.path={:?}", dir.join("tokenizer.json")),
        "--set".into(),
        format!("data.cache_dir={:?}", dir.join("cache")),
        "--set".into(),
        format!("train.out_dir={:?}", dir.join("run")),
    ]
}

/// HF's test sizes (vocab 99, hidden 32, intermediate 37, 4 heads, 2 layers), so a transposed
/// shape fails loudly.
pub fn tiny_bert(dropout: f64) -> masklm::model::BertConfig {
    masklm::model::BertConfig {
        vocab_size: 99,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 37,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        hidden_dropout_prob: dropout,
        attention_probs_dropout_prob: dropout,
        layer_norm_eps: 1e-12,
        initializer_range: 0.02,
        pad_token_id: 0,
    }
}

/// Every parameter of the checkpoint in `dir`, by name, as raw bytes. Compares weights bit for
/// bit without comparing the files, which also hold each parameter's random id.
pub fn checkpoint_tensors(dir: &Path) -> Vec<(String, Vec<u8>)> {
    use burn::store::ModuleSnapshot;
    let device = burn::prelude::Device::flex();
    let ck = masklm::train::checkpoint::load(dir, &device).expect("checkpoint loads");
    ck.model
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.to_bytes().expect("tensor bytes").to_vec()))
        .collect()
}

/// A batch of `rows` × `seq_len` with no tokens yet, for builders to push rows into.
pub fn empty_batch(rows: usize, seq_len: usize) -> masklm::data::batches::Batch {
    masklm::data::batches::Batch {
        batch_size: rows,
        seq_len,
        input_ids: vec![],
        attention_mask: vec![],
        labels: vec![],
        original_ids: vec![],
        selected: 0,
    }
}

/// `rows` rows of 16 tokens for a vocabulary of 99 (no padding), a quarter of them selected,
/// from a fixed pattern that `k` varies.
pub fn pattern_batch(rows: usize, k: usize) -> masklm::data::batches::Batch {
    let s = 16;
    let mut b = empty_batch(rows, s);
    for r in 0..rows {
        for i in 0..s {
            let id = if i == 0 {
                2
            } else {
                5 + ((r * 31 + i * 7 + k * 13) % 94) as u32
            };
            let selected = i > 0 && (i + r + k).is_multiple_of(4);
            b.original_ids.push(id);
            b.input_ids.push(if selected { 4 } else { id });
            b.attention_mask.push(1);
            b.labels.push(if selected {
                id as i32
            } else {
                masklm::data::masking::IGNORE_LABEL
            });
            b.selected += selected as usize;
        }
    }
    b
}

/// `n` seeded values `lo + (hi − lo)·u`, u uniform on [0, 1), from a local xorshift generator:
/// the device's is shared with the tests running beside the caller.
pub fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lo + (hi - lo) * ((x >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// A [rows, cols] tensor of [`uniform`] values in [-1, 1) on `device`.
pub fn seeded(
    device: &burn::prelude::Device,
    seed: u64,
    [rows, cols]: [usize; 2],
) -> burn::prelude::Tensor<2> {
    let v = uniform(rows * cols, seed, -1.0, 1.0);
    burn::prelude::Tensor::<1>::from_floats(v.as_slice(), device).reshape([rows, cols])
}

/// A dense layer `d_in` → `d_out` with a bias, its weight [`seeded`] from `seed` and its bias
/// from `seed + 1`.
pub fn seeded_linear(
    device: &burn::prelude::Device,
    seed: u64,
    d_in: usize,
    d_out: usize,
) -> burn::nn::Linear {
    use burn::module::Param;
    burn::nn::Linear {
        weight: Param::from_tensor(seeded(device, seed, [d_in, d_out])),
        bias: Some(Param::from_tensor(
            seeded(device, seed + 1, [1, d_out]).reshape([d_out]),
        )),
    }
}

/// `|a − b| ≤ rel·max(|a|, |b|) + abs`, element by element, naming `what` and the index.
pub fn assert_close(a: &[f32], b: &[f32], rel: f32, abs: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = rel * x.abs().max(y.abs()) + abs;
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y}");
    }
}

/// The Vulkan device the GPU tests compare with flex: lavapipe in CI.
#[cfg(feature = "vulkan")]
pub fn vulkan() -> burn::prelude::Device {
    masklm::train::device_for(
        masklm::config::BackendName::Vulkan,
        masklm::train::BackendKey::Config,
    )
    .expect("a Vulkan adapter (mesa-vulkan-drivers)")
}
