//! The compute device of a run: picking it by backend name (a backend left out of the build, or
//! wgpu without an adapter, is a clear error), and describing it for the logs.

use crate::config::{BackendName, Precision};
use anyhow::Result;
use burn::prelude::*;
#[cfg(feature = "wgpu")]
use burn::tensor::DeviceKind;

/// The device of a backend name. A backend this binary was built without, or a GPU backend that
/// cannot start (no adapter, no driver, no NVRTC), is a clear error, not a panic.
pub fn device_for(backend: BackendName, key: BackendKey) -> Result<Device> {
    match backend {
        BackendName::Flex => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        BackendName::Ndarray => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        BackendName::Wgpu => {
            refuse_opengl(key)?;
            gpu_device(backend, key, Device::wgpu(DeviceKind::DefaultDevice))
        }
        #[cfg(feature = "vulkan")]
        BackendName::Vulkan => gpu_device(backend, key, Device::vulkan(DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        BackendName::Cuda => {
            cache_compiled_kernels();
            gpu_device(
                backend,
                key,
                Device::cuda(burn::tensor::DeviceIndex::Default),
            )
        }
        #[allow(unreachable_patterns)]
        other => {
            let (name, flex) = (key.naming(other), key.flex_instead());
            crate::usage!(
                "{name} is not in this build of masklm; rebuild with `cargo build --release \
                 --features {other}` (on by default) or use {flex}"
            )
        }
    }
}

/// Where a backend was asked for, for messages: the config key (train, bench) or eval's flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKey {
    Config,
    Flag,
}

impl BackendKey {
    /// How the user named `backend` there: `train.backend = "cuda"`, `--backend cuda`.
    fn naming(self, backend: BackendName) -> String {
        match self {
            BackendKey::Flag => format!("--backend {backend}"),
            BackendKey::Config => format!("train.backend = \"{backend}\""),
        }
    }

    /// How to ask for the CPU backend instead: `--set train.backend=flex`, `--backend flex`.
    fn flex_instead(self) -> &'static str {
        match self {
            BackendKey::Flag => "--backend flex",
            BackendKey::Config => "--set train.backend=flex",
        }
    }
}

/// The device of `cfg`'s run, once every check that needs no data has passed: the backend is in
/// the build with an adapter, it computes `train.precision`, and the model and one micro-batch
/// can fit (the vocabulary is the existing `tokenizer.path`'s, or `tokenizer.vocab_size` for one
/// not trained yet). Train and bench call it first, so a refused run costs no minute of data
/// preparation.
pub fn checked_device(cfg: &crate::config::Config) -> Result<Device> {
    let t = &cfg.train;
    let device = device_for(t.backend, BackendKey::Config)?;
    check_precision(t.backend, &device, t.precision)?;
    let (batch, seq_len) = (t.batch_size, cfg.data.seq_len);
    check_batch_tokens(t.backend, &device, batch.saturating_mul(seq_len))?;
    // A tokenizer that does not load is reported, naming it, when the run loads it.
    let vocab_size = match crate::tokenizer::BertTokenizer::load(&cfg.tokenizer.path) {
        Ok(tok) => {
            let path = cfg.tokenizer.path.display().to_string();
            cfg.model.vocab_rows(tok.vocab_size(), &path)?
        }
        Err(_) => cfg.tokenizer.vocab_size,
    };
    let sizes = crate::model::BertConfig::new(&cfg.model, vocab_size, 0);
    check_model_fits(t.backend, &sizes)?;
    check_batch_fits(t.backend, &sizes, t.precision, Pass::Train, batch, seq_len)?;
    Ok(device)
}

