//! Devices by name, as the command line and the config name them.

use candle_core::Device;

/// A device name that does not open.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}` (use cpu, cuda or cuda:N)")]
    Unknown(String),
    #[error("cannot open CUDA device {ordinal} (was this built with --features cuda?): {source}")]
    Unavailable { ordinal: usize, source: candle_core::Error },
}

/// `cpu`, `cuda` (device 0) or `cuda:N`.
///
/// ```
/// assert!(caf_kernels::parse_device("cpu")?.is_cpu());
/// assert!(caf_kernels::parse_device("gpu").is_err());
/// # Ok::<(), caf_kernels::DeviceError>(())
/// ```
pub fn parse_device(name: &str) -> Result<Device, DeviceError> {
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| DeviceError::Unknown(other.to_string()))?,
    };
    Device::new_cuda(ordinal).map_err(|source| DeviceError::Unavailable { ordinal, source })
}
