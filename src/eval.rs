//! Masked-token evaluation: loss, perplexity, top-1 and top-5 accuracy at the selected positions.
//!
//! The validation rows are corrupted at a fixed 15% with 80/10/10 from a fixed seed
//! ([`EVAL_SEED`], independent of the training seed), so every run and every checkpoint is
//! scored on exactly the same positions.

use crate::data::batcher::TensorBatch;
use crate::data::batches::{RowSet, eval_batches};
use crate::data::masking::TokenTable;
use crate::model::BertForMaskedLM;
use crate::model::loss::{masked_nll_sum, weighted_nll_sum};
use crate::tokenizer::SpecialIds;
use crate::train::device::selection_multiple;
use anyhow::Result;
use burn::prelude::*;
use serde::Serialize;
use std::sync::Arc;

pub const EVAL_SEED: u64 = 20_181_011; // BERT's arXiv date

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvalReport {
    pub loss: f64,
    pub perplexity: f64,
    pub accuracy: f64,
    pub top5_accuracy: f64,
    pub masked_tokens: usize,
    /// The accuracy of always guessing the commonest token of the held-out text, on the same
    /// positions: the floor a model must clear to have learned anything.
    pub baseline_accuracy: f64,
}

/// A perplexity for people: two decimals, or three significant digits past a million (a model
/// far from trained has e^loss with hundreds of digits).
pub fn perplexity_text(p: f64) -> String {
    if p < 1e6 {
        format!("{p:.2}")
    } else {
        format!("{p:.2e}")
    }
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loss {:.4}, perplexity {}, accuracy {:.2}% (most-frequent-token baseline {:.2}%), top-5 {:.2}% over {} masked tokens",
            self.loss,
            perplexity_text(self.perplexity),
            100.0 * self.accuracy,
            100.0 * self.baseline_accuracy,
            100.0 * self.top5_accuracy,
            self.masked_tokens
        )
    }
}

/// The commonest non-special token of `rows` (pure counting, no tensors).
pub fn most_frequent_token(
    rows: &RowSet,
    table: &TokenTable,
    specials: &SpecialIds,
) -> Result<u32> {
    let mut counts = vec![0usize; table.vocab_size()];
    let (mut ids, mut mask) = (vec![0u32; rows.seq_len], vec![0u8; rows.seq_len]);
    for i in 0..rows.len() {
        rows.fill(i, specials, &mut ids, &mut mask)?;
        for &id in &ids {
            if !table.is_special(id) {
                counts[id as usize] += 1;
            }
        }
    }
    Ok((0..counts.len())
        .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))
        .unwrap_or(0) as u32)
}

/// The share of `rows`' text tokens (real tokens but `[CLS]` and `[SEP]`) that are `[UNK]`: high
/// for text the tokenizer does not cover (another script), where evaluation, which never masks
/// `[UNK]` (as HF's collator), scores only the few known tokens.
pub fn unknown_share(rows: &RowSet, specials: &SpecialIds) -> Result<f64> {
    let (mut unknown, mut text) = (0usize, 0usize);
    let (mut ids, mut mask) = (vec![0u32; rows.seq_len], vec![0u8; rows.seq_len]);
    for i in 0..rows.len() {
        rows.fill(i, specials, &mut ids, &mut mask)?;
        for (&id, &real) in ids.iter().zip(&mask) {
            if real == 1 && id != specials.cls && id != specials.sep {
                text += 1;
                unknown += usize::from(id == specials.unk);
            }
        }
    }
    Ok(unknown as f64 / text.max(1) as f64)
}

/// The [`unknown_share`] above which a text is said to be outside the tokenizer's.
pub const UNKNOWN_NOTED: f64 = 0.1;

/// "; N% of its tokens are `[UNK]`…" when `share` is above [`UNKNOWN_NOTED`], else "".
pub fn unknown_clause(share: f64) -> String {
    if share < UNKNOWN_NOTED {
        return String::new();
    }
    format!(
        "; {:.0}% of its tokens are [UNK], which evaluation never masks: the tokenizer does not \
         cover this text (another language or script?)",
        100.0 * share
    )
}

