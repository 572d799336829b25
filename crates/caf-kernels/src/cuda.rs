//! The CUDA side: `cuda/kernels.cu`, compiled by NVRTC the first time a
//! kernel is needed (once per process) and loaded into each device through
//! candle's module cache, plus the helpers every CUDA operation shares.
//!
//! NVRTC compiles with FMA contraction off, so each kernel rounds as the CPU
//! kernel of the same name does.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::cudarc::nvrtc;
use candle_core::cuda_backend::CudaDevice;
use candle_core::{CudaStorage, DType, Device, Layout, Result, Tensor};

const SOURCE: &str = include_str!("cuda/kernels.cu");

/// The name candle caches the loaded module under, per device.
pub(crate) const MODULE: &str = "caf-kernels";

/// Threads per block; every kernel loops over its elements with a grid stride.
const BLOCK: u32 = 256;
/// At most this many blocks: enough to fill any current GPU several times.
const MAX_BLOCKS: u32 = 8192;

/// Whether this crate's CUDA kernels run on `t` (f32 on a CUDA device).
pub(crate) fn runs_on_cuda_kernels(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cuda(_)) && t.dtype() == DType::F32
}

/// The PTX of `kernels.cu`, compiled once.
pub(crate) fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        let options = nvrtc::CompileOptions {
            fmad: Some(false),
            name: Some("caf_kernels.cu".into()),
            ..Default::default()
        };
        nvrtc::compile_ptx_with_opts(SOURCE, options)
            .map(|ptx| ptx.to_src())
            .map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Msg(format!("caf-kernels: NVRTC could not compile the CUDA kernels: {e}")))
}

/// A launch covering `elements` threads' worth of work.
pub(crate) fn launch_config(elements: usize) -> LaunchConfig {
    let blocks = elements.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS as usize) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of [`BLOCK`] threads per channel, for the kernels that reduce
/// over a channel's values (`BLOCK` must stay a power of two for them).
pub(crate) fn per_channel(channels: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (channels as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches kernel `$name` of `kernels.cu` on `$device` with `$config` (a
/// `LaunchConfig`, usually [`launch_config`]) and the given arguments
/// (device slices and views and scalars, all by reference). The kernel's
/// signature must match the arguments.
macro_rules! launch {
    ($device:expr, $name:expr, $config:expr; $($arg:expr),* $(,)?) => {{
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg as _;
        use candle_core::cuda_backend::WrapErr as _;
        let func = $device.get_or_load_custom_func($name, $crate::cuda::MODULE, $crate::cuda::ptx()?)?;
        let mut builder = func.builder();
        $(builder.arg($arg);)*
        // SAFETY: each kernel's parameters are listed beside it in kernels.cu
        // and the callers pass buffers of the lengths the kernel indexes.
        unsafe { builder.launch($config) }.w().map(|_| ())
    }};
}
pub(crate) use launch;

/// The contiguous f32 elements of a CUDA operand.
pub(crate) fn f32_view<'a>(storage: &'a CudaStorage, layout: &Layout, op: &str) -> Result<CudaView<'a, f32>> {
    let slice = storage
        .as_cuda_slice::<f32>()
        .map_err(|_| candle_core::Error::Msg(format!("{op}: CUDA operands must be f32, got {:?}", storage.dtype())))?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => candle_core::bail!("{op}: operands must be contiguous"),
    }
}

/// A new uninitialised device buffer of `len` elements, every one of which
/// the caller's kernel writes.
pub(crate) fn output<T: DeviceRepr>(device: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: the kernel launched next writes all `len` elements before any is read.
    unsafe { device.alloc::<T>(len) }
}

/// Wraps a kernel's f32 output as candle storage.
pub(crate) fn storage(slice: CudaSlice<f32>, device: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, device.clone())
}

/// One element-wise kernel over one or two operands of one shape (`kernel`
/// takes the inputs, the output and the element count).
pub(crate) fn map_elements(op: &str, kernel: &str, operands: &[(&CudaStorage, &Layout)]) -> Result<CudaStorage> {
    let Some(&(first, first_layout)) = operands.first() else {
        candle_core::bail!("{op}: no operands")
    };
    if let Some((_, other)) = operands.iter().find(|(_, l)| l.shape() != first_layout.shape()) {
        candle_core::bail!("{op}: shapes {:?} and {:?} differ", first_layout.dims(), other.dims())
    }
    let device = first.device();
    let n = first_layout.shape().elem_count();
    let mut out = output::<f32>(device, n)?;
    let count = n as i64;
    match operands {
        [(a, la)] => {
            let a = f32_view(a, la, op)?;
            launch!(device, kernel, launch_config(n); &a, &mut out, &count)?
        }
        [(a, la), (b, lb)] => {
            let (a, b) = (f32_view(a, la, op)?, f32_view(b, lb, op)?);
            launch!(device, kernel, launch_config(n); &a, &b, &mut out, &count)?
        }
        _ => candle_core::bail!("{op}: one or two operands, got {}", operands.len()),
    }
    Ok(storage(out, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC runs without a GPU, so a machine with the CUDA libraries but no
    /// device still checks that every kernel compiles.
    #[test]
    fn the_kernels_compile() -> Result<()> {
        let ptx = ptx()?;
        for kernel in [
            "caf_relu_f32",
            "caf_add_relu_f32",
            "caf_relu_grad_f32",
            "caf_bias_act_f32",
            "caf_max_pool2d_f32",
            "caf_max_pool2d_grad_f32",
            "caf_adam_f32",
            "caf_bn_stats_f32",
            "caf_bn_forward_f32",
            "caf_bn_grad_sums_f32",
            "caf_bn_input_grad_f32",
        ] {
            assert!(
                ptx.contains(&format!(".entry {kernel}(")),
                "{kernel} is missing from the PTX"
            );
        }
        // The block reductions assume the block size the launches use.
        assert!(SOURCE.contains(&format!("#define CAF_BLOCK {BLOCK}\n")));
        Ok(())
    }
}
