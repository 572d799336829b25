//! The CUDA kernels of [`super::max_pool2d`] (`caf_max_pool2d_f32` and
//! `caf_max_pool2d_grad_f32` in `cuda/kernels.cu`): one thread per output
//! forward, keeping each maximum's place in its plane; one thread per input
//! backward, gathering the gradients of the windows whose maximum it is.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::{CudaStorage, Layout, Result};

use super::PoolGeometry;
use crate::cuda::{f32_view, max_pool, max_pool_grad, storage, PoolSizes};

/// The kernels' sizes of `planes` planes pooled as `g` says.
fn sizes(g: &PoolGeometry, planes: usize) -> PoolSizes {
    PoolSizes {
        planes,
        in_h: g.in_h,
        in_w: g.in_w,
        out_h: g.out_h,
        out_w: g.out_w,
        kernel: g.config.kernel,
        stride: g.config.stride,
        padding: g.config.padding,
    }
}

/// Pools `x`; with `keep_places`, also returns each maximum's place.
pub(super) fn forward(
    (planes, g): (usize, &PoolGeometry),
    x: &CudaStorage,
    layout: &Layout,
    keep_places: bool,
) -> Result<(CudaStorage, Option<CudaSlice<u32>>)> {
    let device = x.device();
    let x = f32_view(x, layout, "max_pool2d")?;
    let (y, at) = max_pool(device, &x, &sizes(g, planes), keep_places)?;
    Ok((storage(y, device), at))
}

/// The input gradient from the output gradient `dy` and the forward pass's places.
pub(super) fn backward(
    (planes, g): (usize, &PoolGeometry),
    at: &CudaSlice<u32>,
    dy: &CudaStorage,
    layout: &Layout,
) -> Result<CudaStorage> {
    let device = dy.device();
    let dy = f32_view(dy, layout, "max_pool2d backward")?;
    Ok(storage(max_pool_grad(device, &dy, at, &sizes(g, planes))?, device))
}
