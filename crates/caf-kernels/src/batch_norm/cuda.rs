//! The CUDA passes of training batch normalisation (`caf_bn_*_f32` in
//! `cuda/kernels.cu`): statistics and gradient sums with one block per
//! channel, the normalisation and the input gradient one thread per element.
//! The statistics stay on the device; every pass reads them from there.

use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, Layout, Result, Storage};

use super::Normalisation;
use crate::cuda::{f32_view, launch, launch_config, output, per_channel, storage};
use crate::elementwise::Activation;

/// Batch, channels and plane (`H·W`) as the kernels take them.
fn sizes(dims: &[usize; 4]) -> (i32, i32, i64) {
    (dims[0] as i32, dims[1] as i32, (dims[2] * dims[3]) as i64)
}

/// The `2×C` statistics of a contiguous `B×C×H×W` map.
pub(super) fn statistics(x: &CudaStorage, layout: &Layout, dims: &[usize; 4]) -> Result<CudaStorage> {
    let device = x.device();
    let x = f32_view(x, layout, "batch norm statistics")?;
    let mut stats = output::<f32>(device, 2 * dims[1])?;
    let (batch, channels, plane) = sizes(dims);
    launch!(device, "caf_bn_stats_f32", per_channel(dims[1]); &x, &mut stats, &batch, &channels, &plane)?;
    Ok(storage(stats, device))
}

impl Normalisation {
    /// Runs `f` with a view of the statistics on the device.
    fn with_device_stats<R>(
        &self,
        f: impl FnOnce(&candle_core::cuda_backend::cudarc::driver::CudaView<'_, f32>) -> Result<R>,
    ) -> Result<R> {
        let (stats, layout) = self.stats.storage_and_layout();
        let Storage::Cuda(stats) = &*stats else {
            candle_core::bail!("batch norm: the statistics are not on the CUDA device")
        };
        f(&f32_view(stats, layout, "batch norm statistics")?)
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
        let n = lx.shape().elem_count();
        let mut y = output::<f32>(device, n)?;
        let (_, channels, plane) = sizes(&self.dims);
        let (count, relu) = (n as i64, i32::from(activation == Activation::Relu));
        self.with_device_stats(|stats| {
            launch!(device, "caf_bn_forward_f32", launch_config(n);
                &x, &weight, &bias, stats, &mut y, &count, &plane, &channels, &self.eps, &relu)
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
        let mut sums = output::<f32>(device, 2 * self.dims[1])?;
        let (batch, channels, plane) = sizes(&self.dims);
        self.with_device_stats(|stats| {
            launch!(device, "caf_bn_grad_sums_f32", per_channel(self.dims[1]);
                &dy, &x, stats, &mut sums, &batch, &channels, &plane, &self.eps)
        })?;
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
        let n = ldy.shape().elem_count();
        let mut dx = output::<f32>(device, n)?;
        let (_, channels, plane) = sizes(&self.dims);
        let (elements, count) = (n as i64, self.count());
        self.with_device_stats(|stats| {
            launch!(device, "caf_bn_input_grad_f32", launch_config(n);
                &dy, &x, &weight, &sums, stats, &mut dx, &elements, &plane, &channels, &count, &self.eps)
        })?;
        Ok(storage(dx, device))
    }
}
