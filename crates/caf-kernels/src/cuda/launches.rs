//! One typed function per kernel of `kernels.cu`: each checks the lengths of
//! the buffers it is given against what its kernel indexes, converts sizes to
//! the kernel's C types or refuses them, allocates the outputs the kernel
//! fills, and launches. `launch!` checks the argument types against the
//! kernel's signature (`kernel_signatures.rs`) before every launch.
//!
//! Index arithmetic in the kernels is 64-bit (`long long`) for whole
//! tensors; the pooling kernels index within one plane in `int`, so a
//! plane of more than `i32::MAX` elements is refused here.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr};
use candle_core::cuda_backend::CudaDevice;
use candle_core::Result;

use super::{launch, launch_config, per_channel};
use crate::adam::F32Scalars;
use crate::kernel_signatures::{self as signatures, KernelSignature};

/// A new device buffer of `len` elements, uninitialised.
///
/// # Safety
/// Every element must be written before any is read: each caller launches,
/// right after, a kernel that writes all `len` elements.
unsafe fn output<T: DeviceRepr>(device: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: forwarded to the caller (see above).
    unsafe { device.alloc::<T>(len) }
}

/// `value` as the kernels' `int`, or an error naming what is too large.
fn int(kernel: &KernelSignature, what: &str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        candle_core::Error::Msg(format!(
            "{}: {what} = {value} does not fit the kernel's 32-bit int; split the tensor",
            kernel.name
        ))
    })
}

/// `value` as the kernels' `long long`.
fn long(kernel: &KernelSignature, what: &str, value: usize) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| candle_core::Error::Msg(format!("{}: {what} = {value} does not fit a long long", kernel.name)))
}

/// Fails unless every buffer holds the elements the kernel indexes.
fn lengths(kernel: &KernelSignature, buffers: &[(&str, usize, usize)]) -> Result<()> {
    for &(what, len, needed) in buffers {
        if len != needed {
            candle_core::bail!(
                "{}: {what} holds {len} elements, the kernel indexes {needed}",
                kernel.name
            )
        }
    }
    Ok(())
}

/// One of the element-wise kernels over one input: `y[i] = f(x[i])`.
pub(crate) fn unary(device: &CudaDevice, kernel: KernelSignature, x: &CudaView<f32>) -> Result<CudaSlice<f32>> {
    if kernel != signatures::RELU {
        candle_core::bail!("{}: not a one-input element-wise kernel", kernel.name)
    }
    let n = x.len();
    let count = long(&kernel, "elements", n)?;
    // SAFETY (`output`): the kernel writes y[i] for every i < n.
    let mut y = unsafe { output::<f32>(device, n)? };
    // SAFETY: caf_relu_f32 reads x[i] and writes y[i] for i < n only; both hold n.
    unsafe { launch!(device, kernel, launch_config(n); x, &mut y, &count) }?;
    Ok(y)
}

/// One of the element-wise kernels over two inputs of one length: `y[i] = f(a[i], b[i])`.
pub(crate) fn binary(
    device: &CudaDevice,
    kernel: KernelSignature,
    a: &CudaView<f32>,
    b: &CudaView<f32>,
) -> Result<CudaSlice<f32>> {
    if kernel != signatures::ADD_RELU && kernel != signatures::RELU_GRAD {
        candle_core::bail!("{}: not a two-input element-wise kernel", kernel.name)
    }
    let n = a.len();
    lengths(&kernel, &[("the second input", b.len(), n)])?;
    let count = long(&kernel, "elements", n)?;
    // SAFETY (`output`): the kernel writes y[i] for every i < n.
    let mut y = unsafe { output::<f32>(device, n)? };
    // SAFETY: caf_add_relu_f32 and caf_relu_grad_f32 read a[i], b[i] and
    // write y[i] for i < n only; all three hold n.
    unsafe { launch!(device, kernel, launch_config(n); a, b, &mut y, &count) }?;
    Ok(y)
}