/// Refuses `precision` on a device that cannot compute it (bf16 on burn's Vulkan and WGSL
/// kernels, f16 on an adapter without shader-f16), naming what the device does compute.
pub fn check_precision(backend: BackendName, device: &Device, precision: Precision) -> Result<()> {
    let Some(dtype) = precision.low() else {
        return Ok(());
    };
    if device.supports_dtype(dtype) {
        return Ok(());
    }
    let other = [Precision::F16, Precision::Bf16]
        .into_iter()
        .find(|p| *p != precision && p.low().is_some_and(|d| device.supports_dtype(d)))
        .map(|p| format!("\"{p}\" or "))
        .unwrap_or_default();
    let adapter = identity(device).0.unwrap_or_else(|| "CPU".into());
    crate::usage!(
        "train.precision = \"{precision}\": the {backend} device ({adapter}) does not compute \
         {precision}; use train.precision = {other}\"f32\""
    )
}

/// Seeds everything random in a training step on `device`: the device's generator and GPU
/// dropout's stream of call seeds (`model::dropout::seed`).
pub fn seed_device(device: &Device, seed: u64) {
    device.seed(seed);
    crate::model::dropout::seed(seed);
}

/// The most rows (tokens) a training micro-batch may have on llvmpipe (Mesa's software Vulkan,
/// lavapipe): llvmpipe ends every shader loop after 65,535 passes, counted over all the loops of
/// one invocation (`LP_MAX_TGSI_LOOP_ITERATIONS` in Mesa's gallivm), and burn's reduction over
/// the rows of a [rows, width] gradient (the bias and LayerNorm γ/β gradients) loops once per
/// row after three passes of its own, so it silently leaves out every row past the 65,532nd
/// (measured: sums of ones over [n, 3] stop at 65,532 for every n above).
pub const LLVMPIPE_MAX_BATCH_TOKENS: usize = 65_532;

/// Refuses a micro-batch of `tokens` rows that `device` would train wrongly: more than
/// [`LLVMPIPE_MAX_BATCH_TOKENS`] on llvmpipe. GPUs have no such limit.
pub fn check_batch_tokens(backend: BackendName, device: &Device, tokens: usize) -> Result<()> {
    let adapter = identity(device).0.unwrap_or_default();
    if tokens <= LLVMPIPE_MAX_BATCH_TOKENS || !adapter.starts_with("llvmpipe") {
        return Ok(());
    }
    crate::usage!(
        "train.batch_size × data.seq_len = {tokens} tokens: the {backend} device ({adapter}) \
         stops every shader loop after 65,535 passes, so the gradients summed over a batch's \
         tokens would silently leave some out; use at most {LLVMPIPE_MAX_BATCH_TOKENS} tokens a \
         batch (train.grad_accum_steps for larger batches), or a GPU"
    )
}

/// Refuses a model whose f32 parameters cannot fit in this machine's memory (a mistyped size
/// would otherwise abort in an allocation, or be killed for memory, after the data is ready):
/// every backend draws the initial weights on the CPU (4 bytes a parameter), and the CPU
/// backends keep weights, gradients and AdamW's two moments there (16). Activations come on
/// top, so this refuses only what cannot run at all.
pub fn check_model_fits(backend: BackendName, bert: &crate::model::BertConfig) -> Result<()> {
    let Some(memory) = physical_memory() else {
        return Ok(());
    };
    let params = bert.num_parameters();
    let on_cpu = backend.is_cpu();
    let (per_param, what) = if on_cpu {
        (16, "weights, gradients and AdamW's two moments in f32")
    } else {
        (4, "the f32 weights, drawn on the CPU")
    };
    let needed = params.saturating_mul(per_param);
    if needed <= memory {
        return Ok(());
    }
    let gb = |b: u64| b as f64 / 1e9;
    crate::usage!(
        "the model has {params} parameters (model.hidden_size {}, model.num_hidden_layers {}, \
         model.intermediate_size {}, a vocabulary of {}): {what} alone take {:.1} GB, more than \
         this machine's {:.1} GB of memory; choose smaller [model] sizes",
        bert.hidden_size,
        bert.num_hidden_layers,
        bert.intermediate_size,
        bert.vocab_size,
        gb(needed),
        gb(memory)
    )
}

