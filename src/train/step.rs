//! One optimizer step's loss and gradients over its micro-batches.

use crate::data::batcher::TensorBatch;
use crate::data::batches::Batch;
use crate::model::BertForMaskedLM;
use crate::model::loss::masked_nll_sum;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

/// The mean cross-entropy over every selected position of `micro` and its gradients, summed
/// over the micro-batches. Each micro-batch's summed NLL is divided by the step's total count,
/// so accumulating k micro-batches of B rows equals one batch of kB rows (not a mean of
/// per-micro-batch means). Micro-batches with nothing selected contribute nothing; `None` when
/// the whole step selected nothing.
pub fn loss_and_grads(
    model: &BertForMaskedLM,
    micro: &[Batch],
    device: &Device,
) -> Option<(f64, GradientsParams)> {
    let total: usize = micro.iter().map(|b| b.selected).sum();
    if total == 0 {
        return None;
    }
    let mut acc = GradientsAccumulator::<BertForMaskedLM>::new();
    let mut loss_sum = 0.0;
    for b in micro.iter().filter(|b| b.selected > 0) {
        let tb = TensorBatch::new(b, device);
        let logits = model.forward_selected(tb.input_ids, tb.attention_mask, tb.positions);
        let loss = masked_nll_sum(logits, tb.labels).div_scalar(total as f64);
        loss_sum += loss.clone().into_scalar::<f64>();
        acc.accumulate(model, GradientsParams::from_grads(loss.backward(), model));
    }
    Some((loss_sum, acc.grads()))
}
