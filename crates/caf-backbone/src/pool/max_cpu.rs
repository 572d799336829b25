//! The CPU kernels of [`super::max_pool2d`].
//!
//! Each plane is pooled in two passes: along each input row (for every
//! output column, the first maximum of its window's columns), then down the
//! columns (for every output, the first row whose row maximum beats the rows
//! above it). Row-major order is rows first, so this finds PyTorch's first
//! maximum of the window; the second pass runs over whole output rows at
//! once, without branches. During training the forward pass keeps where each
//! maximum came from, and the gradient is scattered there; before, the
//! backward pass searched every window again and the two passes took 5 % of
//! an AlexNet CAF step.

use std::sync::{Arc, OnceLock};

use candle_core::{backend::BackendStorage, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::MaxPool2dConfig;

/// Scalar types the CPU kernels run on.
pub(super) trait PoolElem: Copy + PartialOrd + Default + std::ops::AddAssign + Send + Sync {}
impl PoolElem for f32 {}
impl PoolElem for f64 {}

/// Whether `value` replaces `best` as a window's first maximum: when larger,
/// or when it is the window's first NaN (a NaN wins, as in PyTorch).
#[inline(always)]
#[allow(clippy::eq_op)] // `x != x` is the NaN test for any float type
fn replaces<T: PoolElem>(value: T, best: T) -> bool {
    value > best || (value != value && best == best)
}

/// Geometry of one pooling call, shared by the forward and backward kernels.
#[derive(Clone, Copy)]
pub(super) struct PoolGeometry {
    config: MaxPool2dConfig,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
}

impl PoolGeometry {
    /// The geometry and the number of planes (`B·C`) of a `B×C×H×W` input.
    pub(super) fn new(config: MaxPool2dConfig, dims: &[usize]) -> Result<(usize, Self)> {
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

    /// The input positions `start..end` of window `i` along a side of `len`
    /// (clipped to the input: padding never wins).
    fn window(&self, i: usize, len: usize) -> (usize, usize) {
        let MaxPool2dConfig {
            kernel,
            stride,
            padding,
        } = self.config;
        (
            (i * stride).saturating_sub(padding),
            (i * stride + kernel - padding).min(len),
        )
    }

    /// Pools one plane into `out`, with each maximum's index in the plane in `at`.
    /// `row_max`/`row_at` are scratch of `in_h · out_w`.
    fn pool_plane<T: PoolElem>(
        &self,
        plane: &[T],
        out: &mut [T],
        at: &mut [u32],
        (row_max, row_at): (&mut [T], &mut [u32]),
    ) {
        let (in_w, out_w) = (self.in_w, self.out_w);
        let MaxPool2dConfig {
            kernel,
            stride,
            padding,
        } = self.config;
        // Windows wholly inside the row: `inner`, searched tap by tap across
        // all of them at once; the few clipped by the padding: one by one.
        let inner = (padding.div_ceil(stride)..out_w).take_while(|&ox| ox * stride + kernel <= in_w + padding);
        let inner = inner.clone().next().map_or(0..0, |first| first..first + inner.count());
        for ((row, maxima), places) in plane
            .chunks_exact(in_w)
            .zip(row_max.chunks_exact_mut(out_w))
            .zip(row_at.chunks_exact_mut(out_w))
        {
            for ox in (0..out_w).filter(|ox| !inner.contains(ox)) {
                let (x0, x1) = self.window(ox, in_w);
                let (mut best, mut best_x) = (row[x0], x0);
                for (x, &value) in row.iter().enumerate().take(x1).skip(x0 + 1) {
                    if replaces(value, best) {
                        (best, best_x) = (value, x);
                    }
                }
                (maxima[ox], places[ox]) = (best, best_x as u32);
            }
            let first = (inner.start * stride).saturating_sub(padding);
            for (ox, (max, place)) in maxima[inner.clone()]
                .iter_mut()
                .zip(&mut places[inner.clone()])
                .enumerate()
            {
                (*max, *place) = (row[first + ox * stride], (first + ox * stride) as u32);
            }
            for tap in 1..kernel {
                let (maxima, places) = (&mut maxima[inner.clone()], &mut places[inner.clone()]);
                for (ox, (best, place)) in maxima.iter_mut().zip(places.iter_mut()).enumerate() {
                    let x = first + ox * stride + tap;
                    let value = row[x];
                    let take = replaces(value, *best);
                    *best = if take { value } else { *best };
                    *place = if take { x as u32 } else { *place };
                }
            }
        }
        for (oy, (out_row, at_row)) in out.chunks_exact_mut(out_w).zip(at.chunks_exact_mut(out_w)).enumerate() {
            let (y0, y1) = self.window(oy, self.in_h);
            out_row.copy_from_slice(&row_max[y0 * out_w..][..out_w]);
            for (place, &x) in at_row.iter_mut().zip(&row_at[y0 * out_w..][..out_w]) {
                *place = (y0 * in_w) as u32 + x;
            }
            for y in y0 + 1..y1 {
                let (maxima, places) = (&row_max[y * out_w..][..out_w], &row_at[y * out_w..][..out_w]);
                for (((best, place), &value), &x) in out_row.iter_mut().zip(at_row.iter_mut()).zip(maxima).zip(places) {
                    let take = replaces(value, *best);
                    *best = if take { value } else { *best };
                    *place = if take { (y * in_w) as u32 + x } else { *place };
                }
            }
        }
    }

    /// The pooled planes and, for every output, the index in its plane of the maximum it took.
    pub(super) fn forward<T: PoolElem>(&self, planes: usize, input: &[T]) -> (Vec<T>, Vec<u32>) {
        let (in_len, out_len) = (self.in_h * self.in_w, self.out_h * self.out_w);
        let mut output = vec![T::default(); planes * out_len];
        let mut at = vec![0u32; planes * out_len];
        output
            .par_chunks_mut(out_len)
            .zip(at.par_chunks_mut(out_len))
            .zip(input.par_chunks(in_len))
            .for_each_init(
                || {
                    (
                        vec![T::default(); self.in_h * self.out_w],
                        vec![0u32; self.in_h * self.out_w],
                    )
                },
                |(row_max, row_at), ((out, at), plane)| self.pool_plane(plane, out, at, (row_max, row_at)),
            );
        (output, at)
    }

    /// The input gradient: each output's gradient added at its maximum.
    fn backward<T: PoolElem>(&self, planes: usize, at: &[u32], grad_output: &[T]) -> Vec<T> {
        let (in_len, out_len) = (self.in_h * self.in_w, self.out_h * self.out_w);
        let mut grad_input = vec![T::default(); planes * in_len];
        grad_input
            .par_chunks_mut(in_len)
            .zip(at.par_chunks(out_len).zip(grad_output.par_chunks(out_len)))
            .for_each(|(grad_plane, (at, grad_out))| {
                for (&i, &g) in at.iter().zip(grad_out) {
                    grad_plane[i as usize] += g;
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

/// CPU forward of max pooling. When built [`MaxPool2dCpu::for_training`] it
/// keeps where each maximum came from, which its backward pass needs.
pub(super) struct MaxPool2dCpu {
    config: MaxPool2dConfig,
    argmax: Option<OnceLock<Arc<Vec<u32>>>>,
}

impl MaxPool2dCpu {
    pub(super) fn for_inference(config: MaxPool2dConfig) -> Self {
        Self { config, argmax: None }
    }

    pub(super) fn for_training(config: MaxPool2dConfig) -> Self {
        Self {
            config,
            argmax: Some(OnceLock::new()),
        }
    }
}

impl CustomOp1 for MaxPool2dCpu {
    fn name(&self) -> &'static str {
        "caf-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (planes, g) = PoolGeometry::new(self.config, layout.dims())?;
        let dims = layout.dims();
        let shape = Shape::from((dims[0], dims[1], g.out_h, g.out_w));
        let (output, at) = match storage {
            CpuStorage::F32(data) => {
                let (y, at) = g.forward(planes, contiguous_slice(data, layout, self.name())?);
                (CpuStorage::F32(y), at)
            }
            CpuStorage::F64(data) => {
                let (y, at) = g.forward(planes, contiguous_slice(data, layout, self.name())?);
                (CpuStorage::F64(y), at)
            }
            other => candle_core::bail!("max_pool2d: unsupported dtype {:?} (use f32 or f64)", other.dtype()),
        };
        if let Some(argmax) = &self.argmax {
            if argmax.set(Arc::new(at)).is_err() {
                candle_core::bail!("max_pool2d: one training op ran its forward pass twice")
            }
        }
        Ok((output, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let Some(at) = self.argmax.as_ref().and_then(OnceLock::get) else {
            candle_core::bail!("max_pool2d: backward pass of an op built without its maxima's places")
        };
        let scatter = ScatterToMaxima {
            config: self.config,
            input_dims: arg.dims().to_vec(),
            at: at.clone(),
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&scatter)?))
    }
}

/// The gradient of [`MaxPool2dCpu`]: the output's gradient (the argument)
/// added at the places of the maxima, in a zero tensor shaped like the input.
struct ScatterToMaxima {
    config: MaxPool2dConfig,
    input_dims: Vec<usize>,
    at: Arc<Vec<u32>>,
}

impl CustomOp1 for ScatterToMaxima {
    fn name(&self) -> &'static str {
        "caf-max-pool2d-backward"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (planes, g) = PoolGeometry::new(self.config, &self.input_dims)?;
        if layout.dims() != [self.input_dims[0], self.input_dims[1], g.out_h, g.out_w] {
            candle_core::bail!(
                "max_pool2d backward: gradient shape {:?} does not match the output",
                layout.dims()
            )
        }
        let name = self.name();
        let grad = match storage {
            CpuStorage::F32(dy) => CpuStorage::F32(g.backward(planes, &self.at, contiguous_slice(dy, layout, name)?)),
            CpuStorage::F64(dy) => CpuStorage::F64(g.backward(planes, &self.at, contiguous_slice(dy, layout, name)?)),
            other => candle_core::bail!("max_pool2d backward: unsupported dtype {:?}", other.dtype()),
        };
        Ok((grad, Shape::from(self.input_dims.clone())))
    }
}
