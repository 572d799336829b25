//! Parametric ReLU with one slope per channel, in one parallel pass.
//!
//! candle composes it from four element-wise operations (ReLU, minimum,
//! broadcast product, sum), each a pass and an allocation over the whole map;
//! MTCNN's P-Net applies it to every level of an image pyramid.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::gemm::Element;
use crate::storage::{dispatch, runs_on_cpu_kernels, Kernel};

/// `max(x, 0) + slope[c] · min(x, 0)` for `x` of shape `B×C×…` and `slope`
/// of `C` elements; candle's operations on other devices and dtypes.
pub fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let channels = slope.elem_count();
    if x.rank() < 2 || x.dim(1)? != channels || slope.rank() != 1 {
        candle_core::bail!(
            "prelu: input {:?} needs one slope per channel (dimension 1), got slopes {:?}",
            x.dims(),
            slope.dims()
        )
    }
    if runs_on_cpu_kernels(x) && runs_on_cpu_kernels(slope) {
        x.contiguous()?.apply_op2(&slope.contiguous()?, PRelu)
    } else {
        composed(x, slope)
    }
}

fn channel_shape(x: &Tensor) -> Vec<usize> {
    let mut shape = vec![1; x.rank()];
    shape[1] = x.dim(1).unwrap_or(1);
    shape
}

fn composed(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let slope = slope.reshape(channel_shape(x))?;
    x.relu()? + x.minimum(0f64)?.broadcast_mul(&slope)?
}

struct PRelu;

/// Operands: x, slope; each `inner`-long plane of x has one channel.
struct PReluKernel {
    channels: usize,
    inner: usize,
}

impl Kernel for PReluKernel {
    fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T> {
        let (x, slope) = (operands[0], operands[1]);
        // Written straight into the new buffer: no zeroing pass first.
        let mut y: Vec<T> = Vec::with_capacity(x.len());
        y.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(self.inner)
            .zip(x.par_chunks(self.inner))
            .enumerate()
            .for_each(|(plane, (out, input))| {
                let a = slope[plane % self.channels];
                for (o, &v) in out.iter_mut().zip(input) {
                    o.write(if v > T::ZERO { v } else { a * v });
                }
            });
        // SAFETY: the chunks above cover all `x.len()` elements, each written once.
        unsafe { y.set_len(x.len()) };
        y
    }
}

impl CustomOp2 for PRelu {
    fn name(&self) -> &'static str {
        "caf-prelu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l1.dims();
        let kernel = PReluKernel {
            channels: dims[1],
            inner: dims[2..].iter().product::<usize>().max(1),
        };
        Ok((
            dispatch(self.name(), &kernel, &[(s1, l1), (s2, l2)])?,
            l1.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, slope: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let negative = x.minimum(0f64)?;
        let positive = x.gt(0f64)?.to_dtype(x.dtype())?;
        let slope_b = slope.reshape(channel_shape(x))?;
        // d/dx: 1 where x > 0, the slope elsewhere.
        let factor = (positive.broadcast_mul(&(1.0 - &slope_b)?)?.broadcast_add(&slope_b))?;
        let dx = (dy * factor)?;
        // d/dslope: min(x, 0), summed over every dimension but the channel's.
        let mut dslope = (dy * negative)?;
        for dim in (0..x.rank()).rev().filter(|&d| d != 1) {
            dslope = dslope.sum(dim)?;
        }
        Ok((Some(dx), Some(dslope)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caf_testkit::{check_gradient, distinct_values};
    use candle_core::{DType, Device, Var};

    #[test]
    fn matches_the_composition_and_its_gradients() -> Result<()> {
        let x = Var::from_tensor(&distinct_values((2, 3, 4, 5))?.to_dtype(DType::F32)?)?;
        let slope = Var::new(&[0.25f32, -0.5, 2.0], &Device::Cpu)?;
        let ours = prelu(&x, &slope)?;
        let reference = composed(&x, &slope)?;
        assert_eq!(
            ours.flatten_all()?.to_vec1::<f32>()?,
            reference.flatten_all()?.to_vec1::<f32>()?
        );
        let weights = (distinct_values((2, 3, 4, 5))? + 2.0)?.to_dtype(DType::F32)?;
        let ours = (ours * &weights)?.sum_all()?.backward()?;
        let reference = (reference * &weights)?.sum_all()?.backward()?;
        for var in [x.as_tensor(), slope.as_tensor()] {
            let (a, b) = (ours.get(var).expect("ours"), reference.get(var).expect("candle's"));
            let difference = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(difference < 1e-5, "gradient differs by {difference}");
        }
        let slope = Tensor::new(&[0.3f64, -0.7], &Device::Cpu)?;
        check_gradient(|x| prelu(x, &slope), &distinct_values((2, 2, 3))?, 1e-6)?;
        Ok(())
    }

    #[test]
    fn a_slope_per_channel_is_required() {
        let x = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let slope = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let error = prelu(&x, &slope).unwrap_err().to_string();
        assert!(error.contains("one slope per channel"), "{error}");
    }
}
