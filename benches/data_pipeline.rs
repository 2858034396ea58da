//! Corruption + batching throughput on one core, on the default config's real rows.
//!
//! `cargo bench --bench data_pipeline` (prints tokens/s; BENCHMARKS.md records the figure).
//! Tokens count every position of a batch, padding included, as training throughput does.

use masklm::config::Config;
use masklm::data::batches::TrainStream;
use masklm::data::{Datasets, corruption, load_or_train_tokenizer, save_tokenizer};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let sets: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.contains('='))
        .collect();
    let cfg = Config::load(None, &sets)?;
    let (tok, fresh) = load_or_train_tokenizer(&cfg)?;
    let data = Datasets::prepare(&cfg, &tok)?;
    if fresh {
        save_tokenizer(&cfg, &tok)?;
    }
    let (b, s) = (cfg.train.batch_size, cfg.data.seq_len);
    let mut stream = TrainStream::new(data.train, corruption(&cfg, &tok), b);
    // The stream runs on the calling thread only: this is one core's rate.
    let mut pos = 0u64;
    let mut run = |budget: Duration| {
        let (start, mut tokens, mut selected) = (Instant::now(), 0usize, 0usize);
        while start.elapsed() < budget {
            let batch = stream.batch_at(pos).expect("a batch");
            pos += b as u64;
            tokens += b * s;
            selected += batch.selected;
            std::hint::black_box(&batch);
        }
        (
            tokens as f64 / start.elapsed().as_secs_f64(),
            selected as f64 / tokens as f64,
        )
    };
    run(Duration::from_millis(500)); // warm-up
    let mut rates: Vec<f64> = (0..5).map(|_| run(Duration::from_secs(1)).0).collect();
    rates.sort_by(f64::total_cmp);
    let (_, sel) = run(Duration::from_millis(200));
    println!(
        "data pipeline (corruption + batching, 1 thread): median {:.1} M tokens/s (min {:.1}, max {:.1}); batch {b}×{s}, {:.1}% of positions selected",
        rates[2] / 1e6,
        rates[0] / 1e6,
        rates[4] / 1e6,
        sel * 100.0
    );
    Ok(())
}
