//! 2-D convolution on the CPU as im2col + GEMM, with both gradients.
//!
//! candle's CPU convolution backward runs `conv_transpose2d` as a direct loop;
//! here the forward pass and both backward passes are each one matrix product
//! per image (`W·cols`, `Wᵀ·dY` then col2im, `dY·colsᵀ`), run on all cores.
//! The input gradient is only computed when the input is part of the graph,
//! so a network's first layer never pays for the gradient of the image.

#[cfg(feature = "cudnn")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use crate::cpu::vectorised;
use crate::cpu::Precision;
use crate::elementwise::Activation;
use crate::gemm::matmul_in;
use crate::gemm::{ConvShape, Element, Epilogue, Matrix, Orientation, PackedLhs, Threads, WeightProducts};
use crate::parallel::{collect_planes, for_each_block, SharedOutput};
use crate::phases::split_by_phase;
use crate::pool::PoolGeometry;
use crate::reduce::{channel_sum, sum_parts};
use crate::scratch::Scratch;
use crate::storage::{dispatch, runs_on_cpu_kernels, Kernel};

pub use self::blocks::{residual_blocks, ResidualBlock};
pub use self::cudnn::{cuda_math, set_cuda_math, CudaMath, CUDNN_VARIABLE};
pub(crate) use self::frozen::KeptTransforms;
pub use self::frozen::{ConvWeight, FrozenWeight};
pub use self::pair::{conv2d_relu_conv2d_add_relu, FrozenConv};
pub use self::pooled::conv2d_relu_max_pool2d;
pub use self::residual::conv2d_add_relu;

/// Output side of a window (a convolution's kernel or a pooling window)
/// sliding over `input` with `stride` and `padding` zeros on both sides;
/// `None` when the padded input is smaller than the window or the stride is 0.
pub fn window_output(input: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = input + 2 * padding;
    (padded >= kernel && stride > 0).then(|| (padded - kernel) / stride + 1)
}

/// Stride and zero padding of a convolution, equal on both axes
/// (`nn.Conv2d(…, stride, padding)` with dilation 1 and one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: usize,
    pub padding: usize,
}

/// `x` (`B×C×H×W`) convolved with `weight` (`O×C×kh×kw`, a tensor or a
/// [`FrozenWeight`]), plus `bias` (`O`) when given.
///
/// f32 and f64 tensors on the CPU run the GEMM kernels of this module (the
/// bias added in the same pass, its gradient summed in one); any other device
/// or dtype runs candle's own `conv2d` (and its gradients).
pub fn conv2d<'a>(
    x: &Tensor,
    weight: impl Into<ConvWeight<'a>>,
    bias: Option<&Tensor>,
    params: Conv2dParams,
) -> Result<Tensor> {
    convolve(x, weight.into(), bias, params, Activation::Identity)
}

/// `relu(conv2d(x, weight, bias))` as one operation: the ReLU is applied to
/// the output in place and folded into the backward pass, so the
/// pre-activation map is never a tensor of its own (candle's backward pass
/// would otherwise allocate, zero and add a gradient for it).
pub fn conv2d_relu<'a>(
    x: &Tensor,
    weight: impl Into<ConvWeight<'a>>,
    bias: Option<&Tensor>,
    params: Conv2dParams,
) -> Result<Tensor> {
    convolve(x, weight.into(), bias, params, Activation::Relu)
}

fn convolve(
    x: &Tensor,
    weight: ConvWeight,
    bias: Option<&Tensor>,
    params: Conv2dParams,
    activation: Activation,
) -> Result<Tensor> {
    let (kept, precision) = kept_and_precision(weight);
    let weight = weight.tensor();
    let op = Conv2dForward {
        params,
        activation,
        kept,
        precision,
    };
    // f32 on CUDA runs cuDNN behind the same operations (feature `cudnn`);
    // bf16 there runs the same operations on bf16 copies of both operands,
    // as PyTorch's autocast does, and adds bias and activation in f32.
    let on_cudnn = runs_on_cudnn(x)?;
    if on_cudnn && precision == Precision::Bf16 {
        let bf16 = candle_core::DType::BF16;
        let op = Conv2dForward {
            activation: Activation::Identity,
            kept: None,
            ..op
        };
        let y = x
            .to_dtype(bf16)?
            .contiguous()?
            .apply_op2(&weight.to_dtype(bf16)?.contiguous()?, op)?;
        return crate::elementwise::add_bias_activation(&y.to_dtype(x.dtype())?, bias, activation);
    }
    let on_own_route = runs_on_cpu_kernels(x) || on_cudnn;
    match (on_own_route, bias) {
        (true, None) => x.contiguous()?.apply_op2(&weight.contiguous()?, op),
        (true, Some(bias)) => x
            .contiguous()?
            .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op),
        (false, bias) => {
            let y = match precision {
                Precision::F32 => x.conv2d(weight, params.padding, params.stride, 1, 1)?,
                Precision::Bf16 => {
                    let bf16 = candle_core::DType::BF16;
                    let y = x
                        .to_dtype(bf16)?
                        .conv2d(&weight.to_dtype(bf16)?, params.padding, params.stride, 1, 1)?;
                    y.to_dtype(x.dtype())?
                }
            };
            crate::elementwise::add_bias_activation(&y, bias, activation)
        }
    }
}

