//! The 2-D convolution layer both encoders use.
//!
//! One type for every convolution keeps the tensor names (`weight`, `bias`)
//! and the initialisation in one place; it runs caf-kernels' GEMM convolution
//! (candle's own on other devices).

use caf_kernels::{
    conv2d, conv2d_add_relu, conv2d_relu, conv2d_relu_max_pool2d, Conv2dParams, ConvWeight, FrozenConv, FrozenWeight,
    MaxPool2dConfig, Precision,
};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// How a convolution's weights start before any pretrained weights are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvInit {
    /// PyTorch's default for `nn.Conv2d`: uniform in ±1/√fan_in (torchvision's AlexNet).
    TorchDefault,
    /// Kaiming normal over fan-out for ReLU (torchvision's ResNet).
    KaimingFanOut,
}

/// Geometry of a square convolution, as `nn.Conv2d(in, out, kernel, stride, padding)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
}

/// A 2-D convolution with torchvision tensor names.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Weight,
    bias: Option<Tensor>,
    spec: ConvSpec,
}

/// A layer's weight: the tensor its `VarBuilder` gave (a variable while
/// training), or a frozen copy for inference ([`Conv2d::freeze`]).
#[derive(Debug, Clone)]
enum Weight {
    Live(Tensor),
    Frozen(FrozenWeight),
}

impl Conv2d {
    /// Creates (or fetches, when `vb` is backed by weights) `weight` and `bias` under `vb`.
    pub fn new(spec: ConvSpec, init: ConvInit, vb: VarBuilder) -> Result<Self> {
        let fan_in = spec.in_channels * spec.kernel * spec.kernel;
        let fan_out = spec.out_channels * spec.kernel * spec.kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight_init = match init {
            ConvInit::TorchDefault => Init::Uniform { lo: -bound, up: bound },
            ConvInit::KaimingFanOut => Init::Randn {
                mean: 0.0,
                stdev: (2.0 / fan_out as f64).sqrt(),
            },
        };
        let shape = (spec.out_channels, spec.in_channels, spec.kernel, spec.kernel);
        let weight = vb.get_with_hints(shape, "weight", weight_init)?;
        let bias = if spec.bias {
            Some(vb.get_with_hints(spec.out_channels, "bias", Init::Uniform { lo: -bound, up: bound })?)
        } else {
            None
        };
        Ok(Self {
            weight: Weight::Live(weight),
            bias,
            spec,
        })
    }

    pub fn spec(&self) -> ConvSpec {
        self.spec
    }

    /// This layer for inference only: its weight copied into a
    /// [`FrozenWeight`], so that the transforms the kernels derive from it
    /// are made once instead of on every call. Training the original layer
    /// afterwards does not change the frozen one. Its products run in
    /// `precision`.
    pub fn freeze(&self, precision: Precision) -> Result<Self> {
        let weight = match &self.weight {
            Weight::Frozen(frozen) if frozen.precision() == precision => frozen.clone(),
            Weight::Frozen(frozen) => FrozenWeight::with_precision(frozen.tensor(), precision)?,
            Weight::Live(tensor) => FrozenWeight::with_precision(tensor, precision)?,
        };
        Ok(Self {
            weight: Weight::Frozen(weight),
            bias: self.bias.as_ref().map(crate::private_copy).transpose()?,
            spec: self.spec,
        })
    }

    /// This layer followed by `y·scale + shift` per output channel (an
    /// evaluation-mode batch norm), frozen as one convolution: the weight of
    /// output channel `o` times `scale[o]`, the bias `bias·scale + shift`.
    pub fn freeze_with_affine(&self, scale: &Tensor, shift: &Tensor, precision: Precision) -> Result<Self> {
        let scale = scale.detach();
        let weight = self
            .weight()
            .tensor()
            .broadcast_mul(&scale.reshape((self.spec.out_channels, 1, 1, 1))?)?;
        let bias = match &self.bias {
            Some(bias) => ((bias.detach() * &scale)? + shift.detach())?,
            None => crate::private_copy(shift)?,
        };
        Ok(Self {
            weight: Weight::Frozen(FrozenWeight::with_precision(&weight, precision)?),
            bias: Some(bias),
            spec: ConvSpec {
                bias: true,
                ..self.spec
            },
        })
    }

    fn weight(&self) -> ConvWeight<'_> {
        match &self.weight {
            Weight::Live(tensor) => ConvWeight::Live(tensor),
            Weight::Frozen(frozen) => ConvWeight::Frozen(frozen),
        }
    }
}

impl Conv2d {
    fn params(&self) -> Conv2dParams {
        Conv2dParams {
            stride: self.spec.stride,
            padding: self.spec.padding,
        }
    }

    /// `relu(self.forward(x))` as one operation ([`caf_kernels::conv2d_relu`]).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        conv2d_relu(x, self.weight(), self.bias.as_ref(), self.params())
    }

    /// `max_pool2d(relu(self.forward(x)), pool)` as one operation where no
    /// gradient is asked for ([`caf_kernels::conv2d_relu_max_pool2d`]).
    pub fn forward_relu_max_pool(&self, x: &Tensor, pool: MaxPool2dConfig) -> Result<Tensor> {
        conv2d_relu_max_pool2d(x, self.weight(), self.bias.as_ref(), self.params(), pool)
    }

    /// `relu(self.forward(x) + residual)` as one operation
    /// ([`caf_kernels::conv2d_add_relu`]): a residual block's last
    /// convolution, its shortcut and the ReLU after the sum.
    pub fn forward_add_relu(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        conv2d_add_relu(x, self.weight(), self.bias.as_ref(), self.params(), residual)
    }

    /// This convolution's frozen weight, bias and stride and padding, for
    /// the kernels that run several frozen layers as one operation; `None`
    /// while its weight is live.
    pub(crate) fn frozen(&self) -> Option<FrozenConv<'_>> {
        match &self.weight {
            Weight::Frozen(weight) => Some((weight, self.bias.as_ref(), self.params())),
            Weight::Live(_) => None,
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, self.weight(), self.bias.as_ref(), self.params())
    }
}
