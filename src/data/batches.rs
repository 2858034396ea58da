//! Rows → corrupted batches, as plain vectors (the tensor side lives with the model).
//!
//! Training reads an endless stream of rows: epoch e is a seeded permutation of all rows
//! ([`Permutation`], computed, not stored), and stream position p is row `perm_e(p % n)` with
//! e = p / n. A batch is named by the position of its first row, so resume seeks straight to the
//! saved position without replaying a single batch, and the masks of a row depend only on
//! (seed, position): drawn anew each epoch, identical on resume.

use super::masking::{self, MaskingParams, Stream, TokenTable};
use super::order::Permutation;
use super::rows;
use super::store::TokenStore;
use crate::config::Packing;
use crate::tokenizer::SpecialIds;
use anyhow::Result;
use std::ops::Range;
use std::sync::Arc;

/// A range of the rows of one token store, under a packing and a row length.
#[derive(Debug, Clone)]
pub struct RowSet {
    pub store: Arc<TokenStore>,
    pub packing: Packing,
    pub seq_len: usize,
    /// The store's rows that belong to this set.
    pub rows: Range<u64>,
}

impl RowSet {
    /// Every row of `store`.
    pub fn all(store: Arc<TokenStore>, packing: Packing, seq_len: usize) -> RowSet {
        let n = store.n_rows(packing, seq_len);
        RowSet {
            store,
            packing,
            seq_len,
            rows: 0..n,
        }
    }

    /// The rows `range` of this set (indices relative to it).
    pub fn slice(&self, range: Range<u64>) -> RowSet {
        RowSet {
            rows: self.rows.start + range.start..self.rows.start + range.end,
            ..self.clone()
        }
    }

    pub fn len(&self) -> usize {
        (self.rows.end - self.rows.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Writes row `i` as `[CLS] content [SEP] [PAD]…` into `out_ids` (length `seq_len`) and its
    /// attention mask into `out_mask`.
    pub fn fill(
        &self,
        i: usize,
        sp: &SpecialIds,
        out_ids: &mut [u32],
        out_mask: &mut [u8],
    ) -> Result<()> {
        let row = self.rows.start + i as u64;
        let block = self.seq_len - 2;
        let content = &mut out_ids[1..=block];
        let n = match self.packing {
            Packing::Packed => {
                self.store
                    .fill_packed(row * block as u64, sp.sep, content)?;
                block
            }
            Packing::Line => self.store.fill_line(row, content)?,
        };
        rows::wrap_row(n, sp, out_ids, out_mask);
        Ok(())
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

    /// Appends rows of `[PAD]` only (attention 0, nothing selected) up to `batch_size` rows, so
    /// that a short last batch has the shape of the others: on a GPU a new shape means the
    /// whole encoder's kernels compiled again. A row attends only within itself, so the real
    /// rows' outputs are unchanged.
    pub fn pad_rows(&mut self, batch_size: usize, pad_id: u32) {
        let n = batch_size.max(self.batch_size) * self.seq_len;
        self.input_ids.resize(n, pad_id);
        self.attention_mask.resize(n, 0);
        self.labels.resize(n, masking::IGNORE_LABEL);
        self.original_ids.resize(n, pad_id);
        self.batch_size = batch_size.max(self.batch_size);
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
    pub fn batch(&self, rows: &RowSet, picks: &[(usize, u64)], stream: Stream) -> Result<Batch> {
        let s = rows.seq_len;
        let mut b = Batch::zeroed(picks.len(), s);
        for (k, &(row, pos)) in picks.iter().enumerate() {
            let r = k * s..(k + 1) * s;
            rows.fill(
                row,
                &self.specials,
                &mut b.input_ids[r.clone()],
                &mut b.attention_mask[r.clone()],
            )?;
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
        Ok(b)
    }
}

/// The training stream: shuffled each epoch, corrupted dynamically.
pub struct TrainStream {
    rows: RowSet,
    corruption: Corruption,
    batch_size: usize,
    /// The permutation of the epoch last used.
    perm: Option<(u64, Permutation)>,
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

    /// The row at stream position `pos`.
    fn row_at(&mut self, pos: u64) -> usize {
        let n = self.rows.len() as u64;
        let epoch = pos / n;
        if self.perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng = masking::rng_for(self.corruption.seed, Stream::Shuffle, epoch);
            self.perm = Some((epoch, Permutation::new(n, &mut rng)));
        }
        let (_, perm) = self.perm.as_ref().expect("set above");
        perm.at(pos % n) as usize
    }

    /// The micro-batch whose first row is at stream position `pos`.
    pub fn batch_at(&mut self, pos: u64) -> Result<Batch> {
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
) -> impl Iterator<Item = Result<Batch>> + '_ {
    let c = Corruption {
        table,
        specials,
        params: MaskingParams::EVAL,
        seed,
    };
    (0..rows.len().div_ceil(batch_size)).map(move |k| {
        let end = ((k + 1) * batch_size).min(rows.len());
        let picks: Vec<(usize, u64)> = (k * batch_size..end).map(|i| (i, i as u64)).collect();
        c.batch(rows, &picks, Stream::EvalMask)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_rows_appends_unattended_unselected_pad_rows_only() {
        let mut b = Batch::zeroed(2, 3);
        b.input_ids = vec![2, 7, 3, 2, 8, 3];
        b.attention_mask = vec![1; 6];
        b.labels = vec![-100, 7, -100, -100, -100, -100];
        b.original_ids = b.input_ids.clone();
        b.selected = 1;
        let before = b.clone();
        b.pad_rows(4, 0);
        assert_eq!(b.batch_size, 4);
        assert_eq!(b.input_ids, [&before.input_ids[..], &[0; 6]].concat());
        assert_eq!(b.original_ids, [&before.original_ids[..], &[0; 6]].concat());
        assert_eq!(
            b.attention_mask,
            [&before.attention_mask[..], &[0; 6]].concat()
        );
        assert_eq!(b.labels, [&before.labels[..], &[-100; 6]].concat());
        assert_eq!(b.selected, 1);
        // Never fewer rows than it has.
        b.pad_rows(1, 0);
        assert_eq!((b.batch_size, b.input_ids.len()), (4, 12));
    }
}
