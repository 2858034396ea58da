//! masklm: BERT-style masked-language-model pretraining, built on burn.
//!
//! Data flows one way: text → ids ([`tokenizer`], [`data::store`]) → rows ([`data::rows`]) →
//! corrupted batches ([`data::masking`], [`data::batches`]).

// Results go out through `outln!`, messages through `errln!`: `println!` and `eprintln!` panic
// on a closed pipe.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod bench;
pub mod cli;
pub mod config;
#[cfg(feature = "cube")]
mod cube_reduce;
pub mod data;
pub mod error;
pub mod eval;
pub mod fill_mask;
pub mod hf;
pub mod io;
pub mod model;
pub mod out;
pub mod plot;
pub mod tokenizer;
pub mod train;
