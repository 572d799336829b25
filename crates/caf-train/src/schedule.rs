//! The step learning-rate schedule: `lr · γ^⌊t / step⌋`.

/// Learning rate at iteration `t` (counting from 0).
pub fn step_lr(base: f64, gamma: f64, step_size: u64, t: u64) -> f64 {
    base * gamma.powi((t / step_size.max(1)) as i32)
}

#[cfg(test)]
mod tests {
    use super::step_lr;

    #[test]
    fn decays_every_step_size_iterations() {
        assert_eq!(step_lr(1e-4, 0.9, 5000, 0), 1e-4);
        assert_eq!(step_lr(1e-4, 0.9, 5000, 4999), 1e-4);
        assert!((step_lr(1e-4, 0.9, 5000, 5000) - 0.9e-4).abs() < 1e-18);
        assert!((step_lr(1e-4, 0.9, 5000, 12_345) - 0.81e-4).abs() < 1e-18);
    }
}
