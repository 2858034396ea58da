//! How much work burn's fusion server gets on a GPU backend: operations registered (each costs
//! the host a registration and a place in fusion's search for kernels to merge) and blocks run
//! (one fused kernel, or one operation run alone: a launch, or a view change). Both are host
//! work that a GPU step waits for when its kernels are short, so `bench` reports them per step.
//!
//! Counted through burn-fusion's observer, which sees every operation the server processes, on
//! the server's thread; callers sync the device before starting and before reading, so that
//! what the server processes in between is what the program registered in between.

use burn_fusion::observer::{BlockOperations, FusionObservation, FusionObserver};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
struct Counts {
    operations: AtomicU64,
    blocks: AtomicU64,
}

impl FusionObserver for Counts {
    fn registered(&self, _: &burn_ir::OperationIr) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    fn block_starts(&self, _: BlockOperations<'_>) {
        self.blocks.fetch_add(1, Ordering::Relaxed);
    }

    fn block_ran(&self) {}
}

/// Counts operations and blocks from [`FusionCounter::start`] until it is dropped, process-wide.
pub struct FusionCounter {
    counts: Arc<Counts>,
    _observation: FusionObservation,
}

impl FusionCounter {
    pub fn start() -> Self {
        let counts = Arc::new(Counts::default());
        let observation = FusionObservation::new(counts.clone());
        Self {
            counts,
            _observation: observation,
        }
    }

    /// (operations registered, blocks run) so far.
    pub fn read(&self) -> (u64, u64) {
        (
            self.counts.operations.load(Ordering::Relaxed),
            self.counts.blocks.load(Ordering::Relaxed),
        )
    }
}
