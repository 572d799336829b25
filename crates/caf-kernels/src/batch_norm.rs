//! Training-mode 2-D batch normalisation in a few parallel passes.
//!
//! candle-nn's training BatchNorm is a chain of about a dozen tensor ops
//! (transpose, copy, mean, square, divide, …), each a full pass with its own
//! allocation and its own backward. Here: one statistics pass (two-pass
//! mean and variance, in f64), one normalisation pass, and two passes
//! backward, on the CPU (f32, f64) and on CUDA (f32, `cuda/kernels.cu`,
//! where the statistics stay on the device). On other devices and dtypes,
//! differentiable candle operations with the same result.

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[cfg(feature = "cuda")]
mod cuda;

use crate::cpu::vectorised;
use crate::elementwise::Activation;
use crate::gemm::Element;
use crate::parallel::collect_planes;
use crate::reduce::{channel_planes, channel_sum, sum_and_dot};
use crate::storage::{dispatch, own_kernels_run_on, runs_on_cpu_kernels, Kernel};

/// Per-channel mean and biased variance of a `B×C×H×W` batch: detached
/// tensors of `C` values on the batch's device, in its dtype.
#[derive(Debug, Clone)]
pub struct ChannelStats {
    pub mean: Tensor,
    pub variance: Tensor,
    /// Values per channel (`B·H·W`).
    pub count: usize,
}

impl ChannelStats {
    /// The means and variances as host numbers.
    pub fn to_host(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        let host = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
        Ok((host(&self.mean)?, host(&self.variance)?))
    }
}

/// Normalises `x` (`B×C×H×W`) with its own batch statistics, then scales by `weight` and shifts by `bias` (both `C`), as
/// PyTorch's `BatchNorm2d` in training mode. Returns the output and the batch
/// statistics (for the running averages). Gradients reach `x`, `weight` and
/// `bias`, the statistics' dependence on `x` included.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, ChannelStats)> {
    normalise(x, weight, bias, eps, Activation::Identity)
}

/// [`batch_norm_train`] followed by a ReLU, as one operation: the ReLU is
/// applied in place and folded into the backward pass, so the normalised map
/// before it is never a tensor of its own.
pub fn batch_norm_train_relu(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, ChannelStats)> {
    normalise(x, weight, bias, eps, Activation::Relu)
}

fn normalise(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    activation: Activation,
) -> Result<(Tensor, ChannelStats)> {
    let (_, channels, _, _) = x.dims4()?;
    if weight.dims() != [channels] || bias.dims() != [channels] {
        candle_core::bail!(
            "batch_norm_train: {channels} channels, but weight {:?} and bias {:?}",
            weight.dims(),
            bias.dims()
        )
    }
    let count = x.elem_count() / channels;
    if count < 2 {
        candle_core::bail!("batch_norm_train: needs more than one value per channel, got {count}")
    }
    if !own_kernels_run_on(&[x, weight, bias]) {
        return normalise_composed(x, weight, bias, eps, activation, count);
    }
    let x = x.contiguous()?;
    let batch_stats = x.apply_op1_no_bwd(&StatisticsOp)?;
    let normalisation = Normalisation::new(&x, batch_stats.clone(), eps)?;
    let stats = ChannelStats {
        mean: batch_stats.get(0)?,
        variance: batch_stats.get(1)?,
        count,
    };
    let y = x.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        NormaliseOp(normalisation, activation),
    )?;
    Ok((y, stats))
}

/// [`normalise`] from candle's own differentiable operations, for devices
/// and dtypes the CPU kernels do not cover.
fn normalise_composed(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    activation: Activation,
    count: usize,
) -> Result<(Tensor, ChannelStats)> {
    let per_channel = |t: &Tensor| t.reshape((1, (), 1, 1));
    let mean = x.mean_keepdim((0, 2, 3))?;
    let centred = x.broadcast_sub(&mean)?;
    let variance = centred.sqr()?.mean_keepdim((0, 2, 3))?;
    let scale = (variance.clone() + eps)?
        .sqrt()?
        .recip()?
        .broadcast_mul(&per_channel(weight)?)?;
    let y = centred.broadcast_mul(&scale)?.broadcast_add(&per_channel(bias)?)?;
    let y = match activation {
        Activation::Identity => y,
        Activation::Relu => y.relu()?,
    };
    let stats = ChannelStats {
        mean: mean.detach().flatten_all()?,
        variance: variance.detach().flatten_all()?,
        count,
    };
    Ok((y, stats))
}

