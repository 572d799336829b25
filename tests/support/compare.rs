//! How far a result is from its reference.

use anyhow::Result;
use candle_core::{Device, Tensor};

/// Normwise relative error `max |ours − expected| / max |expected|`, on the host.
pub fn relative_error(ours: &Tensor, expected: &Tensor) -> Result<f64> {
    let (ours, expected) = (ours.to_device(&Device::Cpu)?, expected.to_device(&Device::Cpu)?);
    assert_eq!(ours.dims(), expected.dims(), "shapes differ");
    let scale = f64::from(expected.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?);
    let error = f64::from((ours - expected)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?);
    Ok(error / scale.max(1e-12))
}
