//! ReLU in one parallel pass each way, and a residual sum with its ReLU in one.
//!
//! candle's CPU ReLU runs on one thread and its gradient takes four passes
//! (compare, cast, multiply, accumulate); here the forward and the backward
//! are each one pass over all cores. The gradient passes where the output is
//! positive, as PyTorch's does. `add_relu` is a residual block's
//! `relu(y + shortcut)`: one pass instead of candle's sum (on its own thread
//! pool, beside rayon's) and a second pass for the ReLU. On CUDA (f32) each
//! is one kernel of `cuda/kernels.cu`.

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::gemm::Element;
use crate::storage::{dispatch, own_kernels_run_on, runs_on_own_kernels, Kernel};

/// Elements per parallel task: large enough to amortise scheduling.
const CHUNK: usize = 1 << 15;

/// `max(x, 0)`; candle's `relu` on devices and dtypes the crate's kernels
/// do not cover (f32/f64 on the CPU, f32 on CUDA).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if runs_on_own_kernels(x) {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.relu()
    }
}

/// `max(a + b, 0)` for `a` and `b` of one shape; candle's ops elsewhere.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if own_kernels_run_on(&[a, b]) {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    } else {
        (a + b)?.relu()
    }
}

/// `activation(y + bias)` with `bias` (`C`) per channel of `y` (`B×C×H×W`):
/// one CUDA kernel forward and the activation's gradient plus a channel sum
/// backward for f32 on CUDA; candle's broadcast add (and ReLU) elsewhere.
pub(crate) fn add_bias_activation(y: &Tensor, bias: Option<&Tensor>, activation: Activation) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if crate::cuda::runs_on_cuda_kernels(y) {
        if let Some(bias) = bias.filter(|b| crate::cuda::runs_on_cuda_kernels(b)) {
            return y
                .contiguous()?
                .apply_op2(&bias.contiguous()?, BiasActivation(activation));
        }
    }
    let y = match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, (), 1, 1))?)?,
        None => y.clone(),
    };
    match activation {
        Activation::Identity => Ok(y),
        Activation::Relu => relu(&y),
    }
}

/// The CUDA pass of [`add_bias_activation`] (arguments: y, bias).
#[cfg(feature = "cuda")]
struct BiasActivation(Activation);

#[cfg(feature = "cuda")]
impl CustomOp2 for BiasActivation {
    fn name(&self) -> &'static str {
        "caf-bias-activation"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "{}: a CUDA operation (the CPU convolution adds its bias itself)",
            self.name()
        )
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let &[_, channels, h, w] = l1.dims() else {
            candle_core::bail!("{}: expects a B×C×H×W map, got {:?}", self.name(), l1.dims())
        };
        if l2.dims() != [channels] {
            candle_core::bail!("{}: {channels} channels, but a bias of {:?}", self.name(), l2.dims())
        }
        let device = s1.device();
        let (x, bias) = (
            crate::cuda::f32_view(s1, l1, self.name())?,
            crate::cuda::f32_view(s2, l2, self.name())?,
        );
        let y = crate::cuda::bias_act(device, &x, &bias, h * w, self.0 == Activation::Relu)?;
        Ok((crate::cuda::storage(y, device), l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _bias: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = self.0.input_gradient(y, dy)?;
        let bias_gradient = dy.sum((0, 2, 3))?;
        Ok((Some(dy), Some(bias_gradient)))
    }
}

/// What an operation applies to its output before handing it on, so that
/// a following ReLU needs no tensor (and no gradient in candle's backward
/// pass) of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    Identity,
    Relu,
}

impl Activation {
    /// The activation of one value (a NaN becomes 0 under ReLU, as in [`relu`]).
    #[inline(always)]
    pub(crate) fn apply<T: Element>(self, value: T) -> T {
        match self {
            Activation::Identity => value,
            Activation::Relu => relu_value(value),
        }
    }