/// What a batch runs for: training keeps every layer's activations for backward; evaluation
/// holds one layer's at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Train,
    Eval,
    /// A batch's rows alone, no model (`data preview`).
    Rows,
}

/// A lower bound on the memory one micro-batch of `batch_size` rows of `seq_len` tokens takes,
/// in bytes: its rows on the host (13 bytes a token: the corrupted and the original ids, the
/// labels, the mask) and, on the CPU backends, three activations of each layer training keeps
/// for backward (of one layer, for evaluation), in the precision of the products: the attention
/// probabilities [B, heads, S, S], the feed-forward's intermediate [B, S, intermediate] and the
/// layer's output [B, S, hidden]. What else a step holds (the other activations, gradients,
/// copies) comes on top.
pub fn batch_bytes_lower_bound(
    backend: BackendName,
    bert: &crate::model::BertConfig,
    precision: Precision,
    pass: Pass,
    batch_size: usize,
    seq_len: usize,
) -> u64 {
    let tokens = (batch_size as u64).saturating_mul(seq_len as u64);
    let host = tokens.saturating_mul(13);
    if !backend.is_cpu() {
        return host;
    }
    let element = if precision == Precision::F32 { 4 } else { 2 };
    let per_token_layer =
        (bert.num_attention_heads * seq_len + bert.intermediate_size + bert.hidden_size) as u64;
    let layers = match pass {
        Pass::Train => bert.num_hidden_layers as u64,
        Pass::Eval => 1,
        Pass::Rows => return host,
    };
    let kept = tokens
        .saturating_mul(per_token_layer)
        .saturating_mul(layers)
        .saturating_mul(element);
    host.saturating_add(kept)
}

/// Refuses a micro-batch that cannot run: more tokens than its flat positions can count (i32,
/// as the selected positions go to the device), or more memory than this machine has by
/// [`batch_bytes_lower_bound`] (a mistyped `train.batch_size` would otherwise spend minutes
/// building rows before an allocation aborts).
pub fn check_batch_fits(
    backend: BackendName,
    bert: &crate::model::BertConfig,
    precision: Precision,
    pass: Pass,
    batch_size: usize,
    seq_len: usize,
) -> Result<()> {
    let tokens = (batch_size as u64).saturating_mul(seq_len as u64);
    let (batch, fix) = match pass {
        Pass::Train | Pass::Rows => (
            format!(
                "train.batch_size {batch_size} × data.seq_len {seq_len} = {tokens} tokens a micro-batch"
            ),
            "lower train.batch_size (train.grad_accum_steps keeps the effective batch)",
        ),
        Pass::Eval => (
            format!(
                "an evaluation batch of {batch_size} rows (train.batch_size, or every row when \
                 fewer) × data.seq_len {seq_len} = {tokens} tokens"
            ),
            "lower it with eval --set train.batch_size=N",
        ),
    };
    if tokens > i32::MAX as u64 {
        crate::usage!("{batch}, more than the 2^31 - 1 positions one can address; {fix}");
    }
    let Some(memory) = physical_memory() else {
        return Ok(());
    };
    let needed = batch_bytes_lower_bound(backend, bert, precision, pass, batch_size, seq_len);
    if needed <= memory {
        return Ok(());
    }
    let what = match (backend.is_cpu(), pass) {
        (true, Pass::Train) => "its rows and the activations its layers keep for backward",
        (true, Pass::Eval) => "its rows and one layer's activations",
        (false, _) | (_, Pass::Rows) => "its rows on the host",
    };
    crate::usage!(
        "{batch}: {what} alone take at least {:.1} GB, more than this machine's {:.1} GB of \
         memory; {fix}",
        needed as f64 / 1e9,
        memory as f64 / 1e9
    )
}

