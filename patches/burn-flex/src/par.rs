//! masklm patch: element-wise loops split across the rayon pool.
//!
//! Upstream runs every element-wise op (unary, binary, scalar, GELU and its backward) on the
//! calling thread, and parallelizes its SIMD add/sub/mul/div only from 4 Mi elements. In a BERT
//! training step on 2 cores that left about 60% of the wall time single-threaded (perf, see the
//! project's BENCHMARKS.md). These helpers run the same per-element closures over fixed-size
//! chunks in parallel from [`PAR_MIN`] elements; each element is computed exactly as before, so
//! results are bit-identical.

/// Below this many elements the loop stays on the calling thread (rayon's dispatch costs a few
/// microseconds; 32 Ki f32 elements take about as long to process).
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Elements per rayon task.
#[cfg(feature = "rayon")]
const CHUNK: usize = 1 << 13;

/// `a[i] = op(a[i])`.
#[inline]
pub(crate) fn map_inplace<E, Op>(a: &mut [E], op: Op)
where
    E: Copy + Send + Sync,
    Op: Fn(E) -> E + Sync,
{
    #[cfg(feature = "rayon")]
    if a.len() >= PAR_MIN {
        use rayon::prelude::*;
        a.par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|x| *x = op(*x)));
        return;
    }
    a.iter_mut().for_each(|x| *x = op(*x));
}

/// `a[i] = op(a[i], b[i])`.
#[inline]
pub(crate) fn zip_inplace<E, Op>(a: &mut [E], b: &[E], op: Op)
where
    E: Copy + Send + Sync,
    Op: Fn(E, E) -> E + Sync,
{
    debug_assert_eq!(a.len(), b.len());
    #[cfg(feature = "rayon")]
    if a.len() >= PAR_MIN {
        use rayon::prelude::*;
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .for_each(|(ca, cb)| {
                ca.iter_mut().zip(cb).for_each(|(x, &y)| *x = op(*x, y));
            });
        return;
    }
    a.iter_mut().zip(b).for_each(|(x, &y)| *x = op(*x, y));
}

/// `op(a[i])` collected.
#[inline]
pub(crate) fn map_collect<E, R, Op>(a: &[E], op: Op) -> alloc::vec::Vec<R>
where
    E: Copy + Send + Sync,
    R: Send,
    Op: Fn(E) -> R + Sync + Send,
{
    #[cfg(feature = "rayon")]
    if a.len() >= PAR_MIN {
        use rayon::prelude::*;
        return a.par_iter().with_min_len(CHUNK).map(|&x| op(x)).collect();
    }
    a.iter().map(|&x| op(x)).collect()
}

/// `op(a[i], b[i])` collected.
#[inline]
pub(crate) fn zip_collect<E, R, Op>(a: &[E], b: &[E], op: Op) -> alloc::vec::Vec<R>
where
    E: Copy + Send + Sync,
    R: Send,
    Op: Fn(E, E) -> R + Sync + Send,
{
    debug_assert_eq!(a.len(), b.len());
    #[cfg(feature = "rayon")]
    if a.len() >= PAR_MIN {
        use rayon::prelude::*;
        return a
            .par_iter()
            .zip(b.par_iter())
            .with_min_len(CHUNK)
            .map(|(&x, &y)| op(x, y))
            .collect();
    }
    a.iter().zip(b).map(|(&x, &y)| op(x, y)).collect()
}
