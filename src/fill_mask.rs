//! Fill-mask, in the format of HF's `pipeline("fill-mask")`: for each `[MASK]`, the top-k
//! `{score, token, token_str, sequence}` with softmax probabilities over the vocabulary.

use crate::data::masking::TokenTable;
use crate::error::UsageError;
use crate::model::BertForMaskedLM;
use crate::tokenizer::BertTokenizer;
use anyhow::Result;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::Serialize;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub score: f64,
    pub token: u32,
    pub token_str: String,
    /// The input with this mask filled by the candidate, decoded without special tokens.
    pub sequence: String,
}

/// The `k` largest of `scores` as (index, score), best first; ties keep the lower index first
/// (as a stable sort would). Pure, so it is tested without tensors.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, by_score);
        idx.truncate(k);
    }
    idx.sort_by(by_score);
    idx.into_iter().map(|i| (i, scores[i])).collect()
}

/// Which candidates [`fill_mask`] gives for each mask.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// How many, the most probable first.
    pub top_k: usize,
    /// Only these token ids ([`target_ids`]) when given.
    pub targets: Option<&'a [u32]>,
}

impl Wanted<'_> {
    /// The `k` most probable tokens of the vocabulary.
    pub fn top(k: usize) -> Self {
        Wanted {
            top_k: k,
            targets: None,
        }
    }
}

/// The ids of fill-mask's `targets`, as HF's pipeline finds them (`targets=`): a token of the
/// vocabulary is its id; other text is tokenized and its first token taken, or left out when it
/// gives none. Duplicates count once, in the order first named. Returns the ids and a note for
/// each target that was not a token as given.
pub fn target_ids(tok: &BertTokenizer, targets: &[String]) -> Result<(Vec<u32>, Vec<String>)> {
    let (mut ids, mut notes) = (Vec::new(), Vec::new());
    for t in targets {
        let id = match tok.token_to_id(t) {
            Some(id) => id,
            None => match tok.encode_batch(vec![t])?.first().and_then(|e| e.first()) {
                Some(&id) => {
                    notes.push(format!(
                        "target {t:?} is not a token of the vocabulary; using its first token, {:?}",
                        tok.token(id)
                    ));
                    id
                }
                None => {
                    notes.push(format!("target {t:?} gives no token; it is left out"));
                    continue;
                }
            },
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(UsageError::new(format!(
            "no --target gives a token ({}); name tokens of the vocabulary, e.g. --target cat",
            notes.join("; ")
        ))
        .into());
    }
    Ok((ids, notes))
}

/// `text` quoted for a message, its first 80 characters only (an input line may be a megabyte).
fn quoted_start(text: &str) -> String {
    const SHOWN: usize = 80;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}… ({} characters)", &text[..cut], text.chars().count()),
        None => format!("{text:?}"),
    }
}

/// How a text's row and its masks are padded before the model sees them. On a GPU every new shape
/// compiles (and autotunes) the encoder's kernels again, so that a file of texts of many lengths
/// would spend most of its time compiling; padded, texts share a few shapes. The padding tokens
/// have attention mask 0 and the padding masks point at `[CLS]` and are dropped, so the answers
/// are the unpadded ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padding {
    /// The row's length is rounded up to a multiple of this (within `max_position_embeddings`).
    pub row: usize,
    /// The number of masks is rounded up to a multiple of this.
    pub masks: usize,
}

impl Padding {
    /// No padding: what the CPU backends use, where a shape costs nothing to change.
    pub const NONE: Padding = Padding { row: 1, masks: 1 };

    /// `NONE` on the CPU; on a GPU, rows to a multiple of 32 tokens and the masks as a training
    /// step pads its selected positions (`selection_multiple`).
    pub fn for_device(device: &Device) -> Padding {
        if !crate::train::device::on_cube(device) {
            return Padding::NONE;
        }
        let masks = crate::train::device::selection_multiple(device, 1);
        Padding { row: 32, masks }
    }

    /// `len` rounded up to the row multiple, at most `max_len` (and never below `len`).
    pub fn row_len(self, len: usize, max_len: usize) -> usize {
        len.next_multiple_of(self.row).min(max_len).max(len)
    }
}

