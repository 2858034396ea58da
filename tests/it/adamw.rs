//! The fused AdamW update (`masklm::train::adamw`): on the CPU it is burn's AdamW to the bit, on
//! a CubeCL device its kernel agrees with the CPU, and it never writes into a tensor the caller
//! still holds.

use crate::common;

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use masklm::data::batches::Batch;
use masklm::model::BertForMaskedLM;
use masklm::train::adamw::{self, AdamW, AdamWCoefficients, Update};
use masklm::train::optimizer::AdamWOptimizer;
use masklm::train::{optim, step};

/// Every weight of `model`, in visiting order.
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

/// `grads` with every gradient multiplied by `factor` ([1]), as clipping did before the update
/// took the factor.
fn scaled(model: &BertForMaskedLM, mut grads: GradientsParams, factor: f32) -> GradientsParams {
    struct Scale<'a>(&'a mut GradientsParams, f32);
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.remove::<D>(p.id) {
                let f = Tensor::<1>::from_floats([self.1], &g.device()).reshape([1; D]);
                self.0.register(p.id, g * f);
            }
        }
    }
    model.visit(&mut Scale(&mut grads, factor));
    grads
}

/// burn's AdamW with `c`'s settings and BERT's groups, as `optim::adamw` built it before the
/// fused update.
fn burns_adamw(c: &masklm::config::TrainConfig) -> burn::optim::ModuleOptimizer {
    let base = AdamWConfig::new()
        .with_beta_1(c.adam_beta1 as f32)
        .with_beta_2(c.adam_beta2 as f32)
        .with_epsilon(c.adam_epsilon as f32)
        .with_weight_decay(c.weight_decay as f32);
    let no_decay = ParamGroup::from_regex(optim::NO_DECAY).unwrap();
    base.init()
        .with_group(no_decay, base.clone().with_weight_decay(0.0).build(), None)
}

#[test]
fn the_fused_update_on_flex_is_burns_adamw_to_the_bit() {
    // BERT's settings, then HF's ε with RoBERTa's β2 (the config keys reach the update).
    let bert = masklm::config::TrainConfig {
        weight_decay: 0.01,
        ..Default::default()
    };
    let roberta = masklm::config::TrainConfig {
        adam_beta1: 0.8,
        adam_beta2: 0.98,
        adam_epsilon: 1e-8,
        ..bert.clone()
    };
    for cfg in [bert, roberta] {
        fused_update_is_burns(&cfg);
    }
}

fn fused_update_is_burns(cfg: &masklm::config::TrainConfig) {
    let dev = Device::flex().autodiff();
    let mut ours = common::tiny_bert(0.0).init_seeded(7, &dev);
    let mut theirs = ours.clone();
    let mut fused = optim::adamw(cfg);
    let mut reference = burns_adamw(cfg);
    // Factors as unscaling and clipping give them: 1 (neither), below 1, and a loss scale's.
    for (k, factor) in [1.0f32, 0.37, 1.0 / 1024.0].into_iter().enumerate() {
        let micro: [Batch; 1] = [common::pattern_batch(3, k)];
        let (_, g_ours) = step::loss_and_grads(&ours, &micro, 1.0, &dev).unwrap();
        let (_, g_theirs) = step::loss_and_grads(&theirs, &micro, 1.0, &dev).unwrap();
        let lr = 1e-3 * (k + 1) as f64;
        let f = Tensor::<1>::from_floats([factor], &dev.clone().without_autodiff());
        ours = fused.step(lr, ours, g_ours, f);
        theirs = reference.step(lr, theirs.clone(), scaled(&theirs, g_theirs, factor));
        assert_eq!(weights(&ours), weights(&theirs), "step {}", k + 1);
    }
}

/// One step of `model` with the gradients of a fixed batch, by masklm's optimizer and by burn's.
fn next_step(
    model: &BertForMaskedLM,
    ours: &mut AdamWOptimizer,
    theirs: &mut burn::optim::ModuleOptimizer,
    dev: &Device,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let micro = [common::pattern_batch(3, 5)];
    let (_, g1) = step::loss_and_grads(model, &micro, 1.0, dev).unwrap();
    let (_, g2) = step::loss_and_grads(model, &micro, 1.0, dev).unwrap();
    let one = Tensor::<1>::ones([1], &dev.clone().without_autodiff());
    let a = ours.step(2e-3, model.clone(), g1, one);
    let b = theirs.step(2e-3, model.clone(), g2);
    (weights(&a), weights(&b))
}

