//! [`SquaredNormOps::squared_norms`] on CubeCL devices: the gradients in chunks of up to
//! [`crate::cube_reduce::CHUNK`] tensors, one launch a chunk; each tensor gets its own
//! [`cube_partials`] cubes, each cube summing x² over a grid stride of that tensor's elements in
//! f32 and leaving one partial sum, every gradient's partial sums side by side in one output.
//! Written here because burn's reductions need the square as an operation of its own before
//! them, which fusion does not merge into the reduction (`squared_norm.rs`); chunked because a
//! launch a gradient is 202 launches a BERT-base step, each with the host's per-launch work.

use crate::cube_reduce::{chunk, cube_sum};
use crate::train::squared_norm::{CUBE_UNITS, SquaredNormOps, cube_partials};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

/// Cube c of the launch belongs to tensor t of `xs` where first[t] ≤ c < first[t] + cubes[t];
/// it sums x² over that tensor's elements i ≡ (c − first[t])·units + unit (mod cubes[t]·units),
/// the stride of a launch of cubes[t] cubes for that tensor alone, accumulated in f32 whatever
/// x's dtype, and writes the cube's sum at `offset + c` in x's dtype (masklm's gradients are the
/// f32 master weights').
#[cube(launch_unchecked)]
fn squared_norms_kernel<F: Float>(
    xs: &Sequence<&'static Tensor<F>>,
    first: Sequence<u32>,
    cubes: Sequence<u32>,
    partials: &mut Tensor<F>,
    offset: u32,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let c = CUBE_POS as u32;
    let mut acc = f32::new(0.0);
    #[unroll]
    for t in 0..xs.len() {
        let (start, count) = (*first.index(t), *cubes.index(t));
        if c >= start && c < start + count {
            let x = xs.index(t);
            let stride = count as usize * units;
            let from = (c - start) as usize * units + UNIT_POS as usize;
            for i in range_stepped(from, x.len(), stride) {
                let v = f32::cast_from(x[i]);
                acc += v * v;
            }
        }
    }
    // The cube's units add their sums: [units] → [1].
    let mut shared = Shared::<[f32]>::new_slice(units);
    let total = cube_sum(&mut shared, acc);
    if UNIT_POS == 0 {
        partials[(offset + c) as usize] = F::cast_from(total);
    }
}

impl SquaredNormOps for CubeBackend {
    fn squared_norms(xs: Vec<FloatTensor<Self>>) -> FloatTensor<Self> {
        let first = xs.first().expect("squared_norms of at least one tensor");
        let (client, device, dtype) = (first.client.clone(), first.device.clone(), first.dtype);
        let total = xs
            .iter()
            .map(|x| cube_partials(x.meta.shape().num_elements()))
            .sum::<usize>();
        let partials = empty_device_dtype(client.clone(), device, [total].into(), dtype);
        // Each element once, wherever it lies: a permuted view of a dense buffer sums as it is;
        // anything else (a broadcast, a slice) is made contiguous first.
        let xs: Vec<_> = xs
            .into_iter()
            .map(|x| {
                if x.is_contiguous_buffer() {
                    x
                } else {
                    into_contiguous(x)
                }
            })
            .collect();
        let mut offset = 0;
        for part in xs.chunks(chunk(&client, 1, 2)) {
            let (mut firsts, mut counts, mut args) =
                (SequenceArg::new(), SequenceArg::new(), SequenceArg::new());
            let mut cubes = 0;
            for x in part {
                let n = cube_partials(x.meta.shape().num_elements());
                firsts.push(cubes as u32);
                counts.push(n as u32);
                args.push(x.clone().into_tensor_arg());
                cubes += n;
            }
            // SAFETY: each tensor holds exactly its elements in its buffer (made so above) and
            // the kernel reads indices below its length only; the launch's cubes write
            // `partials` at offset + cube, below offset + cubes ≤ total.
            unsafe {
                squared_norms_kernel::launch_unchecked(
                    &client,
                    CubeCount::Static(cubes as u32, 1, 1),
                    CubeDim::new_1d(CUBE_UNITS as u32),
                    args,
                    firsts,
                    counts,
                    partials.clone().into_tensor_arg(),
                    offset as u32,
                    CUBE_UNITS,
                    dtype_to_storage_type(dtype),
                );
            }
            offset += cubes;
        }
        partials
    }
}
