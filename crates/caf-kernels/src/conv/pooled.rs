//! A convolution, its ReLU and the max pooling after them as one operation,
//! for inference.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::{
    check_bias, conv2d_relu, kept_and_precision, Conv2dParams, ConvKernel, ConvWeight, Geometry, KeptTransforms,
};
use crate::cpu::Precision;
use crate::elementwise::Activation;
use crate::pool::{max_pool2d, MaxPool2dConfig, PoolGeometry};
use crate::storage::{dispatch, runs_on_cpu_kernels};

/// `max_pool2d(conv2d_relu(x, weight, bias), pool)` as one operation on the
/// CPU where no gradient is asked for (the input, the weight and the bias
/// all outside the graph: a frozen network's): the bf16 tiles pool each
/// worker's images from their output in the worker's own buffer, so the
/// convolution's output, four times the pooled one, is never written to
/// memory and read back; the bf16 products on AVX512-BF16 pool their
/// output band by band while it is in cache (`conv/patches.rs`); the other
/// CPU routes pool after their products, f32 ones applying the ReLU to the
/// maxima as they take them (the ReLU commutes with the maximum) instead
/// of in a pass over the larger output.
/// Anywhere else (a gradient asked for, another device) it runs
/// [`conv2d_relu`] then [`max_pool2d`]: the same values.
///
/// ```
/// use caf_kernels::{conv2d_relu_max_pool2d, Conv2dParams, MaxPool2dConfig};
/// use candle_core::{Device, Tensor};
///
/// let image = Tensor::new(&[[[[1f32, -2.0, 3.0], [4.0, -5.0, 6.0], [-7.0, 8.0, -9.0]]]], &Device::Cpu)?;
/// let kernel = Tensor::new(&[[[[1f32]]], [[[-1.0]]]], &Device::Cpu)?;
/// let params = Conv2dParams { stride: 1, padding: 0 };
/// let pool = MaxPool2dConfig { kernel: 2, stride: 1, padding: 0, ceil_mode: false };
/// let y = conv2d_relu_max_pool2d(&image, &kernel, None, params, pool)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [4.0, 6.0, 8.0, 8.0, 5.0, 5.0, 7.0, 9.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d_relu_max_pool2d<'a>(
    x: &Tensor,
    weight: impl Into<ConvWeight<'a>>,
    bias: Option<&Tensor>,
    params: Conv2dParams,
    pool: MaxPool2dConfig,
) -> Result<Tensor> {
    let weight = weight.into();
    let gradient_asked = x.track_op() || weight.tensor().track_op() || bias.is_some_and(Tensor::track_op);
    if gradient_asked || !runs_on_cpu_kernels(x) {
        return max_pool2d(&conv2d_relu(x, weight, bias, params)?, pool);
    }
    let (kept, precision) = kept_and_precision(weight);
    let op = Conv2dReluMaxPool {
        params,
        pool,
        kept,
        precision,
    };
    let (x, weight) = (x.contiguous()?, weight.tensor().contiguous()?);
    match bias {
        None => x.apply_op2_no_bwd(&weight, &op),
        Some(bias) => x.apply_op3_no_bwd(&weight, &bias.contiguous()?, &op),
    }
}

/// The operation of [`conv2d_relu_max_pool2d`] (arguments: input, weight,
/// and the bias if any). It has no backward pass: it runs only where no
/// gradient is asked for.
struct Conv2dReluMaxPool {
    params: Conv2dParams,
    pool: MaxPool2dConfig,
    kept: Option<Arc<KeptTransforms>>,
    precision: Precision,
}

impl Conv2dReluMaxPool {
    fn run(&self, operands: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        let (x, weight) = (operands[0].1, operands[1].1);
        let g = Geometry::new(x.dims(), weight.dims(), self.params)?.in_precision(self.precision);
        if let Some((_, bias)) = operands.get(2) {
            check_bias(bias, &g)?;
        }
        let (_, pool) = PoolGeometry::new(self.pool, &[g.batch, g.out_channels, g.out_h, g.out_w])?;
        let kernel = ConvKernel::Forward {
            g,
            activation: Activation::Relu,
            kept: self.kept.as_deref(),
            residual: false,
            pool: Some(pool),
        };
        let y = dispatch("caf-conv2d-relu-max-pool", &kernel, operands)?;
        Ok((y, Shape::from((g.batch, g.out_channels, pool.out_h, pool.out_w))))
    }
}

impl CustomOp2 for Conv2dReluMaxPool {
    fn name(&self) -> &'static str {
        "caf-conv2d-relu-max-pool"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(&[(s1, l1), (s2, l2)])
    }
}

impl CustomOp3 for Conv2dReluMaxPool {
    fn name(&self) -> &'static str {
        "caf-conv2d-bias-relu-max-pool"
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
        self.run(&[(s1, l1), (s2, l2), (s3, l3)])
    }
}
