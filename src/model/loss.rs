//! The masked-LM loss: cross-entropy over the selected positions only.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Summed negative log-likelihood of `labels` [N] under `logits` [N, V] → [1].
///
/// A sum, not a mean: the caller divides by the number of selected positions of the whole
/// optimizer step, so that with gradient accumulation the loss is the mean over every selected
/// position of every micro-batch (not a mean of per-micro-batch means).
pub fn masked_nll_sum(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    log_softmax(logits, 1)
        .gather(1, labels.unsqueeze_dim(1))
        .sum()
        .neg()
}

/// [`masked_nll_sum`] with each position's NLL multiplied by `weights` [N] first: 1 on selected
/// positions, 0 on the padding rows of `TensorBatch::padded` (which contribute nothing, to the
/// loss or to any gradient).
pub fn weighted_nll_sum(
    logits: Tensor<2>,
    labels: Tensor<1, Int>,
    weights: Tensor<1>,
) -> Tensor<1> {
    let n = weights.dims()[0];
    log_softmax(logits, 1)
        .gather(1, labels.unsqueeze_dim(1))
        .mul(weights.reshape([n, 1]))
        .sum()
        .neg()
}