/// `y = x + bias[channel]`, then the ReLU when `relu`, over a `B×C×plane` map.
pub(crate) fn bias_act(
    device: &CudaDevice,
    x: &CudaView<f32>,
    bias: &CudaView<f32>,
    plane: usize,
    relu: bool,
) -> Result<CudaSlice<f32>> {
    let kernel = signatures::BIAS_ACT;
    let (n, channels) = (x.len(), bias.len());
    if plane == 0 || channels == 0 || n % (plane * channels) != 0 {
        candle_core::bail!("{}: {n} elements are not whole maps of {channels}×{plane}", kernel.name)
    }
    let (count, plane_size) = (long(&kernel, "elements", n)?, long(&kernel, "plane", plane)?);
    let (channels, relu) = (int(&kernel, "channels", channels)?, i32::from(relu));
    // SAFETY (`output`): the kernel writes y[i] for every i < n.
    let mut y = unsafe { output::<f32>(device, n)? };
    // SAFETY: caf_bias_act_f32 reads x[i], writes y[i] for i < n, and reads
    // bias[(i / plane) % channels] < channels = bias.len().
    unsafe {
        launch!(device, kernel, launch_config(n);
            x, bias, &mut y, &count, &plane_size, &channels, &relu)
    }?;
    Ok(y)
}

/// The sizes of one max-pooling call, as its kernels take them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSizes {
    pub(crate) planes: usize,
    pub(crate) in_h: usize,
    pub(crate) in_w: usize,
    pub(crate) out_h: usize,
    pub(crate) out_w: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
}

impl PoolSizes {
    /// The kernels' trailing arguments: planes, then h, w, out_h, out_w,
    /// kernel, stride, padding; a plane too large for `int` indexing is refused.
    fn arguments(&self, kernel: &KernelSignature) -> Result<(i64, [i32; 7])> {
        int(kernel, "input plane", self.in_h.saturating_mul(self.in_w))?;
        int(kernel, "output plane", self.out_h.saturating_mul(self.out_w))?;
        // Window arithmetic adds up to a kernel and a padding to a place.
        int(
            kernel,
            "window reach",
            self.in_h.max(self.in_w) + self.kernel + self.stride + self.padding,
        )?;
        let sides = [
            ("h", self.in_h),
            ("w", self.in_w),
            ("out_h", self.out_h),
            ("out_w", self.out_w),
            ("kernel", self.kernel),
            ("stride", self.stride),
            ("padding", self.padding),
        ];
        let mut converted = [0i32; 7];
        for (slot, (what, value)) in converted.iter_mut().zip(sides) {
            *slot = int(kernel, what, value)?;
        }
        if self.stride == 0 || self.kernel == 0 {
            candle_core::bail!("{}: kernel and stride must be positive", kernel.name)
        }
        Ok((long(kernel, "planes", self.planes)?, converted))
    }

    fn inputs(&self) -> usize {
        self.planes * self.in_h * self.in_w
    }

    fn outputs(&self) -> usize {
        self.planes * self.out_h * self.out_w
    }
}

/// Max pooling; with `keep_places`, also each maximum's place in its plane.
pub(crate) fn max_pool(
    device: &CudaDevice,
    x: &CudaView<f32>,
    sizes: &PoolSizes,
    keep_places: bool,
) -> Result<(CudaSlice<f32>, Option<CudaSlice<u32>>)> {
    let kernel = signatures::MAX_POOL;
    let (planes, [h, w, out_h, out_w, window, stride, padding]) = sizes.arguments(&kernel)?;
    lengths(&kernel, &[("the input", x.len(), sizes.inputs())])?;
    let outputs = sizes.outputs();
    // SAFETY (`output`): the kernel writes y[o] (and at[o]) for every o < outputs.
    let mut y = unsafe { output::<f32>(device, outputs)? };
    // SAFETY (both launches): one thread per output o < planes·out_h·out_w =
    // y.len() (= at.len()) reads only the input plane o / (out_h·out_w), of
    // h·w = x.len() / planes elements, within its clipped window.
    let at = if keep_places {
        // SAFETY (`output`): as `y`.
        let mut at = unsafe { output::<u32>(device, outputs)? };
        unsafe {
            launch!(device, kernel, launch_config(outputs);
                x, &mut y, &mut at, &planes, &h, &w, &out_h, &out_w, &window, &stride, &padding)
        }?;
        Some(at)
    } else {
        let no_places = super::NullPlaces::new();
        unsafe {
            launch!(device, kernel, launch_config(outputs);
                x, &mut y, &no_places, &planes, &h, &w, &out_h, &out_w, &window, &stride, &padding)
        }?;
        None
    };
    Ok((y, at))
}