/// `y = x·scale + shift` per channel of `x` (`B×C×H×W`; `scale`, `shift`: `C`):
/// evaluation-mode batch normalisation once folded. When nothing is tracked
/// (inference) f32/f64 CPU tensors take one fused pass; otherwise candle's
/// broadcast multiply and add, which give the same bits (the fused pass
/// multiplies then adds in the tensor's own precision, without FMA).
pub fn scale_shift(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let (_, channels, _, _) = x.dims4()?;
    if scale.dims() != [channels] || shift.dims() != [channels] {
        candle_core::bail!(
            "scale_shift: {channels} channels, but scale {:?} and shift {:?}",
            scale.dims(),
            shift.dims()
        )
    }
    if runs_on_cpu_kernels(x) && !x.track_op() && !scale.track_op() && !shift.track_op() {
        return x
            .contiguous()?
            .apply_op3_no_bwd(&scale.contiguous()?, &shift.contiguous()?, &ScaleShiftOp);
    }
    x.broadcast_mul(&scale.reshape((1, channels, 1, 1))?)?
        .broadcast_add(&shift.reshape((1, channels, 1, 1))?)
}

/// The fused pass of [`scale_shift`] (arguments: x, scale, shift).
struct ScaleShiftOp;

impl CustomOp3 for ScaleShiftOp {
    fn name(&self) -> &'static str {
        "caf-scale-shift"
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
        let kernel = BatchNormKernel::ScaleShift(dims4(l1)?);
        let y = dispatch(self.name(), &kernel, &[(s1, l1), (s2, l2), (s3, l3)])?;
        Ok((y, l1.shape().clone()))
    }
}

fn scale_shift_planes<T: Element>(x: &[T], scale: &[T], shift: &[T], dims: &[usize; 4]) -> Vec<T> {
    let (channels, plane) = (dims[1], dims[2] * dims[3]);
    collect_planes(dims[0] * channels, plane, |i| {
        let (s, b) = (scale[i % channels], shift[i % channels]);
        x[i * plane..][..plane].iter().map(move |&x| x * s + b)
    })
}

/// A `B×C×H×W` batch as `[B, C, H·W]`: images of channel planes.
fn planes_layout(dims: &[usize; 4]) -> [usize; 3] {
    [dims[0], dims[1], dims[2] * dims[3]]
}

/// The batch's statistics, fixed for one forward pass and its backward, as
/// the kernels of the batch's device read them.
#[derive(Debug, Clone)]
struct Normalisation {
    dims: [usize; 4],
    on: StatsOn,
}

#[derive(Debug, Clone)]
enum StatsOn {
    /// The CPU kernels read f64 means and `1/√(variance + eps)`.
    Host(HostStats),
    /// The CUDA passes read the `2×C` statistics tensor (means, then biased
    /// variances) on the device, and `eps`.
    #[cfg(feature = "cuda")]
    Cuda { stats: Tensor, eps: f64 },
}

