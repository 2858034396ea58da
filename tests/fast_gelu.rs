//! masklm's GELU op (`model::gelu`, the vectorized kernel of `model::vmath` on flex) against f64
//! references and against burn's own scalar `libm::erff` code (`model::gelu::set_exact`):
//! values, gradients, every slice length around its chunk sizes, and a few training steps.

#[path = "it/common/mod.rs"]
mod common;
use burn::prelude::*;
use masklm::config::TrainConfig;
use masklm::model::gelu::{gelu, set_exact};
use masklm::train::scaler::LossScaler;
use masklm::train::{optim, step::optimizer_step};
use std::sync::Mutex;

/// The switch is process-wide: the tests of this file take turns.
static SWITCH: Mutex<()> = Mutex::new(());

fn gelu_ref(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

fn gelu_grad_ref(x: f64) -> f64 {
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)) + x * pdf
}

/// `(gelu(x), g · gelu'(x))` through burn's autodiff on flex.
fn gelu_and_grad(x: &[f32], g: &[f32], exact: bool) -> (Vec<f32>, Vec<f32>) {
    set_exact(exact);
    let dev = Device::flex().autodiff();
    let n = x.len();
    let xt = Tensor::<1>::from_data(TensorData::new(x.to_vec(), [n]), &dev).require_grad();
    let gt = Tensor::<1>::from_data(TensorData::new(g.to_vec(), [n]), &dev);
    let y = gelu(xt.clone());
    let grads = (y.clone() * gt).sum().backward();
    let dx = xt.grad(&grads).expect("x has a gradient");
    set_exact(false);
    (
        y.into_data().try_to_vec::<f32>().unwrap(),
        dx.into_data().try_to_vec::<f32>().unwrap(),
    )
}

#[test]
fn gelu_and_its_gradient_match_f64_within_3e7() {
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    // Dense over [-12, 12], plus the tails and signed zeros.
    let mut x: Vec<f32> = (-1_200_000..=1_200_000).map(|i| i as f32 * 1e-5).collect();
    x.extend([
        -1e30, -100.0, -87.4, -87.2, 87.0, 100.0, 1e30, -0.0, 1e-30, -1e-30,
    ]);
    let g = vec![1.0f32; x.len()];
    let mut outputs = Vec::new();
    for exact in [false, true] {
        let (y, dx) = gelu_and_grad(&x, &g, exact);
        let (mut worst_y, mut worst_dx) = (0.0f64, 0.0f64);
        for ((&x, &y), &dx) in x.iter().zip(&y).zip(&dx) {
            let scale = 1.0 + (x as f64).abs();
            worst_y = worst_y.max((y as f64 - gelu_ref(x as f64)).abs() / scale);
            worst_dx = worst_dx.max((dx as f64 - gelu_grad_ref(x as f64)).abs() / scale);
        }
        println!("exact={exact}: worst gelu error {worst_y:e}, gradient {worst_dx:e}");
        assert!(worst_y < 3e-7, "exact={exact}: gelu error {worst_y:e}");
        assert!(
            worst_dx < 3e-7,
            "exact={exact}: gradient error {worst_dx:e}"
        );
        outputs.push((y, dx));
    }
    // Two approximations of erf: they differ somewhere on the grid, else masklm's op never ran
    // and the checks above tested burn's GELU twice.
    assert!(
        outputs[0].0 != outputs[1].0,
        "the fast and exact values are identical"
    );
    assert!(
        outputs[0].1 != outputs[1].1,
        "the fast and exact gradients are identical"
    );
}

#[test]
fn every_length_and_layout_agrees_with_the_scalar_code() {
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    // Around the 8 Ki chunk and the 32 Ki parallel threshold, and odd SIMD tails.
    for n in [1usize, 7, 8, 9, 31, 8191, 8195, 32767, 32773, 100_003] {
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) * 0.013)
            .collect();
        let g: Vec<f32> = (0..n).map(|i| (i * 11 % 17) as f32 - 8.0).collect();
        let (y, dx) = gelu_and_grad(&x, &g, false);
        let (y0, dx0) = gelu_and_grad(&x, &g, true);
        for i in 0..n {
            let tol = 4e-7 * (1.0 + x[i].abs()) * (1.0 + g[i].abs());
            assert!(
                (y[i] - y0[i]).abs() <= tol,
                "n={n} i={i}: {} vs {}",
                y[i],
                y0[i]
            );
            assert!(
                (dx[i] - dx0[i]).abs() <= tol,
                "n={n} i={i}: {} vs {}",
                dx[i],
                dx0[i]
            );
        }
    }
    // A transposed (non-contiguous) input and one that stays shared after the call.
    let dev = Device::flex();
    let a = Tensor::<2>::random([67, 301], burn::tensor::Distribution::Default, &dev) * 6.0 - 3.0;
    let t = a.clone().transpose();
    let fast = gelu(t.clone());
    set_exact(true);
    let exact = gelu(t);
    set_exact(false);
    assert_eq!(fast.dims(), [301, 67]);
    let diff = (fast - exact).abs().max().into_scalar::<f32>();
    assert!(diff < 2e-6, "transposed input: {diff}");
    assert!(
        a.abs().sum().into_scalar::<f32>() > 0.0,
        "the shared input is intact"
    );
}

fn train_losses(exact: bool) -> Vec<f64> {
    set_exact(exact);
    let dev = Device::flex().autodiff();
    dev.seed(3);
    let mut config = common::tiny_bert(0.0);
    // 8 rows × 16 tokens × 301 = 38,528 GELU inputs: past the parallel threshold.
    config.intermediate_size = 301;
    let mut model = config.init(&dev);
    let mut opt = optim::adamw(&TrainConfig::default());
    let mut losses = vec![];
    for k in 0..6 {
        let batch = common::pattern_batch(8, k);
        let (next, r) = optimizer_step(
            model,
            &mut opt,
            &[batch],
            1e-3,
            0.0,
            &mut LossScaler::off(),
            &dev,
        );
        losses.push(r.loss);
        model = next;
    }
    set_exact(false);
    losses
}

#[test]
fn training_losses_agree_within_1e4_with_and_without_the_vectorized_gelu() {
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let (fast, exact) = (train_losses(false), train_losses(true));
    for (a, b) in fast.iter().zip(&exact) {
        assert!((a - b).abs() < 1e-4, "{fast:?} vs {exact:?}");
    }
    assert!(fast.last() < fast.first(), "the model learns: {fast:?}");
}
