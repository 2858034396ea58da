//! Token ids → rows of `seq_len`: pure functions over slices, no files, no tensors.
//!
//! A row is `[CLS] content [SEP] [PAD]…`, with at most `seq_len - 2` content ids:
//! - packed (HF `group_texts`): the corpus as one stream, each document's ids followed by a
//!   `[SEP]`, cut into blocks of `seq_len - 2`; the tail shorter than a block is dropped, as HF
//!   does. No padding. A row may span documents (the `[SEP]` between them says where one ends,
//!   as HF's per-text `[CLS] … [SEP]` and Cramming's separators do) and shards.
//! - line (HF `--line_by_line`): one line per row, truncated to `seq_len - 2` ids, padded.
//!
//! The store keeps ids without separators and, per shard, the offsets where documents end
//! ([`Segment::seps`]); packed positions count those separators ("virtual" positions), so
//! `line` rows and the store are unchanged by them.

use crate::config::Packing;
use crate::tokenizer::SpecialIds;
use std::ops::Range;

/// Token ids as stored: u16 when the vocabulary fits, u32 otherwise.
#[derive(Debug, Clone, Copy)]
pub enum Ids<'a> {
    U16(&'a [u16]),
    U32(&'a [u32]),
}

impl Ids<'_> {
    pub fn len(&self) -> usize {
        match self {
            Ids::U16(v) => v.len(),
            Ids::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `ids[range]` into `out` (of the range's length); stored little-endian.
    pub fn copy_to(&self, range: Range<usize>, out: &mut [u32]) {
        match self {
            Ids::U16(v) => {
                for (o, &x) in out.iter_mut().zip(&v[range]) {
                    *o = u16::from_le(x) as u32;
                }
            }
            Ids::U32(v) => {
                for (o, &x) in out.iter_mut().zip(&v[range]) {
                    *o = u32::from_le(x);
                }
            }
        }
    }
}

/// One shard's tokens: its ids, where each of its lines ends, and the offsets before which a
/// document ended (a `[SEP]` goes there in packed rows; `ids.len()` when one ends at the shard's
/// end).
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub ids: Ids<'a>,
    pub line_ends: &'a [u32],
    pub seps: &'a [u32],
}

impl Segment<'_> {
    /// Length of the shard's packed stream: its ids and its separators.
    pub fn packed_len(&self) -> u64 {
        (self.ids.len() + self.seps.len()) as u64
    }

    /// The separators before packed position `v`. Separator j sits at packed position
    /// `seps[j] + j`, which grows with j: a binary search.
    pub fn seps_before(&self, v: u64) -> usize {
        let (mut lo, mut hi) = (0usize, self.seps.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if (self.seps[mid] as u64 + mid as u64) < v {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Copies the packed stream from position `v` on into `out`, as much as this shard holds;
    /// returns how many were written.
    pub fn fill_packed(&self, v: u64, sep: u32, out: &mut [u32]) -> usize {
        self.fill_packed_after(v, self.seps_before(v), sep, out)
    }

    /// [`Segment::fill_packed`] given `j = seps_before(v)`: from the id `v - j` on.
    pub fn fill_packed_after(&self, v: u64, j: usize, sep: u32, out: &mut [u32]) -> usize {
        let seps = self.seps;
        let (mut j, mut real) = (j, (v - j as u64) as usize);
        let mut written = 0;
        while written < out.len() {
            let run_end = seps.get(j).map_or(self.ids.len(), |&s| s as usize);
            let n = (run_end - real).min(out.len() - written);
            self.ids
                .copy_to(real..real + n, &mut out[written..written + n]);
            (written, real) = (written + n, real + n);
            if written == out.len() || j == seps.len() {
                break;
            }
            if real == run_end {
                out[written] = sep;
                (written, j) = (written + 1, j + 1);
            }
        }
        written
    }

    /// The ids of line `k`'s first `max`.
    pub fn line_range(&self, k: usize, max: usize) -> Range<usize> {
        let start = if k == 0 {
            0
        } else {
            self.line_ends[k - 1] as usize
        };
        start..(self.line_ends[k] as usize).min(start + max)
    }

    /// Line `k`'s first `max` ids into `out`; returns how many.
    pub fn fill_line(&self, k: usize, max: usize, out: &mut [u32]) -> usize {
        let r = self.line_range(k, max);
        let n = r.len();
        self.ids.copy_to(r, &mut out[..n]);
        n
    }
}

/// Rows of `seq_len` over a corpus of `packed_len` packed positions or `n_lines` lines.
pub fn count(packing: Packing, packed_len: u64, n_lines: u64, seq_len: usize) -> u64 {
    match packing {
        Packing::Packed => packed_len / (seq_len as u64 - 2),
        Packing::Line => n_lines,
    }
}

/// Holds out the first `percent`% of `n` rows (at least one) for validation, as HF's
/// `run_mlm.py` takes `train[:5%]`; returns (valid, train). `None` if fewer than two rows.
pub fn split_first(n: u64, percent: f64) -> Option<(Range<u64>, Range<u64>)> {
    if n < 2 {
        return None;
    }
    let n_valid = ((n as f64 * percent / 100.0).ceil() as u64).clamp(1, n - 1);
    Some((0..n_valid, n_valid..n))
}

/// Turns `out_ids[1..=n]`, the row's content, into `[CLS] content [SEP]` then padding, and
/// writes the attention mask (1 = real token, 0 = padding) into `out_mask`.
pub fn wrap_row(n: usize, sp: &SpecialIds, out_ids: &mut [u32], out_mask: &mut [u8]) {
    debug_assert!(n + 2 <= out_ids.len(), "content longer than the row");
    out_ids[0] = sp.cls;
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

    /// Documents of ids (each a list of lines) as one segment, u16 or u32.
    fn segment(docs: &[&[&[u32]]]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let (mut ids, mut lines, mut seps) = (Vec::new(), Vec::new(), Vec::new());
        for doc in docs {
            for line in *doc {
                ids.extend_from_slice(line);
                lines.push(ids.len() as u32);
            }
            seps.push(ids.len() as u32);
        }
        (ids, lines, seps)
    }

    #[test]
    fn packed_stream_puts_a_sep_after_each_document_and_reads_from_any_position() {
        let (ids, lines, seps) = segment(&[&[&[10, 11], &[12]], &[&[13, 14]], &[&[15]]]);
        let wide: Vec<u16> = ids.iter().map(|&x| x as u16).collect();
        let want = [10, 11, 12, 3, 13, 14, 3, 15, 3];
        for ids in [Ids::U32(&ids), Ids::U16(&wide)] {
            let seg = Segment {
                ids,
                line_ends: &lines,
                seps: &seps,
            };
            assert_eq!(seg.packed_len(), want.len() as u64);
            for v in 0..want.len() {
                for len in 1..=want.len() {
                    let mut out = vec![0; len];
                    let n = seg.fill_packed(v as u64, SP.sep, &mut out);
                    let expect = &want[v..(v + len).min(want.len())];
                    assert_eq!(&out[..n], expect, "from {v}, room {len}");
                }
            }
        }
    }

    #[test]
    fn packed_stream_handles_a_segment_that_ends_mid_document() {
        // The document continues in the next shard: no separator at this one's end.
        let ids = [20, 21, 22];
        let seg = Segment {
            ids: Ids::U32(&ids),
            line_ends: &[1, 3],
            seps: &[1],
        };
        let mut out = [0; 8];
        assert_eq!(seg.fill_packed(0, SP.sep, &mut out), 4);
        assert_eq!(out[..4], [20, 3, 21, 22]);
        assert_eq!(seg.fill_packed(2, SP.sep, &mut out), 2);
        assert_eq!(out[..2], [21, 22]);
    }

    #[test]
    fn line_rows_truncate_and_pad() {
        // Lines of 2, 9 and 1 ids.
        let ids: Vec<u32> = (5..17).collect();
        let seg = Segment {
            ids: Ids::U32(&ids),
            line_ends: &[2, 11, 12],
            seps: &[12],
        };
        let (mut row, mut mask) = (vec![9; 7], vec![9; 7]);
        let n = seg.fill_line(0, 5, &mut row[1..]);
        wrap_row(n, &SP, &mut row, &mut mask);
        assert_eq!(row, [2, 5, 6, 3, 0, 0, 0]);
        assert_eq!(mask, [1, 1, 1, 1, 0, 0, 0]);
        let n = seg.fill_line(1, 5, &mut row[1..]);
        wrap_row(n, &SP, &mut row, &mut mask);
        assert_eq!(row, [2, 7, 8, 9, 10, 11, 3]);
        assert_eq!(mask, [1; 7]);
        assert_eq!(seg.fill_line(2, 5, &mut row[1..]), 1);
        assert_eq!(count(Packing::Line, 99, 3, 7), 3);
        assert_eq!(count(Packing::Packed, 11, 3, 7), 2);
    }

    #[test]
    fn split_holds_out_the_first_rows() {
        assert_eq!(split_first(100, 5.0), Some((0..5, 5..100)));
        assert_eq!(split_first(2, 5.0), Some((0..1, 1..2)));
        assert_eq!(split_first(1, 5.0), None);
    }
}