/// A frozen weight's kept transforms and precision; a live one's precision
/// (bf16 inside [`crate::autocast`], for f32 weights: f64 ones check
/// gradients).
fn kept_and_precision(weight: ConvWeight) -> (Option<Arc<KeptTransforms>>, Precision) {
    match weight {
        ConvWeight::Live(tensor) if tensor.dtype() == candle_core::DType::F32 => {
            (None, crate::cpu::autocast_precision())
        }
        ConvWeight::Live(_) => (None, Precision::F32),
        ConvWeight::Frozen(frozen) => (Some(Arc::clone(frozen.kept())), frozen.precision()),
    }
}

/// Whether `x` is convolved by cuDNN: f32 on a CUDA device, built with the
/// `cudnn` feature, the route not switched off ([`cudnn::CUDNN_VARIABLE`]).
fn runs_on_cudnn(x: &Tensor) -> Result<bool> {
    #[cfg(feature = "cudnn")]
    return Ok(crate::cuda::runs_on_cuda_kernels(x) && cudnn::cudnn_switched_on()?);
    #[cfg(not(feature = "cudnn"))]
    {
        let _ = x;
        Ok(false)
    }
}

/// Sizes of one convolution, checked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    out_channels: usize,
    kernel_h: usize,
    kernel_w: usize,
    stride: usize,
    padding: usize,
    out_h: usize,
    out_w: usize,
    /// The precision of the products: the backward passes multiply in it;
    /// the forward pass takes its own with the weight's packed operands,
    /// and its Winograd variant follows this ([`winograd::Variant::of`]).
    products: Precision,
}

impl Geometry {
    fn new(input: &[usize], weight: &[usize], params: Conv2dParams) -> Result<Self> {
        let (&[batch, channels, height, width], &[out_channels, weight_channels, kernel_h, kernel_w]) = (input, weight)
        else {
            candle_core::bail!("conv2d: expected B×C×H×W input and O×C×kh×kw weight, got {input:?} and {weight:?}")
        };
        if weight_channels != channels {
            candle_core::bail!("conv2d: input has {channels} channels, weight {weight:?} expects {weight_channels}")
        }
        if params.stride == 0 || kernel_h == 0 || kernel_w == 0 {
            candle_core::bail!(
                "conv2d: stride {} and kernel {kernel_h}×{kernel_w} must be positive",
                params.stride
            )
        }
        let side = |input: usize, kernel: usize| -> Result<usize> {
            window_output(input, kernel, params.stride, params.padding).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "conv2d: input {height}×{width} (padding {}) is smaller than the {kernel_h}×{kernel_w} kernel",
                    params.padding
                ))
            })
        };
        Ok(Self {
            batch,
            channels,
            height,
            width,
            out_channels,
            kernel_h,
            kernel_w,
            stride: params.stride,
            padding: params.padding,
            out_h: side(height, kernel_h)?,
            out_w: side(width, kernel_w)?,
            products: Precision::F32,
        })
    }

    /// This geometry, its backward products in `precision`.
    fn in_precision(self, precision: Precision) -> Self {
        Self {
            products: precision,
            ..self
        }
    }

    /// Rows of an image's column matrix: `C·kh·kw`.
    fn patch(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w
    }

    /// Columns of an image's column matrix: `out_h·out_w`.
    fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    fn output_len(&self) -> usize {
        self.out_channels * self.positions()
    }

    /// A 1×1, stride-1, unpadded convolution: the image is its own column matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == 1 && self.padding == 0
    }

    /// A 1×1 kernel with a stride above 1 and no padding: its column
    /// matrix is the image subsampled ([`subsample_channel`]).
    fn is_subsampling(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride > 1 && self.padding == 0
    }

    fn params(&self) -> Conv2dParams {
        Conv2dParams {
            stride: self.stride,
            padding: self.padding,
        }
    }

    fn output_shape(&self) -> Shape {
        Shape::from((self.batch, self.out_channels, self.out_h, self.out_w))
    }

    fn input_shape(&self) -> Shape {
        Shape::from((self.batch, self.channels, self.height, self.width))
    }

    fn weight_shape(&self) -> Shape {
        Shape::from((self.out_channels, self.channels, self.kernel_h, self.kernel_w))
    }

    /// Output positions `ox` whose input column `ox·stride + kx − padding` lies in `[0, width)`.
    fn valid_columns(&self, kx: usize) -> std::ops::Range<usize> {
        let first = self.padding.saturating_sub(kx).div_ceil(self.stride);
        let end = (self.width + self.padding)
            .checked_sub(kx)
            .map_or(0, |reach| reach.div_ceil(self.stride).min(self.out_w));
        first.min(end)..end
    }

    /// The input row of output row `oy` and kernel row `ky`, if inside the image.
    fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.padding)
            .filter(|&row| row < self.height)
    }

    /// The shape [`Element::convolve_on_tiles`] takes.
    fn conv_shape(&self) -> ConvShape {
        ConvShape {
            batch: self.batch,
            channels: self.channels,
            height: self.height,
            width: self.width,
            out_channels: self.out_channels,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            stride: self.stride,
            padding: self.padding,
        }
    }

    /// The input gradient's geometry for a stride-1 convolution: a forward
    /// pass of the output gradient into the input, padded by
    /// `r − 1 − padding`.
    fn transposed(&self) -> Geometry {
        Geometry {
            channels: self.out_channels,
            height: self.out_h,
            width: self.out_w,
            out_channels: self.channels,
            padding: self.kernel_h - 1 - self.padding,
            out_h: self.height,
            out_w: self.width,
            ..*self
        }
    }

    /// Images are run in parallel (one single-threaded GEMM each) when there
    /// are enough of them to keep every core busy; otherwise each GEMM is split.
    fn parallel_over_images(&self) -> bool {
        let threads = rayon::current_num_threads();
        threads > 1 && self.batch >= 2 * threads
    }
}

