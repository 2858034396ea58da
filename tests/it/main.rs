//! The integration tests, as one test binary: each file is a module, so burn is linked once
//! instead of once per file. Three stay binaries of their own, because they need a process to
//! themselves: `tests/fast_gelu.rs` flips masklm's process-wide GELU switch
//! (`masklm::model::gelu::set_exact`), which would change the numbers of tests running beside it,
//! `tests/stream_memory.rs` measures the process's peak memory, and `tests/fusion_phases.rs`
//! counts burn's process-wide fusion work.
//!
//! Run one file's tests with its module name: `cargo test --release --test it train_faults::`.

mod common;

mod adamw;
mod bad_input;
mod bench_cli;
#[cfg(feature = "cuda")]
mod cuda;
mod data_cli;
mod dense;
mod dropout;
#[cfg(feature = "ndarray")]
mod flex_patch;
mod fuzz;
mod gelu;
mod heads;
mod hf;
mod inference_cli;
mod layer_norm;
mod loss;
mod model;
mod precision;
mod softmax;
mod squared_norm;
mod token_store;
mod tokenizer_fixture;
mod train;
mod train_faults;
mod train_step;
#[cfg(feature = "wgpu")]
mod wgpu;
