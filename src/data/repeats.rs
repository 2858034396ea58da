//! How much of a corpus repeats itself, line by line. MLM loss stalls on duplicated text (around
//! 7, in reports users filed against the reference implementations), so building a token store
//! says when a corpus is full of repeated lines. Lines are compared as token ids; one line in
//! [`SAMPLE`] is looked at, chosen by its hash, so that every copy of a line is in the sample or
//! none is, and the share of repeats in the sample estimates the corpus's.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

/// One line in this many is sampled (by hash).
pub const SAMPLE: u64 = 8;
/// The most distinct sampled lines remembered (about 16 MB); later lines are still checked
/// against them.
pub const MAX_KEPT: usize = 1 << 20;
/// Below this many sampled lines, no share is estimated.
pub const MIN_SAMPLED: u64 = 64;
/// The share of repeated lines from which building a store warns.
pub const WARN_SHARE: f64 = 0.2;

#[derive(Debug, Default)]
pub struct RepeatedLines {
    seen: HashSet<u64>,
    sampled: u64,
    repeats: u64,
}

impl RepeatedLines {
    /// Counts one line (its token ids; an empty line is no line of text).
    pub fn observe(&mut self, ids: &[u32]) {
        if ids.is_empty() {
            return;
        }
        let mut h = DefaultHasher::new();
        ids.hash(&mut h);
        let h = h.finish();
        if !h.is_multiple_of(SAMPLE) {
            return;
        }
        self.sampled += 1;
        if self.seen.contains(&h) {
            self.repeats += 1;
        } else if self.seen.len() < MAX_KEPT {
            self.seen.insert(h);
        }
    }

    /// The estimated share of lines that repeat an earlier line, once enough were sampled.
    pub fn share(&self) -> Option<f64> {
        (self.sampled >= MIN_SAMPLED).then(|| self.repeats as f64 / self.sampled as f64)
    }

    /// A note for the user when the share reaches [`WARN_SHARE`].
    pub fn warning(&self, corpus: &str) -> Option<String> {
        let share = self.share().filter(|&s| s >= WARN_SHARE)?;
        Some(format!(
            "note: about {:.0}% of the lines of {corpus} repeat an earlier line (estimated from \
             one line in {SAMPLE}); masked-LM loss stalls on duplicated text, so remove the \
             repeated lines from the corpus",
            100.0 * share
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: u32, copies: u32) -> RepeatedLines {
        let mut r = RepeatedLines::default();
        for _ in 0..copies {
            for i in 0..n {
                r.observe(&[i, i * 7 + 1, 3]);
                r.observe(&[]);
            }
        }
        r
    }

    #[test]
    fn distinct_lines_repeat_nothing_and_copies_are_counted() {
        let none = lines(5000, 1);
        assert_eq!(none.share(), Some(0.0));
        assert!(none.warning("c.txt").is_none());
        // Each line four times: three of every four lines repeat an earlier one.
        let four = lines(5000, 4);
        assert_eq!(four.share(), Some(0.75));
        let w = four.warning("c.txt").unwrap();
        assert!(w.contains("75%") && w.contains("c.txt"), "{w}");
        // About one line in SAMPLE is looked at.
        let sampled = four.sampled as f64 / 20_000.0;
        assert!((sampled - 1.0 / SAMPLE as f64).abs() < 0.02, "{sampled}");
    }

    #[test]
    fn too_few_lines_give_no_estimate() {
        assert_eq!(lines(10, 50).share(), None);
        assert!(RepeatedLines::default().warning("c.txt").is_none());
    }
}