/// Candidates for every `[MASK]` of `text`, in order of the masks; `padding` is
/// [`Padding::for_device`] but in tests that check it changes no answer.
pub fn fill_mask(
    model: &BertForMaskedLM,
    tok: &BertTokenizer,
    text: &str,
    wanted: Wanted<'_>,
    max_len: usize,
    device: &Device,
    padding: Padding,
) -> Result<Vec<Vec<Candidate>>> {
    let ids = tok.encode_with_specials(text)?;
    let mask_id = tok.specials().mask;
    let masks: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t == mask_id)
        .map(|(i, _)| i)
        .collect();
    if masks.is_empty() {
        return Err(UsageError::new(format!(
            "no [MASK] in {}; write [MASK] where a token should be predicted",
            quoted_start(text)
        ))
        .into());
    }
    if ids.len() > max_len {
        return Err(UsageError::new(format!(
            "{} is {} tokens long with [CLS] and [SEP], more than the model's \
             max_position_embeddings {max_len}; shorten it",
            quoted_start(text),
            ids.len()
        ))
        .into());
    }
    // [1, S] ids and attention mask, S the padded length; [M] mask positions, M the padded
    // count, the padding ones at [CLS].
    let s = padding.row_len(ids.len(), max_len);
    let mut row: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    row.resize(s, tok.specials().pad as i32);
    let attention: Vec<i32> = (0..s).map(|i| (i < ids.len()) as i32).collect();
    let m = masks.len().next_multiple_of(padding.masks);
    let mut at: Vec<i32> = masks.iter().map(|&p| p as i32).collect();
    at.resize(m, 0);
    let input = Tensor::<2, Int>::from_data(TensorData::new(row, [1, s]), device);
    let attention = Tensor::<2, Int>::from_data(TensorData::new(attention, [1, s]), device);
    let at = Tensor::<1, Int>::from_data(TensorData::new(at, [m]), device);
    // [M, V] probabilities at the masks, the real ones read in one transfer.
    let logits = model.forward_selected(input, attention, at);
    let v = logits.dims()[1];
    let probs = softmax(logits, 1).slice(0..masks.len());
    let probs: Vec<f32> = probs
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut out = Vec::new();
    // Candidates are the tokenizer's ids: the rows of a padded vocabulary (`model.vocab_size`)
    // have probabilities but no token.
    let ids_known = tok.vocab_size().min(v);
    for (m, &p) in masks.iter().enumerate() {
        let probs = &probs[m * v..m * v + ids_known];
        // With targets, HF's pipeline ranks their probabilities (over the whole vocabulary) alone.
        let k = wanted.top_k;
        let best = match wanted.targets {
            None => top_k(probs, k),
            Some(ids) => {
                let ids: Vec<usize> = ids
                    .iter()
                    .map(|&t| t as usize)
                    .filter(|&t| t < ids_known)
                    .collect();
                let scores: Vec<f32> = ids.iter().map(|&t| probs[t]).collect();
                top_k(&scores, k)
                    .into_iter()
                    .map(|(i, score)| (ids[i], score))
                    .collect()
            }
        };
        let mut cands = Vec::new();
        for (token, score) in best {
            let mut filled = ids.clone();
            filled[p] = token as u32;
            // As HF's pipeline decodes: the token with special tokens kept (a predicted [SEP] is
            // "[SEP]"), the sequence without [PAD] and without the other special tokens for one
            // mask, with them ([CLS], [SEP] and the other masks) for several.
            let pad = tok.specials().pad;
            filled.retain(|&t| t != pad);
            cands.push(Candidate {
                score: score as f64,
                token: token as u32,
                token_str: tok.decode(&[token as u32], false)?,
                sequence: tok.decode(&filled, masks.len() == 1)?,
            });
        }
        out.push(cands);
    }
    Ok(out)
}

/// A text and its tokens, each with the byte range of the text it came from.
pub type TokenizedLine = (String, Vec<(u32, Range<usize>)>);

/// How many of the corpus's most frequent tokens count as "frequent" for [`pick_examples`].
pub const FREQUENT_TOKENS: usize = 500;

/// Up to `n` fill-mask examples from `lines` (held-out text, each with its tokens and their byte
/// ranges): in each line that fits the model (`max_len` tokens with `[CLS]` and `[SEP]`) and has at
/// least 5 tokens, the word masked is the rarest of its maskable words. `freq[id]` is the
/// token's count in the training corpus when the token is maskable (a whole word of three or
/// more letters among the corpus's frequent tokens, so the model has seen it often and it is
/// not just "a"), else `None`; `table` tells `##` pieces, so only words that are one token whole
/// are masked. Plain Rust, no model: what `train` shows after training.
pub fn pick_examples(
    lines: &[TokenizedLine],
    freq: &[Option<u64>],
    table: &TokenTable,
    max_len: usize,
    n: usize,
) -> Vec<String> {
    let maskable = |tokens: &[(u32, Range<usize>)], i: usize| {
        let next_continues = tokens
            .get(i + 1)
            .is_some_and(|(id, _)| table.is_continuation(*id));
        let f = freq.get(tokens[i].0 as usize).copied().flatten();
        f.filter(|_| !next_continues)
    };
    let mut out = Vec::new();
    for (text, tokens) in lines {
        if out.len() == n {
            break;
        }
        if tokens.len() < 5 || tokens.len() + 2 > max_len {
            continue;
        }
        let rarest = (0..tokens.len())
            .filter_map(|i| maskable(tokens, i).map(|f| (f, i)))
            .min();
        if let Some((_, i)) = rarest {
            let r = tokens[i].1.clone();
            out.push(format!("{}[MASK]{}", &text[..r.start], &text[r.end..]));
        }
    }
    out
}

