//! Max pooling with PyTorch's gradient, which candle 0.11 lacks: its own op
//! has no backward for overlapping windows and scales the non-overlapping
//! one by 1/k².

mod max_cpu;

use candle_core::{Device, Result, Tensor};

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
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            candle_core::bail!("max_pool2d: invalid window {self:?} (padding must be at most half the kernel)")
        }
        crate::window_output(input, self.kernel, self.stride, self.padding).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "max_pool2d: input side {input} is smaller than the {}x{} window (padding {})",
                self.kernel, self.kernel, self.padding
            ))
        })
    }
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
pub(crate) fn max_pool2d_composed(x: &Tensor, config: MaxPool2dConfig) -> Result<Tensor> {
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

#[cfg(test)]
mod tests;
