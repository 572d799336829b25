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

/// The environment variable that opens CUDA devices as candle's default
/// (`off`: CUDA's per-thread default stream, an event pair per buffer, the
/// driver's memory pool as it is) instead of caf's set-up (`on` or unset:
/// one stream for all of a device's work, no per-buffer events, freed
/// memory kept for reuse), for a comparison of the two.
pub const CUDA_SETUP_VARIABLE: &str = "CAF_CUDA_SETUP";

/// `cpu`, `cuda` (device 0) or `cuda:N`.
///
/// A CUDA device runs all of its work on one stream, with cudarc's
/// cross-stream events off ([`CUDA_SETUP_VARIABLE`]): work a caller puts on
/// another stream of the device's context must be synchronised with that
/// stream by the caller.
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
    open_cuda(ordinal).map_err(|source| DeviceError::Unavailable { ordinal, source })
}

fn open_cuda(ordinal: usize) -> candle_core::Result<Device> {
    #[cfg(feature = "cuda")]
    {
        static SETUP: crate::switch::Switch = crate::switch::Switch::new(
            CUDA_SETUP_VARIABLE,
            "one stream, no per-buffer events, a warm memory pool",
            "candle's default device",
        );
        if SETUP.is_on()? {
            return crate::cuda::open_device(ordinal);
        }
    }
    Device::new_cuda(ordinal)
}
