//! The masked-LM loss as one operation forward and one backward (`masklm::model::loss::NllOps`,
//! GPUs' path): its value and the logits' gradient are those of burn's operations (`log_softmax`,
//! `gather`, the weighting and the sum; the CPU's path), on flex by the operation's default
//! bodies and on vulkan by its kernels, for vocabularies narrower and wider than a cube's units,
//! with padding rows of weight 0 (whose gradient must be exactly 0).

use crate::common;
use burn::prelude::*;
use masklm::model::loss::{masked_nll_sum, nll_op, weighted_nll_sum};

/// Rows: odd, with two padding rows (weight 0).
const N: usize = 13;
const PADDING: [usize; 2] = [4, 11];

/// (loss, dlogits) of 0.37·loss for logits [N, v] spread over [-4, 4) and labels that include
/// 0 and v − 1: by [`nll_op`] (`one`), or by `weighted_nll_sum` (burn's operations on the CPU,
/// the operation on a GPU); `weighted` false drops the weights (`masked_nll_sum`).
fn loss(device: &Device, v: usize, one: bool, weighted: bool) -> (f32, Vec<f32>) {
    let logits = (common::seeded(device, 3, [N, v]) * 4.0).require_grad();
    let labels: Vec<i32> = (0..N).map(|i| ((i * 37) % v) as i32).collect();
    let labels = [&[0, v as i32 - 1], &labels[2..]].concat();
    let labels = Tensor::<1, Int>::from_ints(labels.as_slice(), device);
    let weights: Vec<f32> = (0..N)
        .map(|i| if PADDING.contains(&i) { 0.0 } else { 1.0 })
        .collect();
    let weights = Tensor::<1>::from_floats(weights.as_slice(), device);
    let total = match (one, weighted) {
        (true, _) => nll_op(logits.clone(), labels, weights),
        (false, true) => weighted_nll_sum(logits.clone(), labels, weights),
        (false, false) => masked_nll_sum(logits.clone(), labels),
    };
    let grads = (total.clone() * 0.37).backward();
    let vec = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let value = total
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()[0];
    (value, vec(logits.grad(&grads).unwrap()))
}

fn assert_matches(got: (f32, Vec<f32>), want: (f32, Vec<f32>), rel: f32, what: &str) {
    common::assert_close(&[got.0], &[want.0], rel, 0.0, &format!("{what}: loss"));
    common::assert_close(&got.1, &want.1, rel, 1e-7, &format!("{what}: dlogits"));
}

#[test]
fn on_flex_the_one_operation_is_burns_log_softmax_gather_and_sum() {
    let flex = Device::flex().autodiff();
    for v in [99, 300] {
        let want = loss(&flex, v, false, true);
        assert!(want.0 > 0.0 && want.0.is_finite());
        assert_matches(
            loss(&flex, v, true, true),
            want,
            1e-5,
            &format!("flex, V {v}"),
        );
    }
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_the_loss_kernels_agree_with_flex_and_leave_padding_rows_no_gradient() {
    let (flex, vulkan) = (Device::flex().autodiff(), common::vulkan().autodiff());
    for v in [99, 300] {
        let got = loss(&vulkan, v, false, true);
        for row in PADDING {
            assert!(
                got.1[row * v..(row + 1) * v].iter().all(|&g| g == 0.0),
                "V {v}: padding row {row} has a gradient"
            );
        }
        let what = format!("vulkan, V {v}");
        assert_matches(got, loss(&flex, v, false, true), 1e-4, &what);
        // Without weights every row counts.
        let (got, want) = (loss(&vulkan, v, false, false), loss(&flex, v, false, false));
        assert_matches(got, want, 1e-4, &format!("{what}, unweighted"));
    }
}
