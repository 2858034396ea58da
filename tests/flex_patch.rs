//! The patched burn-flex's parallel paths (patches/README.md) against the ndarray backend:
//! broadcast element-wise ops must be bit-identical (each element is one IEEE operation either
//! way), and the parallel reductions must match an f64 reference as closely as the serial ones.

// burn marks ndarray deprecated in favour of flex; here it is the independent reference.
#![allow(deprecated)]

use burn::prelude::*;

type BinaryOp = fn(Tensor<2>, Tensor<2>) -> Tensor<2>;

/// A deterministic pattern with varied magnitudes and signs.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 20_011) as f32 - 10_005.0) * 1.37e-3 + 0.5)
        .collect()
}

fn tensor<const D: usize>(shape: [usize; D], seed: usize, dev: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(values(n, seed), shape), dev)
}

fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
    t.into_data()
        .try_to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// `op(a, b)` on flex, with `a` unique (written in place) and with `a` still shared
/// (a fresh output), equals ndarray's result bit for bit.
fn check<const D: usize>(
    a: [usize; D],
    b: [usize; D],
    op: fn(Tensor<D>, Tensor<D>) -> Tensor<D>,
    what: &str,
) {
    let (flex, nd) = (Device::flex(), Device::ndarray());
    let want = bits(op(tensor(a, 1, &nd), tensor(b, 2, &nd)));
    let inplace = bits(op(tensor(a, 1, &flex), tensor(b, 2, &flex)));
    let shared_a = tensor(a, 1, &flex);
    let fresh = bits(op(shared_a.clone(), tensor(b, 2, &flex)));
    // The swapped orientation: the broadcast operand on the left.
    let want_swapped = bits(op(tensor(b, 2, &nd), tensor(a, 1, &nd)));
    let swapped = bits(op(tensor(b, 2, &flex), tensor(a, 1, &flex)));
    assert!(want == inplace, "{what}: in place differs");
    assert!(want == fresh, "{what}: fresh output differs");
    assert!(want_swapped == swapped, "{what}: swapped operands differ");
    drop(shared_a);
}

#[test]
fn broadcast_element_wise_ops_are_bit_identical_to_ndarray() {
    let ops: [(BinaryOp, &str); 4] = [
        (|a, b| a + b, "add"),
        (|a, b| a - b, "sub"),
        (|a, b| a * b, "mul"),
        (|a, b| a / b, "div"),
    ];
    for (op, name) in ops {
        // A bias over the rows of a [B·S, H] activation; a per-row statistic (LayerNorm);
        // rows shorter than a SIMD width, and an odd row count.
        check([4096, 256], [1, 256], op, &format!("{name} bias"));
        check([4096, 256], [4096, 1], op, &format!("{name} per-row"));
        check([40_001, 3], [1, 3], op, &format!("{name} short rows"));
        check([3001, 37], [1, 37], op, &format!("{name} odd sizes"));
    }
    // The attention mask: [B, heads, S, S] + [B, 1, 1, S].
    check(
        [32, 4, 128, 128],
        [32, 1, 1, 128],
        |a, b| a + b,
        "attention mask",
    );
    // A transposed (strided) operand.
    let (flex, nd) = (Device::flex(), Device::ndarray());
    let f = |dev: &Device| tensor([300, 700], 3, dev).transpose() * tensor([1, 300], 4, dev);
    assert!(bits(f(&nd)) == bits(f(&flex)), "transposed operand");
}

#[test]
fn large_reductions_match_an_f64_reference() {
    let dev = Device::flex();
    for (rows, cols) in [
        (4096, 256),
        (4096, 1024),
        (5000, 77),
        (33, 1500),
        (70_000, 1),
    ] {
        let v = values(rows * cols, 5);
        let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [rows, cols]), &dev);
        let col_sums = t
            .clone()
            .sum_dim(0)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let row_sums = t.sum_dim(1).into_data().try_to_vec::<f32>().unwrap();
        // The f32 summation error bound: n·ε·Σ|x| over the summed elements.
        let eps = f32::EPSILON as f64;
        for (c, &got) in col_sums.iter().enumerate() {
            let col = (0..rows).map(|r| v[r * cols + c] as f64);
            let (want, abs): (f64, f64) = col.fold((0.0, 0.0), |(s, a), x| (s + x, a + x.abs()));
            let tol = rows as f64 * eps * abs + 1e-6;
            assert!(
                (got as f64 - want).abs() <= tol,
                "[{rows}, {cols}] column {c}"
            );
        }
        for (r, &got) in row_sums.iter().enumerate() {
            let row = v[r * cols..(r + 1) * cols].iter().map(|&x| x as f64);
            let (want, abs): (f64, f64) = row.fold((0.0, 0.0), |(s, a), x| (s + x, a + x.abs()));
            let tol = cols as f64 * eps * abs + 1e-6;
            assert!((got as f64 - want).abs() <= tol, "[{rows}, {cols}] row {r}");
        }
    }
}