/// Writes image `x` (`C×H×W`) as its `(C·kh·kw) × (out_h·out_w)` column
/// matrix, channels in parallel when `threads` allows.
fn im2col<T: Element>(x: &[T], g: &Geometry, cols: &mut [T], threads: Threads) {
    im2col_rows(x, g, 0..g.out_h, cols, threads)
}

/// Writes the columns of output rows `rows` of image `x`: a
/// `(C·kh·kw) × (rows.len()·out_w)` matrix, channels in parallel when `threads` allows.
fn im2col_rows<T: Element>(x: &[T], g: &Geometry, rows: Range<usize>, cols: &mut [T], threads: Threads) {
    let rows_per_channel = g.kernel_h * g.kernel_w * rows.len() * g.out_w;
    let plane_len = g.height * g.width;
    let width = rows.len() * g.out_w;
    let channel = |(c, out): (usize, &mut [T])| {
        im2col_channel(&x[c * plane_len..(c + 1) * plane_len], g, rows.clone(), out, width)
    };
    let cols = &mut cols[..g.channels * rows_per_channel];
    match threads {
        Threads::All => cols.par_chunks_mut(rows_per_channel).enumerate().for_each(channel),
        Threads::One => cols.chunks_mut(rows_per_channel).enumerate().for_each(channel),
    }
}

/// The `kh·kw` column rows of one input channel's plane at output rows
/// `rows`, `row_stride` apart in `columns`. The input rows they read are
/// first laid out with the padding's zeros around them (and, for strides
/// above 1, split into their phases), so that every output row of every
/// kernel tap is one contiguous run of that copy: a map of 7 or 14 columns
/// has thousands of such runs per image, and the zeros written for each
/// run's padding and the calls copying it had cost more than the values.
fn im2col_channel<T: Element>(plane: &[T], g: &Geometry, rows: Range<usize>, columns: &mut [T], row_stride: usize) {
    if rows.is_empty() {
        return;
    }
    if g.is_subsampling() {
        let len = rows.len() * g.out_w;
        return subsample_channel(plane, g, rows, &mut columns[..len]);
    }
    let s = g.stride;
    let padded = PaddedRows::new(plane, g, rows.clone());
    for ky in 0..g.kernel_h {
        for kx in 0..g.kernel_w {
            let out = &mut columns[(ky * g.kernel_w + kx) * row_stride..][..rows.len() * g.out_w];
            for (out_row, oy) in out.chunks_exact_mut(g.out_w).zip(rows.clone()) {
                copy_run(out_row, padded.run(oy * s + ky, kx, g.out_w));
            }
        }
    }
}

/// The column row of a 1×1 kernel with a stride and no padding (a
/// ResNet shortcut): every `stride`-th value of every `stride`-th input
/// row, gathered straight from the plane. The row layout of
/// [`im2col_channel`] would copy every input row and both phases of it,
/// four times the values a 1×1/2 kernel reads, and took a larger share of
/// such a layer's time than its product (docs/performance.md).
fn subsample_channel<T: Element>(plane: &[T], g: &Geometry, rows: Range<usize>, columns: &mut [T]) {
    let (s, out_w) = (g.stride, g.out_w);
    crate::cpu::vectorised(
        #[inline(always)]
        || {
            for (out_row, oy) in columns.chunks_exact_mut(out_w).zip(rows) {
                let input = &plane[oy * s * g.width..][..(out_w - 1) * s + 1];
                for (value, sample) in out_row.iter_mut().zip(input.iter().step_by(s)) {
                    *value = *sample;
                }
            }
        },
    )
}

/// The input rows one channel's output rows read, with the padding's
/// zeros around them, each split into its `stride` phases (phase `q` of a
/// row holds its padded columns `q, q + s, q + 2s, …`): the samples of
/// kernel column `kx` for an output row are then the `out_w` values of
/// phase `kx mod s` from `kx / s` on.
struct PaddedRows<T> {
    values: Vec<T>,
    layout: RowLayout,
}

impl<T: Element> PaddedRows<T> {
    fn new(plane: &[T], g: &Geometry, rows: Range<usize>) -> Self {
        let layout = RowLayout::new(g, rows);
        let mut values = vec![T::ZERO; layout.len()];
        layout.fill(plane, g, &mut values, &mut Vec::new());
        Self { values, layout }
    }

    /// The `len` samples of kernel column `kx` along padded row `row`.
    fn run(&self, row: usize, kx: usize, len: usize) -> &[T] {
        &self.values[self.layout.offset(row, kx)..][..len]
    }
}

/// Where [`PaddedRows`] puts the padded rows `first..end` of a channel:
/// `row_len = stride · phase_len` values a row, phase after phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowLayout {
    /// The padded row index of the first row held.
    first: usize,
    /// Rows held.
    rows: usize,
    stride: usize,
    phase_len: usize,
    /// The padding's columns that lie in whole phase places (`p / s`): each
    /// row's phases are written that many places on, at the front of the
    /// places the row's runs start from.
    shift: usize,
}

impl RowLayout {
    /// The layout of the rows output rows `rows` read.
    pub(crate) fn new(g: &Geometry, rows: Range<usize>) -> Self {
        let stride = g.stride;
        let first = rows.start * stride;
        let end = rows.end.saturating_sub(1) * stride + g.kernel_h;
        Self {
            first,
            rows: if rows.is_empty() { 0 } else { end - first },
            stride,
            phase_len: (g.width + 2 * g.padding).div_ceil(stride),
            shift: g.padding / stride,
        }
    }

