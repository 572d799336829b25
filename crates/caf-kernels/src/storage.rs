//! Running one generic kernel on candle CPU storages of f32 or f64.

use candle_core::{CpuStorage, DType, Device, Layout, Result, Tensor};

use crate::gemm::Element;

/// Whether this crate's CPU kernels run on `t` (f32 or f64 on the CPU);
/// elsewhere the operations fall back to candle's own.
pub fn runs_on_cpu_kernels(t: &Tensor) -> bool {
    matches!((t.device(), t.dtype()), (Device::Cpu, DType::F32 | DType::F64))
}

/// Whether one of this crate's own kernels runs on `t`: the CPU kernels
/// (f32, f64), or with the `cuda` feature the CUDA kernels (f32).
pub(crate) fn runs_on_own_kernels(t: &Tensor) -> bool {
    #[cfg(feature = "cuda")]
    if crate::cuda::runs_on_cuda_kernels(t) {
        return true;
    }
    runs_on_cpu_kernels(t)
}

/// Whether one of this crate's own kernels runs on every one of `operands`,
/// all on one device (what an operation of several tensors needs).
pub(crate) fn own_kernels_run_on(operands: &[&Tensor]) -> bool {
    let Some(first) = operands.first() else {
        return false;
    };
    operands
        .iter()
        .all(|t| runs_on_own_kernels(t) && t.device().same_device(first.device()))
}

/// The contiguous elements a layout covers.
pub(crate) fn contiguous_slice<'a, T: Element>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [T]> {
    contiguous_part(storage.as_slice::<T>()?, layout, op)
}

/// The elements of `data` a contiguous layout covers.
pub(crate) fn contiguous_part<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: operands must be contiguous"),
    }
}

/// A kernel over operands of one element type, producing a new buffer.
pub(crate) trait Kernel {
    fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T>;
}

/// Runs `kernel` on `operands`, which must all be f32 or all f64.
pub(crate) fn dispatch(op: &str, kernel: &impl Kernel, operands: &[(&CpuStorage, &Layout)]) -> Result<CpuStorage> {
    fn slices<'a, T: Element>(op: &str, operands: &[(&'a CpuStorage, &Layout)]) -> Result<Vec<&'a [T]>> {
        operands.iter().map(|(s, l)| contiguous_slice(s, l, op)).collect()
    }
    Ok(match operands.first() {
        Some((CpuStorage::F32(_), _)) if operands.iter().all(|(s, _)| matches!(s, CpuStorage::F32(_))) => {
            CpuStorage::F32(kernel.run(&slices::<f32>(op, operands)?))
        }
        Some((CpuStorage::F64(_), _)) if operands.iter().all(|(s, _)| matches!(s, CpuStorage::F64(_))) => {
            CpuStorage::F64(kernel.run(&slices::<f64>(op, operands)?))
        }
        _ => candle_core::bail!("{op}: operands must all be f32 or all f64"),
    })
}