/// The rows evaluation scores: the first `max_eval_samples` of `rows` (`data.max_eval_samples`,
/// as HF's `eval_dataset.select(range(max_eval_samples))`), or all of them when it is 0 or more
/// than there are. Each row's masks depend on its index only, so the rows kept are scored as
/// they are in the whole set.
pub fn scored_rows(rows: &RowSet, max_eval_samples: u64) -> RowSet {
    match max_eval_samples {
        0 => rows.clone(),
        n => rows.slice(0..n.min(rows.len() as u64)),
    }
}

/// What evaluation scores when given no corpus of its own, as messages name it.
pub const HELD_OUT_TEXT: &str =
    "the held-out text (data.valid, or data.validation_split_percentage of data.train)";

/// Refuses `rows` on which evaluation would select no token to score (a text of a few words),
/// which would report a loss of NaN and an accuracy of 0. Reads batches only until one selects a
/// token: the first, but for such a text. `what` names the text and how to give more; `capped`
/// says that `data.max_eval_samples` cut the rows (the fix is then to raise it).
pub fn ensure_something_to_score(
    rows: &RowSet,
    table: Arc<TokenTable>,
    specials: SpecialIds,
    batch_size: usize,
    what: &str,
    capped: bool,
) -> Result<()> {
    for batch in eval_batches(rows, table, specials, EVAL_SEED, batch_size) {
        if batch?.selected > 0 {
            return Ok(());
        }
    }
    let unknown = unknown_clause(unknown_share(rows, &specials)?);
    let fix = if capped {
        "raise data.max_eval_samples, which keeps only these rows (0 scores every row)"
    } else if unknown.is_empty() {
        "give more text"
    } else {
        "give text the tokenizer covers"
    };
    crate::usage!(
        "{what} gives no token to score: evaluation masks 15% of the tokens from a fixed seed, \
         and in its {} none was selected{unknown}; {fix}",
        match rows.len() {
            1 => "one row".to_string(),
            n => format!("{n} rows"),
        }
    )
}

/// Batches whose sums wait on the device before they are read, in one transfer per kind: few
/// reads, and a bounded queue of pending tensors however long the evaluation.
pub const READ_EVERY: usize = 256;

/// Evaluation's running sums: each batch's `[1]` tensors (summed NLL, top-1 and top-5 hits) stay
/// on the device until [`READ_EVERY`] batches wait, then are read and added on the host, in f64
/// and batch by batch.
#[derive(Default)]
struct Tallies {
    pending: Vec<(Tensor<1>, Tensor<1, Int>, Tensor<1, Int>)>,
    nll: f64,
    top1: usize,
    top5: usize,
}

impl Tallies {
    fn push(&mut self, nll: Tensor<1>, top1: Tensor<1, Int>, top5: Tensor<1, Int>) -> Result<()> {
        self.pending.push((nll, top1, top5));
        if self.pending.len() >= READ_EVERY {
            self.read()?;
        }
        Ok(())
    }

    /// Reads what waits: two transfers (the NLLs; the hits, top-1 and top-5 interleaved).
    fn read(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (mut nll, mut hits) = (Vec::new(), Vec::new());
        for (a, b, c) in self.pending.drain(..) {
            nll.push(a);
            hits.extend([b, c]);
        }
        let nll = Tensor::cat(nll, 0).into_data().convert::<f64>();
        let nll = nll
            .try_into_vec::<f64>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for x in nll {
            self.nll += x;
        }
        let hits = Tensor::cat(hits, 0).into_data().convert::<i64>();
        let hits = hits
            .try_into_vec::<i64>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for pair in hits.chunks_exact(2) {
            self.top1 += pair[0] as usize;
            self.top5 += pair[1] as usize;
        }
        Ok(())
    }
}

