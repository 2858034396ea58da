//! How much of a corpus repeats itself, line by line. MLM loss stalls on duplicated text (around
//! 7, in reports users filed against the reference implementations), so building a token store
//! says when a corpus is full of repeated lines. Lines are compared as token ids; one line in
//! [`SAMPLE`] is looked at (fewer in a corpus of millions of distinct lines), chosen by its hash,
//! so that every copy of a line is in the sample or none is, and the share of repeats in the
//! sample estimates the corpus's.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// At first one line in this many is sampled (by hash).
pub const SAMPLE: u64 = 8;
/// The most distinct sampled lines held (about 17 MB); past it the sample halves (by hash again),
/// so a corpus of any size is sampled evenly from its first line to its last.
pub const MAX_KEPT: usize = 1 << 19;
/// Below this many sampled lines, no share is estimated.
pub const MIN_SAMPLED: u64 = 64;
/// The share of repeated lines from which building a store warns.
pub const WARN_SHARE: f64 = 0.2;

#[derive(Debug)]
pub struct RepeatedLines {
    /// The copies seen of each sampled line, by hash.
    copies: HashMap<u64, u64>,
    /// A line is sampled when its hash is a multiple of this: [`SAMPLE`], doubled each time more
    /// than [`MAX_KEPT`] lines are held, dropping those outside the new sample. A line kept at
    /// one rate was sampled at every rate before, so its count is exact.
    every: u64,
}

impl Default for RepeatedLines {
    fn default() -> Self {
        Self {
            copies: HashMap::new(),
            every: SAMPLE,
        }
    }
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
        if !h.is_multiple_of(self.every) {
            return;
        }
        *self.copies.entry(h).or_insert(0) += 1;
        if self.copies.len() > MAX_KEPT {
            self.every *= 2;
            let every = self.every;
            self.copies.retain(|h, _| h.is_multiple_of(every));
        }
    }

    /// Sampled lines, and those of them that repeat an earlier one.
    fn counts(&self) -> (u64, u64) {
        let sampled: u64 = self.copies.values().sum();
        (sampled, sampled - self.copies.len() as u64)
    }

    /// The estimated share of lines that repeat an earlier line, once enough were sampled.
    pub fn share(&self) -> Option<f64> {
        let (sampled, repeats) = self.counts();
        (sampled >= MIN_SAMPLED).then(|| repeats as f64 / sampled as f64)
    }

    /// A note for the user when the share reaches [`WARN_SHARE`].
    pub fn warning(&self, corpus: &str) -> Option<String> {
        let share = self.share().filter(|&s| s >= WARN_SHARE)?;
        Some(format!(
            "note: about {:.0}% of the lines of {corpus} repeat an earlier line (estimated from \
             one line in {}); masked-LM loss stalls on duplicated text, so remove the repeated \
             lines from the corpus",
            100.0 * share,
            self.every
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
        let sampled = four.counts().0 as f64 / 20_000.0;
        assert!((sampled - 1.0 / SAMPLE as f64).abs() < 0.02, "{sampled}");
    }

    #[test]
    fn repeats_far_into_a_large_corpus_are_still_counted() {
        // More distinct lines than the sample holds at one line in 8, then each of them again:
        // half the lines repeat, though the repeats come after the sample had to shrink.
        let mut r = RepeatedLines::default();
        let n = 3 * MAX_KEPT as u32 * SAMPLE as u32;
        for _ in 0..2 {
            for i in 0..n {
                r.observe(&[i, 11]);
            }
        }
        assert!(r.every > SAMPLE && r.copies.len() <= MAX_KEPT);
        let share = r.share().unwrap();
        assert!((share - 0.5).abs() < 0.01, "{share}");
    }

    #[test]
    fn too_few_lines_give_no_estimate() {
        assert_eq!(lines(10, 50).share(), None);
        assert!(RepeatedLines::default().warning("c.txt").is_none());
    }
}
