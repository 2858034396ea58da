//! `masklm`: parse, dispatch, print the error chain, exit 0 / 1 (runtime) / 2 (usage).

use clap::Parser;

fn main() {
    // burn creates some state (optimizer moments on load) on `Device::default()`, which is wgpu
    // whenever wgpu is compiled in, and which `BURN_DEVICE` names: keep that on the CPU. The
    // device masklm computes on is train.backend's (--backend's); an inherited BURN_DEVICE that
    // burn does not know, or that names a backend left out of the build, would make burn panic
    // where it loads a resumed optimizer's state.
    if let Some(v) = std::env::var_os("BURN_DEVICE").filter(|v| v != "flex") {
        masklm::errln!(
            "note: BURN_DEVICE={} is ignored: masklm computes on train.backend (or --backend)",
            v.to_string_lossy()
        );
    }
    // SAFETY: at the start of main, before any other thread exists.
    unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    keep_freed_memory();
    let cli = masklm::cli::Cli::parse();
    if let Err(err) = masklm::cli::run(cli) {
        // The reader of our output went away (`masklm eval … | head -1`): nothing to report.
        if masklm::out::is_broken_pipe(&err) {
            std::process::exit(0);
        }
        masklm::errln!("error: {err:#}");
        std::process::exit(masklm::error::exit_code(&err));
    }
}

/// Keep freed memory in the process instead of handing it back to the kernel.
///
/// glibc serves blocks above its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh
/// `mmap`s and trims the heap top on every large `free`, so the megabytes of activations that
/// each training step allocates and frees were faulted in and zeroed by the kernel again every
/// step: `perf stat` counted 488 K page faults in 4 steps of `configs/bench-mini.toml`, and
/// page-fault handling was ~8% of all CPU samples. A fixed 32 MiB threshold (glibc's maximum)
/// and no trimming bring that to 164 K (the first touch of the peak working set) for 27 MB more
/// peak RSS. BENCHMARKS.md has the timing.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
