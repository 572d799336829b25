//! Pooling layers candle 0.11 lacks or gets wrong.
//!
//! * [`max_pool2d`]: max pooling with overlapping windows and padding whose
//!   gradient follows PyTorch (it goes to the first maximum of each window).
//!   candle's own op has no backward for overlapping windows and scales the
//!   non-overlapping one by 1/k².
//! * [`adaptive_avg_pool2d`]: torchvision's adaptive average pooling (window
//!   `i` covers `floor(i·in/out) .. ceil((i+1)·in/out)`), written as two small
//!   matrix products so it is differentiable on every device.
//! * [`global_avg_pool`]: the mean over the spatial axes.

mod max_cpu;

use candle_core::{DType, Device, Result, Tensor};

use self::max_cpu::MaxPool2dCpu;

/// A square max-pooling window, as `torch.nn.MaxPool2d(kernel, stride, padding)`
/// with `ceil_mode=False` and `dilation=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2dConfig {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2dConfig {
    /// Output side for an input side, or an error when the window does not fit.
    pub fn output_len(&self, input: usize) -> Result<usize> {
        let padded = input + 2 * self.padding;
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            candle_core::bail!("max_pool2d: invalid window {self:?} (padding must be at most half the kernel)")
        }
        if padded < self.kernel {
            candle_core::bail!(
                "max_pool2d: input side {input} is smaller than the {}x{} window (padding {})",
                self.kernel,
                self.kernel,
                self.padding
            )
        }
        Ok((padded - self.kernel) / self.stride + 1)
    }
}

/// Output side of a window (convolution or pooling) sliding over `input`
/// with `stride` and `padding`, or `None` when the padded input is smaller
/// than the window.
pub(crate) fn window_output(input: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = input + 2 * padding;
    (padded >= kernel && stride > 0).then(|| (padded - kernel) / stride + 1)
}

/// Max pooling over a `B×C×H×W` tensor with a gradient that goes to the first
/// maximum of each window (PyTorch semantics).
///
/// On the CPU this is a custom operation; on other devices it is a composition
/// of differentiable candle operations with the same result and gradient.
pub fn max_pool2d(x: &Tensor, config: MaxPool2dConfig) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    config.output_len(h)?;
    config.output_len(w)?;
    match x.device() {
        Device::Cpu if x.track_op() => x.contiguous()?.apply_op1(MaxPool2dCpu::for_training(config)),
        Device::Cpu => x.contiguous()?.apply_op1_no_bwd(&MaxPool2dCpu::for_inference(config)),
        _ => max_pool2d_composed(x, config),
    }
}

/// Max pooling built from differentiable candle operations: the `k²` strided
/// views of each window are stacked, `argmax` picks the first maximum and
/// `gather` routes the gradient to it. Runs on any device.
pub fn max_pool2d_composed(x: &Tensor, config: MaxPool2dConfig) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (out_h, out_w) = (config.output_len(h)?, config.output_len(w)?);
    let x = pad_with_neg_infinity(x, config.padding)?;
    let device = x.device();
    let strided = |start: usize, len: usize| -> Result<Tensor> {
        let index: Vec<u32> = (0..len).map(|i| (start + i * config.stride) as u32).collect();
        Tensor::new(index, device)
    };
    let mut candidates = Vec::with_capacity(config.kernel * config.kernel);
    for dy in 0..config.kernel {
        let rows = x.index_select(&strided(dy, out_h)?, 2)?;
        for dx in 0..config.kernel {
            candidates.push(rows.index_select(&strided(dx, out_w)?, 3)?);
        }
    }
    let stacked = Tensor::stack(&candidates, 2)?;
    let first_max = stacked.argmax_keepdim(2)?;
    stacked.gather(&first_max, 2)?.squeeze(2)
}

fn pad_with_neg_infinity(x: &Tensor, padding: usize) -> Result<Tensor> {
    if padding == 0 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    let fill = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
        Tensor::new(f32::NEG_INFINITY, x.device())?
            .to_dtype(x.dtype())?
            .broadcast_as(shape)?
            .contiguous()
    };
    let side = fill((b, c, h, padding))?;
    let x = Tensor::cat(&[&side, x, &side], 3)?;
    let top = fill((b, c, padding, w + 2 * padding))?;
    Tensor::cat(&[&top, &x, &top], 2)
}

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
