//! masklm's Σ x² operation (`masklm::train::squared_norm`), the global gradient norm's building
//! block: on the CPU it is the flatten-square-sum it replaced, to the bit; on a CubeCL device its
//! per-cube partial sums add up to the same Σ x². Over a list of tensors (`squared_norms`, one
//! operation for every gradient of a step) it is each tensor's partial sums, side by side.

use crate::common;
use burn::prelude::*;
use masklm::train::squared_norm::{squared_norm, squared_norms};

fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// A seeded [rows, cols] tensor on `device`, values in [-2, 2).
fn matrix(rows: usize, cols: usize, seed: u64, device: &Device) -> Tensor<2> {
    Tensor::<1>::from_floats(
        common::uniform(rows * cols, seed, -2.0, 2.0).as_slice(),
        device,
    )
    .reshape([rows, cols])
}

#[test]
fn on_the_cpu_it_is_the_flattened_square_summed() {
    let dev = Device::flex();
    for (rows, cols) in [(1, 1), (3, 37), (300, 1001)] {
        let x = matrix(rows, cols, 7, &dev);
        let reference = x.clone().reshape([rows * cols]).square().sum_dim(0);
        assert_eq!(vec(squared_norm(x)), vec(reference), "{rows}×{cols}");
    }
}

/// Tensors of ranks 1, 2 and 3 and of different sizes, as the gradients of a model are: their
/// partial sums one `squared_norm` at a time, concatenated, and one `squared_norms` of them all.
fn one_by_one_and_together(seed: u64, device: &Device) -> (Tensor<1>, Tensor<1>) {
    let a = matrix(1, 37, seed, device).reshape([37]);
    let b = matrix(300, 1001, seed + 1, device);
    let c = matrix(6, 77, seed + 2, device).reshape([2, 3, 77]);
    let one_by_one = Tensor::cat(
        vec![
            squared_norm(a.clone()),
            squared_norm(b.clone()),
            squared_norm(c.clone()),
        ],
        0,
    );
    let together = squared_norms(vec![
        a.into_dispatch(),
        b.into_dispatch(),
        c.into_dispatch(),
    ]);
    (one_by_one, together)
}

#[test]
#[allow(deprecated)] // Device::ndarray: still one of masklm's CPU backends
fn over_a_list_it_is_each_tensors_sums_side_by_side() {
    for dev in [Device::flex(), Device::ndarray()] {
        let (one_by_one, together) = one_by_one_and_together(11, &dev);
        assert_eq!(together.dims(), [3]);
        assert_eq!(vec(together), vec(one_by_one), "{dev:?}");
    }
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_a_list_gives_each_tensors_partial_sums_in_order() {
    // Each tensor's partials are computed by the same kernel over the same elements.
    let (one_by_one, together) = one_by_one_and_together(5, &common::vulkan());
    assert_eq!(vec(together), vec(one_by_one));
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_more_tensors_than_a_launch_takes_give_each_tensors_partial_sums_in_order() {
    // 70 tensors (a launch takes at most 32), from one element to several cubes' worth.
    let gpu = common::vulkan();
    let xs: Vec<Tensor<2>> = (0..70u64)
        .map(|k| {
            matrix(
                1 + (k as usize * 37) % 300,
                1 + k as usize % 40,
                20 + k,
                &gpu,
            )
        })
        .collect();
    let one_by_one = Tensor::cat(xs.iter().map(|x| squared_norm(x.clone())).collect(), 0);
    let together = squared_norms(xs.into_iter().map(|x| x.into_dispatch()).collect());
    assert_eq!(vec(together), vec(one_by_one));
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_the_partial_sums_add_up_to_flexs() {
    use masklm::train::squared_norm::cube_partials;
    let gpu = common::vulkan();
    let total = |t: Tensor<1>| vec(t).iter().map(|&v| v as f64).sum::<f64>();
    // Σ x² in f64 over the values `matrix` makes.
    let exact = |n: usize, seed: u64| {
        let v = common::uniform(n, seed, -2.0, 2.0);
        v.iter().map(|&x| x as f64 * x as f64).sum::<f64>()
    };
    // One element; one cube; one element more than a cube takes; 37 cubes; more elements than
    // the most cubes take, so that every unit strides.
    for (rows, cols) in [
        (1, 1),
        (3, 37),
        (8193, 1),
        (300, 1001),
        (1024 * 8192 + 11, 1),
    ] {
        let n = rows * cols;
        let expected = exact(n, 3);
        let partials = squared_norm(matrix(rows, cols, 3, &gpu));
        assert_eq!(partials.dims(), [cube_partials(n)], "{rows}×{cols}");
        let got = total(partials);
        // f32 sums: each unit adds up to 32 squares in a row, then 8 levels of pairs.
        assert!(
            (got - expected).abs() <= 1e-5 * expected,
            "{rows}×{cols}: {got} vs {expected}"
        );
    }
    // A transposed view sums as it lies; a row slice and a broadcast (each element read once
    // per place it appears) sum what they show.
    let x = matrix(300, 1001, 4, &gpu);
    let expected = exact(300 * 1001, 4);
    let got = total(squared_norm(x.clone().swap_dims(0, 1)));
    assert!(
        (got - expected).abs() <= 1e-5 * expected,
        "transposed: {got} vs {expected}"
    );
    let shown = |t: Tensor<2>| {
        let v = vec(t);
        v.iter().map(|&x| x as f64 * x as f64).sum::<f64>()
    };
    for (what, view) in [
        ("row slice", x.clone().slice([10..20, 0..1001])),
        ("column slice", x.clone().slice([10..20, 5..500])),
        ("broadcast", x.slice([7..8, 0..1001]).expand([50, 1001])),
    ] {
        let expected = shown(view.clone());
        let got = total(squared_norm(view));
        assert!(
            (got - expected).abs() <= 1e-5 * expected,
            "{what}: {got} vs {expected}"
        );
    }
}