#[test]
fn the_optimizer_record_is_burns_adamw_record_both_ways() {
    // Checkpoints from before masklm kept its own moments hold burn's `ModuleOptimizer` record
    // of AdamW; they must still resume, and new ones must read as that record.
    // burn's `ModuleOptimizer::load` makes the moments on `Device::default()`, CUDA when it is
    // compiled in (the `masklm` binary sets BURN_DEVICE=flex first thing): so this runs in a
    // process of its own with that setting.
    if std::env::var_os("BURN_DEVICE").is_none() {
        let name = "adamw::the_optimizer_record_is_burns_adamw_record_both_ways";
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1"])
            .env("BURN_DEVICE", "flex")
            .status()
            .unwrap();
        assert!(status.success(), "{name} with BURN_DEVICE=flex: {status}");
        return;
    }
    let dev = Device::flex().autodiff();
    let cfg = masklm::config::TrainConfig {
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut model = common::tiny_bert(0.0).init_seeded(9, &dev);
    let mut ours = optim::adamw(&cfg);
    let mut theirs = burns_adamw(&cfg);
    for k in 0..2 {
        let micro = [common::pattern_batch(3, k)];
        let (_, g1) = step::loss_and_grads(&model, &micro, 1.0, &dev).unwrap();
        let (_, g2) = step::loss_and_grads(&model, &micro, 1.0, &dev).unwrap();
        let one = Tensor::<1>::ones([1], &dev.clone().without_autodiff());
        let a = ours.step(1e-3, model.clone(), g1, one);
        let b = theirs.step(1e-3, model.clone(), g2);
        assert_eq!(weights(&a), weights(&b), "step {}", k + 1);
        model = a;
    }
    let dir = tempfile::tempdir().unwrap();
    let (our_file, their_file) = (dir.path().join("ours.bpk"), dir.path().join("theirs.bpk"));
    ours.save(&model, &our_file).unwrap();
    theirs.save(&their_file).unwrap();
    // The third step from each optimizer restored from the other's record, against the third
    // step of the optimizer kept in memory: all the same to the bit.
    let (expected, _) = next_step(&model, &mut ours.clone(), &mut theirs.clone(), &dev);
    let mut ours_from_theirs = optim::adamw(&cfg).load(&model, &their_file).unwrap();
    let mut theirs_from_ours = burns_adamw(&cfg).load(&our_file).unwrap();
    let (a, b) = next_step(&model, &mut ours_from_theirs, &mut theirs_from_ours, &dev);
    assert_eq!(a, expected, "masklm's optimizer from burn's record");
    assert_eq!(b, expected, "burn's AdamW from masklm's record");
    // And a fresh optimizer takes a different third step (the moments matter here).
    let (fresh, _) = next_step(
        &model,
        &mut optim::adamw(&cfg),
        &mut burns_adamw(&cfg),
        &dev,
    );
    assert_ne!(fresh, expected);
}

/// Seeded values of `shape` on `device`: `lo + (hi − lo)·u`, u uniform on [0, 1).
fn values(shape: [usize; 2], seed: u64, lo: f32, hi: f32, device: &Device) -> Tensor<2> {
    let v = common::uniform(shape[0] * shape[1], seed, lo, hi);
    Tensor::<1>::from_floats(v.as_slice(), device).reshape(shape)
}

/// The parameters' shapes of [`one_update`]'s first tests: odd ones, one of rank 1 ([5]).
const TWO: [[usize; 2]; 2] = [[37, 3], [5, 1]];

/// One `adamw_updates` on `device` of seeded parameters of `shapes` (rank 1 where the second
/// size is 1; every other one without weight decay and at its first step): (params, ms, vs)
/// after it, each flattened and concatenated, and whether clones of the parameters taken before
/// kept their values.
fn one_update(device: &Device, shapes: &[[usize; 2]]) -> (Vec<f32>, Vec<f32>, Vec<f32>, bool) {
    let adamw = AdamW {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-6,
        weight_decay: 0.01,
    };
    let mut held = vec![];
    let mut updates = vec![];
    for (k, &shape) in shapes.iter().enumerate() {
        let seed = 10 * k as u64;
        let param = values(shape, seed + 1, -1.0, 1.0, device);
        let before = param.clone().into_data();
        held.push((param.clone(), before));
        // [n, 1] as rank 1: one list holds tensors of any rank.
        let as_listed = |t: Tensor<2>| match shape[1] {
            1 => t.reshape([shape[0]]).into_dispatch(),
            _ => t.into_dispatch(),
        };
        updates.push(Update {
            param: as_listed(param),
            grad: as_listed(values(shape, seed + 2, -0.1, 0.1, device)),
            moment_1: as_listed(values(shape, seed + 3, -0.01, 0.01, device)),
            moment_2: as_listed(values(shape, seed + 4, 1e-4, 1e-3, device)),
            // Its own step and decay: every other one without weight decay, at its first step.
            c: match k % 2 {
                0 => AdamWCoefficients::new(&adamw, 2e-3, 3),
                _ => AdamWCoefficients::new(
                    &AdamW {
                        weight_decay: 0.0,
                        ..adamw.clone()
                    },
                    2e-3,
                    1,
                ),
            },
        });
    }
    let factor = Tensor::<1>::from_floats([0.5], device);
    let new = adamw::adamw_updates(updates, factor);
    assert_eq!(new.len(), shapes.len());
    let (mut p, mut m, mut v) = (vec![], vec![], vec![]);
    for (shape, [a, b, c]) in shapes.iter().zip(new) {
        for (t, out) in [(a, &mut p), (b, &mut m), (c, &mut v)] {
            let data = match shape[1] {
                1 => Tensor::<1>::from_dispatch(t).into_data(),
                _ => Tensor::<2>::from_dispatch(t).into_data(),
            };
            out.extend(data.try_to_vec::<f32>().unwrap());
        }
    }
    let kept = held.into_iter().all(|(t, before)| t.into_data() == before);
    (p, m, v, kept)
}

#[test]
fn the_update_on_flex_never_writes_into_a_tensor_the_caller_holds() {
    let (_, _, _, kept) = one_update(&Device::flex(), &TWO);
    assert!(kept);
}

#[cfg(feature = "vulkan")]
#[test]
fn the_vulkan_kernel_computes_the_update_of_flex() {
    let gpu = common::vulkan();
    let (p_cpu, m_cpu, v_cpu, _) = one_update(&Device::flex(), &TWO);
    let (p_gpu, m_gpu, v_gpu, kept) = one_update(&gpu, &TWO);
    // Within a few f32 roundings: the kernel does the same operations in the same order, but a
    // shader compiler may contract a·b + c into one fused multiply-add.
    // The floor is a rounding of the terms' scale (m's terms are about 1e-2, v's 1e-3, the
    // parameter's 1), for results that cancel to near zero.
    let close = |a: &[f32], b: &[f32], floor: f32, what: &str| {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let tol = 4.0 * f32::EPSILON * x.abs().max(y.abs()) + floor;
            assert!((x - y).abs() <= tol, "{what}[{i}]: flex {x} vs vulkan {y}");
        }
    };
    close(&m_cpu, &m_gpu, 1e-9, "m");
    close(&v_cpu, &v_gpu, 1e-10, "v");
    close(&p_cpu, &p_gpu, 1e-7, "param");
    // The parameter moved (by lr·Δ, up to about 1e-3): a test of the update, not of a copy.
    let initial = TWO.into_iter().enumerate().flat_map(|(k, shape)| {
        let t = values(shape, 10 * k as u64 + 1, -1.0, 1.0, &Device::flex());
        t.into_data().try_to_vec::<f32>().unwrap()
    });
    let initial: Vec<f32> = initial.collect();
    let moved = initial
        .iter()
        .zip(&p_gpu)
        .filter(|(a, b)| (*a - *b).abs() > 1e-6);
    assert!(moved.count() > initial.len() / 2);
    assert!(
        kept,
        "the kernel wrote into the caller's clone of the parameter"
    );
}