    /// Values of one row, its phases together.
    pub(crate) fn row_len(&self) -> usize {
        self.stride * self.phase_len
    }

    /// Values the layout takes.
    pub(crate) fn len(&self) -> usize {
        self.rows * self.row_len() + self.shift
    }

    /// Where the samples of kernel column `kx` along padded row `row` start.
    pub(crate) fn offset(&self, row: usize, kx: usize) -> usize {
        (row - self.first) * self.row_len() + kx % self.stride * self.phase_len + kx / self.stride
    }

    /// Writes the rows of `plane` into `out` (`len()` zeros), `line` a
    /// buffer for a row with zeros in front.
    pub(crate) fn fill<T: Element>(&self, plane: &[T], g: &Geometry, out: &mut [T], line: &mut Vec<T>) {
        let s = self.stride;
        // Padded column c = x + p of input column x is place c / s of phase
        // c mod s. With p = a·s + b, that is input column x of a line with b
        // zeros in front, split by phase into places from a on.
        let b = g.padding % s;
        line.clear();
        line.resize(if b == 0 { 0 } else { b + g.width }, T::ZERO);
        let row_len = self.row_len();
        for (index, padded_row) in (self.first..self.first + self.rows).enumerate() {
            // Row first + i is kernel row i mod s of its output row: with
            // fewer kernel rows than the stride (a 1×1/2 shortcut), some
            // rows are never read.
            let read = index % s < g.kernel_h;
            let Some(row) = padded_row.checked_sub(g.padding).filter(|&row| row < g.height && read) else {
                continue;
            };
            let row = &plane[row * g.width..][..g.width];
            let split = &mut out[index * row_len + self.shift..][..row_len];
            if s == 1 {
                split[..g.width].copy_from_slice(row);
            } else if b == 0 {
                split_by_phase(row, s, split, self.phase_len);
            } else {
                line[b..].copy_from_slice(row);
                split_by_phase(line, s, split, self.phase_len);
            }
        }
    }
}

/// `dst.copy_from_slice(src)`, runs shorter than 16 in fixed-size pieces:
/// a call to `memcpy` for a handful of values costs more than the copy.
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    let len = dst.len();
    if len >= 16 {
        return dst.copy_from_slice(src);
    }
    let src = &src[..len];
    let mut at = 0;
    for piece in [8, 4, 2, 1] {
        if len - at >= piece {
            dst[at..at + piece].copy_from_slice(&src[at..at + piece]);
            at += piece;
        }
    }
}

/// Adds a column matrix back onto image `dx` (`C×H×W`): the adjoint of
/// [`im2col`], channels in parallel when `threads` allows.
fn col2im_add<T: Element>(cols: &[T], g: &Geometry, dx: &mut [T], threads: Threads) {
    let rows_per_channel = g.kernel_h * g.kernel_w * g.positions();
    let channel = |(c, plane): (usize, &mut [T])| {
        col2im_channel(
            &cols[c * rows_per_channel..(c + 1) * rows_per_channel],
            g.positions(),
            g,
            plane,
        )
    };
    let dx = &mut dx[..g.image_len()];
    match threads {
        Threads::All => dx.par_chunks_mut(g.height * g.width).enumerate().for_each(channel),
        Threads::One => dx.chunks_mut(g.height * g.width).enumerate().for_each(channel),
    }
}

/// Adds one input channel's `kh·kw` rows of a column matrix (each
/// `row_stride` after the last) back onto its `plane`.
fn col2im_channel<T: Element>(rows: &[T], row_stride: usize, g: &Geometry, plane: &mut [T]) {
    for ky in 0..g.kernel_h {
        for kx in 0..g.kernel_w {
            let valid = g.valid_columns(kx);
            let source = &rows[(ky * g.kernel_w + kx) * row_stride..][..g.positions()];
            for (oy, source_row) in source.chunks_exact(g.out_w).enumerate() {
                let Some(iy) = g.input_row(oy, ky).filter(|_| !valid.is_empty()) else {
                    continue;
                };
                let target = &mut plane[iy * g.width..(iy + 1) * g.width];
                let start = valid.start * g.stride + kx - g.padding;
                for (t, s) in target[start..]
                    .iter_mut()
                    .step_by(g.stride)
                    .zip(&source_row[valid.clone()])
                {
                    *t += *s;
                }
            }
        }
    }
}

/// Runs `work(image, output chunk, column buffer, threads)` for every image,
/// in parallel over images or with parallel GEMMs (see [`Geometry::parallel_over_images`]).
fn for_each_image<T: Element>(
    g: &Geometry,
    out: &mut [T],
    chunk: usize,
    buffer_len: usize,
    work: impl Fn(usize, &mut [T], &mut [T], Threads) + Sync,
) {
    if g.parallel_over_images() {
        // One share of the images and one column buffer per worker (rayon's
        // `for_each_init` makes a buffer per job split, often several per
        // worker, each a zeroed allocation as large as an image's columns).
        // Each image writes only its own chunk of `out`.
        let shared = SharedOutput::new(out);
        for_each_block(
            g.batch,
            g.batch,
            || Scratch::stale(buffer_len),
            |images, buffer| {
                for b in images {
                    // SAFETY: image `b`'s output belongs to this block alone.
                    work(b, unsafe { shared.slice(b * chunk, chunk) }, buffer, Threads::One);
                }
            },
            drop,
        );
    } else {
        let mut buffer = Scratch::stale(buffer_len);
        for (b, out) in out.chunks_mut(chunk).enumerate() {
            work(b, out, &mut buffer, Threads::All);
        }
    }
}

