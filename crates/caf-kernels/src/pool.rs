//! Max pooling with PyTorch's gradient, which candle 0.11 lacks: its own op
//! has no backward for overlapping windows and scales the non-overlapping
//! one by 1/k².

mod max_cpu;
#[cfg(target_arch = "x86_64")]
pub(crate) use max_cpu::pool_relu_row_stride_2;
#[cfg(feature = "cuda")]
mod max_cuda;
mod op;

use candle_core::{Result, Tensor};

use self::op::MaxPool2dOp;
use crate::storage::runs_on_own_kernels;

/// A square max-pooling window, as `torch.nn.MaxPool2d(kernel, stride,
/// padding, ceil_mode=ceil_mode)` with `dilation=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2dConfig {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Round the output size up: a last window that hangs over the far edge
    /// is kept (and pools what it covers), as long as it starts inside the
    /// input or its near padding.
    pub ceil_mode: bool,
}

impl MaxPool2dConfig {
    /// Output side for an input side, or an error when the window does not fit.
    pub fn output_len(&self, input: usize) -> Result<usize> {
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            candle_core::bail!("max_pool2d: invalid window {self:?} (padding must be at most half the kernel)")
        }
        let floor = crate::window_output(input, self.kernel, self.stride, self.padding).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "max_pool2d: input side {input} is smaller than the {}x{} window (padding {})",
                self.kernel, self.kernel, self.padding
            ))
        })?;
        if !self.ceil_mode {
            return Ok(floor);
        }
        let ceil = (input + 2 * self.padding - self.kernel).div_ceil(self.stride) + 1;
        // PyTorch's rule: the last window must start before the far padding.
        Ok(if (ceil - 1) * self.stride >= input + self.padding {
            ceil - 1
        } else {
            ceil
        })
    }
}

/// Geometry of one pooling call, shared by the forward and backward
/// kernels of both devices.
#[derive(Clone, Copy)]
pub(crate) struct PoolGeometry {
    pub(crate) config: MaxPool2dConfig,
    pub(crate) in_h: usize,
    pub(crate) in_w: usize,
    pub(crate) out_h: usize,
    pub(crate) out_w: usize,
}

impl PoolGeometry {
    /// The geometry and the number of planes (`B·C`) of a `B×C×H×W` input.
    pub(crate) fn new(config: MaxPool2dConfig, dims: &[usize]) -> Result<(usize, Self)> {
        let [b, c, in_h, in_w] = dims else {
            candle_core::bail!("max_pool2d expects a B×C×H×W tensor, got shape {dims:?}")
        };
        if in_h
            .checked_mul(*in_w)
            .is_none_or(|plane| u32::try_from(plane).is_err())
        {
            candle_core::bail!("max_pool2d: a {in_h}×{in_w} plane is too large (places are kept as u32)")
        }
        let geometry = Self {
            config,
            in_h: *in_h,
            in_w: *in_w,
            out_h: config.output_len(*in_h)?,
            out_w: config.output_len(*in_w)?,
        };
        Ok((b * c, geometry))
    }
}

/// Max pooling over a `B×C×H×W` tensor with a gradient that goes to the first
/// maximum of each window (PyTorch semantics).
///
/// f32/f64 on the CPU and f32 on CUDA run this crate's kernels; other
/// devices and dtypes a composition of differentiable candle operations with
/// the same result and gradient.
pub fn max_pool2d(x: &Tensor, config: MaxPool2dConfig) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    config.output_len(h)?;
    config.output_len(w)?;
    if !runs_on_own_kernels(x) {
        max_pool2d_composed(x, config)
    } else if x.track_op() {
        x.contiguous()?.apply_op1(MaxPool2dOp::for_training(config))
    } else {
        x.contiguous()?.apply_op1_no_bwd(&MaxPool2dOp::for_inference(config))
    }
}

/// Max pooling built from differentiable candle operations: the `k²` strided
/// views of each window are stacked, `argmax` picks the first maximum and
/// `gather` routes the gradient to it. Runs on any device.
pub(crate) fn max_pool2d_composed(x: &Tensor, config: MaxPool2dConfig) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (out_h, out_w) = (config.output_len(h)?, config.output_len(w)?);
    // Past the far padding, what the last (ceil-mode) window hangs over.
    let overhang =
        |out: usize, len: usize| ((out - 1) * config.stride + config.kernel).saturating_sub(len + 2 * config.padding);
    let x = pad_with_neg_infinity(x, config.padding, (overhang(out_h, h), overhang(out_w, w)))?;
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

/// `x` with `padding` rows and columns of −∞ on every side, and `extra`
/// (rows, columns) more on the bottom and right.
fn pad_with_neg_infinity(x: &Tensor, padding: usize, (extra_h, extra_w): (usize, usize)) -> Result<Tensor> {
    if padding == 0 && extra_h == 0 && extra_w == 0 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    let fill = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
        Tensor::new(f32::NEG_INFINITY, x.device())?
            .to_dtype(x.dtype())?
            .broadcast_as(shape)?
            .contiguous()
    };
    let left = fill((b, c, h, padding))?;
    let right = fill((b, c, h, padding + extra_w))?;
    let x = Tensor::cat(&[&left, x, &right], 3)?;
    let width = w + 2 * padding + extra_w;
    let top = fill((b, c, padding, width))?;
    let bottom = fill((b, c, padding + extra_h, width))?;
    Tensor::cat(&[&top, &x, &bottom], 2)
}

#[cfg(test)]
mod tests;
