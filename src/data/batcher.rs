//! A [`Batch`] of plain vectors → tensors on a device: the one place data becomes tensors.

use super::batches::Batch;
use super::masking::IGNORE_LABEL;
use burn::prelude::*;

/// One micro-batch as the model takes it.
#[derive(Debug, Clone)]
pub struct TensorBatch {
    /// [B, S] corrupted ids.
    pub input_ids: Tensor<2, Int>,
    /// [B, S] 1 on real tokens, 0 on padding.
    pub attention_mask: Tensor<2, Int>,
    /// `[N]` flat positions `b * S + s` of the selected tokens.
    pub positions: Tensor<1, Int>,
    /// `[N]` the original ids there.
    pub labels: Tensor<1, Int>,
    /// N, known without reading the device.
    pub selected: usize,
    /// [N + padding] 1 on the selected positions, 0 on the padding after them ([`Self::padded`]);
    /// `None` when nothing was padded.
    pub weights: Option<Tensor<1>>,
}

impl TensorBatch {
    /// The batch `b` on `device`, with `positions` and `labels` padded to a multiple of `multiple`
    /// (position 0, label 0, weight 0), so that the shapes of the masked-LM head's operations
    /// change only when the selected count crosses a multiple. On a GPU every new shape can mean
    /// new kernels, compiled and autotuned in the middle of a run: with 15% selected, the count
    /// changes every step.
    pub fn padded(b: &Batch, device: &Device, multiple: usize) -> Self {
        let shape = [b.batch_size, b.seq_len];
        let ids: Vec<i32> = b.input_ids.iter().map(|&x| x as i32).collect();
        let mask: Vec<i32> = b.attention_mask.iter().map(|&x| x as i32).collect();
        let (mut positions, mut labels): (Vec<i32>, Vec<i32>) = b
            .labels
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l != IGNORE_LABEL)
            .map(|(i, &l)| (i as i32, l))
            .unzip();
        let n = positions.len();
        let padded = n.next_multiple_of(multiple.max(1));
        let weights = (padded > n).then(|| {
            positions.resize(padded, 0);
            labels.resize(padded, 0);
            let w: Vec<f32> = (0..padded).map(|i| if i < n { 1.0 } else { 0.0 }).collect();
            Tensor::from_data(TensorData::new(w, [padded]), device)
        });
        Self {
            input_ids: Tensor::from_data(TensorData::new(ids, shape), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, shape), device),
            positions: Tensor::from_data(TensorData::new(positions, [padded]), device),
            labels: Tensor::from_data(TensorData::new(labels, [padded]), device),
            selected: n,
            weights,
        }
    }
}
