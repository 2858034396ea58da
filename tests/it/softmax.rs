//! masklm's attention softmax (`masklm::model::softmax`): its forward is the burn computation it
//! replaces to the bit, its closed-form backward gives autodiff's gradient of that computation,
//! a fully padded row stays finite, and a CubeCL device computes what flex does. Attention's
//! context as one operation (`attention_context`) is its products, softmax and GPU dropout.

use crate::common;
use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, FloatDType};
use masklm::model::dropout::DropoutOps;
use masklm::model::heads::split_heads;
use masklm::model::softmax::{attention_context, attention_softmax};

/// [B, nh, S, S] = [2, 3, 7, 7]: odd sizes.
const SHAPE: [usize; 4] = [2, 3, 7, 7];
const SCALE: f64 = 0.353_553_390_593_273_8; // 1/√8

/// Scores of `shape` [B, nh, Sq, S], the loss weights `w` of `Σ p·w`, and the padding bias
/// [B, 1, 1, S]: the first batch row's last two keys padded, the second fully padded (`f32::MIN`
/// everywhere, as `model::mask_bias` makes it), the third's first key padded, any others none.
fn inputs(seed: u64, shape: [usize; 4], device: &Device) -> [Tensor<4>; 3] {
    let n = shape.iter().product();
    let t = |v: Vec<f32>, shape: [usize; 4]| {
        Tensor::<1>::from_floats(v.as_slice(), device).reshape(shape)
    };
    let [b, _, _, s] = shape;
    let mut bias = vec![0.0; b * s];
    let padded = |(batch, key): (usize, usize)| match batch {
        0 => key + 2 >= s,
        1 => true,
        2 => key == 0,
        _ => false,
    };
    for (i, v) in bias.iter_mut().enumerate() {
        if padded((i / s, i % s)) {
            *v = f32::MIN;
        }
    }
    [
        t(common::uniform(n, seed, -6.0, 6.0), shape),
        t(common::uniform(n, seed + 1, -1.0, 1.0), shape),
        t(bias, [b, 1, 1, s]),
    ]
}

fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// (p, dscores) of the loss `Σ p·w`, by masklm's operation (`ours`) or by burn's operations.
fn probs_and_grad(seed: u64, shape: [usize; 4], device: &Device, ours: bool) -> [Vec<f32>; 2] {
    let [scores, w, bias] = inputs(seed, shape, device);
    let scores = scores.require_grad();
    let p = if ours {
        attention_softmax(scores.clone(), bias, SCALE)
    } else {
        softmax(scores.clone().mul_scalar(SCALE) + bias, 3)
    };
    let grads = (p.clone() * w).sum().backward();
    [vec(p), vec(scores.grad(&grads).unwrap())]
}

/// (p, dscores) as [`probs_and_grad`] computes them with ours, from the scores in f16 (as mixed
/// precision's products leave them), given to the operation as they are or cast up first.
fn probs_and_grad_f16(
    seed: u64,
    shape: [usize; 4],
    device: &Device,
    cast_up: bool,
) -> [Vec<f32>; 2] {
    let [scores, w, bias] = inputs(seed, shape, device);
    let scores = scores.cast(FloatDType::F16).require_grad();
    let input = if cast_up {
        scores.clone().cast(FloatDType::F32)
    } else {
        scores.clone()
    };
    let p = attention_softmax(input, bias, SCALE);
    assert_eq!(p.dtype(), DType::F32, "p comes in the bias's dtype");
    let grads = (p.clone() * w).sum().backward();
    let dscores = scores.grad(&grads).unwrap();
    assert_eq!(
        dscores.dtype(),
        DType::F16,
        "the gradient comes in the scores' dtype"
    );
    [vec(p), vec(dscores)]
}

#[test]
fn f16_scores_give_what_the_same_scores_cast_up_give_to_the_bit() {
    let dev = Device::flex().autodiff();
    for seed in [8, 9] {
        assert_eq!(
            probs_and_grad_f16(seed, SHAPE, &dev, false),
            probs_and_grad_f16(seed, SHAPE, &dev, true),
            "seed {seed}"
        );
    }
}

