//! Dropout whose masks come from a seedable stream.
//!
//! candle's dropout draws from a thread-local generator that cannot be
//! seeded, so two runs never drop the same units and a resumed run cannot
//! repeat the one it continues. Here every dropout layer of a network shares
//! one [`DropoutRng`], which the trainer reseeds from (seed, step) before each
//! iteration: the masks then depend only on the seed and the position in
//! training.

use std::sync::{Arc, Mutex};

use caf_rng::Rng;
use candle_core::{ModuleT, Result, Tensor};

/// The random stream shared by a network's dropout layers.
#[derive(Debug, Clone)]
pub struct DropoutRng(Arc<Mutex<Rng>>);

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(Rng::new(seed))))
    }

    /// Restarts the stream at a point derived from `seed` and `stream` (e.g. the step).
    pub fn reseed(&self, seed: u64, stream: &[u64]) {
        let mut rng = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *rng = Rng::derive(seed, stream);
    }

    /// `n` mask values: `1/(1−p)` with probability `1 − p`, else 0.
    fn mask(&self, n: usize, p: f64) -> Vec<f32> {
        let mut rng = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let keep = (1.0 / (1.0 - p)) as f32;
        (0..n).map(|_| if rng.unit() < p { 0.0 } else { keep }).collect()
    }
}

/// Inverted dropout, active only in training (`forward_t(x, true)`).
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f64,
    rng: DropoutRng,
}

impl Dropout {
    pub fn new(p: f64, rng: &DropoutRng) -> Self {
        Self { p, rng: rng.clone() }
    }
}

impl ModuleT for Dropout {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p <= 0.0 {
            return Ok(x.clone());
        }
        if self.p >= 1.0 {
            return x.zeros_like();
        }
        let mask =
            Tensor::from_vec(self.rng.mask(x.elem_count(), self.p), x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn masks_repeat_after_reseeding_and_keep_the_mean() -> Result<()> {
        let rng = DropoutRng::new(0);
        let dropout = Dropout::new(0.5, &rng);
        let x = Tensor::ones((64, 100), DType::F32, &Device::Cpu)?;
        rng.reseed(7, &[3]);
        let a = dropout.forward_t(&x, true)?.to_vec2::<f32>()?;
        let b = dropout.forward_t(&x, true)?.to_vec2::<f32>()?;
        rng.reseed(7, &[3]);
        assert_eq!(dropout.forward_t(&x, true)?.to_vec2::<f32>()?, a);
        assert_ne!(a, b);
        let mean = a.iter().flatten().sum::<f32>() / 6400.0;
        assert!((mean - 1.0).abs() < 0.05, "inverted dropout keeps the mean: {mean}");
        assert!(a.iter().flatten().all(|&v| v == 0.0 || v == 2.0));
        assert_eq!(dropout.forward_t(&x, false)?.to_vec2::<f32>()?, x.to_vec2::<f32>()?);
        Ok(())
    }
}
