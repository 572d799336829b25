//! Test helpers shared by the caf-rs crates (a dev-dependency only).
//!
//! [`bombs`] are image files that declare a huge size, [`pictures`] small
//! ones with EXIF, and [`PeakAllocator`] measures what a call allocates.
//! [`check_gradient`] compares candle's gradient of a function with central
//! finite differences, in f64, the check every differentiable piece of the
//! project must pass.
//!
//! ```
//! use caf_testkit::{check_gradient, distinct_values};
//!
//! let x = distinct_values((2, 3))?;
//! check_gradient(|x| x.sqr()?.sum_keepdim(1), &x, 1e-6)?;
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod bombs;
mod peak;
pub mod pictures;

pub use peak::PeakAllocator;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};

/// Deterministic values in [0.5, 1.5) for a shape: weights that make every
/// output element matter differently in the checked scalar.
pub fn probe_like(shape: &Shape) -> Result<Tensor> {
    let values: Vec<f64> = (0..shape.elem_count())
        .map(|i| 0.5 + ((i * 31 + 7) % 17) as f64 / 17.0)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// Distinct deterministic values in [-0.5, 0.5) (no ties, so max-like
/// operations have unique winners).
pub fn distinct_values(shape: impl Into<Shape>) -> Result<Tensor> {
    let shape = shape.into();
    let values: Vec<f64> = (0..shape.elem_count())
        .map(|i| ((i * 7919 + 13) % 10007) as f64 / 10007.0 - 0.5)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// Checks candle's gradient of `sum(f(x) · probe)` with respect to `x` (an f64
/// CPU tensor) against central differences with step `1e-6`, element by
/// element, within `tolerance · max(1, |numeric|)`. Panics with the first
/// element that disagrees.
pub fn check_gradient(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor, tolerance: f64) -> Result<()> {
    let x = x.to_dtype(DType::F64)?;
    let probe = probe_like(f(&x)?.shape())?;
    let loss = |t: &Tensor| -> Result<f64> { (f(t)? * &probe)?.sum_all()?.to_scalar::<f64>() };
    let var = Var::from_tensor(&x)?;
    let grads = (f(var.as_tensor())? * &probe)?.sum_all()?.backward()?;
    let analytic = match grads.get(var.as_tensor()) {
        Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
        None => vec![0.0; x.elem_count()],
    };
    let base = x.flatten_all()?.to_vec1::<f64>()?;
    let eps = 1e-6;
    for i in 0..base.len() {
        let shifted = |delta: f64| -> Result<f64> {
            let mut values = base.clone();
            values[i] += delta;
            loss(&Tensor::from_vec(values, x.shape(), &Device::Cpu)?)
        };
        let numeric = (shifted(eps)? - shifted(-eps)?) / (2.0 * eps);
        let error = (numeric - analytic[i]).abs();
        assert!(
            error <= tolerance * numeric.abs().max(1.0),
            "element {i} of {:?}: numeric {numeric:.9}, analytic {:.9}",
            x.dims(),
            analytic[i]
        );
    }
    Ok(())
}
