//! [`NllOps`] on CubeCL devices. Forward: one cube per row of the logits, its maximum and
//! Σ exp in f32 shared memory, writing the row's weighted log-probability of its label and its
//! log Σ exp; then burn's sum of the rows. Backward: one unit per logit. Written here because
//! burn's operations for the same computation are about 30 a step that fusion mostly runs one
//! kernel each (`loss.rs`).

use crate::cube_reduce::{contiguous_in, cube_max, cube_sum, empty_like, row_cubes};
use crate::model::loss::NllOps;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::prelude::Shape;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use cubecl::prelude::*;

/// Units per cube: one cube reduces one row of the logits, each unit a stride of it.
const UNITS: usize = 256;

/// Row `CUBE_POS` of `logits` [N, V] (cubes past the last row do nothing): with m its maximum
/// and s = Σⱼ exp(logits[i, j] − m), in f32, writes `picked`[i] = ((logits[i, labelᵢ] − m) −
/// ln s)·wᵢ (the weighted log-probability, as `log_softmax`, gather and the weighting compute
/// it) and `lse`[i] = m + ln s.
#[cube(launch_unchecked)]
fn forward_kernel<F: Float, I: Int>(
    logits: &Tensor<F>,
    labels: &Tensor<I>,
    weights: &Tensor<F>,
    picked: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    #[comptime] units: usize,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let row = CUBE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let v = logits.len() / lse.len();
    let start = row * v;
    let mut shared = Shared::<[f32]>::new_slice(units);
    let mut max = f32::new(f32::MIN);
    for j in range_stepped(UNIT_POS as usize, v, units) {
        max = f32::max(max, f32::cast_from(logits[start + j]));
    }
    let max = cube_max(&mut shared, max);
    let mut sum = f32::new(0.0);
    for j in range_stepped(UNIT_POS as usize, v, units) {
        sum += (f32::cast_from(logits[start + j]) - max).exp();
    }
    let log_sum = cube_sum(&mut shared, sum).ln();
    if UNIT_POS == 0 {
        let label = usize::cast_from(labels[row]);
        let shifted = f32::cast_from(logits[start + label]) - max;
        picked[row] = F::cast_from((shifted - log_sum) * f32::cast_from(weights[row]));
        lse[row] = F::cast_from(max + log_sum);
    }
}

/// dlogits[i, j] = g·wᵢ·(exp(logits[i, j] − lseᵢ) − [j = labelᵢ]), one unit per logit, in f32.
#[cube(launch_unchecked)]
fn backward_kernel<F: Float, I: Int>(
    g: &Tensor<F>,
    logits: &Tensor<F>,
    labels: &Tensor<I>,
    weights: &Tensor<F>,
    lse: &Tensor<F>,
    dlogits: &mut Tensor<F>,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let k = ABSOLUTE_POS;
    if k >= logits.len() {
        terminate!();
    }
    let v = logits.len() / lse.len();
    let (row, j) = (k / v, k % v);
    let p = (f32::cast_from(logits[k]) - f32::cast_from(lse[row])).exp();
    let hit = select(
        usize::cast_from(labels[row]) == j,
        f32::new(1.0),
        f32::new(0.0),
    );
    let scale = f32::cast_from(g[0]) * f32::cast_from(weights[row]);
    dlogits[k] = F::cast_from((p - hit) * scale);
}

impl NllOps for CubeBackend {
    fn nll(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let logits = into_contiguous(logits);
        let (labels, weights) = (
            into_contiguous(labels),
            contiguous_in(weights, logits.dtype),
        );
        let n = logits.meta.shape()[0];
        let (picked, lse) = (
            empty_like(&logits, Shape::new([n])),
            empty_like(&logits, Shape::new([n])),
        );
        // SAFETY: logits hold n × V contiguous elements, labels, weights, picked and lse n, every
        // label below V (the batcher's token ids); cube i reads row i and writes picked[i] and
        // lse[i] only.
        unsafe {
            forward_kernel::launch_unchecked(
                &logits.client,
                row_cubes(n),
                CubeDim::new_1d(UNITS as u32),
                logits.clone().into_tensor_arg(),
                labels.clone().into_tensor_arg(),
                weights.into_tensor_arg(),
                picked.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                UNITS,
                [
                    dtype_to_storage_type(logits.dtype),
                    dtype_to_storage_type(labels.dtype),
                ],
            );
        }
        // −Σ picked, as `sum` and `neg` after the gather.
        let total = Self::float_neg(Self::float_sum(picked));
        (total, lse)
    }

    fn nll_backward(
        g: FloatTensor<Self>,
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        weights: FloatTensor<Self>,
        lse: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let logits = into_contiguous(logits);
        let dtype = logits.dtype;
        let (g, labels) = (contiguous_in(g, dtype), into_contiguous(labels));
        let labels_dtype = labels.dtype;
        let (weights, lse) = (contiguous_in(weights, dtype), contiguous_in(lse, dtype));
        let shape = logits.meta.shape().clone();
        let dlogits = empty_like(&logits, shape.clone());
        let cube_dim = CubeDim::new_1d(256);
        // SAFETY: logits and dlogits hold n × V contiguous elements, labels, weights and lse n,
        // g one; unit k reads row k / V's values and writes dlogits[k] only, units past n × V
        // stop first.
        unsafe {
            backward_kernel::launch_unchecked(
                &logits.client,
                cubecl::calculate_cube_count_elemwise(
                    &logits.client,
                    shape.num_elements(),
                    cube_dim,
                ),
                cube_dim,
                g.into_tensor_arg(),
                logits.clone().into_tensor_arg(),
                labels.into_tensor_arg(),
                weights.into_tensor_arg(),
                lse.into_tensor_arg(),
                dlogits.clone().into_tensor_arg(),
                [
                    dtype_to_storage_type(dtype),
                    dtype_to_storage_type(labels_dtype),
                ],
            );
        }
        dlogits
    }
}
