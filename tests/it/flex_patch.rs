//! The patched burn-flex's parallel paths (patches/README.md) against the ndarray backend:
//! broadcast element-wise ops must be bit-identical (each element is one IEEE operation either
//! way), and the parallel reductions bit-identical to the serial path (each output is summed in
//! the same order by the same kernel).

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

/// Below this many elements the patched reductions take upstream's serial loop (`par::PAR_MIN`
/// in patches/burn-flex).
const SERIAL_BELOW: usize = 1 << 15;

#[test]
fn large_reductions_are_bit_identical_to_the_serial_path() {
    let dev = Device::flex();
    for (rows, cols) in [
        (4096, 256),
        (4096, 1024),
        (5000, 77),
        (33, 1500),
        (70_000, 1),
        (300, 200),
    ] {
        let v = values(rows * cols, 5);
        let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [rows, cols]), &dev);
        let col_sums = bits(t.clone().sum_dim(0));
        let row_sums = bits(t.sum_dim(1));
        // The serial first-dim sum adds each column's rows in order: exactly this loop.
        let want_cols: Vec<u32> = (0..cols)
            .map(|c| (0..rows).fold(0.0f32, |s, r| s + v[r * cols + c]).to_bits())
            .collect();
        assert!(col_sums == want_cols, "[{rows}, {cols}] column sums");
        // The serial last-dim sum, on blocks of rows small enough to stay serial.
        let block = (SERIAL_BELOW - 1) / cols;
        let mut want_rows = Vec::new();
        for r0 in (0..rows).step_by(block.max(1)) {
            let r1 = (r0 + block.max(1)).min(rows);
            let part = v[r0 * cols..r1 * cols].to_vec();
            let small = Tensor::<2>::from_data(TensorData::new(part, [r1 - r0, cols]), &dev);
            want_rows.extend(bits(small.sum_dim(1)));
        }
        assert!(row_sums == want_rows, "[{rows}, {cols}] row sums");
    }
}
