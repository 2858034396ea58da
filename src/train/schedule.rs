//! The learning rate as a pure function of the step, as HF's `get_*_schedule_with_warmup`:
//! linear warmup from 0, then linear decay to 0, cosine decay to 0, or constant.

use crate::config::{Schedule, TrainConfig};

/// The learning rate of optimizer step `step` (0-based). As in HF, step 0 of a warmup runs at
/// lr 0 and the peak is reached at step `warmup_steps`.
pub fn learning_rate(step: u64, c: &TrainConfig) -> f64 {
    c.learning_rate * factor(step, c.warmup_steps, c.steps, c.schedule)
}

fn factor(step: u64, warmup: u64, total: u64, schedule: Schedule) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => (1.0 - progress).max(0.0),
        // Clamped: past the end it stays at 0 rather than rising again.
        Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let f = |s, sch| factor(s, 10, 110, sch);
        for sch in [Schedule::Linear, Schedule::Cosine, Schedule::Constant] {
            assert_eq!(f(0, sch), 0.0);
            assert_eq!(f(5, sch), 0.5);
            assert_eq!(f(10, sch), 1.0, "peak at the end of warmup");
        }
        assert_eq!(f(60, Schedule::Linear), 0.5);
        assert!((f(60, Schedule::Cosine) - 0.5).abs() < 1e-12);
        assert_eq!(f(110, Schedule::Linear), 0.0);
        assert!(f(110, Schedule::Cosine).abs() < 1e-12);
        assert!(
            f(500, Schedule::Cosine).abs() < 1e-12,
            "cosine does not restart"
        );
        assert_eq!(f(109, Schedule::Constant), 1.0);
        // No warmup: full rate from step 0.
        assert_eq!(factor(0, 0, 100, Schedule::Linear), 1.0);
    }

    #[test]
    fn a_warmup_longer_than_the_run_rises_to_the_end_as_in_hf() {
        for sch in [Schedule::Linear, Schedule::Cosine, Schedule::Constant] {
            assert_eq!(factor(5, 40, 20, sch), 0.125);
            assert_eq!(factor(19, 40, 20, sch), 19.0 / 40.0, "last step of the run");
        }
    }
}
