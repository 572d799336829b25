//! The CUDA kernels of [`super::max_pool2d`] (`caf_max_pool2d_f32` and
//! `caf_max_pool2d_grad_f32` in `cuda/kernels.cu`): one thread per output
//! forward, keeping each maximum's place in its plane; one thread per input
//! backward, gathering the gradients of the windows whose maximum it is.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::{CudaStorage, Layout, Result};

use super::max_cpu::PoolGeometry;
use crate::cuda::{f32_view, launch, launch_config, output, storage};

/// The kernels' trailing arguments: planes, then h, w, out_h, out_w,
/// kernel, stride, padding.
fn sizes(g: &PoolGeometry, planes: usize) -> (i64, [i32; 7]) {
    let c = g.config;
    let side = |v: usize| v as i32;
    let sides = [g.in_h, g.in_w, g.out_h, g.out_w, c.kernel, c.stride, c.padding].map(side);
    (planes as i64, sides)
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
    let outputs = planes * g.out_h * g.out_w;
    let mut y = output::<f32>(device, outputs)?;
    let (planes, [h, w, out_h, out_w, kernel, stride, padding]) = sizes(g, planes);
    let at = if keep_places {
        let mut at = output::<u32>(device, outputs)?;
        launch!(device, "caf_max_pool2d_f32", launch_config(outputs);
            &x, &mut y, &mut at, &planes, &h, &w, &out_h, &out_w, &kernel, &stride, &padding)?;
        Some(at)
    } else {
        // A null `at`: the kernel keeps no places.
        let null = 0u64;
        launch!(device, "caf_max_pool2d_f32", launch_config(outputs);
            &x, &mut y, &null, &planes, &h, &w, &out_h, &out_w, &kernel, &stride, &padding)?;
        None
    };
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
    let inputs = planes * g.in_h * g.in_w;
    let mut dx = output::<f32>(device, inputs)?;
    let (planes, [h, w, out_h, out_w, kernel, stride, padding]) = sizes(g, planes);
    launch!(device, "caf_max_pool2d_grad_f32", launch_config(inputs);
        &dy, at, &mut dx, &planes, &h, &w, &out_h, &out_w, &kernel, &stride, &padding)?;
    Ok(storage(dx, device))
}
