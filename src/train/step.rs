//! One optimizer step, the one place where training changes weights; `train`, `bench` and the
//! tests all go through [`optimizer_step`].
//!
//! micro-batches → summed loss and gradients (on the device) → global gradient norm (on the
//! device) → **one** device→host read of `[loss, norm]` → a non-finite value ends the step here,
//! before any weight moves → clipping as an on-device scale → AdamW. A GPU therefore waits for
//! the host once per step, and no NaN or inf ever reaches the weights.

use crate::data::batcher::TensorBatch;
use crate::data::batches::Batch;
use crate::model::BertForMaskedLM;
use crate::model::loss::masked_nll_sum;
use crate::train::optim;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use std::cell::Cell;

/// What one call of [`optimizer_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The weights were updated.
    Applied,
    /// No position of any micro-batch was selected (tiny batches only): no loss, no update.
    NothingSelected,
    /// The loss or the gradient norm was NaN or infinite: the weights were left as they were.
    NonFinite,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    pub outcome: Outcome,
    /// Mean cross-entropy over the step's selected positions (NaN when nothing was selected).
    pub loss: f64,
    /// Global L2 norm of the gradients before clipping (NaN when nothing was selected).
    pub grad_norm: f64,
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

/// The mean cross-entropy over every selected position of `micro` (shape [1], on the device,
/// without autodiff) and its gradients, summed over the micro-batches. Each micro-batch's summed
/// NLL is divided by the step's total count, so accumulating k micro-batches of B rows equals one
/// batch of kB rows (not a mean of per-micro-batch means). Micro-batches with nothing selected
/// contribute nothing; `None` when the whole step selected nothing. Reads nothing back.
pub fn loss_and_grads(
    model: &BertForMaskedLM,
    micro: &[Batch],
    device: &Device,
) -> Option<(Tensor<1>, GradientsParams)> {
    let total: usize = micro.iter().map(|b| b.selected).sum();
    if total == 0 {
        return None;
    }
    let mut acc = GradientsAccumulator::<BertForMaskedLM>::new();
    let mut loss_sum: Option<Tensor<1>> = None;
    for b in micro.iter().filter(|b| b.selected > 0) {
        let tb = TensorBatch::new(b, device);
        let logits = model.forward_selected(tb.input_ids, tb.attention_mask, tb.positions);
        let loss = masked_nll_sum(logits, tb.labels).div_scalar(total as f64);
        let value = loss.clone().without_autodiff();
        loss_sum = Some(match loss_sum {
            Some(s) => s + value,
            None => value,
        });
        acc.accumulate(model, GradientsParams::from_grads(loss.backward(), model));
    }
    Some((loss_sum?, acc.grads()))
}

/// One optimizer step of `model` over the micro-batches `micro` at learning rate `lr`, with
/// global-norm clipping at `max_grad_norm` (0 = none). Exactly one device→host read when
/// something was selected, none otherwise.
pub fn optimizer_step(
    model: BertForMaskedLM,
    optimizer: &mut ModuleOptimizer,
    micro: &[Batch],
    lr: f64,
    max_grad_norm: f64,
    device: &Device,
) -> (BertForMaskedLM, StepReport) {
    match loss_and_grads(&model, micro, device) {
        Some((loss, grads)) => apply(model, optimizer, loss, grads, lr, max_grad_norm),
        None => {
            let report = StepReport {
                outcome: Outcome::NothingSelected,
                loss: f64::NAN,
                grad_norm: f64::NAN,
            };
            (model, report)
        }
    }
}

/// The second half of [`optimizer_step`], given the step's loss ([1], on the device) and
/// gradients: checks both for finiteness in one read, then clips and updates.
pub fn apply(
    model: BertForMaskedLM,
    optimizer: &mut ModuleOptimizer,
    loss: Tensor<1>,
    grads: GradientsParams,
    lr: f64,
    max_grad_norm: f64,
) -> (BertForMaskedLM, StepReport) {
    let norm =
        optim::global_norm(&model, &grads).unwrap_or_else(|| Tensor::zeros([1], &loss.device()));
    let both = Tensor::cat(vec![loss, norm.clone()], 0);
    let read = read_to_host(both);
    let (loss, grad_norm) = (read[0], read[1]);
    if !(loss.is_finite() && grad_norm.is_finite()) {
        // An infinite norm would make the clipping factor 0 and inf × 0 = NaN in the weights.
        let report = StepReport {
            outcome: Outcome::NonFinite,
            loss,
            grad_norm,
        };
        return (model, report);
    }
    let grads = optim::clip_to(&model, grads, norm, max_grad_norm);
    let model = optimizer.step(lr, model, grads);
    let report = StepReport {
        outcome: Outcome::Applied,
        loss,
        grad_norm,
    };
    (model, report)
}
