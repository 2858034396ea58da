//! Lists of tensors taken out of burn's `Dispatch` for the one backend they are all on, and
//! tensors put back: what burn 0.22.1's `#[backend_extension]` generates for operations of single
//! tensors, written out for the operations that take a list (`squared_norms`, `adamw_updates`),
//! which the macro rejects.

// burn-ndarray is deprecated in burn 0.22.1 but still one of masklm's CPU backends.
#![allow(deprecated)]

use burn::backend::tensor::FloatTensor;
use burn::backend::{BackendTensor, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind};

/// A list of float tensors, all on one backend.
pub enum OnBackend {
    Flex(Vec<FloatTensor<burn::backend::Flex>>),
    #[cfg(feature = "ndarray")]
    NdArray(Vec<FloatTensor<burn::backend::NdArray>>),
    #[cfg(feature = "cube")]
    Cube(Vec<FloatTensor<burn::backend::Cube>>),
}

impl OnBackend {
    /// `xs` (at least one, none tracked by autodiff) on the backend they share; panics, naming
    /// `op`, on an empty list or a mixed one.
    pub fn of(xs: Vec<DispatchTensor>, op: &str) -> Self {
        let mut on: Option<OnBackend> = None;
        for x in xs {
            match (x.kind, &mut on) {
                (DispatchTensorKind::Flex(t), None) => on = Some(Self::Flex(vec![t.float()])),
                (DispatchTensorKind::Flex(t), Some(Self::Flex(v))) => v.push(t.float()),
                #[cfg(feature = "ndarray")]
                (DispatchTensorKind::NdArray(t), None) => on = Some(Self::NdArray(vec![t.float()])),
                #[cfg(feature = "ndarray")]
                (DispatchTensorKind::NdArray(t), Some(Self::NdArray(v))) => v.push(t.float()),
                #[cfg(feature = "cube")]
                (DispatchTensorKind::Cube(t), None) => on = Some(Self::Cube(vec![t.float()])),
                #[cfg(feature = "cube")]
                (DispatchTensorKind::Cube(t), Some(Self::Cube(v))) => v.push(t.float()),
                (kind, _) => {
                    panic!("{op}: all tensors on one backend, untracked by autodiff (got {kind:?})")
                }
            }
        }
        on.unwrap_or_else(|| panic!("{op} of at least one tensor"))
    }
}

fn untracked(kind: DispatchTensorKind) -> DispatchTensor {
    DispatchTensor {
        kind,
        autodiff: DispatchAutodiffContext::Disabled,
    }
}

pub fn from_flex(t: FloatTensor<burn::backend::Flex>) -> DispatchTensor {
    untracked(DispatchTensorKind::Flex(BackendTensor::Float(t)))
}

#[cfg(feature = "ndarray")]
pub fn from_ndarray(t: FloatTensor<burn::backend::NdArray>) -> DispatchTensor {
    untracked(DispatchTensorKind::NdArray(BackendTensor::Float(t)))
}

#[cfg(feature = "cube")]
pub fn from_cube(t: FloatTensor<burn::backend::Cube>) -> DispatchTensor {
    untracked(DispatchTensorKind::Cube(BackendTensor::Float(t)))
}