#[test]
fn the_forward_is_burns_to_the_bit_and_the_gradient_is_autodiffs() {
    let dev = Device::flex().autodiff();
    for seed in [1, 2, 3] {
        let [p, dp] = probs_and_grad(seed, SHAPE, &dev, true);
        let [p_ref, dp_ref] = probs_and_grad(seed, SHAPE, &dev, false);
        assert_eq!(p, p_ref, "forward, seed {seed}");
        // Gradients are of the size of p·w (≤ 1) and the two compute them in another order.
        common::assert_close(&dp, &dp_ref, 1e-5, 1e-6, "dscores");
        assert!(dp.iter().filter(|v| v.abs() > 1e-4).count() > dp.len() / 4);
    }
}

#[test]
fn a_fully_padded_row_gives_uniform_probabilities_and_finite_gradients() {
    let [p, dp] = probs_and_grad(4, SHAPE, &Device::flex().autodiff(), true);
    let half = p.len() / 2;
    // The second batch row: every key padded, so every query attends uniformly over 7 keys.
    assert!(p[half..].iter().all(|&v| (v - 1.0 / 7.0).abs() < 1e-6));
    assert!(dp.iter().all(|v| v.is_finite()));
    // The first row's padded keys (the last two) get nothing.
    for query in p[..half].chunks(7) {
        assert_eq!(&query[5..], &[0.0, 0.0]);
    }
}

