//! [`AdamWOps::adamw_updates`] on CubeCL devices: one launch for up to
//! `cube_reduce::CHUNK` parameters (fewer where the device binds fewer buffers), one unit
//! per element, updating each parameter and both its moments in place. Written here because
//! burn has no fused optimizer kernel; fusion merges burn's 15-operation AdamW into about one
//! kernel too, but only after the host registered and searched all 15 (`adamw.rs`), and a launch
//! a parameter is 202 launches a BERT-base step, each with the host's per-launch work.

use crate::cube_reduce::chunk;
use crate::model::precision::cast_primitive;
use crate::train::adamw::{AdamWCoefficients, AdamWOps};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Cube c of the launch belongs to parameter t where first[t] ≤ c < first[t] + cubes[t]; its unit
/// u updates the elements (c − first[t])·units + u + k·cubes[t]·units of it (a grid stride), each
/// with parameter t's coefficients.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn adamw_kernel<F: Float>(
    params: &mut Sequence<&'static mut Tensor<F>>,
    moments_1: &mut Sequence<&'static mut Tensor<F>>,
    moments_2: &mut Sequence<&'static mut Tensor<F>>,
    grads: &Sequence<&'static Tensor<F>>,
    factor: &Tensor<F>,
    first: Sequence<u32>,
    cubes: Sequence<u32>,
    correction_1: Sequence<f32>,
    correction_2: Sequence<f32>,
    decay: Sequence<f32>,
    lr: Sequence<f32>,
    beta_1: f32,
    beta_2: f32,
    one_minus_beta_1: f32,
    one_minus_beta_2: f32,
    epsilon: f32,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let c = CUBE_POS as u32;
    #[unroll]
    for t in 0..grads.len() {
        let (start, count) = (*first.index(t), *cubes.index(t));
        if c >= start && c < start + count {
            let param = params.index_mut(t);
            let moment_1 = moments_1.index_mut(t);
            let moment_2 = moments_2.index_mut(t);
            let grad = grads.index(t);
            let from = (c - start) as usize * units + UNIT_POS as usize;
            for i in range_stepped(from, grad.len(), count as usize * units) {
                // The same operations in the same order as the default body (burn's AdamW).
                let g = grad[i] * factor[0];
                let m = moment_1[i] * F::cast_from(beta_1) + g * F::cast_from(one_minus_beta_1);
                let v = moment_2[i] * F::cast_from(beta_2) + g * g * F::cast_from(one_minus_beta_2);
                moment_1[i] = m;
                moment_2[i] = v;
                let m_hat = m / F::cast_from(*correction_1.index(t));
                let v_hat = v / F::cast_from(*correction_2.index(t));
                let delta = m_hat / (v_hat.sqrt() + F::cast_from(epsilon));
                param[i] =
                    param[i] * F::cast_from(*decay.index(t)) - delta * F::cast_from(*lr.index(t));
            }
        }
    }
}

/// Cubes a parameter of `n` elements gets: one per [`UNITS`] elements, at most [`MAX_CUBES`]
/// (units then stride over more), so that a launch of `cube_reduce::CHUNK` parameters
/// stays within the 65,535 cubes every Vulkan device launches along one axis.
fn cubes_for(n: usize) -> usize {
    n.div_ceil(UNITS).clamp(1, MAX_CUBES)
}

/// Units per cube.
const UNITS: usize = 256;
/// At most this many cubes a parameter (1,024 × 256 units: about as many as an H100 holds at
/// once).
const MAX_CUBES: usize = 1024;

/// `t` as a contiguous buffer this update may overwrite: itself when nothing else holds it, a
/// copy otherwise (a parameter the caller still holds a clone of).
fn writable(t: CubeTensor) -> CubeTensor {
    if t.can_mut() && t.is_contiguous() && t.is_contiguous_buffer() {
        t
    } else if t.is_contiguous() {
        t.copy()
    } else {
        into_contiguous(t)
    }
}

