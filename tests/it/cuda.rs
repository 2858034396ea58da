//! `train.backend = "cuda"` (NVIDIA, kernels compiled at run time by NVRTC) on a machine without
//! the NVIDIA driver, as CI's: a clear error before any work. On an NVIDIA machine the backend is
//! measured and checked against the others by `bench/gpu_device.sh` (BENCHMARKS.md, "GPU").

use crate::common::{self, masklm};

/// Whether the NVIDIA driver's CUDA library loads here.
fn nvidia_driver_loads() -> bool {
    // SAFETY: dlopen and dlclose of a library name; nothing from it is called.
    unsafe {
        let handle = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

#[test]
fn cuda_without_the_nvidia_driver_is_a_clear_error_before_any_work() {
    if nvidia_driver_loads() {
        eprintln!("libcuda.so.1 loads on this machine: the error this test expects cannot happen");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = ["train", "--config", "configs/tiny.toml"]
        .map(String::from)
        .into();
    args.extend(common::isolated(dir.path()));
    args.extend(["--set".into(), "train.backend=cuda".into()]);
    masklm(&args).usage_error(&[
        "train.backend = \"cuda\" could not start a device",
        "libcuda.so.1",
        "CUDA_PATH",
        "train.backend=flex",
    ]);
    assert!(!dir.path().join("tokenizer.json").exists() && !dir.path().join("run").exists());
    // eval names its flag, not the config key.
    masklm(&["eval", "--checkpoint", "no-such-run", "--backend", "cuda"]).usage_error(&[
        "--backend cuda could not start a device",
        "or use --backend flex",
    ]);
}
