//! The learning-rate schedule: the step schedule `lr · γ^⌊t / step⌋`,
//! times a linear warm-up ramp over the first `warmup` iterations.

/// A run's learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// The rate after the warm-up, before any decay.
    pub lr: f64,
    /// The rate is multiplied by `gamma` every `step_size` iterations.
    pub gamma: f64,
    pub step_size: u64,
    /// Iterations over which the rate rises linearly to `lr` (0: none).
    pub warmup: u64,
}

impl LrSchedule {
    /// The rate of iteration `t` (counting from 0).
    pub fn lr_at(&self, t: u64) -> f64 {
        step_lr(self.lr, self.gamma, self.step_size, t) * warmup_ramp(self.warmup, t)
    }
}

/// Learning rate at iteration `t` (counting from 0).
pub fn step_lr(base: f64, gamma: f64, step_size: u64, t: u64) -> f64 {
    base * gamma.powi((t / step_size.max(1)) as i32)
}

/// The factor the rate is scaled by at iteration `t`: `(t + 1) / warmup`
/// while `t < warmup`, then 1 (always 1 when `warmup` is 0).
pub fn warmup_ramp(warmup: u64, t: u64) -> f64 {
    if t < warmup {
        (t + 1) as f64 / warmup as f64
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::{step_lr, warmup_ramp};

    #[test]
    fn decays_every_step_size_iterations() {
        assert_eq!(step_lr(1e-4, 0.9, 5000, 0), 1e-4);
        assert_eq!(step_lr(1e-4, 0.9, 5000, 4999), 1e-4);
        assert!((step_lr(1e-4, 0.9, 5000, 5000) - 0.9e-4).abs() < 1e-18);
        assert!((step_lr(1e-4, 0.9, 5000, 12_345) - 0.81e-4).abs() < 1e-18);
    }

    #[test]
    fn warms_up_linearly_then_follows_the_steps() {
        let warmed_lr =
            |gamma_step: u64, warmup: u64, t: u64| step_lr(1e-4, 0.9, gamma_step, t) * warmup_ramp(warmup, t);
        assert_eq!(warmed_lr(5000, 0, 0), 1e-4);
        assert!((warmed_lr(5000, 4, 0) - 0.25e-4).abs() < 1e-18);
        assert!((warmed_lr(5000, 4, 2) - 0.75e-4).abs() < 1e-18);
        assert_eq!(warmed_lr(5000, 4, 3), 1e-4);
        assert_eq!(warmed_lr(5000, 4, 4999), 1e-4);
        assert!((warmed_lr(2, 4, 2) - 0.675e-4).abs() < 1e-18);
    }
}