/// `a` and `b` within a few f32 roundings of their scale, or `floor` (see the test above).
#[cfg(feature = "vulkan")]
fn assert_near(a: &[f32], b: &[f32], floor: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = 4.0 * f32::EPSILON * x.abs().max(y.abs()) + floor;
        assert!((x - y).abs() <= tol, "{what}[{i}]: flex {x} vs vulkan {y}");
    }
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_more_parameters_than_a_launch_takes_are_each_updated_as_on_flex() {
    // 70 parameters (a launch takes at most 32) of sizes from 1 element up, and one of 330,000
    // elements, past the 1,024 cubes of 256 units a parameter gets (its units stride).
    let mut shapes: Vec<[usize; 2]> = (0..70).map(|k| [1 + (k * 37) % 300, 1 + k % 4]).collect();
    shapes.insert(40, [1100, 300]);
    let (p_cpu, m_cpu, v_cpu, _) = one_update(&Device::flex(), &shapes);
    let (p_gpu, m_gpu, v_gpu, kept) = one_update(&common::vulkan(), &shapes);
    assert_near(&m_cpu, &m_gpu, 1e-9, "m");
    assert_near(&v_cpu, &v_gpu, 1e-10, "v");
    assert_near(&p_cpu, &p_gpu, 1e-7, "param");
    assert!(kept);
}