/// The sentences of `text`: each ends after `.`, `!` or `?` (and any closing quotes) that is
/// followed by whitespace or the end; surrounding whitespace trimmed, empty ones dropped.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, q)) = chars.peek() {
            if !matches!(q, '"' | '\'' | '”' | '’' | ')') {
                break;
            }
            end = j + q.len_utf8();
            chars.next();
        }
        if chars.peek().is_none_or(|&(_, n)| n.is_whitespace()) {
            out.push(text[start..end].trim());
            start = end;
        }
    }
    out.push(text[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// `freq` of [`pick_examples`] from the training ids (`ids`) and a tokenizer's token strings.
pub fn maskable_frequencies(ids: &[u32], tok: &BertTokenizer) -> Vec<Option<u64>> {
    let mut counts = vec![0u64; tok.vocab_size()];
    for &id in ids {
        if let Some(c) = counts.get_mut(id as usize) {
            *c += 1;
        }
    }
    let mut by_count: Vec<u32> = (0..counts.len() as u32).collect();
    by_count.sort_by_key(|&id| std::cmp::Reverse(counts[id as usize]));
    let mut freq = vec![None; counts.len()];
    for &id in by_count.iter().take(FREQUENT_TOKENS) {
        let word = tok.token(id);
        let is_word = word.chars().count() >= 3 && word.chars().all(char::is_alphabetic);
        if is_word && counts[id as usize] > 0 {
            freq[id as usize] = Some(counts[id as usize]);
        }
    }
    freq
}

/// HF's JSON shape: a list of candidates for one mask, a list of such lists for several, each
/// candidate's keys in HF's order (`score`, `token`, `token_str`, `sequence`).
pub fn to_hf_json(per_mask: &[Vec<Candidate>]) -> String {
    if per_mask.len() == 1 {
        serde_json::to_string(&per_mask[0]).expect("plain data serializes")
    } else {
        serde_json::to_string(per_mask).expect("plain data serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_the_start_of_a_long_text() {
        assert_eq!(quoted_start("a [MASK]"), "\"a [MASK]\"");
        let long = "é".repeat(100);
        let q = quoted_start(&long);
        assert_eq!(q, format!("{:?}… (100 characters)", "é".repeat(80)));
    }

    /// Tokens split at spaces, ids given by `vocab` order; "##" words continue the previous one.
    fn tokenized(text: &str, vocab: &[&str]) -> TokenizedLine {
        let mut at = 0;
        let mut toks = Vec::new();
        for w in text.split(' ') {
            let id = vocab.iter().position(|v| *v == w).unwrap() as u32;
            toks.push((id, at..at + w.len()));
            at += w.len() + 1;
        }
        (text.to_string(), toks)
    }

    #[test]
    fn sentences_end_at_stops_followed_by_space_with_their_quotes() {
        assert_eq!(
            sentences("He said, \"Hi, Mom.\" She smiled! Was it 3.5 m? yes"),
            vec![
                "He said, \"Hi, Mom.\"",
                "She smiled!",
                "Was it 3.5 m?",
                "yes"
            ]
        );
        assert_eq!(sentences("  one.  "), vec!["one."]);
        assert!(sentences("   ").is_empty());
    }

    #[test]
    fn examples_mask_the_rarest_frequent_whole_word_of_lines_that_fit() {
        let vocab = [
            "the", "dog", "ran", "to", "park", "##s", "a", "cat", "sat", "big", "hat",
        ];
        // Counts: the most frequent words; None: not maskable (too short, a piece, rare).
        let freq: Vec<Option<u64>> = vec![
            Some(900),
            Some(50),
            Some(40),
            None,
            Some(30),
            None,
            None,
            Some(60),
            Some(70),
            Some(80),
            Some(20),
        ];
        let cont: Vec<bool> = vocab.iter().map(|v| v.starts_with("##")).collect();
        let cont = TokenTable::new(vec![false; vocab.len()], cont, 0);
        let lines = vec![
            tokenized("the dog ran to the park", &vocab),
            // Too short (4 tokens).
            tokenized("the cat sat ##s", &vocab),
            // "hat" is followed by a piece: not a whole word; "cat" (60) is the rarest left.
            tokenized("the big cat sat the hat ##s", &vocab),
            tokenized("the dog ran to the park the dog ran to the park", &vocab),
        ];
        let got = pick_examples(&lines, &freq, &cont, 14, 10);
        assert_eq!(
            got,
            vec![
                "the dog ran to the [MASK]".to_string(),
                "the big [MASK] sat the hat ##s".to_string(),
                "the dog ran to the [MASK] the dog ran to the park".to_string(),
            ]
        );
        // max_len counts [CLS] and [SEP]: the 12-token line needs 14.
        assert_eq!(pick_examples(&lines, &freq, &cont, 13, 10).len(), 2);
        assert_eq!(pick_examples(&lines, &freq, &cont, 14, 1).len(), 1);
    }

    #[test]
    fn top_k_orders_best_first_and_breaks_ties_by_index() {
        let s = [0.1, 0.5, 0.2, 0.5, 0.05];
        assert_eq!(top_k(&s, 3), vec![(1, 0.5), (3, 0.5), (2, 0.2)]);
        assert_eq!(top_k(&s, 10).len(), 5);
        assert_eq!(top_k(&s, 5).last(), Some(&(4, 0.05)));
        assert!(top_k(&s, 0).is_empty());
    }
}
