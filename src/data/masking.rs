//! BERT's dynamic corruption, as plain Rust over token ids: no tensors, tested in milliseconds.
//!
//! Reference: HF `DataCollatorForLanguageModeling.torch_mask_tokens` and Google BERT's
//! `create_masked_lm_predictions`. One decision per comment below.

use rand::RngCore;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// PyTorch's `ignore_index`: the label of every position that was not selected.
pub const IGNORE_LABEL: i32 = -100;

/// The seeded generator behind shuffling and masking. Xoshiro256++ is named explicitly (not
/// `SmallRng`, whose algorithm may change between rand releases) so that a seed gives the same
/// batches in every build, which exact resume depends on.
pub type Rng = Xoshiro256PlusPlus;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskingParams {
    /// Probability that a candidate token (or word) is selected for prediction.
    pub mask_prob: f64,
    /// Of the selected, the share replaced by `[MASK]`.
    pub mask_token_prob: f64,
    /// Of the selected, the share replaced by a random non-special token.
    pub random_token_prob: f64,
    /// Select whole words (a head token and its `##` continuations) together.
    pub whole_word: bool,
}

impl MaskingParams {
    /// The fixed corruption evaluation always uses (15%, 80/10/10), so that every run and every
    /// checkpoint is scored on the same positions.
    pub const EVAL: MaskingParams = MaskingParams {
        mask_prob: 0.15,
        mask_token_prob: 0.8,
        random_token_prob: 0.1,
        whole_word: false,
    };
}

/// What masking needs to know of each token id.
#[derive(Debug, Clone)]
pub struct TokenTable {
    /// `special[id]`: [PAD] [UNK] [CLS] [SEP] [MASK] and any other special token.
    special: Vec<bool>,
    /// `continuation[id]`: the token is a `##` sub-word continuing the previous token's word.
    continuation: Vec<bool>,
    /// Every non-special id below the vocabulary size: the pool random replacements come from.
    replacements: Vec<u32>,
    mask_id: u32,
}