/// The column matrix of image `b`: the image itself when pointwise, else written into `buffer`.
fn columns<'a, T: Element>(x: &'a [T], b: usize, g: &Geometry, buffer: &'a mut [T], threads: Threads) -> Matrix<'a, T> {
    let image = &x[b * g.image_len()..(b + 1) * g.image_len()];
    if g.is_pointwise() {
        Matrix::row_major(image, g.patch(), g.positions())
    } else {
        im2col(image, g, buffer, threads);
        Matrix::row_major(buffer, g.patch(), g.positions())
    }
}

fn column_buffer_len(g: &Geometry) -> usize {
    if g.is_pointwise() {
        0
    } else {
        g.patch() * g.positions()
    }
}

/// `y_b = W · cols(x_b) (+ bias)` for every image.
fn forward<T: Element>(x: &[T], weight: &[T], bias: Option<&[T]>, g: &Geometry, products: WeightProducts) -> Vec<T> {
    let mut y = output_with_bias(g, bias);
    let w = Matrix::row_major(weight, g.out_channels, g.patch());
    for_each_image(
        g,
        &mut y,
        g.output_len(),
        column_buffer_len(g),
        |b, y_b, buffer, threads| products.run(0, y_b, bias.is_some(), w, columns(x, b, g, buffer, threads), threads),
    );
    y
}

/// A convolution's output (`B × O × out_h × out_w`) with each channel's
/// values set to its bias (zeros without one), for the products to add
/// their sums to: written once, in parallel, into new memory, instead of
/// zeroed by the allocator and then overwritten.
fn output_with_bias<T: Element>(g: &Geometry, bias: Option<&[T]>) -> Vec<T> {
    let (k, positions) = (g.out_channels, g.positions());
    collect_planes(g.batch * k, positions, |plane| {
        std::iter::repeat_n(bias.map_or(T::ZERO, |bias| bias[plane % k]), positions)
    })
}

/// `y = W · cols (+ bias per output channel)`, the bias written first and the product added to it.
fn output_product<T: Element>(
    y: &mut [T],
    w: Matrix<T>,
    cols: Matrix<T>,
    bias: Option<&[T]>,
    threads: Threads,
    products: WeightProducts,
) {
    fill_bias(y, bias, cols.cols());
    products.run(0, y, bias.is_some(), w, cols, threads);
}

/// Each of `y`'s rows (`positions` long, one an output channel) set to its
/// channel's bias, if any: what a product then adds its sums to.
fn fill_bias<T: Copy>(y: &mut [T], bias: Option<&[T]>, positions: usize) {
    if let Some(bias) = bias {
        for (row, &value) in y.chunks_exact_mut(positions).zip(bias) {
            row.fill(value);
        }
    }
}

/// The input gradient by im2col's adjoint: small maps of several images
/// in groups ([`grouped`]), else one image at a time.
fn columns_input_gradient<T: Element>(dy: &[T], weight: &[T], g: &Geometry) -> Vec<T> {
    if grouped::applies_to_passes(g) {
        let packed = packed_transposed(weight, g);
        let products = WeightProducts {
            precision: g.products,
            packed: packed.as_ref().map(|p| &p[..]),
        };
        grouped::input_gradient(dy, weight, g, products)
    } else {
        input_gradient(dy, weight, g)
    }
}

/// For bf16 products, `Wᵀ` packed once for every image's product.
fn packed_transposed<T: Element>(weight: &[T], g: &Geometry) -> Option<[PackedLhs; 1]> {
    T::as_f32(weight).filter(|_| g.products == Precision::Bf16).map(|w| {
        [PackedLhs::bf16(
            Matrix::row_major(w, g.out_channels, g.patch()).t(),
            Threads::All,
        )]
    })
}

/// `dx_b = col2im(Wᵀ · dy_b)` for every image.
fn input_gradient<T: Element>(dy: &[T], weight: &[T], g: &Geometry) -> Vec<T> {
    let mut dx = vec![T::ZERO; g.batch * g.image_len()];
    let w_t = Matrix::row_major(weight, g.out_channels, g.patch()).t();
    let packed = packed_transposed(weight, g);
    let products = WeightProducts {
        precision: g.products,
        packed: packed.as_ref().map(|p| &p[..]),
    };
    for_each_image(
        g,
        &mut dx,
        g.image_len(),
        column_buffer_len(g),
        |b, dx_b, buffer, threads| {
            let dy_b = Matrix::row_major(&dy[b * g.output_len()..], g.out_channels, g.positions());
            if g.is_pointwise() {
                products.run(0, dx_b, false, w_t, dy_b, threads);
            } else {
                products.run(0, buffer, false, w_t, dy_b, threads);
                col2im_add(buffer, g, dx_b, threads);
            }
        },
    );
    dx
}

/// `dW = Σ_b dy_b · cols(x_b)ᵀ`, summed per worker then across workers.
fn weight_gradient<T: Element>(dy: &[T], x: &[T], g: &Geometry) -> Vec<T> {
    let len = g.out_channels * g.patch();
    let scratch = || (vec![T::ZERO; len], Scratch::stale(column_buffer_len(g)));
    let accumulate = |images: Range<usize>, (dw_t, buffer): &mut (Vec<T>, Scratch<T>), threads: Threads| {
        for b in images {
            let dy_b = Matrix::row_major(&dy[b * g.output_len()..], g.out_channels, g.positions());
            accumulate_weight_gradient(dw_t, columns(x, b, g, buffer, threads), dy_b, threads, g.products);
        }
    };
    let dw_t = if g.parallel_over_images() {
        let parts = for_each_block(
            g.batch,
            g.batch,
            scratch,
            |images, worker| accumulate(images, worker, Threads::One),
            |(dw_t, _)| dw_t,
        );
        sum_parts(parts, len)
    } else {
        let mut all = scratch();
        accumulate(0..g.batch, &mut all, Threads::All);
        all.0
    };
    weight_gradient_from_transposed(&dw_t, g)
}

