//! A residual block's last convolution, its shortcut and the ReLU after the
//! sum as one operation.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};

use super::{conv2d, gradients, kept_and_precision, Conv2dParams, ConvKernel, ConvWeight, Geometry, KeptTransforms};
use crate::cpu::Precision;
use crate::elementwise::{add_relu, Activation};
use crate::storage::{dispatch, runs_on_cpu_kernels};

/// `relu(conv2d(x, weight, bias) + residual)`, `residual` of the output's
/// shape: a residual block's last convolution, its shortcut and the ReLU
/// after the sum, as one operation on the CPU. The bf16 tiles add the bias
/// and the residual and apply the ReLU as they write each block of the
/// output, so the convolution's own output is never written and read back;
/// the other CPU routes add the residual and apply the ReLU in one pass
/// after their products.
///
/// Gradients flow to `x`, `weight` and `residual`. A bias that is part of
/// the graph (one being trained), and every device but the CPU, run
/// [`conv2d`] then [`add_relu`]: the same values, in two operations.
///
/// ```
/// use caf_kernels::{conv2d_add_relu, Conv2dParams};
/// use candle_core::{Device, Tensor};
///
/// let image = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu)?;
/// let kernel = Tensor::new(&[[[[1f32]]], [[[-1.0]]]], &Device::Cpu)?;
/// let shortcut = Tensor::new(&[0.5f32, 0.5, 0.5, 0.5, 2.0, 0.5, 2.0, 0.5], &Device::Cpu)?.reshape((1, 2, 2, 2))?;
/// let params = Conv2dParams { stride: 1, padding: 0 };
/// let y = conv2d_add_relu(&image, &kernel, None, params, &shortcut)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [1.5, 1.5, 1.5, 1.5, 1.0, 0.0, 1.0, 0.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d_add_relu<'a>(
    x: &Tensor,
    weight: impl Into<ConvWeight<'a>>,
    bias: Option<&Tensor>,
    params: Conv2dParams,
    residual: &Tensor,
) -> Result<Tensor> {
    let weight = weight.into();
    if !runs_on_cpu_kernels(x) || bias.is_some_and(Tensor::track_op) {
        return add_relu(&conv2d(x, weight, bias, params)?, residual);
    }
    let (kept, precision) = kept_and_precision(weight);
    let op = Conv2dAddRelu {
        params,
        kept,
        precision,
        bias: bias.map(Tensor::contiguous).transpose()?,
    };
    x.contiguous()?
        .apply_op3(&weight.tensor().contiguous()?, &residual.contiguous()?, op)
}

/// The operation of [`conv2d_add_relu`] (arguments: input, weight,
/// residual; the bias, outside the graph, kept here).
struct Conv2dAddRelu {
    params: Conv2dParams,
    kept: Option<Arc<KeptTransforms>>,
    precision: Precision,
    bias: Option<Tensor>,
}

impl CustomOp3 for Conv2dAddRelu {
    fn name(&self) -> &'static str {
        "caf-conv2d-add-relu"
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
        if l3.shape() != &g.output_shape() {
            candle_core::bail!(
                "conv2d_add_relu: residual {:?} must have the convolution's output shape {:?}",
                l3.dims(),
                g.output_shape().dims()
            )
        }
        let kernel = ConvKernel::Forward {
            g,
            activation: Activation::Relu,
            kept: self.kept.as_deref(),
            residual: true,
            pool: None,
        };
        let operands = [(s1, l1), (s2, l2), (s3, l3)];
        let y = match &self.bias {
            None => dispatch(self.name(), &kernel, &operands)?,
            Some(bias) => {
                super::check_bias(bias.layout(), &g)?;
                let (storage, layout) = bias.storage_and_layout();
                let Storage::Cpu(bias_storage) = &*storage else {
                    candle_core::bail!(
                        "conv2d_add_relu: the bias is on {:?}, the input on the CPU; move them to one device",
                        bias.device()
                    )
                };
                let [x, weight, residual] = operands;
                dispatch(self.name(), &kernel, &[x, weight, residual, (bias_storage, layout)])?
            }
        };
        Ok((y, g.output_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        residual: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), weight.dims(), self.params)?.in_precision(self.precision);
        let dy = Activation::Relu.input_gradient(y, dy)?;
        let (dx, dw) = gradients(g, x, weight, &dy)?;
        Ok((dx, dw, residual.track_op().then_some(dy)))
    }
}