/// This machine's physical memory in bytes, where the OS says.
fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system constants.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && size > 0 {
            return Some(pages as u64 * size as u64);
        }
    }
    None
}

/// What a run computes on, for its logs (stderr, the first metrics.jsonl row, bench's JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceInfo {
    pub backend: BackendName,
    /// The adapter as it names itself (`NVIDIA H100 PCIe`, `llvmpipe (LLVM 15.0.6, 256 bits)`);
    /// `None` on the CPU backends.
    pub adapter: Option<String>,
    /// CubeCL's fingerprint of the adapter, `spirv_<PCI vendor id>_<device id>` whatever the
    /// shader language (it keys CubeCL's kernel and autotune caches).
    pub fingerprint: Option<String>,
    /// The card's maker, by PCI vendor id; `None` for a device that is no card (lavapipe).
    pub vendor: Option<String>,
    /// The element types of the cooperative-matrix (tensor-core) products the device offers
    /// CubeCL's matmul kernels, as `A×B→C/D` (`f16×f16→f32`); empty where it offers none (WGSL,
    /// lavapipe), `None` on the CPU backends.
    pub cooperative_matrix: Option<Vec<String>>,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = self.backend;
        match &self.adapter {
            None => write!(f, "{backend} (CPU)"),
            Some(name) => {
                let cmma = match self.cooperative_matrix.as_deref() {
                    Some([]) | None => "none".to_string(),
                    Some(types) => types.join(", "),
                };
                write!(
                    f,
                    "{backend} on {name} (vendor {}, fingerprint {}, cooperative matrices: {cmma})",
                    self.vendor.as_deref().unwrap_or("none: not a card"),
                    self.fingerprint.as_deref().unwrap_or("unknown")
                )
            }
        }
    }
}

/// The [`DeviceInfo`] of `device`, a device of `backend`.
pub fn device_info(backend: BackendName, device: &Device) -> DeviceInfo {
    let (adapter, fingerprint, vendor) = identity(device);
    DeviceInfo {
        backend,
        adapter,
        fingerprint,
        vendor,
        cooperative_matrix: cooperative_matrix(device),
    }
}

/// The distinct `A×B→C/D` element types of the device's cooperative-matrix configurations (CubeCL
/// registers them from `VK_KHR_cooperative_matrix` for SPIR-V, from the architecture's `wmma`
/// shapes for CUDA), `None` on the CPU backends.
#[cfg(feature = "cube")]
fn cooperative_matrix(device: &Device) -> Option<Vec<String>> {
    let burn::backend::DispatchDevice::Cube(cube) = device.as_dispatch() else {
        return None;
    };
    let client = cube.client();
    let types: std::collections::BTreeSet<String> = client
        .properties()
        .features
        .matmul
        .cmma
        .iter()
        .map(|c| format!("{}×{}→{}", c.a_type, c.b_type, c.cd_type))
        .collect();
    Some(types.into_iter().collect())
}

#[cfg(not(feature = "cube"))]
fn cooperative_matrix(_device: &Device) -> Option<Vec<String>> {
    None
}

/// The multiple a training step pads its selected positions to (`TensorBatch::padded`), for a
/// micro-batch of `tokens` row positions on `device`: 1 (no padding) on the CPU backends; on the
/// GPU ones, where each new row count of the masked-LM head's matrix products means new kernels
/// compiled in the middle of a run (CubeCL specialises its matmul kernels to the problem), the
/// smallest power of two ≥ tokens / 16, at least 64. At 15% selected (2 to 3 sixteenths of the
/// tokens) that is one row count a run where there was a new one every step: BERT-base at batch
/// 128 × 128 (2,458 selected expected) always pads to 3,072, bench-mini (32 × 128, 614) to 768.
/// The padding rows, a quarter more in the decoder (under 1% of a BERT-base step's FLOPs), cost
/// less than one kernel compiled in a timed window.
pub fn selection_multiple(device: &Device, tokens: usize) -> usize {
    if on_cube(device) {
        (tokens / 16).next_power_of_two().max(64)
    } else {
        1
    }
}