/// `dWᵀ += cols · dyᵀ` for one image's (or band's) columns and output gradient.
///
/// The transposed sum is the one `gemm` runs fastest (both operands and the
/// destination read along their rows: 103–114 GFLOPS on one core against
/// 83–111 for `dW += dy · colsᵀ`), and it is turned round once at the end.
fn accumulate_weight_gradient<T: Element>(
    dw_t: &mut [T],
    cols: Matrix<T>,
    dy: Matrix<T>,
    threads: Threads,
    precision: Precision,
) {
    matmul_in(precision, dw_t, true, cols, dy.t(), threads)
}

/// `dW` (`O × C·kh·kw`) from the accumulated `dWᵀ`.
fn weight_gradient_from_transposed<T: Element>(dw_t: &[T], g: &Geometry) -> Vec<T> {
    Matrix::row_major(dw_t, g.patch(), g.out_channels).t().to_vec()
}

/// `Σ_b Σ_positions dy[b, o, ·]` for every output channel `o`.
fn bias_gradient<T: Element>(dy: &[T], g: &Geometry) -> Vec<T> {
    (0..g.out_channels)
        .into_par_iter()
        .map(|o| {
            let layout = [g.batch, g.out_channels, g.positions()];
            let sum = vectorised(
                #[inline(always)]
                || channel_sum(dy, layout, o, |v| v),
            );
            T::from_f64(sum)
        })
        .collect()
}

/// The passes, as one kernel type for [`dispatch`].
enum ConvKernel<'a> {
    /// Operands: x, weight, the residual (`B×O×out_h×out_w`, added before
    /// the activation) when `residual`, then the bias if any; the weight's
    /// kept transforms when it is frozen (the products' precision is the
    /// geometry's).
    Forward {
        g: Geometry,
        activation: Activation,
        kept: Option<&'a KeptTransforms>,
        residual: bool,
        /// The max pooling the output goes through (the output is then the
        /// pooled one).
        pool: Option<PoolGeometry>,
    },
    /// Operands: dy, weight.
    InputGradient(Geometry),
    /// Operands: dy, x.
    WeightGradient(Geometry),
    /// Operands: dy.
    BiasGradient(Geometry),
}

