//! Token ids → rows of `seq_len`: pure functions over slices, no tensors.
//!
//! A row is a span of the corpus ids; [`fill_row`] wraps it as `[CLS] span [SEP] [PAD]…`.
//! - packed (HF `group_texts`): the ids of every line, concatenated, cut into blocks of
//!   `seq_len - 2`; the tail shorter than a block is dropped, as HF does. No padding.
//! - line (HF `--line_by_line`): one line per row, truncated to `seq_len - 2` ids, padded.

use crate::config::Packing;
use crate::tokenizer::SpecialIds;
use std::ops::Range;

pub type Span = Range<usize>;

/// Blocks of `seq_len - 2` ids over `n_ids` concatenated ids; the short tail is dropped.
pub fn packed_spans(n_ids: usize, seq_len: usize) -> Vec<Span> {
    let block = seq_len - 2;
    (0..n_ids / block)
        .map(|i| i * block..(i + 1) * block)
        .collect()
}

/// One span per line, each cut to its first `seq_len - 2` ids.
pub fn line_spans(line_ends: &[u64], seq_len: usize) -> Vec<Span> {
    let mut start = 0usize;
    line_ends
        .iter()
        .map(|&end| {
            let end = end as usize;
            let span = start..end.min(start + seq_len - 2);
            start = end;
            span
        })
        .filter(|s| !s.is_empty())
        .collect()
}

pub fn spans(packing: Packing, n_ids: usize, line_ends: &[u64], seq_len: usize) -> Vec<Span> {
    match packing {
        Packing::Packed => packed_spans(n_ids, seq_len),
        Packing::Line => line_spans(line_ends, seq_len),
    }
}

/// Holds out the first `percent`% of the rows (at least one) for validation, as HF's
/// `run_mlm.py` takes `train[:5%]`; returns (valid, train). `None` if fewer than two rows.
pub fn split_first(mut rows: Vec<Span>, percent: f64) -> Option<(Vec<Span>, Vec<Span>)> {
    if rows.len() < 2 {
        return None;
    }
    let n_valid = ((rows.len() as f64 * percent / 100.0).ceil() as usize).clamp(1, rows.len() - 1);
    let train = rows.split_off(n_valid);
    Some((rows, train))
}

/// Writes `[CLS] ids[span] [SEP]` then padding into `out_ids` (length `seq_len`) and the
/// attention mask (1 = real token, 0 = padding) into `out_mask`.
pub fn fill_row(
    ids: &[u32],
    span: &Span,
    sp: &SpecialIds,
    out_ids: &mut [u32],
    out_mask: &mut [u8],
) {
    let n = span.len();
    debug_assert!(n + 2 <= out_ids.len(), "span longer than the row");
    out_ids[0] = sp.cls;
    out_ids[1..=n].copy_from_slice(&ids[span.clone()]);
    out_ids[n + 1] = sp.sep;
    out_ids[n + 2..].fill(sp.pad);
    out_mask[..n + 2].fill(1);
    out_mask[n + 2..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: SpecialIds = SpecialIds {
        pad: 0,
        unk: 1,
        cls: 2,
        sep: 3,
        mask: 4,
    };

    #[test]
    fn packing_loses_and_reorders_nothing_but_the_tail() {
        let ids: Vec<u32> = (0..1000).map(|i| 5 + (i * 7919 % 94)).collect();
        for seq_len in [3, 7, 13, 128] {
            let spans = packed_spans(ids.len(), seq_len);
            let mut rebuilt: Vec<u32> = Vec::new();
            let mut row = vec![0; seq_len];
            let mut mask = vec![0; seq_len];
            for s in &spans {
                fill_row(&ids, s, &SP, &mut row, &mut mask);
                assert_eq!((row[0], row[seq_len - 1]), (SP.cls, SP.sep));
                assert!(mask.iter().all(|&m| m == 1), "packed rows have no padding");
                rebuilt.extend(row.iter().filter(|&&t| !SP.all().contains(&t)));
            }
            let kept = ids.len() / (seq_len - 2) * (seq_len - 2);
            assert_eq!(rebuilt, ids[..kept], "seq_len {seq_len}");
            assert!(ids.len() - kept < seq_len - 2);
        }
    }

    #[test]
    fn line_rows_truncate_and_pad() {
        // Lines of 2, 9 and 1 ids.
        let ids: Vec<u32> = (5..17).collect();
        let spans = line_spans(&[2, 11, 12], 7);
        assert_eq!(spans, vec![0..2, 2..7, 11..12]);
        let (mut row, mut mask) = (vec![9; 7], vec![9; 7]);
        fill_row(&ids, &spans[0], &SP, &mut row, &mut mask);
        assert_eq!(row, [2, 5, 6, 3, 0, 0, 0]);
        assert_eq!(mask, [1, 1, 1, 1, 0, 0, 0]);
        fill_row(&ids, &spans[1], &SP, &mut row, &mut mask);
        assert_eq!(row, [2, 7, 8, 9, 10, 11, 3]);
    }

    #[test]
    fn split_holds_out_the_first_rows() {
        let rows: Vec<Span> = (0..100).map(|i| i..i + 1).collect();
        let (valid, train) = split_first(rows.clone(), 5.0).unwrap();
        assert_eq!((valid.len(), train.len()), (5, 95));
        assert_eq!(valid[0], 0..1);
        assert_eq!(split_first(rows[..2].to_vec(), 5.0).unwrap().0.len(), 1);
        assert!(split_first(rows[..1].to_vec(), 5.0).is_none());
    }
}