/// Scores `model` (in eval mode, on a device without autodiff) on every row of `rows`.
///
/// On a GPU the selected positions are padded as a training step's are
/// ([`selection_multiple`]) and a short last batch to full rows, so that the batches share one
/// shape instead of compiling kernels for each; and each batch's sums stay on the device, read
/// every [`READ_EVERY`] batches, so that the device seldom waits on the host.
pub fn evaluate(
    model: &BertForMaskedLM,
    rows: &RowSet,
    table: Arc<TokenTable>,
    specials: SpecialIds,
    batch_size: usize,
    device: &Device,
) -> Result<EvalReport> {
    // A batch is at most all the rows: padding a short one must not grow it past them.
    let batch_size = batch_size.min(rows.len()).max(1);
    let multiple = selection_multiple(device, batch_size * rows.seq_len);
    evaluate_padded(model, rows, table, specials, batch_size, device, multiple)
}

/// [`evaluate`] with the selected positions padded to a multiple of `multiple` and, when that is
/// above 1, a short last batch padded to `batch_size` rows (at most all the rows) of `[PAD]`
/// ([`crate::data::batches::Batch::pad_rows`]), whatever the device (the tests compare padded
/// with unpadded on the CPU).
pub fn evaluate_padded(
    model: &BertForMaskedLM,
    rows: &RowSet,
    table: Arc<TokenTable>,
    specials: SpecialIds,
    batch_size: usize,
    device: &Device,
    multiple: usize,
) -> Result<EvalReport> {
    let batch_size = batch_size.min(rows.len()).max(1);
    let (mut n, mut base, mut tallies) = (0usize, 0usize, Tallies::default());
    let commonest = most_frequent_token(rows, &table, &specials)? as i32;
    for batch in eval_batches(rows, table, specials, EVAL_SEED, batch_size) {
        let mut batch = batch?;
        if batch.selected == 0 {
            continue;
        }
        if multiple > 1 {
            batch.pad_rows(batch_size, specials.pad);
        }
        base += batch.labels.iter().filter(|&&l| l == commonest).count();
        let tb = TensorBatch::padded(&batch, device, multiple);
        // [P, V] for the P ≥ count selected positions and their padding.
        let logits = model.forward_selected(tb.input_ids, tb.attention_mask, tb.positions);
        let [padded, vocab] = logits.dims();
        let (count, k) = (tb.selected, vocab.min(5));
        let nll = match tb.weights {
            Some(w) => weighted_nll_sum(logits.clone(), tb.labels.clone(), w),
            None => masked_nll_sum(logits.clone(), tb.labels.clone()),
        };
        // [P, 1] labels. Top-1 is HF's argmax (the first of tied maxima); the label is among the
        // k best when fewer than k logits exceed its own. Both are one pass over the V logits,
        // where a sorted top-k would cost V log V a row (most of eval's time at a 30k vocabulary).
        let labels = tb.labels.unsqueeze_dim::<2>(1);
        let top1 = logits
            .clone()
            .argmax(1)
            .equal(labels.clone())
            .int()
            .slice([0..count, 0..1])
            .sum();
        // "Not ≤" rather than ">": a NaN logit counts as above the label's, and a NaN label's
        // logit is below every other, as a top-k ranks NaN first.
        let own = logits.clone().gather(1, labels);
        let above = logits
            .lower_equal(own.expand([padded, vocab]))
            .bool_not()
            .int()
            .sum_dim(1);
        let topk = above
            .lower_elem(k as i32)
            .int()
            .slice([0..count, 0..1])
            .sum();
        tallies.push(nll, top1, topk)?;
        n += count;
    }
    tallies.read()?;
    let Tallies {
        nll, top1, top5, ..
    } = tallies;
    let loss = if n > 0 { nll / n as f64 } else { f64::NAN };
    Ok(EvalReport {
        loss,
        perplexity: loss.exp(),
        accuracy: top1 as f64 / n.max(1) as f64,
        top5_accuracy: top5 as f64 / n.max(1) as f64,
        masked_tokens: n,
        baseline_accuracy: base as f64 / n.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::perplexity_text;

    #[test]
    fn a_perplexity_past_a_million_is_written_in_three_digits() {
        assert_eq!(perplexity_text(290.5049), "290.50");
        assert_eq!(perplexity_text(999_999.0), "999999.00");
        assert_eq!(perplexity_text(493f64.exp()), "1.28e214");
        assert_eq!(perplexity_text(f64::INFINITY), "inf");
        assert_eq!(perplexity_text(f64::NAN), "NaN");
    }
}