impl TokenTable {
    pub fn new(special: Vec<bool>, continuation: Vec<bool>, mask_id: u32) -> Self {
        assert_eq!(
            special.len(),
            continuation.len(),
            "one entry per id in both tables"
        );
        let replacements = (0..special.len() as u32)
            .filter(|&i| !special[i as usize])
            .collect();
        Self {
            special,
            continuation,
            replacements,
            mask_id,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.special.len()
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(true)
    }

    pub fn is_continuation(&self, id: u32) -> bool {
        self.continuation.get(id as usize).copied().unwrap_or(false)
    }
}

/// A probability as a threshold on a uniform u64: `next_u64() < threshold(p)` holds with
/// probability p (to within 2^-64). Integer compares keep the hot loop free of float work.
fn threshold(p: f64) -> u64 {
    if p >= 1.0 {
        u64::MAX
    } else {
        (p * 2f64.powi(64)) as u64
    }
}

/// A uniform index below `n` by Lemire's multiply-shift (bias below n / 2^64).
fn below(rng: &mut Rng, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

/// Corrupts one row in place and writes its labels.
///
/// `ids` holds the row as the model would see it uncorrupted (`[CLS]` … `[SEP]` `[PAD]`…); on
/// return it holds the corrupted input. `labels[i]` is the original id where position i was selected
/// and [`IGNORE_LABEL`] elsewhere. Returns how many positions were selected (possibly 0: a row
/// with nothing selected is valid and simply contributes nothing to the loss).
pub fn mask_row(
    ids: &mut [u32],
    labels: &mut [i32],
    p: &MaskingParams,
    table: &TokenTable,
    rng: &mut Rng,
) -> usize {
    assert_eq!(ids.len(), labels.len(), "ids and labels are one row each");
    let select = threshold(p.mask_prob);
    // One draw u decides what a selected token becomes: u < mask → [MASK]; mask ≤ u < mask+random
    // → a random token; otherwise unchanged. With 0.8 / 0.1 that is BERT's 80/10/10 (HF draws
    // Bernoulli(0.8), then Bernoulli(0.5) of the rest: the same split).
    let to_mask = threshold(p.mask_token_prob);
    let to_random = threshold(p.mask_token_prob + p.random_token_prob);
    let mut selected = 0;
    // Whole-word masking carries the decision from a word's head token to its continuations.
    let mut word_selected = false;
    let mut prev_special = true;
    for (id, label) in ids.iter_mut().zip(labels.iter_mut()) {
        let orig = *id;
        // Special tokens and padding are never candidates ([PAD] is special).
        if table.is_special(orig) {
            *label = IGNORE_LABEL;
            prev_special = true;
            continue;
        }
        let pick = if p.whole_word {
            // A continuation right after a special token (a packed row cut mid-word) starts a
            // word of its own; its head sits in the previous row.
            if prev_special || !table.is_continuation(orig) {
                word_selected = rng.next_u64() < select;
            }
            word_selected
        } else {
            rng.next_u64() < select
        };
        prev_special = false;
        if !pick {
            *label = IGNORE_LABEL;
            continue;
        }
        selected += 1;
        *label = orig as i32;
        let u = rng.next_u64();
        if u < to_mask {
            *id = table.mask_id;
        } else if u < to_random {
            // Random replacements come from non-special ids only (HF and Google draw from the
            // whole vocabulary, specials included; a [PAD] or [CLS] mid-sentence teaches nothing).
            *id = table.replacements[below(rng, table.replacements.len())];
        }
        // else: unchanged, but still predicted.
    }
    selected
}

/// SplitMix64's finaliser: a bijective mix, so distinct inputs give distinct seeds.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Purposes that draw from the seed, kept apart so that e.g. shuffling never correlates with
/// masking.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    Shuffle = 1,
    Mask = 2,
    EvalMask = 3,
}

/// A generator for one (purpose, index) pair: the masks of the row at stream position `index`
/// depend only on the seed and that position, so they are drawn anew each time a row is used
/// (a new position each epoch), and resume reproduces them without replaying earlier batches.
pub fn rng_for(seed: u64, stream: Stream, index: u64) -> Rng {
    Rng::seed_from_u64(mix(mix(seed ^ mix(stream as u64)) ^ index))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vocabulary of 99: ids 0..5 special, ids 50..99 are `##` continuations.
    const PAD: u32 = 0;
    const CLS: u32 = 2;
    const SEP: u32 = 3;
    const MASK: u32 = 4;

    fn table() -> TokenTable {
        let special = (0..99).map(|i| i < 5).collect();
        let cont = (0..99).map(|i| i >= 50).collect();
        TokenTable::new(special, cont, MASK)
    }

    fn bert() -> MaskingParams {
        MaskingParams {
            mask_prob: 0.15,
            mask_token_prob: 0.8,
            random_token_prob: 0.1,
            whole_word: false,
        }
    }

    /// A row of seq 13: [CLS], 9 tokens, [SEP], 2 × [PAD].
    fn row(rng: &mut Rng) -> Vec<u32> {
        let mut r = vec![CLS];
        r.extend((0..9).map(|_| 5 + below(rng, 94) as u32));
        r.extend([SEP, PAD, PAD]);
        r
    }

    #[test]
    fn rates_match_configuration_over_a_million_candidates() {
        let (t, p) = (table(), bert());
        let mut rng = rng_for(7, Stream::Mask, 0);
        let (mut cand, mut sel, mut masked, mut random, mut same) = (0usize, 0, 0, 0, 0);
        while cand < 1_000_000 {
            let orig = row(&mut rng);
            let mut ids = orig.clone();
            let mut labels = vec![0; ids.len()];
            let n = mask_row(&mut ids, &mut labels, &p, &t, &mut rng);
            cand += orig.iter().filter(|&&i| !t.is_special(i)).count();
            assert_eq!(n, labels.iter().filter(|&&l| l != IGNORE_LABEL).count());
            sel += n;
            for i in 0..ids.len() {
                if labels[i] == IGNORE_LABEL {
                    assert_eq!(ids[i], orig[i], "unselected positions are untouched");
                    continue;
                }
                assert!(
                    !t.is_special(orig[i]),
                    "special or padding position selected"
                );
                assert_eq!(labels[i], orig[i] as i32, "label is the original id");
                if ids[i] == MASK {
                    masked += 1;
                } else if ids[i] == orig[i] {
                    same += 1; // a random draw of the same id lands here too: ~1/94 of 10%
                } else {
                    random += 1;
                    assert!(!t.is_special(ids[i]) && (ids[i] as usize) < 99);
                }
            }
        }
        let rate = sel as f64 / cand as f64;
        assert!((rate - 0.15).abs() < 0.005, "selection rate {rate}");
        let f = |k: usize| k as f64 / sel as f64;
        assert!((f(masked) - 0.8).abs() < 0.01, "[MASK] share {}", f(masked));
        assert!((f(random) - 0.1).abs() < 0.01, "random share {}", f(random));
        assert!((f(same) - 0.1).abs() < 0.01, "unchanged share {}", f(same));
    }

    #[test]
    fn whole_word_masking_selects_whole_words_at_the_same_rate() {
        let t = table();
        let p = MaskingParams {
            whole_word: true,
            ..bert()
        };
        let mut rng = rng_for(3, Stream::Mask, 0);
        let (mut cand, mut sel) = (0usize, 0usize);
        for _ in 0..40_000 {
            // Words of 1–3 tokens: a head in 5..50, continuations in 50..99.
            let mut orig = vec![CLS, 60]; // a leading continuation: a word of its own
            while orig.len() < 30 {
                orig.push(5 + below(&mut rng, 45) as u32);
                for _ in 0..below(&mut rng, 3) {
                    orig.push(50 + below(&mut rng, 49) as u32);
                }
            }
            orig.push(SEP);
            let mut ids = orig.clone();
            let mut labels = vec![0; ids.len()];
            sel += mask_row(&mut ids, &mut labels, &p, &t, &mut rng);
            cand += orig.len() - 2;
            // Every continuation shares its word's decision.
            for i in 2..orig.len() - 1 {
                if t.is_continuation(orig[i]) && !t.is_special(orig[i - 1]) {
                    assert_eq!(
                        labels[i] == IGNORE_LABEL,
                        labels[i - 1] == IGNORE_LABEL,
                        "row {orig:?}"
                    );
                }
            }
        }
        let rate = sel as f64 / cand as f64;
        assert!(
            cand > 100_000 && (rate - 0.15).abs() < 0.005,
            "rate {rate} over {cand}"
        );
    }

    #[test]
    fn same_seed_same_masks_other_seed_other_masks() {
        let (t, p) = (table(), bert());
        let run = |seed| {
            let mut out = Vec::new();
            for pos in 0..64 {
                let mut rng = rng_for(seed, Stream::Mask, pos);
                let mut ids = row(&mut rng);
                let mut labels = vec![0; ids.len()];
                mask_row(&mut ids, &mut labels, &p, &t, &mut rng);
                out.push((ids, labels));
            }
            out
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn all_special_row_selects_nothing() {
        let (t, p) = (table(), bert());
        let mut ids = vec![CLS, SEP, PAD, PAD];
        let mut labels = vec![0; 4];
        let n = mask_row(
            &mut ids,
            &mut labels,
            &p,
            &t,
            &mut rng_for(0, Stream::Mask, 0),
        );
        assert_eq!(n, 0);
        assert_eq!(labels, vec![IGNORE_LABEL; 4]);
        assert_eq!(ids, vec![CLS, SEP, PAD, PAD]);
    }

    #[test]
    fn all_mask_and_all_random_extremes() {
        let t = table();
        let mut rng = rng_for(0, Stream::Mask, 0);
        let all_mask = MaskingParams {
            mask_prob: 0.999,
            mask_token_prob: 1.0,
            random_token_prob: 0.0,
            whole_word: false,
        };
        let mut ids: Vec<u32> = (5..50).collect();
        let mut labels = vec![0; ids.len()];
        mask_row(&mut ids, &mut labels, &all_mask, &t, &mut rng);
        for (i, l) in ids.iter().zip(&labels) {
            assert!(*l == IGNORE_LABEL || *i == MASK);
        }
        let all_random = MaskingParams {
            mask_token_prob: 0.0,
            random_token_prob: 1.0,
            ..all_mask
        };
        let mut ids: Vec<u32> = (5..50).collect();
        mask_row(&mut ids, &mut labels, &all_random, &t, &mut rng);
        assert!(ids.iter().all(|&i| !t.is_special(i)));
    }
}
