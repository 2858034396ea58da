//! Mixed precision on the CPU backend (flex computes f16 and bf16): f16 training follows f32,
//! the loss scaler skips overflowing steps and recovers, resume stays exact, a fully padded row
//! stays finite, and a step still reads the device once.

use crate::common;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use masklm::config::{Precision, TrainConfig};
use masklm::model::BertForMaskedLM;
use masklm::train::scaler::{INIT_SCALE, LossScaler};
use masklm::train::step::{self, Outcome};
use masklm::train::{checkpoint, optim};

/// Every weight as f32 values, in module order.
fn weights(model: &BertForMaskedLM) -> Vec<Vec<f32>> {
    struct All(Vec<Vec<f32>>);
    impl ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0
                .push(p.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut all = All(Vec::new());
    model.visit(&mut all);
    all.0
}

/// `steps` optimizer steps of the tiny model (no dropout) in `precision`, cycling over four fixed
/// batches; the losses of the applied steps and the final model and scaler.
fn run(
    precision: Precision,
    mut scaler: LossScaler,
    steps: usize,
) -> (Vec<f64>, BertForMaskedLM, LossScaler, usize) {
    let dev = Device::flex().autodiff();
    let mut model = common::tiny_bert(0.0)
        .init_seeded(5, &dev)
        .with_precision(precision);
    let mut opt = optim::adamw(&TrainConfig::default());
    let (mut losses, mut skipped) = (Vec::new(), 0);
    for s in 0..steps {
        let batch = common::pattern_batch(8, s % 4);
        let (next, r) =
            step::optimizer_step(model, &mut opt, &[batch], 3e-3, 1.0, &mut scaler, &dev);
        model = next;
        match r.outcome {
            Outcome::Applied => losses.push(r.loss),
            Outcome::Skipped => skipped += 1,
            other => panic!("step {s}: {other:?} {r:?}"),
        }
    }
    (losses, model, scaler, skipped)
}

#[test]
fn f16_training_follows_f32_and_memorises_four_batches() {
    let steps = 150;
    let (f32_losses, ..) = run(Precision::F32, LossScaler::off(), steps);
    let (f16_losses, model, scaler, skipped) = run(
        Precision::F16,
        LossScaler::for_precision(Precision::F16),
        steps,
    );
    assert_eq!(skipped, 0, "2^16 is far from overflowing at this size");
    assert_eq!(scaler.scale, INIT_SCALE);
    assert_eq!(f16_losses.len(), steps);
    // The first step sees the same weights: only the products' rounding differs (f16 keeps 11
    // significant bits, a relative 2^-11 = 4.9e-4 per operand, and the loss averages many such
    // errors out): 9e-6 measured, so 1e-3 leaves a wide margin for another CPU's rounding.
    let first = (f16_losses[0] - f32_losses[0]).abs();
    assert!(
        first < 1e-3,
        "step 1: f16 {} f32 {}",
        f16_losses[0],
        f32_losses[0]
    );
    // Later the trajectories drift apart as AdamW amplifies the rounding, but both must learn the
    // same way: mean losses over windows of 10 steps within 0.05 nats of each other (measured:
    // under 1e-3 for the first 100 steps, 0.009 in the last window, where the loss falls fastest).
    for w in (0..steps).step_by(10) {
        let mean = |l: &[f64]| l[w..w + 10].iter().sum::<f64>() / 10.0;
        let (a, b) = (mean(&f16_losses), mean(&f32_losses));
        assert!(
            (a - b).abs() < 0.05,
            "steps {w}..{}: f16 {a:.4} f32 {b:.4}",
            w + 10
        );
    }
    // And f16 memorises: from ln 99 = 4.6 to well under 1 (0.63 measured; f32 0.64).
    let end = f16_losses[steps - 10..].iter().sum::<f64>() / 10.0;
    assert!(end < 1.0, "f16 did not memorise: {end} ({f16_losses:?})");
    assert!(weights(&model).iter().flatten().all(|v| v.is_finite()));
}

#[test]
fn an_overflowing_f16_step_is_skipped_with_the_scale_halved_until_it_fits() {
    let dev = Device::flex().autodiff();
    let mut model = common::tiny_bert(0.0)
        .init_seeded(5, &dev)
        .with_precision(Precision::F16);
    let mut opt = optim::adamw(&TrainConfig::default());
    // 2^40 times the loss's gradient overflows f16 (max 65504) in the decoder's backward.
    let mut scaler = LossScaler::dynamic(2f64.powi(40));
    let before = weights(&model);
    let batch = common::pattern_batch(8, 0);
    let (next, r) = step::optimizer_step(model, &mut opt, &[batch], 1e-3, 1.0, &mut scaler, &dev);
    model = next;
    assert_eq!(r.outcome, Outcome::Skipped, "{r:?}");
    assert!(r.loss.is_finite(), "the loss itself is not scaled: {r:?}");
    assert_eq!(r.loss_scale, 2f64.powi(40));
    assert_eq!((scaler.scale, scaler.skipped_steps), (2f64.powi(39), 1));
    assert!(
        weights(&model) == before,
        "a skipped step moved the weights"
    );

    // Halving until the gradients fit (another batch may overflow once more just above that
    // scale), then training goes on with the scale it reached.
    let (mut applied, mut last_skip) = (0, 0);
    for s in 0..60 {
        let batch = common::pattern_batch(8, s % 4);
        let reads = step::host_reads();
        let (next, r) =
            step::optimizer_step(model, &mut opt, &[batch], 1e-3, 1.0, &mut scaler, &dev);
        model = next;
        assert_eq!(step::host_reads() - reads, 1, "one read, skipped or not");
        if r.outcome == Outcome::Applied {
            applied += 1;
            assert!(r.grad_norm.is_finite() && r.loss.is_finite(), "{r:?}");
        } else {
            assert_eq!(r.outcome, Outcome::Skipped, "{r:?}");
            last_skip = s;
        }
    }
    assert!(
        last_skip < 30,
        "the scale never settled: a skip at step {last_skip}"
    );
    let skipped = scaler.skipped_steps;
    assert!(skipped > 5, "{skipped}");
    assert_eq!(scaler.scale, 2f64.powi(40 - skipped as i32));
    assert_eq!(scaler.clean_steps, 59 - last_skip as u64);
    assert_eq!(applied + skipped, 61);
    assert!(weights(&model).iter().flatten().all(|v| v.is_finite()));
    assert_eq!(checkpoint::first_non_finite(&model), None);
}

#[test]
fn a_fully_padded_row_gives_finite_logits_in_f16_and_bf16() {
    let dev = Device::flex();
    for p in [Precision::F16, Precision::Bf16] {
        let model = common::tiny_bert(0.0)
            .init_seeded(2, &dev)
            .with_precision(p);
        let ids: Vec<i64> = (0..18).map(|i| (i * 37 % 94 + 5) as i64).collect();
        // Row 1 is all padding: its attention bias is f32::MIN everywhere.
        let mask: Vec<i64> = (0..18).map(|i| (i / 9 != 1) as i64).collect();
        let ids = Tensor::<1, Int>::from_ints(ids.as_slice(), &dev).reshape([2, 9]);
        let mask = Tensor::<1, Int>::from_ints(mask.as_slice(), &dev).reshape([2, 9]);
        let logits = model
            .forward(ids, mask)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(logits.len(), 2 * 9 * 99);
        assert!(logits.iter().all(|v| v.is_finite()), "{p:?}: {logits:?}");
    }
}

#[test]
fn the_products_really_run_in_low_precision() {
    // Guards the test above and the one that follows f32: an f16 model that silently computed
    // in f32 would pass them. Its logits must differ from f32's, by about f16's rounding.
    let dev = Device::flex();
    let logits = |p: Precision| {
        let model = common::tiny_bert(0.0)
            .init_seeded(2, &dev)
            .with_precision(p);
        let ids = Tensor::<1, Int>::from_ints([2, 9, 17, 33, 4, 61, 3], &dev).reshape([1, 7]);
        let mask = Tensor::<2, Int>::ones([1, 7], &dev);
        model
            .forward(ids, mask)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let full = logits(Precision::F32);
    for (p, lo, hi) in [(Precision::F16, 1e-5, 1e-2), (Precision::Bf16, 1e-4, 1e-1)] {
        let d = logits(p)
            .iter()
            .zip(&full)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d > lo && d < hi, "{p:?}: max |Δlogit| {d}");
    }
}

/// (y, dx, then each layer's dweight and dbias) of the loss `Σ y·w` for three layers of
/// [`SIDE`] applied to one x: as one product (`dense_side_by_side`) or by three `dense` calls
/// concatenated, in `precision` on `device`.
fn three_layers(device: &Device, precision: Precision, together: bool) -> Vec<Vec<f32>> {
    use masklm::model::precision::{dense, dense_side_by_side};
    let [n, d_in, d_out] = SIDE;
    let t = |seed: u64, shape: [usize; 2]| common::seeded(device, seed, shape);
    let layers = [1, 3, 5].map(|seed| common::seeded_linear(device, seed, d_in, d_out));
    let x = t(7, [n, d_in]).require_grad();
    let y = if together {
        let all = [&layers[0], &layers[1], &layers[2]];
        dense_side_by_side(&all, x.clone(), precision, burn::tensor::DType::F32)
    } else {
        Tensor::cat(
            layers
                .iter()
                .map(|l| dense(l, x.clone(), precision))
                .collect(),
            1,
        )
    };
    assert_eq!(y.dims(), [n, 3 * d_out]);
    let grads = (y.clone() * t(8, [n, 3 * d_out])).sum().backward();
    let vec = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let mut out = vec![vec(y), vec(x.grad(&grads).unwrap())];
    for l in &layers {
        out.push(vec(l.weight.grad(&grads).unwrap()));
        let bias = l.bias.as_ref().unwrap().grad(&grads).unwrap();
        out.push(vec(bias.unsqueeze_dim(0)));
    }
    out
}

/// [N, d_in, d_out] of each of [`three_layers`]: odd sizes.
const SIDE: [usize; 3] = [13, 37, 11];

/// Q, K and V as one product: each layer's output and gradients are what its own product gives.
/// The products differ in shape (x's gradient is one sum over 3·d_out instead of three sums
/// added), so they agree to their rounding: f32 products about 1e-6 relative, f16 ones 2^-11
/// per operand.
fn side_by_side_is_three_layers(device: &Device) {
    for (precision, rel, abs) in [(Precision::F32, 1e-5, 1e-5), (Precision::F16, 4e-3, 4e-3)] {
        let apart = three_layers(device, precision, false);
        let together = three_layers(device, precision, true);
        let names = ["y", "dx", "dwq", "dbq", "dwk", "dbk", "dwv", "dbv"];
        for ((a, b), what) in apart.iter().zip(&together).zip(names) {
            common::assert_close(a, b, rel, abs, &format!("{precision:?} {what}"));
        }
    }
}

#[test]
fn three_layers_side_by_side_are_the_three_layers() {
    side_by_side_is_three_layers(&Device::flex().autodiff());
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_three_layers_side_by_side_are_the_three_layers() {
    side_by_side_is_three_layers(&common::vulkan().autodiff());
}

/// (z, dy, dbias) of the loss `Σ z·w` for z = y [13, 11] (in `y_dtype`) plus an f32 bias [1, 11],
/// returned in `out`: by the epilogue operation (`ours`) or by burn's casts and addition.
fn epilogue(device: &Device, y_dtype: FloatDType, out: FloatDType, ours: bool) -> Vec<Vec<f32>> {
    use masklm::model::precision::biased_to;
    let t = |seed: u64, shape: [usize; 2]| {
        let v = common::uniform(shape[0] * shape[1], seed, -3.0, 3.0);
        Tensor::<1>::from_floats(v.as_slice(), device).reshape(shape)
    };
    let y = t(1, [13, 11]).cast(y_dtype).require_grad();
    let bias = t(2, [1, 11]).require_grad();
    let z = if ours {
        biased_to(y.clone(), bias.clone(), out.into())
    } else {
        (y.clone().cast(FloatDType::F32) + bias.clone()).cast(out)
    };
    assert_eq!(z.dtype(), out.into());
    let grads = (z.clone().cast(FloatDType::F32) * t(3, [13, 11]))
        .sum()
        .backward();
    let dy = y.grad(&grads).unwrap();
    assert_eq!(dy.dtype(), y_dtype.into());
    let vec = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    vec![vec(z), vec(dy), vec(bias.grad(&grads).unwrap())]
}

/// The products' epilogue as one operation computes what burn's casts and addition do, forward
/// and both gradients, to the bit: for an f16 product with an f16 output (Q, K and V), an f16
/// product with an f32 output (the other dense layers), and f32 throughout.
fn epilogue_is_casts_and_addition(device: &Device) {
    use FloatDType::{F16, F32};
    for (y_dtype, out) in [(F16, F16), (F16, F32), (F32, F32)] {
        assert_eq!(
            epilogue(device, y_dtype, out, true),
            epilogue(device, y_dtype, out, false),
            "{y_dtype:?} → {out:?}"
        );
    }
}

#[test]
fn the_epilogue_is_casts_and_addition() {
    epilogue_is_casts_and_addition(&Device::flex().autodiff());
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_the_epilogue_is_casts_and_addition() {
    epilogue_is_casts_and_addition(&common::vulkan().autodiff());
}
