//! Pooling layers of the encoders.
//!
//! * [`max_pool2d`] (from caf-kernels, re-exported): max pooling with
//!   overlapping windows and padding whose gradient follows PyTorch (it goes
//!   to the first maximum of each window).
//! * [`adaptive_avg_pool2d`]: torchvision's adaptive average pooling (window
//!   `i` covers `floor(i·in/out) .. ceil((i+1)·in/out)`), written as two small
//!   matrix products so it is differentiable on every device.
//! * [`global_avg_pool`]: the mean over the spatial axes.

use candle_core::{DType, Device, Result, Tensor};

pub use caf_kernels::{max_pool2d, MaxPool2dConfig};

/// Global average pooling: `B×C×H×W → B×C`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean((2, 3))
}

/// torchvision's `AdaptiveAvgPool2d((out_h, out_w))` on a `B×C×H×W` tensor.
///
/// Averaging over a rectangle is separable, so the pool is `P_h · X · P_wᵀ`
/// with `P[i, j] = 1/len(window i)` for `j` in window `i`; this also pools a
/// 2×2 map up to 6×6 exactly as torchvision does (windows then repeat).
pub fn adaptive_avg_pool2d(x: &Tensor, (out_h, out_w): (usize, usize)) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    let pool_w = adaptive_pool_matrix(w, out_w, x.dtype(), x.device())?; // out_w × w
    let pool_h = adaptive_pool_matrix(h, out_h, x.dtype(), x.device())?; // out_h × h
    let along_w = x
        .contiguous()?
        .reshape((b * c * h, w))?
        .matmul(&pool_w.t()?)?
        .reshape((b * c, h, out_w))?;
    let along_h = along_w
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * c * out_w, h))?
        .matmul(&pool_h.t()?)?
        .reshape((b * c, out_w, out_h))?;
    along_h.transpose(1, 2)?.reshape((b, c, out_h, out_w))
}

/// `out × in` averaging matrix of torchvision's adaptive pooling windows.
fn adaptive_pool_matrix(input: usize, output: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    if input == 0 || output == 0 {
        candle_core::bail!("adaptive_avg_pool2d: cannot pool {input} positions to {output}")
    }
    let mut weights = vec![0f32; output * input];
    for i in 0..output {
        let start = i * input / output;
        let end = ((i + 1) * input).div_ceil(output);
        let share = 1.0 / (end - start) as f32;
        weights[i * input + start..i * input + end].fill(share);
    }
    Tensor::from_vec(weights, (output, input), device)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests;
