//! Dynamic loss scaling for f16 training, as PyTorch's `torch.amp.GradScaler` does it.
//!
//! f16 gradients below ~6e-8 round to zero. The loss is multiplied by `scale` before backward, so
//! every gradient is `scale` times larger while it passes through f16, and divided back before
//! clipping and the update. A step whose gradients overflowed (inf or NaN) is skipped and the
//! scale halved; after `GROWTH_INTERVAL` clean steps in a row the scale doubles. The state is
//! saved in each checkpoint (`TrainState`), so a resumed run scales exactly as the interrupted
//! one would have.

use crate::config::Precision;
use crate::train::step::Outcome;
use serde::{Deserialize, Serialize};

/// PyTorch's `init_scale`: 2^16.
pub const INIT_SCALE: f64 = 65536.0;
/// PyTorch's `growth_interval`: clean steps in a row before the scale doubles.
pub const GROWTH_INTERVAL: u64 = 2000;
/// Below f16's smallest subnormal (2^-24) no scale can save the step: the loss itself is not
/// finite, and the run stops as an f32 run would.
pub const MIN_SCALE: f64 = 1.0 / 16_777_216.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// What the loss is multiplied by before backward; 1 when scaling is off.
    pub scale: f64,
    /// Whether the scale moves (f16) or stays 1 (f32, bf16).
    pub dynamic: bool,
    /// Clean steps since the scale last changed (PyTorch's growth tracker).
    pub clean_steps: u64,
    /// Steps skipped for an overflow over the whole run.
    pub skipped_steps: u64,
}

impl Default for LossScaler {
    /// Off: the state of f32 runs and of checkpoints written before there was a scaler.
    fn default() -> Self {
        Self::off()
    }
}

impl LossScaler {
    /// No scaling: the scale stays 1 and a non-finite step stops the run.
    pub fn off() -> Self {
        Self {
            scale: 1.0,
            dynamic: false,
            clean_steps: 0,
            skipped_steps: 0,
        }
    }

    /// Dynamic scaling from `scale` (PyTorch starts at [`INIT_SCALE`]).
    pub fn dynamic(scale: f64) -> Self {
        Self {
            scale,
            dynamic: true,
            ..Self::off()
        }
    }

    /// Dynamic for f16, off for f32 and bf16 (bf16 has f32's exponent range).
    pub fn for_precision(p: Precision) -> Self {
        match p {
            Precision::F16 => Self::dynamic(INIT_SCALE),
            Precision::F32 | Precision::Bf16 => Self::off(),
        }
    }

    /// After a step whose loss and gradients were `finite` or not: what becomes of the step.
    /// Off, a non-finite step stops the run ([`Outcome::NonFinite`]). Dynamic, it is skipped
    /// and the scale halved ([`Outcome::Skipped`]; the run stops once the scale would fall
    /// below [`MIN_SCALE`]); a finite step ([`Outcome::Applied`]) counts towards doubling the
    /// scale every [`GROWTH_INTERVAL`] clean steps.
    pub fn update(&mut self, finite: bool) -> Outcome {
        match (finite, self.dynamic) {
            (true, false) => Outcome::Applied,
            (false, false) => Outcome::NonFinite,
            (true, true) => {
                self.clean_steps += 1;
                if self.clean_steps == GROWTH_INTERVAL {
                    self.scale *= 2.0;
                    self.clean_steps = 0;
                }
                Outcome::Applied
            }
            (false, true) => {
                if self.scale / 2.0 < MIN_SCALE {
                    return Outcome::NonFinite;
                }
                self.scale /= 2.0;
                self.clean_steps = 0;
                self.skipped_steps += 1;
                Outcome::Skipped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_applies_finite_steps_and_stops_on_the_first_non_finite_one() {
        let mut s = LossScaler::for_precision(Precision::F32);
        for _ in 0..3 * GROWTH_INTERVAL {
            assert_eq!(s.update(true), Outcome::Applied);
        }
        assert_eq!(s.scale, 1.0);
        assert_eq!(s.update(false), Outcome::NonFinite);
        assert_eq!((s.scale, s.skipped_steps), (1.0, 0));
        assert_eq!(
            LossScaler::for_precision(Precision::Bf16),
            LossScaler::off()
        );
    }

    #[test]
    fn an_overflow_halves_the_scale_and_skips_then_growth_waits_a_full_interval() {
        let mut s = LossScaler::for_precision(Precision::F16);
        assert_eq!(s.scale, 65536.0);
        for _ in 0..GROWTH_INTERVAL - 1 {
            assert_eq!(s.update(true), Outcome::Applied);
        }
        // One overflow short of growing: the count starts over.
        assert_eq!(s.update(false), Outcome::Skipped);
        assert_eq!((s.scale, s.clean_steps, s.skipped_steps), (32768.0, 0, 1));
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(true);
        }
        assert_eq!(s.scale, 32768.0);
        s.update(true);
        assert_eq!((s.scale, s.clean_steps), (65536.0, 0));
    }

    #[test]
    fn a_scale_halved_below_the_f16_range_stops_the_run() {
        let mut s = LossScaler::dynamic(4.0 * MIN_SCALE);
        assert_eq!(s.update(false), Outcome::Skipped);
        assert_eq!(s.update(false), Outcome::Skipped);
        assert_eq!(s.scale, MIN_SCALE);
        assert_eq!(s.update(false), Outcome::NonFinite);
        assert_eq!((s.scale, s.skipped_steps), (MIN_SCALE, 2));
    }
}