/// What the CPU kernels read of a batch's statistics.
#[derive(Debug, Clone)]
struct HostStats {
    dims: [usize; 4],
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

/// The passes, as one kernel type for [`dispatch`].
enum BatchNormKernel {
    /// Operands: x (`dims` only; the output is `2×C`: means, then biased variances).
    Statistics([usize; 4]),
    /// Operands: x, weight, bias.
    Forward(HostStats, Activation),
    /// Operands: x, scale, shift.
    ScaleShift([usize; 4]),
    /// Operands: dy, x. Output `2×C`: `Σ dy`, then `Σ dy·x̂`.
    GradientSums(HostStats),
    /// Operands: dy, x, weight, and `2×C` gradient sums.
    InputGradient(HostStats),
}

impl Kernel for BatchNormKernel {
    fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T> {
        match self {
            BatchNormKernel::Statistics(dims) => statistics(operands[0], dims),
            BatchNormKernel::Forward(n, activation) => n.forward(operands[0], operands[1], operands[2], *activation),
            BatchNormKernel::ScaleShift(dims) => scale_shift_planes(operands[0], operands[1], operands[2], dims),
            BatchNormKernel::GradientSums(n) => n.gradient_sums(operands[0], operands[1]),
            BatchNormKernel::InputGradient(n) => n.input_gradient(operands[0], operands[1], operands[2], operands[3]),
        }
    }
}

fn statistics<T: Element>(x: &[T], dims: &[usize; 4]) -> Vec<T> {
    let count = (dims[0] * dims[2] * dims[3]) as f64;
    let per_channel: Vec<(f64, f64)> = (0..dims[1])
        .into_par_iter()
        .map(|c| {
            vectorised(
                #[inline(always)]
                || {
                    let layout = planes_layout(dims);
                    let mean = channel_sum(x, layout, c, |v| v) / count;
                    let variance = channel_sum(x, layout, c, |v| (v - mean) * (v - mean)) / count;
                    (mean, variance)
                },
            )
        })
        .collect();
    let means = per_channel.iter().map(|s| T::from_f64(s.0));
    means.chain(per_channel.iter().map(|s| T::from_f64(s.1))).collect()
}

impl Normalisation {
    fn new(x: &Tensor, stats: Tensor, eps: f64) -> Result<Self> {
        let (b, c, h, w) = x.dims4()?;
        let dims = [b, c, h, w];
        let on = if runs_on_cpu_kernels(x) {
            let mut host = stats.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            let variance = host.pop().unwrap_or_default();
            let mean = host.pop().unwrap_or_default();
            StatsOn::Host(HostStats {
                dims,
                mean,
                inv_std: variance.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
            })
        } else {
            #[cfg(feature = "cuda")]
            {
                StatsOn::Cuda { stats, eps }
            }
            #[cfg(not(feature = "cuda"))]
            candle_core::bail!("batch norm: no kernels of this crate run on {:?}", x.device())
        };
        Ok(Self { dims, on })
    }

    /// The statistics as the CPU kernels of `op` read them.
    fn host(&self, op: &str) -> Result<HostStats> {
        match &self.on {
            StatsOn::Host(host) => Ok(host.clone()),
            #[cfg(feature = "cuda")]
            StatsOn::Cuda { .. } => Err(candle_core::Error::Msg(format!(
                "{op}: CPU operands, but the statistics are on a CUDA device"
            ))),
            #[cfg(not(feature = "cuda"))]
            #[allow(unreachable_patterns)]
            _ => unreachable!("{op}: only the CPU holds statistics without the cuda feature"),
        }
    }
}

impl HostStats {
    fn count(&self) -> f64 {
        (self.dims[0] * self.dims[2] * self.dims[3]) as f64
    }

    fn plane(&self) -> usize {
        self.dims[2] * self.dims[3]
    }

    /// `y = activation((x − mean)·inv_std·weight + bias)`.
    fn forward<T: Element>(&self, x: &[T], weight: &[T], bias: &[T], activation: Activation) -> Vec<T> {
        let (channels, plane) = (self.dims[1], self.plane());
        collect_planes(self.dims[0] * channels, plane, |i| {
            let c = i % channels;
            let scale = self.inv_std[c] * weight[c].to_f64();
            let shift = bias[c].to_f64() - self.mean[c] * scale;
            let x = &x[i * plane..][..plane];
            x.iter()
                .map(move |&x| activation.apply(T::from_f64(x.to_f64() * scale + shift)))
        })
    }

    fn gradient_sums<T: Element>(&self, dy: &[T], x: &[T]) -> Vec<T> {
        let per_channel: Vec<(f64, f64)> = (0..self.dims[1])
            .into_par_iter()
            .map(|c| {
                let (sum, dot) = vectorised(
                    #[inline(always)]
                    || {
                        let (mut sum, mut dot) = (0.0, 0.0);
                        let layout = planes_layout(&self.dims);
                        for (dy, x) in channel_planes(dy, layout, c).zip(channel_planes(x, layout, c)) {
                            let (s, d) = sum_and_dot(dy, x);
                            sum += s;
                            dot += d;
                        }
                        (sum, dot)
                    },
                );
                // Σ dy·x̂ = inv_std·(Σ dy·x − mean·Σ dy)
                (sum, self.inv_std[c] * (dot - self.mean[c] * sum))
            })
            .collect();
        let sums = per_channel.iter().map(|s| T::from_f64(s.0));
        sums.chain(per_channel.iter().map(|s| T::from_f64(s.1))).collect()
    }