/// Whether `device` (or the device an autodiff device wraps) is a CubeCL GPU device.
#[cfg(feature = "cube")]
pub(crate) fn on_cube(device: &Device) -> bool {
    use burn::backend::DispatchDevice;
    match device.as_dispatch() {
        DispatchDevice::Cube(_) => true,
        DispatchDevice::Autodiff(a) => matches!(a.clone().inner(), DispatchDevice::Cube(_)),
        _ => false,
    }
}

#[cfg(not(feature = "cube"))]
pub(crate) fn on_cube(_device: &Device) -> bool {
    false
}

/// What CubeCL's memory pools hold on `device`, in MiB: pages reserved from the driver, in use
/// or kept free for reuse (pools return pages only under memory pressure, so after a step this
/// is about the step's peak); `None` on the CPU backends.
#[cfg(feature = "cube")]
pub fn gpu_reserved_mb(device: &Device) -> Option<f64> {
    let burn::backend::DispatchDevice::Cube(cube) = device.as_dispatch() else {
        return None;
    };
    let report = cube.client().memory_report(cubecl::MemoryScope::Device);
    Some(report.usage().bytes_reserved as f64 / (1u64 << 20) as f64)
}

#[cfg(not(feature = "cube"))]
pub fn gpu_reserved_mb(_device: &Device) -> Option<f64> {
    None
}

/// (adapter name, fingerprint, vendor) as the GPU runtime reports them.
type Identity = (Option<String>, Option<String>, Option<String>);

#[cfg(feature = "cube")]
fn identity(device: &Device) -> Identity {
    match device.identity() {
        Some(id) => {
            let vendor = id.physical.and_then(|p| p.vendor);
            let vendor = vendor.map(|v| format!("{v:?}").to_lowercase());
            (Some(id.name), Some(id.fingerprint), vendor)
        }
        None => (None, None, None),
    }
}

/// Turns on CubeCL's cache of compiled kernels, which is off by default, before the CUDA device
/// starts: NVRTC takes a fraction of a second to seconds per kernel, and without the cache every
/// run compiles every kernel again (bench-mini in bf16: 346 kernels, 9 minutes on the 2-core
/// machine; bench/fake_cuda.sh). The PTX lands next to the autotune cache, in CubeCL's
/// `target/environment/`, keyed by kernel, GPU architecture and this binary's build id. The rest
/// of CubeCL's configuration is read as CubeCL reads it (a `cubecl.toml`, `CUBECL_*` variables).
#[cfg(feature = "cuda")]
fn cache_compiled_kernels() {
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    config.compilation.cache = true;
    // `false` when CubeCL's configuration was read already (a device of another backend started
    // first in this process): that one stays.
    let _ = CubeClRuntimeConfig::try_set(config);
}

/// Without a GPU backend in the build, no device reports an identity.
#[cfg(not(feature = "cube"))]
fn identity(_device: &Device) -> Identity {
    (None, None, None)
}

/// Refuses `wgpu` where the graphics API it would come up on is OpenGL (a machine with Mesa's
/// OpenGL driver but no Vulkan one): there the first step's autotune deadlocks wgpu's GL context
/// ("Could not lock adapter context") and the run hangs for good, after the probe in
/// [`gpu_device`] passed.
#[cfg(feature = "wgpu")]
fn refuse_opengl(key: BackendKey) -> Result<()> {
    use cubecl::wgpu::{AutoGraphicsApi, GraphicsApi, wgpu::Backend};
    if AutoGraphicsApi::backend() != Backend::Gl {
        return Ok(());
    }
    let (name, flex) = (key.naming(BackendName::Wgpu), key.flex_instead());
    crate::usage!(
        "{name}: the only graphics API with an adapter here is OpenGL, on which burn's wgpu \
         backend hangs; it needs a Vulkan driver (on Debian without a GPU: apt-get install \
         mesa-vulkan-drivers), Metal or DX12, or use {flex}"
    )
}

