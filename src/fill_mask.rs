//! Fill-mask, in the format of HF's `pipeline("fill-mask")`: for each [MASK], the top-k
//! `{score, token, token_str, sequence}` with softmax probabilities over the vocabulary.

use crate::error::UsageError;
use crate::model::BertForMaskedLM;
use crate::tokenizer::BertTokenizer;
use anyhow::Result;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::Serialize;

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

/// Candidates for every [MASK] of `text`, in order of the masks.
pub fn fill_mask(
    model: &BertForMaskedLM,
    tok: &BertTokenizer,
    text: &str,
    k: usize,
    max_len: usize,
    device: &Device,
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
            "no [MASK] in {text:?}; write [MASK] where a token should be predicted"
        ))
        .into());
    }
    if ids.len() > max_len {
        return Err(UsageError::new(format!(
            "{text:?} is {} tokens long with [CLS] and [SEP], more than the model's max_position_embeddings {max_len}; shorten it",
            ids.len()
        ))
        .into());
    }
    let s = ids.len();
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&t| t as i32).collect::<Vec<_>>(), [1, s]),
        device,
    );
    let logits = model.forward(input, Tensor::ones([1, s], device)); // [1, S, V]
    let v = logits.dims()[2];
    let mut out = Vec::new();
    for &p in &masks {
        let probs = softmax(logits.clone().slice([0..1, p..p + 1, 0..v]).reshape([v]), 0);
        let probs: Vec<f32> = probs
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut cands = Vec::new();
        for (token, score) in top_k(&probs, k) {
            let mut filled = ids.clone();
            filled[p] = token as u32;
            cands.push(Candidate {
                score: score as f64,
                token: token as u32,
                token_str: tok.decode(&[token as u32])?,
                sequence: tok.decode(&filled)?,
            });
        }
        out.push(cands);
    }
    Ok(out)
}

/// HF's JSON shape: a list of candidates for one mask, a list of such lists for several.
pub fn to_hf_json(per_mask: &[Vec<Candidate>]) -> serde_json::Value {
    if per_mask.len() == 1 {
        serde_json::to_value(&per_mask[0]).expect("plain data serializes")
    } else {
        serde_json::to_value(per_mask).expect("plain data serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_best_first_and_breaks_ties_by_index() {
        let s = [0.1, 0.5, 0.2, 0.5, 0.05];
        assert_eq!(top_k(&s, 3), vec![(1, 0.5), (3, 0.5), (2, 0.2)]);
        assert_eq!(top_k(&s, 10).len(), 5);
        assert_eq!(top_k(&s, 5).last(), Some(&(4, 0.05)));
        assert!(top_k(&s, 0).is_empty());
    }
}