/// The input gradient of max pooling from the output gradient and the places `max_pool` kept.
pub(crate) fn max_pool_grad(
    device: &CudaDevice,
    dy: &CudaView<f32>,
    at: &CudaSlice<u32>,
    sizes: &PoolSizes,
) -> Result<CudaSlice<f32>> {
    let kernel = signatures::MAX_POOL_GRAD;
    let (planes, [h, w, out_h, out_w, window, stride, padding]) = sizes.arguments(&kernel)?;
    let outputs = sizes.outputs();
    lengths(
        &kernel,
        &[
            ("the output gradient", dy.len(), outputs),
            ("the places", at.len(), outputs),
        ],
    )?;
    let inputs = sizes.inputs();
    // SAFETY (`output`): the kernel writes dx[i] for every i < inputs.
    let mut dx = unsafe { output::<f32>(device, inputs)? };
    // SAFETY: one thread per input i < planes·h·w = dx.len() reads dy and at
    // in its own plane's out_h·out_w windows only (dy.len() = at.len() checked).
    unsafe {
        launch!(device, kernel, launch_config(inputs);
            dy, at, &mut dx, &planes, &h, &w, &out_h, &out_w, &window, &stride, &padding)
    }?;
    Ok(dx)
}

/// Adam's update of `param` and its moments, in place.
pub(crate) fn adam(
    device: &CudaDevice,
    param: &mut CudaViewMut<f32>,
    grad: &CudaView<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    s: &F32Scalars,
) -> Result<()> {
    let kernel = signatures::ADAM;
    let n = param.len();
    lengths(
        &kernel,
        &[
            ("the gradient", grad.len(), n),
            ("the first moments", m.len(), n),
            ("the second moments", v.len(), n),
        ],
    )?;
    let count = long(&kernel, "parameters", n)?;
    // SAFETY: caf_adam_f32 reads and writes param[i], m[i], v[i] and reads
    // grad[i] for i < n only; all four hold n.
    unsafe {
        launch!(device, kernel, launch_config(n);
            param, grad, m, v, &count,
            &s.beta1, &s.beta2, &s.one_minus_beta1, &s.one_minus_beta2, &s.lr, &s.inv_c1, &s.inv_c2, &s.eps, &s.decay)
    }
}

/// Batch, channels and plane (`H·W`) of a `B×C×H×W` map, as the batch-norm kernels take them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapSizes {
    pub(crate) batch: usize,
    pub(crate) channels: usize,
    pub(crate) plane: usize,
}

impl MapSizes {
    fn elements(&self) -> usize {
        self.batch * self.channels * self.plane
    }

    fn arguments(&self, kernel: &KernelSignature) -> Result<(i32, i32, i64)> {
        Ok((
            int(kernel, "batch", self.batch)?,
            int(kernel, "channels", self.channels)?,
            long(kernel, "plane", self.plane)?,
        ))
    }
}

/// The `2×C` statistics (means, then biased variances) of the map `x`.
pub(crate) fn bn_stats(device: &CudaDevice, x: &CudaView<f32>, sizes: &MapSizes) -> Result<CudaSlice<f32>> {
    let kernel = signatures::BN_STATS;
    let (batch, channels, plane) = sizes.arguments(&kernel)?;
    lengths(&kernel, &[("the map", x.len(), sizes.elements())])?;
    // SAFETY (`output`): block c writes stats[c] and stats[C + c] for every c < C.
    let mut stats = unsafe { output::<f32>(device, 2 * sizes.channels)? };
    // SAFETY: one block per channel c < C reads channel c's B·plane elements
    // of x (B·C·plane = x.len()) and writes stats[c], stats[C + c] (2·C = stats.len()).
    unsafe { launch!(device, kernel, per_channel(sizes.channels); x, &mut stats, &batch, &channels, &plane) }?;
    Ok(stats)
}