/// `device` once it has answered a first computation: wgpu looks for an adapter on first use,
/// CUDA loads the driver and compiles its first kernel with NVRTC, and both panic when what they
/// need is missing. The error names what to install and the panic's own first line.
#[cfg(feature = "cube")]
fn gpu_device(backend: BackendName, key: BackendKey, device: Device) -> Result<Device> {
    let probe = device.clone();
    // The first panic message of any thread: the runtime's device thread panics with the cause
    // (a library that does not load), the caller's read then only with "an execution error".
    let first = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let hook = std::panic::take_hook();
    let seen = first.clone();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        let mut first = seen.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = message.map(str::to_string);
        }
    }));
    let result =
        std::panic::catch_unwind(move || Tensor::<1>::ones([1], &probe).sum().into_scalar::<f32>());
    std::panic::set_hook(hook);
    if result.is_ok() {
        return Ok(device);
    }
    let full = first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    let mut lines = full.lines().map(str::trim).filter(|l| !l.is_empty());
    let cause = lines.next().unwrap_or("no message");
    // cudarc's message goes on to list thirty library names.
    let cause = cause.split_once(" - ").map_or(cause, |(head, _)| head);
    // A kernel that failed to compile (NVRTC's log, the source) says why past its first line.
    if lines.next().is_some() {
        let shown: String = full.chars().take(8000).collect();
        crate::errln!("note: the device's first failure, in full:\n{shown}");
    }
    let need = if backend == BackendName::Cuda {
        "an NVIDIA GPU with its driver (libcuda.so.1), NVRTC (libnvrtc.so, e.g. from pip's \
         nvidia-cuda-nvrtc, on LD_LIBRARY_PATH) and the CUDA headers (CUDA_PATH: a CUDA toolkit, \
         or pip's nvidia-cuda-runtime folder that holds include/cuda_fp16.h)"
    } else {
        "a Vulkan driver (on Debian without a GPU: apt-get install mesa-vulkan-drivers)"
    };
    let (name, flex) = (key.naming(backend), key.flex_instead());
    crate::usage!("{name} could not start a device ({cause}); it needs {need}, or use {flex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn batch_lower_bound_counts_rows_and_kept_activations() {
        let bert = crate::model::BertConfig::new(&ModelConfig::default(), 30522, 0);
        // BERT-base, 32 rows of 128: 4,096 tokens.
        let host = 4096 * 13;
        let per_layer = 4096 * (12 * 128 + 3072 + 768);
        let bound = |backend, precision, pass, batch| {
            batch_bytes_lower_bound(backend, &bert, precision, pass, batch, 128)
        };
        let flex = bound(BackendName::Flex, Precision::F32, Pass::Train, 32);
        assert_eq!(flex, host + 12 * per_layer * 4);
        let half = bound(BackendName::Flex, Precision::F16, Pass::Train, 32);
        assert_eq!(half, host + 12 * per_layer * 2);
        // Evaluation holds one layer's activations at a time.
        let eval = bound(BackendName::Flex, Precision::F32, Pass::Eval, 32);
        assert_eq!(eval, host + per_layer * 4);
        // About 1.06 GB, below what a BERT-base step of 32 × 128 on flex takes, as a bound must be.
        assert!((1.0e9..1.1e9).contains(&(flex as f64)), "{flex}");
        assert_eq!(
            bound(BackendName::Vulkan, Precision::F32, Pass::Train, 32),
            host
        );
        // Sizes that overflow u64 saturate instead of wrapping to a small number.
        let huge = bound(BackendName::Flex, Precision::F32, Pass::Train, usize::MAX);
        assert_eq!(huge, u64::MAX);
    }
}
