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

use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

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
        Device::Cpu => x.contiguous()?.apply_op1(MaxPool2dCpu(config)),
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

/// Scalar types the CPU kernels run on.
trait PoolElem: Copy + PartialOrd + Default + std::ops::AddAssign + Send + Sync {}
impl PoolElem for f32 {}
impl PoolElem for f64 {}

/// Geometry of one pooling call, shared by the forward and backward kernels.
#[derive(Clone, Copy)]
struct PoolGeometry {
    config: MaxPool2dConfig,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
}

impl PoolGeometry {
    fn new(config: MaxPool2dConfig, dims: &[usize]) -> Result<(usize, Self)> {
        let [b, c, in_h, in_w] = dims else {
            candle_core::bail!("max_pool2d expects a B×C×H×W tensor, got shape {dims:?}")
        };
        let geometry = Self {
            config,
            in_h: *in_h,
            in_w: *in_w,
            out_h: config.output_len(*in_h)?,
            out_w: config.output_len(*in_w)?,
        };
        Ok((b * c, geometry))
    }

    /// Index (within one plane) of the first maximum of window `(oy, ox)`;
    /// a NaN in the window wins, as in PyTorch.
    #[inline]
    fn first_max<T: PoolElem>(&self, plane: &[T], oy: usize, ox: usize) -> usize {
        let MaxPool2dConfig {
            kernel,
            stride,
            padding,
        } = self.config;
        let y0 = (oy * stride).saturating_sub(padding);
        let y1 = (oy * stride + kernel - padding).min(self.in_h);
        let x0 = (ox * stride).saturating_sub(padding);
        let x1 = (ox * stride + kernel - padding).min(self.in_w);
        let mut best = y0 * self.in_w + x0;
        let mut best_value = plane[best];
        for y in y0..y1 {
            for x in x0..x1 {
                let index = y * self.in_w + x;
                let value = plane[index];
                #[allow(clippy::eq_op)] // `value != value` is the NaN test for any float type
                if value > best_value || value != value {
                    best = index;
                    best_value = value;
                    if value != value {
                        return best;
                    }
                }
            }
        }
        best
    }

    fn forward<T: PoolElem>(&self, planes: usize, input: &[T]) -> Vec<T> {
        let (in_len, out_len) = (self.in_h * self.in_w, self.out_h * self.out_w);
        let mut output = vec![T::default(); planes * out_len];
        output
            .par_chunks_mut(out_len)
            .zip(input.par_chunks(in_len))
            .for_each(|(out_plane, in_plane)| {
                for oy in 0..self.out_h {
                    for ox in 0..self.out_w {
                        out_plane[oy * self.out_w + ox] = in_plane[self.first_max(in_plane, oy, ox)];
                    }
                }
            });
        output
    }

    fn backward<T: PoolElem>(&self, planes: usize, input: &[T], grad_output: &[T]) -> Vec<T> {
        let (in_len, out_len) = (self.in_h * self.in_w, self.out_h * self.out_w);
        let mut grad_input = vec![T::default(); planes * in_len];
        grad_input
            .par_chunks_mut(in_len)
            .zip(input.par_chunks(in_len).zip(grad_output.par_chunks(out_len)))
            .for_each(|(grad_plane, (in_plane, grad_out_plane))| {
                for oy in 0..self.out_h {
                    for ox in 0..self.out_w {
                        let target = self.first_max(in_plane, oy, ox);
                        grad_plane[target] += grad_out_plane[oy * self.out_w + ox];
                    }
                }
            });
        grad_input
    }
}

fn contiguous_slice<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// CPU forward of [`max_pool2d`]; its backward is [`MaxPool2dCpuBackward`].
struct MaxPool2dCpu(MaxPool2dConfig);

impl CustomOp1 for MaxPool2dCpu {
    fn name(&self) -> &'static str {
        "caf-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (planes, g) = PoolGeometry::new(self.0, layout.dims())?;
        let dims = layout.dims();
        let shape = Shape::from((dims[0], dims[1], g.out_h, g.out_w));
        let output = match storage {
            CpuStorage::F32(data) => CpuStorage::F32(g.forward(planes, contiguous_slice(data, layout, self.name())?)),
            CpuStorage::F64(data) => CpuStorage::F64(g.forward(planes, contiguous_slice(data, layout, self.name())?)),
            other => candle_core::bail!("max_pool2d: unsupported dtype {:?} (use f32 or f64)", other.dtype()),
        };
        Ok((output, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op2_no_bwd(&grad_res.contiguous()?, &MaxPool2dCpuBackward(self.0))?;
        Ok(Some(grad))
    }
}

/// Gradient of [`MaxPool2dCpu`] with respect to its input, given the input
/// (first argument) and the output's gradient (second argument).
struct MaxPool2dCpuBackward(MaxPool2dConfig);

impl CustomOp2 for MaxPool2dCpuBackward {
    fn name(&self) -> &'static str {
        "caf-max-pool2d-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (planes, g) = PoolGeometry::new(self.0, l1.dims())?;
        if l2.dims() != [l1.dims()[0], l1.dims()[1], g.out_h, g.out_w] {
            candle_core::bail!(
                "max_pool2d backward: gradient shape {:?} does not match the output",
                l2.dims()
            )
        }
        let name = self.name();
        let grad = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(dy)) => {
                CpuStorage::F32(g.backward(planes, contiguous_slice(x, l1, name)?, contiguous_slice(dy, l2, name)?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(dy)) => {
                CpuStorage::F64(g.backward(planes, contiguous_slice(x, l1, name)?, contiguous_slice(dy, l2, name)?))
            }
            _ => candle_core::bail!(
                "max_pool2d backward: unsupported dtypes {:?}/{:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((grad, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests;