impl Kernel for ConvKernel<'_> {
    fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T> {
        match self {
            &ConvKernel::Forward {
                ref g,
                activation,
                kept,
                residual,
                ref pool,
            } => {
                let (x, weight, precision) = (operands[0], operands[1], g.products);
                let (residual, bias) = if residual {
                    (Some(operands[2]), operands.get(3).copied())
                } else {
                    (None, operands.get(2).copied())
                };
                // bf16 convolutions run straight on AMX tiles where the CPU
                // has them: faster there than any transform. They add the
                // bias and the residual and apply the activation as they
                // write; the other routes add the bias in their products and
                // the rest in one pass after.
                let epilogue = Epilogue {
                    bias,
                    residual,
                    activation,
                    pool: pool.as_ref(),
                };
                let on_tiles = (precision == Precision::Bf16)
                    .then(|| {
                        let packed = kept.and_then(|kept| kept.tile_weight(weight, g));
                        T::convolve_on_tiles(x, (weight, Orientation::AsIs), packed, epilogue, &g.conv_shape())
                    })
                    .flatten();
                if let Some(y) = on_tiles {
                    return y;
                }
                // A max pooling after the ReLU alone (no residual between).
                let relu_then_pool = match (pool, activation, residual) {
                    (Some(pool), Activation::Relu, None) => Some(pool),
                    _ => None,
                };
                let variant = winograd::Variant::of(g);
                let slot = kept
                    .filter(|_| winograd::applies_with_kept_transform(g))
                    .and_then(|kept| kept.winograd_slot::<T>(variant));
                // A frozen weight's products multiply by its operands packed
                // once where the CPU has a kernel for them.
                let mut y = if let Some(slot) = slot {
                    let u = slot.get_or_init(|| winograd::kernel_transform(weight, g, variant));
                    let packed = kept.and_then(|kept| kept.packed_winograd(u, g, variant));
                    winograd::forward_with_kept_transform(x, u, bias, g, variant, WeightProducts { precision, packed })
                } else if winograd::applies(g) {
                    winograd::forward(
                        x,
                        weight,
                        bias,
                        g,
                        WeightProducts {
                            precision,
                            packed: None,
                        },
                    )
                } else {
                    // A live weight's bf16 operand is packed once per call,
                    // not once per image.
                    let packed_now;
                    let packed = match kept {
                        Some(kept) => kept.packed_weight(weight, g),
                        None if precision == Precision::Bf16 => {
                            packed_now = T::as_f32(weight).map(|w| {
                                [PackedLhs::bf16(
                                    Matrix::row_major(w, g.out_channels, g.patch()),
                                    Threads::All,
                                )]
                            });
                            packed_now.as_ref().map(|p| &p[..])
                        }
                        None => None,
                    };
                    // A live weight's products over small maps take several
                    // images at once; a frozen weight's fill their lanes
                    // with rows instead (row panels), one image at a time.
                    let in_groups = kept.is_none() && grouped::applies_to_passes(g);
                    // Products on bf16 pairs and on the f32 row panels
                    // read the image's patches in place instead of its
                    // im2col copy; but a kernel shorter than its stride (a
                    // 1×1/2 shortcut) reads a quarter of the image, which
                    // im2col copies and the row layout would lay out whole.
                    let reads_patches = !g.is_pointwise() && g.kernel_h >= g.stride && !in_groups;
                    let patches_lhs = packed.and_then(|packed| packed[0].patches()).filter(|_| reads_patches);
                    // A frozen bf16 weight over a small map (the row
                    // panels' products) reads the image's channels in
                    // pairs in place, with nothing packed per call.
                    let channel_pairs = kept
                        .filter(|_| {
                            precision == Precision::Bf16
                                && reads_patches
                                && crate::gemm::channel_pairs_pay(g.positions(), g.patch())
                        })
                        .and_then(|kept| kept.channel_pairs(weight, g));
                    // A ReLU and a stride-2 pooling after them go with the
                    // packed patches' products, band by band (a map small
                    // enough for channel pairs is pooled after, whole).
                    let pooled_here = relu_then_pool
                        .and_then(patches::RowPooling::new)
                        .filter(|_| channel_pairs.is_none());
                    let on_patches = patches_lhs.and_then(|lhs| {
                        let bias = match bias {
                            Some(bias) => Some(T::as_f32(bias)?),
                            None => None,
                        };
                        let x = T::as_f32(x)?;
                        T::from_f32_vec(match (pooled_here, channel_pairs) {
                            (Some(pool), _) => patches::forward_pooled(x, lhs, bias, g, pool),
                            (None, Some(pairs)) => patches::forward_channel_pairs(x, pairs, bias, g),
                            (None, None) => patches::forward(x, lhs, bias, g),
                        })
                    });
                    let products = WeightProducts { precision, packed };
                    match (on_patches, banded::Bands::of::<T>(g)) {
                        (Some(pooled), _) if pooled_here.is_some() => return pooled,
                        (Some(y), _) => y,
                        (None, _) if in_groups => grouped::forward(x, weight, bias, g, products),
                        (None, Some(bands)) => banded::forward(x, weight, bias, g, bands, products),
                        (None, None) => forward(x, weight, bias, g, products),
                    }
                };
                // The ReLU commutes with max pooling: pooled first, it is
                // applied to the maxima instead of in a pass over the larger map.
                if let Some(pool) = relu_then_pool {
                    if let Some(pooled) = T::as_f32(&y).and_then(|values| T::from_f32_vec(pool.pool_relu(values))) {
                        return pooled;
                    }
                }
                activation.apply_in_place_after(&mut y, residual);
                match pool {
                    Some(pool) => pool.forward_keeping(false, g.batch * g.out_channels, &y).0,
                    None => y,
                }
            }
            ConvKernel::BiasGradient(g) => bias_gradient(operands[0], g),
            ConvKernel::InputGradient(g)
                if g.products == Precision::Bf16 && g.stride == 1 && g.padding < g.kernel_h.min(g.kernel_w) =>
            {
                // The input gradient of a stride-1 convolution is the
                // convolution of dy with the flipped, transposed weight,
                // padded by `k - 1 - p`: on AMX tiles where the CPU has them.
                let (dy, weight) = (operands[0], operands[1]);
                let shape = g.transposed().conv_shape();
                let on_tiles = (g.kernel_h == g.kernel_w && crate::gemm::convolves_on_tiles(&shape))
                    .then(|| {
                        T::convolve_on_tiles(
                            dy,
                            (weight, Orientation::FlippedTransposed),
                            None,
                            Epilogue::NONE,
                            &shape,
                        )
                    })
                    .flatten();
                match on_tiles {
                    Some(dx) => dx,
                    None if winograd::applies(g) => winograd::input_gradient(dy, weight, g),
                    None => columns_input_gradient(dy, weight, g),
                }
            }
            ConvKernel::InputGradient(g) if winograd::applies(g) => {
                winograd::input_gradient(operands[0], operands[1], g)
            }
            ConvKernel::InputGradient(g) => columns_input_gradient(operands[0], operands[1], g),
            ConvKernel::WeightGradient(g) => {
                let (dy, x) = (operands[0], operands[1]);
                // bf16 weight gradients on AMX tiles where the CPU has them
                // and the tiles take the shape (stride 1, channels in 32s;
                // f32 operands only).
                let on_tiles = (g.products == Precision::Bf16)
                    .then(|| T::weight_gradient_on_tiles(dy, x, &g.conv_shape()))
                    .flatten();
                if let Some(dw) = on_tiles {
                    dw
                } else if winograd::applies_to_weight_gradient(g) {
                    winograd::weight_gradient(dy, x, g)
                } else if grouped::applies(g) {
                    grouped::weight_gradient(dy, x, g)
                } else {
                    match banded::Bands::of::<T>(g) {
                        Some(bands) => banded::weight_gradient(dy, x, g, bands),
                        None => weight_gradient(dy, x, g),
                    }
                }
            }
        }
    }
}

/// The forward convolution (arguments: input, weight, and the bias as a third
/// argument), followed by its activation.
struct Conv2dForward {
    params: Conv2dParams,
    activation: Activation,
    /// The weight's kept transforms, when it is a [`FrozenWeight`].
    kept: Option<Arc<KeptTransforms>>,
    /// The precision of the products: a [`FrozenWeight`]'s, else f32.
    precision: Precision,
}

