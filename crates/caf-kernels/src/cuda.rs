//! The CUDA side: `cuda/kernels.cu`, compiled by NVRTC the first time a
//! kernel is needed (once per process) and loaded into each device through
//! candle's module cache, plus the helpers every CUDA operation shares.
//!
//! NVRTC compiles with FMA contraction off, so each kernel rounds as the CPU
//! kernel of the same name does.

use std::sync::OnceLock;

mod launches;
mod setup;

pub(crate) use setup::open as open_device;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::cudarc::nvrtc;
use candle_core::cuda_backend::CudaDevice;
use candle_core::{CudaStorage, DType, Device, Layout, Result, Tensor};

#[cfg(feature = "cudnn")]
pub(crate) use launches::unary;
pub(crate) use launches::{
    adam, bias_act, bn_forward, bn_grad_sums, bn_input_grad, bn_stats, max_pool, max_pool_grad, MapSizes, PoolSizes,
};

use crate::kernel_signatures::{CType, KernelSignature};

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

/// Launches the kernel of signature `$kernel` (a
/// [`KernelSignature`](crate::kernel_signatures::KernelSignature)) on
/// `$device` with `$config` and the arguments (device slices and views,
/// and scalars, all by reference). The arguments' C types ([`KernelArg`])
/// are checked against the signature first: a mismatch is an error, not a
/// launch. The launch itself is unsafe (the kernel indexes the buffers as
/// its sizes say), so the macro is used inside an `unsafe` block whose
/// SAFETY comment says why the lengths are right; `launches.rs` holds
/// every use.
macro_rules! launch {
    ($device:expr, $kernel:expr, $config:expr; $($arg:expr),* $(,)?) => {{
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg as _;
        use candle_core::cuda_backend::WrapErr as _;
        let signature: $crate::kernel_signatures::KernelSignature = $kernel;
        let func = $device.get_or_load_custom_func(signature.name, $crate::cuda::MODULE, $crate::cuda::ptx()?)?;
        let mut builder = func.builder();
        let mut passed = Vec::new();
        $(
            let arg = $arg;
            passed.push($crate::cuda::c_type(&arg));
            builder.arg(arg);
        )*
        $crate::cuda::check_arguments(&signature, &passed)?;
        builder.launch($config).w().map(|_| ())
    }};
}
pub(crate) use launch;

/// What a kernel argument is in C.
pub(crate) trait KernelArg {
    const C_TYPE: CType;
}

/// The C type of a kernel argument.
pub(crate) fn c_type<A: KernelArg>(_: &A) -> CType {
    A::C_TYPE
}

impl KernelArg for &CudaView<'_, f32> {
    const C_TYPE: CType = CType::FloatIn;
}
impl KernelArg for &CudaSlice<f32> {
    const C_TYPE: CType = CType::FloatIn;
}
impl KernelArg for &mut CudaSlice<f32> {
    const C_TYPE: CType = CType::FloatOut;
}
impl KernelArg for &mut CudaViewMut<'_, f32> {
    const C_TYPE: CType = CType::FloatOut;
}
impl KernelArg for &CudaSlice<u32> {
    const C_TYPE: CType = CType::UintIn;
}
impl KernelArg for &mut CudaSlice<u32> {
    const C_TYPE: CType = CType::UintOut;
}
impl KernelArg for &NullPlaces {
    const C_TYPE: CType = CType::UintOut;
}
impl KernelArg for &i64 {
    const C_TYPE: CType = CType::LongLong;
}
impl KernelArg for &i32 {
    const C_TYPE: CType = CType::Int;
}
impl KernelArg for &f32 {
    const C_TYPE: CType = CType::Float;
}
impl KernelArg for &f64 {
    const C_TYPE: CType = CType::Double;
}

/// A null `unsigned int *`: max pooling without keeping the places.
#[repr(transparent)]
pub(crate) struct NullPlaces(u64);

impl NullPlaces {
    pub(crate) const fn new() -> Self {
        NullPlaces(0)
    }
}

// SAFETY: a `u64` of zero, passed by value, is a null device pointer.
unsafe impl DeviceRepr for NullPlaces {}

/// Fails unless `passed` are the C types of `signature`'s parameters.
pub(crate) fn check_arguments(signature: &KernelSignature, passed: &[CType]) -> Result<()> {
    if passed != signature.params {
        candle_core::bail!(
            "{}: launched with arguments {passed:?}, but its signature is {:?}",
            signature.name,
            signature.params
        )
    }
    Ok(())
}

/// The contiguous f32 elements of a CUDA operand.
pub(crate) fn f32_view<'a>(storage: &'a CudaStorage, layout: &Layout, op: &str) -> Result<CudaView<'a, f32>> {
    typed_view(storage, layout, op)
}

/// The contiguous elements of `storage` under `layout`, of type `T`.
pub(crate) fn typed_view<'a, T: candle_core::cuda_backend::CudaDType>(
    storage: &'a CudaStorage,
    layout: &Layout,
    op: &str,
) -> Result<CudaView<'a, T>> {
    let slice = storage.as_cuda_slice::<T>().map_err(|_| {
        candle_core::Error::Msg(format!(
            "{op}: CUDA operands must be {}, got {:?}",
            std::any::type_name::<T>(),
            storage.dtype()
        ))
    })?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => candle_core::bail!("{op}: operands must be contiguous"),
    }
}

/// Wraps a kernel's f32 output as candle storage.
pub(crate) fn storage(slice: CudaSlice<f32>, device: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, device.clone())
}

/// One element-wise kernel over one or two operands of one shape.
pub(crate) fn map_elements(
    op: &str,
    kernel: KernelSignature,
    operands: &[(&CudaStorage, &Layout)],
) -> Result<CudaStorage> {
    let Some(&(first, first_layout)) = operands.first() else {
        candle_core::bail!("{op}: no operands")
    };
    if let Some((_, other)) = operands.iter().find(|(_, l)| l.shape() != first_layout.shape()) {
        candle_core::bail!("{op}: shapes {:?} and {:?} differ", first_layout.dims(), other.dims())
    }
    let device = first.device();
    let out = match operands {
        [(a, la)] => launches::unary(device, kernel, &f32_view(a, la, op)?)?,
        [(a, la), (b, lb)] => launches::binary(device, kernel, &f32_view(a, la, op)?, &f32_view(b, lb, op)?)?,
        _ => candle_core::bail!("{op}: one or two operands, got {}", operands.len()),
    };
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
        for kernel in crate::kernel_signatures::ALL.map(|signature| signature.name) {
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
