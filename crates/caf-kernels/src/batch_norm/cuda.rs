//! The CUDA passes of training batch normalisation (`caf_bn_*_f32` in
//! `cuda/kernels.cu`): statistics and gradient sums with one block per
//! channel, the normalisation and the input gradient one thread per element.
//! The statistics stay on the device; every pass reads them from there.

use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, Layout, Result, Storage};

use super::{Normalisation, StatsOn};
use crate::cuda::{bn_forward, bn_grad_sums, bn_input_grad, bn_stats, f32_view, storage, MapSizes};
use crate::elementwise::Activation;

/// Batch, channels and plane (`H·W`) of a `B×C×H×W` map.
fn sizes(dims: &[usize; 4]) -> MapSizes {
    MapSizes {
        batch: dims[0],
        channels: dims[1],
        plane: dims[2] * dims[3],
    }
}

/// The `2×C` statistics of a contiguous `B×C×H×W` map.
pub(super) fn statistics(x: &CudaStorage, layout: &Layout, dims: &[usize; 4]) -> Result<CudaStorage> {
    let device = x.device();
    let x = f32_view(x, layout, "batch norm statistics")?;
    Ok(storage(bn_stats(device, &x, &sizes(dims))?, device))
}

impl Normalisation {
    /// Runs `f` with a view of the statistics on the device and `eps`.
    fn with_device_stats<R>(
        &self,
        f: impl FnOnce(&candle_core::cuda_backend::cudarc::driver::CudaView<'_, f32>, f64) -> Result<R>,
    ) -> Result<R> {
        let StatsOn::Cuda { stats, eps } = &self.on else {
            candle_core::bail!("batch norm: CUDA operands, but the statistics are on the CPU")
        };
        let (stats, layout) = stats.storage_and_layout();
        let Storage::Cuda(stats) = &*stats else {
            candle_core::bail!("batch norm: the statistics are not on the CUDA device")
        };
        f(&f32_view(stats, layout, "batch norm statistics")?, *eps)
    }

    /// `y = (x − mean)·inv_std·weight + bias`, then the activation.
    pub(super) fn cuda_forward(
        &self,
        activation: Activation,
        (x, lx): (&CudaStorage, &Layout),
        (weight, lw): (&CudaStorage, &Layout),
        (bias, lb): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let op = "batch norm";
        let device = x.device();
        let (x, weight, bias) = (f32_view(x, lx, op)?, f32_view(weight, lw, op)?, f32_view(bias, lb, op)?);
        let relu = activation == Activation::Relu;
        let y = self.with_device_stats(|stats, eps| {
            bn_forward(device, &x, &weight, &bias, stats, &sizes(&self.dims), eps, relu)
        })?;
        Ok(storage(y, device))
    }

    /// `Σ dy` and `Σ dy·x̂` per channel, `2×C`.
    pub(super) fn cuda_gradient_sums(
        &self,
        (dy, ldy): (&CudaStorage, &Layout),
        (x, lx): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let op = "batch norm backward";
        let device = dy.device();
        let (dy, x) = (f32_view(dy, ldy, op)?, f32_view(x, lx, op)?);
        let sums =
            self.with_device_stats(|stats, eps| bn_grad_sums(device, &dy, &x, stats, &sizes(&self.dims), eps))?;
        Ok(storage(sums, device))
    }

    /// `dx = weight·inv_std·(dy − mean(dy) − x̂·mean(dy·x̂))`.
    pub(super) fn cuda_input_gradient(
        &self,
        (dy, ldy): (&CudaStorage, &Layout),
        (x, lx): (&CudaStorage, &Layout),
        (weight, lw): (&CudaStorage, &Layout),
        (sums, ls): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let op = "batch norm backward";
        let device = dy.device();
        let (dy, x) = (f32_view(dy, ldy, op)?, f32_view(x, lx, op)?);
        let (weight, sums) = (f32_view(weight, lw, op)?, f32_view(sums, ls, op)?);
        let dx = self.with_device_stats(|stats, eps| {
            bn_input_grad(device, &dy, &x, &weight, &sums, stats, &sizes(&self.dims), eps)
        })?;
        Ok(storage(dx, device))
    }
}