    /// Applies the activation to `values` in place (a NaN becomes 0 under ReLU, as in [`relu`]).
    pub(crate) fn apply_in_place<T: Element>(self, values: &mut [T]) {
        if self == Activation::Relu {
            values.par_chunks_mut(CHUNK).for_each(|chunk| {
                for v in chunk {
                    *v = relu_value(*v);
                }
            });
        }
    }

    /// [`Self::apply_in_place`], `residual` (of `values`' length) added
    /// first where given, in the same pass.
    pub(crate) fn apply_in_place_after<T: Element>(self, values: &mut [T], residual: Option<&[T]>) {
        let Some(residual) = residual else {
            return self.apply_in_place(values);
        };
        assert_eq!(values.len(), residual.len(), "residual length");
        values
            .par_chunks_mut(CHUNK)
            .zip(residual.par_chunks(CHUNK))
            .for_each(|(chunk, residual)| {
                for (v, &r) in chunk.iter_mut().zip(residual) {
                    *v += r;
                    if self == Activation::Relu {
                        *v = relu_value(*v);
                    }
                }
            });
    }

    /// The gradient before the activation, from its output `y` and the gradient `dy` after it.
    pub(crate) fn input_gradient(self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Identity => dy.contiguous(),
            Activation::Relu => relu_gradient(dy, y),
        }
    }
}

/// `max(x, 0)`, with a NaN mapped to 0.
#[inline(always)]
pub(crate) fn relu_value<T: Element>(x: T) -> T {
    if x > T::ZERO {
        x
    } else {
        T::ZERO
    }
}

/// `dy` where `y`, a ReLU's output, is positive, else 0.
fn relu_gradient(dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    dy.contiguous()?.apply_op2_no_bwd(y, &ReluGradient)
}

// Indexed parallel collects write straight into the new buffer (no zeroing pass).
fn map<T: Element>(input: &[T], f: impl Fn(T) -> T + Sync + Send) -> Vec<T> {
    input.par_iter().with_min_len(CHUNK).map(|&x| f(x)).collect()
}

fn zip_map<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync + Send) -> Vec<T> {
    a.par_iter()
        .zip(b.par_iter())
        .with_min_len(CHUNK)
        .map(|(&a, &b)| f(a, b))
        .collect()
}

struct Relu;

/// The two passes, as one kernel type for [`dispatch`].
enum ReluKernel {
    /// Operands: x.
    Forward,
    /// Operands: dy, y.
    Gradient,
    /// Operands: a, b.
    AddForward,
}