/// The gradients of a convolution's input and weight (each where it is part
/// of the graph) from `dy`, the gradient of its sums.
fn gradients(g: Geometry, x: &Tensor, weight: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dx = if x.track_op() {
        Some(dy.apply_op2_no_bwd(weight, &Conv2dInputGradient(g))?)
    } else {
        None
    };
    let dw = if weight.track_op() {
        Some(dy.apply_op2_no_bwd(x, &Conv2dWeightGradient(g))?)
    } else {
        None
    };
    Ok((dx, dw))
}

impl CustomOp2 for Conv2dForward {
    fn name(&self) -> &'static str {
        match self.activation {
            Activation::Identity => "caf-conv2d",
            Activation::Relu => "caf-conv2d-relu",
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), self.params)?.in_precision(self.precision);
        let kernel = ConvKernel::Forward {
            g,
            activation: self.activation,
            kept: self.kept.as_deref(),
            residual: false,
            pool: None,
        };
        let y = dispatch(CustomOp2::name(self), &kernel, &[(s1, l1), (s2, l2)])?;
        Ok((y, g.output_shape()))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), self.params)?;
        let y = cudnn::forward(CustomOp2::name(self), &g, self.activation, (s1, l1), (s2, l2), None)?;
        Ok((y, g.output_shape()))
    }

    fn bwd(&self, x: &Tensor, weight: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), weight.dims(), self.params)?.in_precision(self.precision);
        gradients(g, x, weight, &self.activation.input_gradient(y, dy)?)
    }
}

impl CustomOp3 for Conv2dForward {
    fn name(&self) -> &'static str {
        match self.activation {
            Activation::Identity => "caf-conv2d-bias",
            Activation::Relu => "caf-conv2d-bias-relu",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), self.params)?.in_precision(self.precision);
        check_bias(l3, &g)?;
        let kernel = ConvKernel::Forward {
            g,
            activation: self.activation,
            kept: self.kept.as_deref(),
            residual: false,
            pool: None,
        };
        let y = dispatch(CustomOp3::name(self), &kernel, &[(s1, l1), (s2, l2), (s3, l3)])?;
        Ok((y, g.output_shape()))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), self.params)?;
        check_bias(l3, &g)?;
        let y = cudnn::forward(
            CustomOp3::name(self),
            &g,
            self.activation,
            (s1, l1),
            (s2, l2),
            Some((s3, l3)),
        )?;
        Ok((y, g.output_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), weight.dims(), self.params)?.in_precision(self.precision);
        let dy = self.activation.input_gradient(y, dy)?;
        let (dx, dw) = gradients(g, x, weight, &dy)?;
        let db = if bias.track_op() {
            Some(dy.apply_op1_no_bwd(&Conv2dBiasGradient(g))?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

/// The bias gradient (argument: output gradient).
struct Conv2dBiasGradient(Geometry);

impl CustomOp1 for Conv2dBiasGradient {
    fn name(&self) -> &'static str {
        "caf-conv2d-bias-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        check_output_gradient(layout, &self.0)?;
        let db = dispatch(self.name(), &ConvKernel::BiasGradient(self.0), &[(storage, layout)])?;
        Ok((db, Shape::from(self.0.out_channels)))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        check_output_gradient(layout, &self.0)?;
        let db = cudnn::bias_gradient(self.name(), &self.0, (storage, layout))?;
        Ok((db, Shape::from(self.0.out_channels)))
    }
}

/// The input gradient (arguments: output gradient, weight).
struct Conv2dInputGradient(Geometry);

impl CustomOp2 for Conv2dInputGradient {
    fn name(&self) -> &'static str {
        "caf-conv2d-input-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        check_output_gradient(l1, &g)?;
        let dx = dispatch(self.name(), &ConvKernel::InputGradient(g), &[(s1, l1), (s2, l2)])?;
        Ok((dx, g.input_shape()))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let g = self.0;
        check_output_gradient(l1, &g)?;
        let dx = cudnn::input_gradient(self.name(), &g, (s1, l1), (s2, l2))?;
        Ok((dx, g.input_shape()))
    }
}

/// The weight gradient (arguments: output gradient, input).
struct Conv2dWeightGradient(Geometry);

impl CustomOp2 for Conv2dWeightGradient {
    fn name(&self) -> &'static str {
        "caf-conv2d-weight-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        check_output_gradient(l1, &g)?;
        let dw = dispatch(self.name(), &ConvKernel::WeightGradient(g), &[(s1, l1), (s2, l2)])?;
        Ok((dw, g.weight_shape()))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let g = self.0;
        check_output_gradient(l1, &g)?;
        let dw = cudnn::weight_gradient(self.name(), &g, (s1, l1), (s2, l2))?;
        Ok((dw, g.weight_shape()))
    }
}

fn check_bias(layout: &Layout, g: &Geometry) -> Result<()> {
    if layout.dims() != [g.out_channels] {
        candle_core::bail!("conv2d: bias {:?} must have {} values", layout.dims(), g.out_channels)
    }
    Ok(())
}

fn check_output_gradient(layout: &Layout, g: &Geometry) -> Result<()> {
    let expected = g.output_shape();
    if layout.shape() != &expected {
        candle_core::bail!(
            "conv2d backward: output gradient {:?} does not match the output {:?} of {:?}",
            layout.dims(),
            expected.dims(),
            g.params()
        )
    }
    Ok(())
}

mod banded;
mod blocks;
mod cudnn;
mod frozen;
mod grouped;
mod pair;
mod patches;
mod pooled;
mod residual;
#[cfg(test)]
mod tests;
mod winograd;
