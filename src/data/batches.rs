//! Rows → corrupted batches, as plain vectors (the tensor side lives with the model).
//!
//! Training reads an endless stream of rows: epoch e is a seeded shuffle of all rows, and stream
//! position p is row `perm_e[p % n]` with e = p / n. A batch is named by the position of its first
//! row, so resume seeks straight to the saved position without replaying a single batch, and the
//! masks of a row depend only on (seed, position): drawn anew each epoch, identical on resume.

use super::masking::{self, MaskingParams, Stream, TokenTable};
use super::rows::{self, Span};
use crate::tokenizer::SpecialIds;
use std::sync::Arc;

/// A set of rows over one corpus's ids.
#[derive(Debug, Clone)]
pub struct RowSet {
    pub ids: Arc<Vec<u32>>,
    pub spans: Arc<Vec<Span>>,
    pub seq_len: usize,
}

impl RowSet {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Real (non-padding) tokens over all rows, specials included.
    pub fn n_tokens(&self) -> usize {
        self.spans.iter().map(|s| s.len() + 2).sum()
    }
}

/// One micro-batch, row-major `[batch_size, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub batch_size: usize,
    pub seq_len: usize,
    /// The corrupted input the model sees.
    pub input_ids: Vec<u32>,
    /// 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<u8>,
    /// Original id at selected positions, -100 elsewhere.
    pub labels: Vec<i32>,
    /// The row before corruption.
    pub original_ids: Vec<u32>,
    /// Number of selected positions (labels != -100).
    pub selected: usize,
}

impl Batch {
    fn zeroed(batch_size: usize, seq_len: usize) -> Self {
        let n = batch_size * seq_len;
        Batch {
            batch_size,
            seq_len,
            input_ids: vec![0; n],
            attention_mask: vec![0; n],
            labels: vec![0; n],
            original_ids: vec![0; n],
            selected: 0,
        }
    }
}

/// What every batch needs besides its rows.
#[derive(Debug, Clone)]
pub struct Corruption {
    pub table: Arc<TokenTable>,
    pub specials: SpecialIds,
    pub params: MaskingParams,
    pub seed: u64,
}

impl Corruption {
    /// Builds a batch from `(row index, stream position)` pairs; each row's masks come from
    /// its stream position under `stream`.
    pub fn batch(&self, rows: &RowSet, picks: &[(usize, u64)], stream: Stream) -> Batch {
        let s = rows.seq_len;
        let mut b = Batch::zeroed(picks.len(), s);
        for (k, &(row, pos)) in picks.iter().enumerate() {
            let r = k * s..(k + 1) * s;
            rows::fill_row(
                &rows.ids,
                &rows.spans[row],
                &self.specials,
                &mut b.input_ids[r.clone()],
                &mut b.attention_mask[r.clone()],
            );
            b.original_ids[r.clone()].copy_from_slice(&b.input_ids[r.clone()]);
            let mut rng = masking::rng_for(self.seed, stream, pos);
            b.selected += masking::mask_row(
                &mut b.input_ids[r.clone()],
                &mut b.labels[r],
                &self.params,
                &self.table,
                &mut rng,
            );
        }
        b
    }
}

/// The training stream: shuffled each epoch, corrupted dynamically.
pub struct TrainStream {
    rows: RowSet,
    corruption: Corruption,
    batch_size: usize,
    /// The permutation of the epoch last used.
    perm: Option<(u64, Vec<u32>)>,
}

impl TrainStream {
    pub fn new(rows: RowSet, corruption: Corruption, batch_size: usize) -> Self {
        assert!(!rows.is_empty(), "a training stream needs rows");
        Self {
            rows,
            corruption,
            batch_size,
            perm: None,
        }
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The row at stream position `pos`.
    fn row_at(&mut self, pos: u64) -> usize {
        let n = self.rows.len() as u64;
        let epoch = pos / n;
        if self.perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng = masking::rng_for(self.corruption.seed, Stream::Shuffle, epoch);
            self.perm = Some((epoch, masking::shuffled(n as usize, &mut rng)));
        }
        let (_, perm) = self.perm.as_ref().expect("set above");
        perm[(pos % n) as usize] as usize
    }

    /// The micro-batch whose first row is at stream position `pos`.
    pub fn batch_at(&mut self, pos: u64) -> Batch {
        let picks: Vec<(usize, u64)> = (pos..pos + self.batch_size as u64)
            .map(|p| (self.row_at(p), p))
            .collect();
        self.corruption.batch(&self.rows, &picks, Stream::Mask)
    }
}

/// Evaluation batches: every row once, in order, at the fixed corruption of
/// [`MaskingParams::EVAL`] drawn from `seed`, so every run and checkpoint is scored on the same
/// positions.
pub fn eval_batches(
    rows: &RowSet,
    table: Arc<TokenTable>,
    specials: SpecialIds,
    seed: u64,
    batch_size: usize,
) -> impl Iterator<Item = Batch> + '_ {
    let c = Corruption {
        table,
        specials,
        params: MaskingParams::EVAL,
        seed,
    };
    let picks: Vec<(usize, u64)> = (0..rows.len()).map(|i| (i, i as u64)).collect();
    (0..rows.len().div_ceil(batch_size)).map(move |k| {
        let end = ((k + 1) * batch_size).min(rows.len());
        c.batch(rows, &picks[k * batch_size..end], Stream::EvalMask)
    })
}