    /// `dx = weight·inv_std·(dy − mean(dy) − x̂·mean(dy·x̂))`.
    fn input_gradient<T: Element>(&self, dy: &[T], x: &[T], weight: &[T], sums: &[T]) -> Vec<T> {
        let (channels, count, plane) = (self.dims[1], self.count(), self.plane());
        collect_planes(self.dims[0] * channels, plane, |i| {
            let c = i % channels;
            let (mean_dy, mean_dy_xhat) = (sums[c].to_f64() / count, sums[channels + c].to_f64() / count);
            let (mean, inv_std) = (self.mean[c], self.inv_std[c]);
            let scale = weight[c].to_f64() * inv_std;
            let (dy, x) = (&dy[i * plane..][..plane], &x[i * plane..][..plane]);
            dy.iter().zip(x).map(move |(&dy, &x)| {
                let xhat = (x.to_f64() - mean) * inv_std;
                T::from_f64(scale * (dy.to_f64() - mean_dy - xhat * mean_dy_xhat))
            })
        })
    }
}

/// Channel statistics of a contiguous `B×C×H×W` tensor, as a `2×C` tensor.
struct StatisticsOp;

impl CustomOp1 for StatisticsOp {
    fn name(&self) -> &'static str {
        "caf-batch-norm-stats"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(layout)?;
        let stats = dispatch(self.name(), &BatchNormKernel::Statistics(dims), &[(storage, layout)])?;
        Ok((stats, Shape::from((2, dims[1]))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let dims = dims4(layout)?;
        Ok((cuda::statistics(storage, layout, &dims)?, Shape::from((2, dims[1]))))
    }
}

fn dims4(layout: &Layout) -> Result<[usize; 4]> {
    match layout.dims() {
        &[b, c, h, w] => Ok([b, c, h, w]),
        other => candle_core::bail!("batch norm expects a B×C×H×W tensor, got {other:?}"),
    }
}

/// The normalisation and its activation, with their backward (arguments: x, weight, bias).
struct NormaliseOp(Normalisation, Activation);

impl CustomOp3 for NormaliseOp {
    fn name(&self) -> &'static str {
        match self.1 {
            Activation::Identity => "caf-batch-norm",
            Activation::Relu => "caf-batch-norm-relu",
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
        let kernel = BatchNormKernel::Forward(self.0.host(self.name())?, self.1);
        let y = dispatch(self.name(), &kernel, &[(s1, l1), (s2, l2), (s3, l3)])?;
        Ok((y, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let y = self.0.cuda_forward(self.1, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = self.1.input_gradient(y, dy)?;
        let sums = dy.apply_op2_no_bwd(x, &GradientSumsOp(self.0.clone()))?;
        let dx = dy.apply_op3_no_bwd(weight, &sums, &InputGradientOp(self.0.clone(), x.clone()))?;
        Ok((Some(dx), Some(sums.get(1)?), Some(sums.get(0)?)))
    }
}

/// `Σ dy` and `Σ dy·x̂` per channel, `2×C` (arguments: dy, x).
struct GradientSumsOp(Normalisation);

impl CustomOp2 for GradientSumsOp {
    fn name(&self) -> &'static str {
        "caf-batch-norm-grad-sums"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let kernel = BatchNormKernel::GradientSums(self.0.host(self.name())?);
        let sums = dispatch(self.name(), &kernel, &[(s1, l1), (s2, l2)])?;
        Ok((sums, Shape::from((2, self.0.dims[1]))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let sums = self.0.cuda_gradient_sums((s1, l1), (s2, l2))?;
        Ok((sums, Shape::from((2, self.0.dims[1]))))
    }
}

/// The input gradient (arguments: dy, weight, gradient sums; x held by the op).
struct InputGradientOp(Normalisation, Tensor);

impl CustomOp3 for InputGradientOp {
    fn name(&self) -> &'static str {
        "caf-batch-norm-input-grad"
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
        let (x_storage, x_layout) = self.1.storage_and_layout();
        let candle_core::Storage::Cpu(x_storage) = &*x_storage else {
            candle_core::bail!("{}: x is not on the CPU", self.name())
        };
        let kernel = BatchNormKernel::InputGradient(self.0.host(self.name())?);
        let dx = dispatch(
            self.name(),
            &kernel,
            &[(s1, l1), (x_storage, x_layout), (s2, l2), (s3, l3)],
        )?;
        Ok((dx, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (x_storage, x_layout) = self.1.storage_and_layout();
        let candle_core::Storage::Cuda(x_storage) = &*x_storage else {
            candle_core::bail!("{}: x is not on the CUDA device", self.name())
        };
        let dx = self
            .0
            .cuda_input_gradient((s1, l1), (x_storage, x_layout), (s2, l2), (s3, l3))?;
        Ok((dx, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caf_testkit::{check_gradient, distinct_values, probe_like};
    use candle_core::backprop::GradStore;
    use candle_core::{Device, Var};

    /// PyTorch's training-mode formula, as plain candle ops.
    fn reference(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
        let mean = x.mean_keepdim((0, 2, 3))?;
        let centred = x.broadcast_sub(&mean)?;
        let variance = centred.sqr()?.mean_keepdim((0, 2, 3))?;
        let normalised = centred.broadcast_div(&(variance + eps)?.sqrt()?)?;
        normalised
            .broadcast_mul(&weight.reshape((1, (), 1, 1))?)?
            .broadcast_add(&bias.reshape((1, (), 1, 1))?)
    }

    /// The largest difference between two backward passes' gradients of
    /// `vars` (f64); NaN when any difference is.
    fn largest_gradient_difference(a: &GradStore, b: &GradStore, vars: &[&Var]) -> Result<f64> {
        vars.iter().try_fold(0f64, |worst, var| {
            let gap = (a.get(var).expect("a gradient") - b.get(var).expect("a gradient"))?
                .abs()?
                .max_all()?
                .to_scalar::<f64>()?;
            // Not f64::max, which passes over a NaN.
            Ok(if gap > worst || gap.is_nan() { gap } else { worst })
        })
    }

    fn parameters(channels: usize) -> Result<(Tensor, Tensor)> {
        let weight = (distinct_values(channels)? + 1.0)?;
        let bias = (distinct_values(channels)? * 0.3)?;
        Ok((weight, bias))
    }

    #[test]
    fn forward_gradients_and_statistics_match_the_formula() -> Result<()> {
        for dims in [(2, 3, 4, 5), (1, 2, 3, 1), (5, 4, 2, 2)] {
            let x = Var::from_tensor(&(distinct_values(dims)? * 3.0)?)?;
            let (w, b) = parameters(dims.1)?;
            let (w, b) = (Var::from_tensor(&w)?, Var::from_tensor(&b)?);
            let (ours, stats) = batch_norm_train(&x, &w, &b, 1e-5)?;
            let expected = reference(&x, &w, &b, 1e-5)?;
            let difference = (&ours - &expected)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(difference < 1e-12, "{dims:?}: {difference}");
            let mean = x.mean((0, 2, 3))?.to_vec1::<f64>()?;
            for (a, b) in stats.to_host()?.0.iter().zip(&mean) {
                assert!((a - b).abs() < 1e-12);
            }
            let probe = probe_like(ours.shape())?;
            let ours = (ours * &probe)?.sum_all()?.backward()?;
            let expected = (expected * &probe)?.sum_all()?.backward()?;
            let difference = largest_gradient_difference(&ours, &expected, &[&x, &w, &b])?;
            assert!(difference < 1e-10, "{dims:?}: {difference}");
        }
        Ok(())
    }

    /// The path other devices take (candle's operations) agrees with the CPU
    /// kernels in outputs, statistics and every gradient, with and without ReLU.
    #[test]
    fn the_composed_path_matches_the_cpu_kernels() -> Result<()> {
        let dims = (3, 4, 5, 3);
        for activation in [Activation::Identity, Activation::Relu] {
            let x = Var::from_tensor(&(distinct_values(dims)? * 3.0)?)?;
            let (w, b) = parameters(dims.1)?;
            let (w, b) = (Var::from_tensor(&w)?, Var::from_tensor(&b)?);
            let (kernel, kernel_stats) = normalise(&x, &w, &b, 1e-5, activation)?;
            let (composed, composed_stats) = normalise_composed(&x, &w, &b, 1e-5, activation, 45)?;
            assert!((&kernel - &composed)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
            assert_eq!(kernel_stats.count, composed_stats.count);
            let (kernel_stats, composed_stats) = (kernel_stats.to_host()?, composed_stats.to_host()?);
            for (a, b) in [
                (&kernel_stats.0, &composed_stats.0),
                (&kernel_stats.1, &composed_stats.1),
            ] {
                assert!(a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-12), "{a:?} vs {b:?}");
            }
            let probe = probe_like(kernel.shape())?;
            let kernel = (kernel * &probe)?.sum_all()?.backward()?;
            let composed = (composed * &probe)?.sum_all()?.backward()?;
            let difference = largest_gradient_difference(&kernel, &composed, &[&x, &w, &b])?;
            assert!(difference < 1e-10, "{difference}");
        }
        Ok(())
    }

    /// The fused ReLU gives what a ReLU after the normalisation gives, bit
    /// for bit, in the output, the statistics and every gradient.
    #[test]
    fn the_fused_relu_matches_relu_after_batch_norm() -> Result<()> {
        for dtype in [DType::F64, DType::F32] {
            let dims = (3, 4, 5, 3);
            let x = Var::from_tensor(&(distinct_values(dims)? * 3.0)?.to_dtype(dtype)?)?;
            let (w, b) = parameters(dims.1)?;
            let (w, b) = (
                Var::from_tensor(&w.to_dtype(dtype)?)?,
                Var::from_tensor(&b.to_dtype(dtype)?)?,
            );
            let (fused, fused_stats) = batch_norm_train_relu(&x, &w, &b, 1e-5)?;
            let (normalised, stats) = batch_norm_train(&x, &w, &b, 1e-5)?;
            let composed = crate::relu(&normalised)?;
            let flat = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>();
            assert_eq!(flat(&fused)?, flat(&composed)?, "{dtype:?}");
            assert_eq!(fused_stats.to_host()?, stats.to_host()?);
            assert_eq!(fused_stats.count, stats.count);
            let clipped = flat(&fused)?.iter().filter(|&&v| v == 0.0).count();
            assert!(clipped > 20, "{dtype:?}: only {clipped} values clipped");
            let probe = probe_like(fused.shape())?.to_dtype(dtype)?;
            let fused = (fused * &probe)?.sum_all()?.backward()?;
            let composed = (composed * &probe)?.sum_all()?.backward()?;
            for var in [&x, &w, &b] {
                let (a, c) = (fused.get(var).expect("fused"), composed.get(var).expect("composed"));
                assert_eq!(flat(a)?, flat(c)?, "{dtype:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn the_fused_scale_and_shift_gives_candles_bits() -> Result<()> {
        let x = distinct_values((2, 3, 4, 5))?.to_dtype(DType::F32)?;
        let scale = Tensor::new(&[0.5f32, -2.0, 3.1], &Device::Cpu)?;
        let shift = Tensor::new(&[0.1f32, 0.0, -1.7], &Device::Cpu)?;
        let fused = scale_shift(&x, &scale, &shift)?;
        let tracked = scale_shift(&x, Var::from_tensor(&scale)?.as_tensor(), &shift)?;
        let ours = fused.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(ours, tracked.flatten_all()?.to_vec1::<f32>()?);
        assert!(scale_shift(&x, &scale.narrow(0, 0, 2)?, &shift).is_err());
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let x = (distinct_values((3, 2, 2, 3))? * 2.0)?;
        let (w, b) = parameters(2)?;
        check_gradient(|x| Ok(batch_norm_train(x, &w, &b, 1e-5)?.0), &x, 1e-5)?;
        check_gradient(|w| Ok(batch_norm_train(&x, w, &b, 1e-5)?.0), &w, 1e-6)?;
        check_gradient(|b| Ok(batch_norm_train(&x, &w, b, 1e-5)?.0), &b, 1e-6)?;
        Ok(())
    }

    #[test]
    fn f32_agrees_with_f64_and_bad_inputs_are_refused() -> Result<()> {
        let x = distinct_values((4, 3, 5, 5))?;
        let (w, b) = parameters(3)?;
        let (y64, _) = batch_norm_train(&x, &w, &b, 1e-5)?;
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        let (y32, _) = batch_norm_train(&f32(&x)?, &f32(&w)?, &f32(&b)?, 1e-5)?;
        let difference = (y32.to_dtype(DType::F64)? - y64)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(difference < 1e-5, "{difference}");
        let error = batch_norm_train(&x, &distinct_values(2)?, &b, 1e-5).expect_err("wrong channels");
        assert!(error.to_string().contains("3 channels"), "{error}");
        let error = batch_norm_train(&distinct_values((1, 3, 1, 1))?, &w, &b, 1e-5).expect_err("one value");
        assert!(error.to_string().contains("more than one value"), "{error}");
        Ok(())
    }
}