impl Kernel for ReluKernel {
    fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T> {
        match self {
            ReluKernel::Forward => map(operands[0], relu_value),
            ReluKernel::Gradient => zip_map(operands[0], operands[1], |dy, y| if y > T::ZERO { dy } else { T::ZERO }),
            ReluKernel::AddForward => zip_map(operands[0], operands[1], |a, b| relu_value(a + b)),
        }
    }
}

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "caf-relu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = dispatch(self.name(), &ReluKernel::Forward, &[(storage, layout)])?;
        Ok((y, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let y = crate::cuda::map_elements(self.name(), crate::kernel_signatures::RELU, &[(storage, layout)])?;
        Ok((y, layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(relu_gradient(dy, y)?))
    }
}

/// One element-wise pass over two operands of the same shape.
fn same_shape_pass(
    name: &str,
    kernel: ReluKernel,
    a: (&CpuStorage, &Layout),
    b: (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    if a.1.shape() != b.1.shape() {
        candle_core::bail!("{name}: shapes {:?} and {:?} differ", a.1.dims(), b.1.dims())
    }
    Ok((dispatch(name, &kernel, &[a, b])?, a.1.shape().clone()))
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "caf-add-relu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        same_shape_pass(self.name(), ReluKernel::AddForward, (s1, l1), (s2, l2))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let y = crate::cuda::map_elements(self.name(), crate::kernel_signatures::ADD_RELU, &[(s1, l1), (s2, l2)])?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(&self, _a: &Tensor, _b: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gradient = relu_gradient(dy, y)?;
        Ok((Some(gradient.clone()), Some(gradient)))
    }
}

/// `dy` where the ReLU's output is positive, else 0 (arguments: dy, y).
struct ReluGradient;

impl CustomOp2 for ReluGradient {
    fn name(&self) -> &'static str {
        "caf-relu-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        same_shape_pass(self.name(), ReluKernel::Gradient, (s1, l1), (s2, l2))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let dx = crate::cuda::map_elements(self.name(), crate::kernel_signatures::RELU_GRAD, &[(s1, l1), (s2, l2)])?;
        Ok((dx, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caf_testkit::{check_gradient, distinct_values};
    use candle_core::{DType, Device, Var};

    #[test]
    fn relu_and_its_gradient_match_candle_away_from_zero() -> Result<()> {
        let x = Var::from_tensor(&distinct_values((3, 5, 7, 11))?.to_dtype(DType::F32)?)?;
        let ours = relu(&x)?;
        let reference = x.relu()?;
        assert_eq!(
            ours.flatten_all()?.to_vec1::<f32>()?,
            reference.flatten_all()?.to_vec1::<f32>()?
        );
        let weights = (distinct_values((3, 5, 7, 11))? + 2.0)?.to_dtype(DType::F32)?;
        let ours = (ours * &weights)?.sum_all()?.backward()?;
        let reference = (reference * &weights)?.sum_all()?.backward()?;
        assert_eq!(
            ours.get(&x).expect("ours").flatten_all()?.to_vec1::<f32>()?,
            reference.get(&x).expect("candle's").flatten_all()?.to_vec1::<f32>()?
        );
        check_gradient(relu, &distinct_values((2, 3, 4))?, 1e-6)?;
        Ok(())
    }

    #[test]
    fn add_relu_and_its_gradients_match_candles_sum_and_relu() -> Result<()> {
        let a = Var::from_tensor(&distinct_values((2, 3, 5, 7))?.to_dtype(DType::F32)?)?;
        let b = Var::from_tensor(&(distinct_values((2, 3, 5, 7))? * -0.6)?.to_dtype(DType::F32)?)?;
        let ours = add_relu(&a, &b)?;
        let reference = (a.as_tensor() + b.as_tensor())?.relu()?;
        assert_eq!(
            ours.flatten_all()?.to_vec1::<f32>()?,
            reference.flatten_all()?.to_vec1::<f32>()?
        );
        let weights = (distinct_values((2, 3, 5, 7))? + 2.0)?.to_dtype(DType::F32)?;
        let ours = (ours * &weights)?.sum_all()?.backward()?;
        let reference = (reference * &weights)?.sum_all()?.backward()?;
        for var in [&a, &b] {
            assert_eq!(
                ours.get(var).expect("ours").flatten_all()?.to_vec1::<f32>()?,
                reference.get(var).expect("candle's").flatten_all()?.to_vec1::<f32>()?
            );
        }
        let shortcut = (distinct_values((2, 3, 4))? * 0.5)?;
        check_gradient(|a| add_relu(a, &shortcut), &distinct_values((2, 3, 4))?, 1e-6)?;
        check_gradient(|b| add_relu(&shortcut, b), &distinct_values((2, 3, 4))?, 1e-6)?;
        let error = add_relu(&a, &distinct_values((2, 3, 5, 6))?.to_dtype(DType::F32)?).expect_err("shapes");
        assert!(error.to_string().contains("differ"), "{error}");
        Ok(())
    }

    #[test]
    fn the_gradient_at_zero_is_zero_as_in_pytorch() -> Result<()> {
        let x = Var::new(&[-1.0f32, 0.0, 2.0], &Device::Cpu)?;
        let grads = relu(&x)?.sum_all()?.backward()?;
        assert_eq!(grads.get(&x).expect("gradient").to_vec1::<f32>()?, [0.0, 0.0, 1.0]);
        Ok(())
    }
}
