//! One optimizer step, the one place where training changes weights; `train`, `bench` and the
//! tests all go through [`optimizer_step`].
//!
//! micro-batches → summed loss and gradients (on the device; under f16 the loss multiplied by
//! the loss scale first) → global gradient norm (on the device) → **one** device→host read of
//! `[loss, norm]` → a non-finite value ends the step here, before any weight moves (and under
//! f16 halves the scale, `train::scaler`) → unscaling and clipping as one on-device factor →
//! AdamW. A GPU therefore waits for the host once per step, and no NaN or inf ever reaches the
//! weights.

use crate::data::batcher::TensorBatch;
use crate::data::batches::Batch;
use crate::model::BertForMaskedLM;
use crate::model::loss::{masked_nll_sum, weighted_nll_sum};
use crate::train::device::selection_multiple;
use crate::train::optim;
use crate::train::optimizer::AdamWOptimizer;
use crate::train::scaler::LossScaler;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use std::cell::Cell;

/// What one call of [`optimizer_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The weights were updated.
    Applied,
    /// No position of any micro-batch was selected (tiny batches only): no loss, no update.
    NothingSelected,
    /// Under f16 loss scaling: the gradients overflowed, the weights were left as they were and
    /// the scale was halved (PyTorch's GradScaler skips such a step too).
    Skipped,
    /// The loss or the gradient norm was NaN or infinite (and no loss scale can help): the
    /// weights were left as they were, and the run stops.
    NonFinite,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    pub outcome: Outcome,
    /// Mean cross-entropy over the step's selected positions (NaN when nothing was selected).
    pub loss: f64,
    /// Global L2 norm of the gradients before clipping, unscaled (NaN when nothing was selected).
    pub grad_norm: f64,
    /// The loss scale the step was computed with (1 without f16 loss scaling).
    pub loss_scale: f64,
}

thread_local! {
    static HOST_READS: Cell<u64> = const { Cell::new(0) };
}

/// Device→host reads made by the step functions of this thread so far (tests count them).
pub fn host_reads() -> u64 {
    HOST_READS.with(Cell::get)
}

/// The values of `t` on the host: every read of the training step goes through here.
fn read_to_host(t: Tensor<1>) -> Vec<f64> {
    HOST_READS.with(|n| n.set(n.get() + 1));
    // A float tensor's data always converts to f64.
    t.into_data()
        .try_into_vec_as::<f64>()
        .expect("float data converts to f64")
}

/// The cross-entropy summed over the selected positions of `tb` (`[1]`, on its device), its padding
/// rows (weight 0, `TensorBatch::padded`) left out.
pub fn nll_sum(model: &BertForMaskedLM, tb: TensorBatch) -> Tensor<1> {
    let logits = model.forward_selected(tb.input_ids, tb.attention_mask, tb.positions);
    match tb.weights {
        Some(w) => weighted_nll_sum(logits, tb.labels, w),
        None => masked_nll_sum(logits, tb.labels),
    }
}

/// The mean cross-entropy over every selected position of `micro` (shape `[1]`, on the device,
/// without autodiff) and its gradients, summed over the micro-batches. Each micro-batch's summed
/// NLL is divided by the step's total count, so accumulating k micro-batches of B rows equals one
/// batch of kB rows (not a mean of per-micro-batch means). Micro-batches with nothing selected
/// contribute nothing; `None` when the whole step selected nothing. Reads nothing back. The
/// gradients are those of the loss times `scale` (the loss itself is not scaled).
pub fn loss_and_grads(
    model: &BertForMaskedLM,
    micro: &[Batch],
    scale: f64,
    device: &Device,
) -> Option<(Tensor<1>, GradientsParams)> {
    let total: usize = micro.iter().map(|b| b.selected).sum();
    if total == 0 {
        return None;
    }
    let mut acc = GradientsAccumulator::<BertForMaskedLM>::new();
    let mut loss_sum: Option<Tensor<1>> = None;
    for b in micro.iter().filter(|b| b.selected > 0) {
        let multiple = selection_multiple(device, b.batch_size * b.seq_len);
        let nll = nll_sum(model, TensorBatch::padded(b, device, multiple));
        let loss = nll.div_scalar(total as f64);
        let value = loss.clone().without_autodiff();
        loss_sum = Some(match loss_sum {
            Some(s) => s + value,
            None => value,
        });
        let scaled = if scale == 1.0 {
            loss
        } else {
            loss.mul_scalar(scale)
        };
        acc.accumulate(model, GradientsParams::from_grads(scaled.backward(), model));
    }
    Some((loss_sum?, acc.grads()))
}

/// One optimizer step of `model` over the micro-batches `micro` at learning rate `lr`, with
/// global-norm clipping at `max_grad_norm` (0 = none), and the loss scale of `scaler` (which
/// this step updates). Exactly one device→host read when something was selected, none
/// otherwise.
pub fn optimizer_step(
    model: BertForMaskedLM,
    optimizer: &mut AdamWOptimizer,
    micro: &[Batch],
    lr: f64,
    max_grad_norm: f64,
    scaler: &mut LossScaler,
    device: &Device,
) -> (BertForMaskedLM, StepReport) {
    match loss_and_grads(&model, micro, scaler.scale, device) {
        Some((loss, grads)) => apply(model, optimizer, loss, grads, lr, max_grad_norm, scaler),
        None => {
            let report = StepReport {
                outcome: Outcome::NothingSelected,
                loss: f64::NAN,
                grad_norm: f64::NAN,
                loss_scale: scaler.scale,
            };
            (model, report)
        }
    }
}

/// The second half of [`optimizer_step`], given the step's loss (`[1]`, on the device) and
/// gradients (of the loss times `scaler.scale`): checks both for finiteness in one read, lets
/// the scaler decide, then unscales, clips and updates.
pub fn apply(
    model: BertForMaskedLM,
    optimizer: &mut AdamWOptimizer,
    loss: Tensor<1>,
    grads: GradientsParams,
    lr: f64,
    max_grad_norm: f64,
    scaler: &mut LossScaler,
) -> (BertForMaskedLM, StepReport) {
    let scale = scaler.scale;
    let norm =
        optim::global_norm(&model, &grads).unwrap_or_else(|| Tensor::zeros([1], &loss.device()));
    let both = Tensor::cat(vec![loss, norm.clone()], 0);
    let read = read_to_host(both);
    let (loss, grad_norm) = (read[0], read[1] / scale);
    // An infinite norm would make the clipping factor 0 and inf × 0 = NaN in the weights.
    let outcome = scaler.update(loss.is_finite() && grad_norm.is_finite());
    let report = StepReport {
        outcome,
        loss,
        grad_norm,
        loss_scale: scale,
    };
    if outcome != Outcome::Applied {
        return (model, report);
    }
    let factor = optim::grad_factor(norm, max_grad_norm, scale);
    let model = optimizer.step(lr, model, grads, factor);
    (model, report)
}