impl AdamWOps for CubeBackend {
    fn adamw_updates(
        updates: Vec<[FloatTensor<Self>; 4]>,
        factor: FloatTensor<Self>,
        cs: &[AdamWCoefficients],
    ) -> Vec<[FloatTensor<Self>; 3]> {
        let Some(first) = updates.first() else {
            return Vec::new();
        };
        // One kernel computes in one dtype: the parameters' (masklm's master weights, f32).
        let dtype = first[0].dtype;
        let factor = into_contiguous(cast_primitive::<Self>(factor, dtype));
        let prepared: Vec<_> = updates.into_iter().map(|u| prepare(u, &factor)).collect();
        let size = chunk(&factor.client, 4, 1);
        for (part, cs) in prepared.chunks(size).zip(cs.chunks(size)) {
            launch(part, &factor, cs);
        }
        prepared
            .into_iter()
            .map(|(param, moment_1, moment_2, _)| [param, moment_1, moment_2])
            .collect()
    }
}

/// One parameter's tensors as the kernel takes them: (param, moment 1, moment 2) contiguous and
/// writable, the gradient contiguous, all in the parameter's dtype (the factor's too).
fn prepare(
    [param, grad, moment_1, moment_2]: [CubeTensor; 4],
    factor: &CubeTensor,
) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
    let dtype = param.dtype;
    assert_eq!(factor.dtype, dtype, "AdamW's parameters share one dtype");
    let same = |t: CubeTensor| {
        if t.dtype == dtype {
            t
        } else {
            CubeBackend::float_cast(t, dtype.into())
        }
    };
    (
        writable(param),
        writable(same(moment_1)),
        writable(same(moment_2)),
        into_contiguous(same(grad)),
    )
}

/// One launch of [`adamw_kernel`] for the parameters of `part`, with their coefficients `cs`.
fn launch(
    part: &[(CubeTensor, CubeTensor, CubeTensor, CubeTensor)],
    factor: &CubeTensor,
    cs: &[AdamWCoefficients],
) {
    let (c0, client) = (&cs[0], factor.client.clone());
    let mut cubes = 0;
    let (mut firsts, mut counts) = (SequenceArg::new(), SequenceArg::new());
    let (mut params, mut moments_1, mut moments_2, mut grads) = (
        SequenceArg::new(),
        SequenceArg::new(),
        SequenceArg::new(),
        SequenceArg::new(),
    );
    let (mut correction_1, mut correction_2, mut decay, mut lr) = (
        SequenceArg::new(),
        SequenceArg::new(),
        SequenceArg::new(),
        SequenceArg::new(),
    );
    for ((param, moment_1, moment_2, grad), c) in part.iter().zip(cs) {
        // One AdamW's settings: only the step's coefficients may differ between parameters.
        assert!(c.beta_1 == c0.beta_1 && c.beta_2 == c0.beta_2 && c.epsilon == c0.epsilon);
        let n = cubes_for(param.meta.shape().num_elements());
        firsts.push(cubes as u32);
        counts.push(n as u32);
        cubes += n;
        params.push(param.clone().into_tensor_arg());
        moments_1.push(moment_1.clone().into_tensor_arg());
        moments_2.push(moment_2.clone().into_tensor_arg());
        grads.push(grad.clone().into_tensor_arg());
        correction_1.push(c.correction_1);
        correction_2.push(c.correction_2);
        decay.push((1.0 - c.decay_rate) as f32);
        lr.push(c.lr as f32);
    }
    // SAFETY: each parameter's four tensors hold its n elements contiguously (`prepare`), the
    // factor one; the units of parameter t's cubes read and write its elements below n only.
    unsafe {
        adamw_kernel::launch_unchecked(
            &client,
            CubeCount::Static(cubes as u32, 1, 1),
            CubeDim::new_1d(UNITS as u32),
            params,
            moments_1,
            moments_2,
            grads,
            factor.clone().into_tensor_arg(),
            firsts,
            counts,
            correction_1,
            correction_2,
            decay,
            lr,
            c0.beta_1,
            c0.beta_2,
            c0.one_minus_beta_1,
            c0.one_minus_beta_2,
            c0.epsilon,
            UNITS,
            dtype_to_storage_type(factor.dtype),
        );
    }
}