/// Ours on flex and on Vulkan (the CubeCL kernels, `softmax_cube.rs`) agree for `shape`.
#[cfg(feature = "vulkan")]
fn vulkan_matches_flex(seed: u64, shape: [usize; 4]) {
    let cpu = probs_and_grad(seed, shape, &Device::flex().autodiff(), true);
    let gpu = probs_and_grad(seed, shape, &common::vulkan().autodiff(), true);
    // exp and the reductions in a shader's order and precision.
    common::assert_close(&cpu[0], &gpu[0], 1e-5, 1e-7, "p");
    common::assert_close(&cpu[1], &gpu[1], 1e-4, 1e-6, "dscores");
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_the_operation_computes_what_flex_does() {
    // Rows of 7 keys (fewer than a cube's 32 units), then of 300 (more than its 256: units take
    // several keys each), with every padding pattern of `inputs`.
    vulkan_matches_flex(5, SHAPE);
    vulkan_matches_flex(6, [4, 2, 3, 300]);
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_f16_scores_give_what_they_give_on_flex() {
    let cpu = probs_and_grad_f16(10, SHAPE, &Device::flex().autodiff(), false);
    let gpu = probs_and_grad_f16(10, SHAPE, &common::vulkan().autodiff(), false);
    common::assert_close(&cpu[0], &gpu[0], 1e-5, 1e-7, "p");
    // The same f32 gradient rounded to f16 (2^-11 relative) on both, give or take an ulp where
    // the two f32 values straddle a rounding boundary.
    common::assert_close(&cpu[1], &gpu[1], 2e-3, 1e-5, "dscores");
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_rows_past_one_axis_of_cubes_are_computed_too() {
    // 70,001 rows of keys: more cubes than one launch axis holds (`cube_reduce::row_cubes`).
    vulkan_matches_flex(7, [1, 1, 70_001, 3]);
}

/// The dropout call of the tests below: GPU dropout's hashed mask of this seed.
const DROPOUT_SEED: u64 = 0x0123_4567_89ab_cdef;

/// (context, dqkv) of the loss `Σ context·w` for `qkv` [B·S, 3·nh·dh] (Q, K and V side by side)
/// in `dtype`, the bias of [`inputs`] for [B, ·, ·, S] and dropout at `prob`: by the one operation
/// (`fused`), or by burn's products around the softmax operation and then GPU dropout's (a cast
/// at prob 0) on the thirds of `split_heads`' 3·nh heads, as the encoder ran them before.
fn context_and_grads(
    seed: u64,
    [b, nh, s, dh]: [usize; 4],
    device: &Device,
    (prob, dtype): (f64, FloatDType),
    fused: bool,
) -> [Vec<f32>; 2] {
    let [_, _, bias] = inputs(seed, [b, 1, 1, s], device);
    let t = |seed: u64, shape: [usize; 2]| {
        let n = shape.iter().product();
        Tensor::<1>::from_floats(common::uniform(n, seed, -2.0, 2.0).as_slice(), device)
            .reshape(shape)
            .cast(dtype)
    };
    let qkv = t(seed + 1, [b * s, 3 * nh * dh]).require_grad();
    let w: Tensor<4> = t(seed + 4, [b * nh, s * dh]).reshape([b, nh, s, dh]);
    let context = if fused {
        attention_context(qkv.clone(), bias, nh, SCALE, (DROPOUT_SEED, prob))
    } else {
        let heads = split_heads(qkv.clone(), b, 3 * nh);
        let [q, k, v] = [0, 1, 2].map(|i| heads.clone().slice([0..b, i * nh..(i + 1) * nh]));
        let p = attention_softmax(q.matmul(k.swap_dims(2, 3)), bias, SCALE);
        let pd = if prob == 0.0 {
            p.cast(dtype)
        } else {
            Tensor::from_dispatch(<Dispatch as DropoutOps>::dropout(
                p.into_dispatch(),
                DROPOUT_SEED,
                prob,
                dtype.into(),
            ))
        };
        pd.matmul(v)
    };
    assert_eq!(context.dtype(), DType::from(dtype));
    assert_eq!(context.dims(), [b, nh, s, dh]);
    let grads = (context.clone() * w).sum().backward();
    let g = qkv.grad(&grads).unwrap();
    assert_eq!(g.dtype(), DType::from(dtype));
    [vec(context), vec(g)]
}

/// Dropout rates and the products' dtype the operation meets in training: BERT's 0.1, none, and
/// an odd rate; f32 and mixed precision's f16.
const CASES: [(f64, FloatDType); 4] = [
    (0.1, FloatDType::F32),
    (0.1, FloatDType::F16),
    (0.0, FloatDType::F16),
    (0.37, FloatDType::F32),
];

/// [B, nh, S, dh]: odd sizes, four batch rows for every padding pattern of [`inputs`].
const QKV: [usize; 4] = [4, 3, 7, 5];

#[test]
fn attention_as_one_operation_is_the_products_softmax_and_dropout_to_the_bit() {
    let dev = Device::flex().autodiff();
    for case in CASES {
        let fused = context_and_grads(11, QKV, &dev, case, true);
        assert!(
            fused == context_and_grads(11, QKV, &dev, case, false),
            "{case:?}"
        );
        assert!(fused.iter().flatten().all(|v| v.is_finite()), "{case:?}");
        // Dropout changes the context: the mask is applied.
        if case.0 != 0.0 {
            let undropped = context_and_grads(11, QKV, &dev, (0.0, case.1), true);
            assert_ne!(fused[0], undropped[0], "{case:?}");
        }
    }
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_attention_as_one_operation_computes_what_its_parts_do_and_what_flex_does() {
    let (cpu, gpu) = (Device::flex().autodiff(), common::vulkan().autodiff());
    // Rows of 7 keys in every case; of 300 (more than a cube's 256 units) in two, since each
    // new shape and dtype costs lavapipe minutes of autotuning its products.
    let wide = [CASES[1], CASES[3]].map(|c| ([2, 2, 300, 8], c));
    for (shape, case) in CASES.map(|c| (QKV, c)).into_iter().chain(wide) {
        let fused = context_and_grads(12, shape, &gpu, case, true);
        // The same products (the scores' computed again in backward) and the same f32
        // arithmetic in the softmax kernels.
        assert!(
            fused == context_and_grads(12, shape, &gpu, case, false),
            "{shape:?} {case:?}: the operation and its parts differ"
        );
        // exp, the reductions and the products in a shader's order, then rounded to f16 (2^-11
        // relative) under f16.
        let flex = context_and_grads(12, shape, &cpu, case, true);
        let (rel, abs) = match case.1 {
            FloatDType::F16 => (4e-3, 1e-3),
            _ => (1e-4, 1e-5),
        };
        for (i, what) in ["context", "dqkv"].iter().enumerate() {
            common::assert_close(&flex[i], &fused[i], rel, abs, what);
        }
    }
}