/// `y = (x − mean)·inv_std·weight + bias`, then the ReLU when `relu`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_forward(
    device: &CudaDevice,
    x: &CudaView<f32>,
    weight: &CudaView<f32>,
    bias: &CudaView<f32>,
    stats: &CudaView<f32>,
    sizes: &MapSizes,
    eps: f64,
    relu: bool,
) -> Result<CudaSlice<f32>> {
    let kernel = signatures::BN_FORWARD;
    let (_, channels, plane) = sizes.arguments(&kernel)?;
    let n = sizes.elements();
    let c = sizes.channels;
    lengths(
        &kernel,
        &[
            ("the map", x.len(), n),
            ("the weight", weight.len(), c),
            ("the bias", bias.len(), c),
            ("the statistics", stats.len(), 2 * c),
        ],
    )?;
    let (count, relu) = (long(&kernel, "elements", n)?, i32::from(relu));
    // SAFETY (`output`): the kernel writes y[i] for every i < n.
    let mut y = unsafe { output::<f32>(device, n)? };
    // SAFETY: caf_bn_forward_f32 reads x[i] and writes y[i] for i < n, and
    // reads weight, bias, stats at channel c < C and C + c (lengths checked).
    unsafe {
        launch!(device, kernel, launch_config(n);
            x, weight, bias, stats, &mut y, &count, &plane, &channels, &eps, &relu)
    }?;
    Ok(y)
}

/// `Σ dy` and `Σ dy·x̂` per channel, `2×C`.
pub(crate) fn bn_grad_sums(
    device: &CudaDevice,
    dy: &CudaView<f32>,
    x: &CudaView<f32>,
    stats: &CudaView<f32>,
    sizes: &MapSizes,
    eps: f64,
) -> Result<CudaSlice<f32>> {
    let kernel = signatures::BN_GRAD_SUMS;
    let (batch, channels, plane) = sizes.arguments(&kernel)?;
    let n = sizes.elements();
    lengths(
        &kernel,
        &[
            ("the output gradient", dy.len(), n),
            ("the map", x.len(), n),
            ("the statistics", stats.len(), 2 * sizes.channels),
        ],
    )?;
    // SAFETY (`output`): block c writes sums[c] and sums[C + c] for every c < C.
    let mut sums = unsafe { output::<f32>(device, 2 * sizes.channels)? };
    // SAFETY: one block per channel c < C reads channel c's elements of dy and
    // x (n each), stats[c] and stats[C + c], and writes sums[c], sums[C + c].
    unsafe {
        launch!(device, kernel, per_channel(sizes.channels);
            dy, x, stats, &mut sums, &batch, &channels, &plane, &eps)
    }?;
    Ok(sums)
}

/// `dx = weight·inv_std·(dy − mean(dy) − x̂·mean(dy·x̂))`; `count` is B·plane.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_input_grad(
    device: &CudaDevice,
    dy: &CudaView<f32>,
    x: &CudaView<f32>,
    weight: &CudaView<f32>,
    sums: &CudaView<f32>,
    stats: &CudaView<f32>,
    sizes: &MapSizes,
    eps: f64,
) -> Result<CudaSlice<f32>> {
    let kernel = signatures::BN_INPUT_GRAD;
    let (_, channels, plane) = sizes.arguments(&kernel)?;
    let (n, c) = (sizes.elements(), sizes.channels);
    lengths(
        &kernel,
        &[
            ("the output gradient", dy.len(), n),
            ("the map", x.len(), n),
            ("the weight", weight.len(), c),
            ("the gradient sums", sums.len(), 2 * c),
            ("the statistics", stats.len(), 2 * c),
        ],
    )?;
    let elements = long(&kernel, "elements", n)?;
    let count = (sizes.batch * sizes.plane) as f64;
    // SAFETY (`output`): the kernel writes dx[i] for every i < n.
    let mut dx = unsafe { output::<f32>(device, n)? };
    // SAFETY: caf_bn_input_grad_f32 reads dy[i], x[i] and writes dx[i] for
    // i < n, and reads weight, sums, stats at c < C and C + c (lengths checked).
    unsafe {
        launch!(device, kernel, launch_config(n);
            dy, x, weight, sums, stats, &mut dx, &elements, &plane, &channels, &count, &eps)
    }?;
    Ok(dx)
}
