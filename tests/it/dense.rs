//! A dense layer as one differentiable operation (`masklm::model::dense`, GPUs' path): its output
//! and gradients are those of the operations it replaces (`dense_side_by_side`'s path on the
//! CPU), to the bit on flex, for one layer and three side by side, in f32 and f16, into f32 and
//! into the products' dtype; on vulkan they agree with flex.

use crate::common;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;
use masklm::config::Precision;
use masklm::model::dense::dense;
use masklm::model::precision::dense_side_by_side;

/// [N, d_in, d_out]: odd sizes.
const SIZES: [usize; 3] = [13, 37, 11];

/// y and the gradients of x and of each layer's weight and bias for the loss Σ y·r, `layers`
/// layers of [`SIZES`] side by side in `precision` into `out`: by the one operation (`one`) or by
/// `dense_side_by_side`'s operations (on the CPU).
fn layers(device: &Device, count: usize, p: Precision, out: DType, one: bool) -> Vec<Vec<f32>> {
    let [n, d_in, d_out] = SIZES;
    let t = |seed: u64, shape: [usize; 2]| common::seeded(device, seed, shape);
    let ls: Vec<Linear> = (0..count as u64)
        .map(|i| common::seeded_linear(device, 2 * i + 1, d_in, d_out))
        .collect();
    let x = t(7, [n, d_in]).require_grad();
    let y = if one {
        let ws: Vec<_> = ls.iter().map(|l| l.weight.val()).collect();
        let bs: Vec<_> = ls.iter().map(|l| l.bias.as_ref().unwrap().val()).collect();
        dense(x.clone(), &ws, &bs, p.products_dtype(), out)
    } else {
        dense_side_by_side(&ls.iter().collect::<Vec<_>>(), x.clone(), p, out)
    };
    assert_eq!(y.dims(), [n, count * d_out]);
    assert_eq!(y.dtype(), out);
    let r = t(8, [n, count * d_out]);
    let grads = (y.clone().cast(DType::F32) * r).sum().backward();
    let vec = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let mut all = vec![vec(y), vec(x.grad(&grads).unwrap())];
    for l in &ls {
        let dw = l.weight.grad(&grads).unwrap();
        assert_eq!(
            dw.dtype(),
            DType::F32,
            "the weight's gradient is the master weight's"
        );
        all.push(vec(dw));
        let db = l.bias.as_ref().unwrap().grad(&grads).unwrap();
        all.push(vec(db.unsqueeze_dim(0)));
    }
    all
}

/// (layers, precision, output dtype) of every case: one layer and three, f32 and f16, into f32
/// and into the products' dtype (Q, K and V's).
fn cases() -> Vec<(usize, Precision, DType)> {
    let mut all = vec![];
    for count in [1, 3] {
        all.push((count, Precision::F32, DType::F32));
        all.push((count, Precision::F16, DType::F32));
        all.push((count, Precision::F16, DType::F16));
    }
    all
}

#[test]
fn on_flex_the_one_operation_is_the_operations_it_replaces_to_the_bit() {
    let dev = Device::flex().autodiff();
    for (count, p, out) in cases() {
        assert_eq!(
            layers(&dev, count, p, out, true),
            layers(&dev, count, p, out, false),
            "{count} layers, {p:?} into {out:?}"
        );
    }
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_the_one_operation_computes_what_flex_does() {
    // The same operations on both; the products may sum in another order (and f16 products
    // round each operand to 2^-11).
    let (gpu, cpu) = (common::vulkan().autodiff(), Device::flex().autodiff());
    for (count, p, out) in cases() {
        let (rel, abs) = match p {
            Precision::F32 => (1e-5, 1e-5),
            _ => (4e-3, 4e-3),
        };
        let a = layers(&cpu, count, p, out, true);
        let b = layers(&gpu, count, p, out, true);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            common::assert_close(
                x,
                y,
                rel,
                abs,
                &format!("{count} layers, {p:?} → {out:?}: #{i}"),
            );
        }
    }
}

#[cfg(feature = "vulkan")]
#[test]
fn on_vulkan_the_weights_gradients_come_from_the_products_f32_accumulators() {
    // Under f16 products the CPU's weight gradient is the product's f16 result cast to f32 (as
    // burn's autodiff and PyTorch's autocast compute it); a CubeCL device's product writes f32
    // itself. f16 keeps 10 of f32's 23 mantissa bits: an f32 of f16's normal range whose low 13
    // bits are zero is an f16 value.
    let f16_valued = |v: &[f32]| {
        let normal: Vec<_> = v.iter().filter(|x| x.abs() >= 2f32.powi(-14)).collect();
        let f16 = normal.iter().filter(|x| x.to_bits() & 0x1fff == 0).count();
        (f16, normal.len())
    };
    let (gpu, cpu) = (common::vulkan().autodiff(), Device::flex().autodiff());
    for count in [1, 3] {
        // [y, dx, then dw and db of each layer]: the first layer's weight gradient.
        let dw = |dev: &Device| layers(dev, count, Precision::F16, DType::F32, true).remove(2);
        let (cpu_dw, gpu_dw) = (dw(&cpu), dw(&gpu));
        let (f16, normal) = f16_valued(&cpu_dw);
        assert!(
            normal > 300,
            "{count} layers: {normal} gradients in f16's range"
        );
        assert_eq!(f16, normal, "{count} layers: flex rounds through f16");
        let (f16, normal) = f16_valued(&gpu_dw);
        assert!(
            f16 < normal / 10,
            "{count} layers: {f16} of vulkan's {normal} weight gradients are f16 values"
        );
    }
}
