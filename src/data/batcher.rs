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
    /// [N] flat positions `b * S + s` of the selected tokens.
    pub positions: Tensor<1, Int>,
    /// [N] the original ids there.
    pub labels: Tensor<1, Int>,
    /// N, known without reading the device.
    pub selected: usize,
}

impl TensorBatch {
    pub fn new(b: &Batch, device: &Device) -> Self {
        let shape = [b.batch_size, b.seq_len];
        let ids: Vec<i32> = b.input_ids.iter().map(|&x| x as i32).collect();
        let mask: Vec<i32> = b.attention_mask.iter().map(|&x| x as i32).collect();
        let (positions, labels): (Vec<i32>, Vec<i32>) = b
            .labels
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l != IGNORE_LABEL)
            .map(|(i, &l)| (i as i32, l))
            .unzip();
        let n = positions.len();
        Self {
            input_ids: Tensor::from_data(TensorData::new(ids, shape), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, shape), device),
            positions: Tensor::from_data(TensorData::new(positions, [n]), device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
            selected: n,
        }
    }
}
