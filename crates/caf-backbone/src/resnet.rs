//! torchvision's ResNet-18 through `layer4`, followed by global average pooling.

use caf_kernels::add_relu;
use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::conv::{Conv2d, ConvInit, ConvSpec};
use crate::norm::BatchNorm2d;
use crate::pool::{global_avg_pool, max_pool2d, MaxPool2dConfig};

/// Output width of the ResNet-18 encoder.
pub const RESNET18_FEATURES: usize = 512;

fn conv(in_channels: usize, out_channels: usize, kernel: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let spec = ConvSpec {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding: kernel / 2,
        bias: false,
    };
    Conv2d::new(spec, ConvInit::KaimingFanOut, vb)
}

fn bn(channels: usize, vb: VarBuilder) -> Result<BatchNorm2d> {
    BatchNorm2d::new(channels, vb)
}

/// torchvision's `BasicBlock`: two 3×3 convolutions and a shortcut.
#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    fn new(in_channels: usize, out_channels: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let downsample = if stride != 1 || in_channels != out_channels {
            let ds = vb.pp("downsample");
            Some((
                conv(in_channels, out_channels, 1, stride, ds.pp("0"))?,
                bn(out_channels, ds.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: conv(in_channels, out_channels, 3, stride, vb.pp("conv1"))?,
            bn1: bn(out_channels, vb.pp("bn1"))?,
            conv2: conv(out_channels, out_channels, 3, 1, vb.pp("conv2"))?,
            bn2: bn(out_channels, vb.pp("bn2"))?,
            downsample,
        })
    }

    fn freeze(&self) -> Result<Self> {
        Ok(Self {
            conv1: self.conv1.freeze()?,
            bn1: self.bn1.freeze()?,
            conv2: self.conv2.freeze()?,
            bn2: self.bn2.freeze()?,
            downsample: match &self.downsample {
                Some((conv, bn)) => Some((conv.freeze()?, bn.freeze()?)),
                None => None,
            },
        })
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        let y = self.bn2.forward_t(&self.conv2.forward(&y)?, train)?;
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward_t(&conv.forward(x)?, train)?,
            None => x.clone(),
        };
        add_relu(&y, &shortcut)
    }
}

/// ResNet-18 encoder: `B×3×H×W → B×512`. Tensor names follow torchvision
/// (`conv1`, `bn1`, `layer1.0.conv1`, …, `layer4.1.bn2`, `layerN.0.downsample.{0,1}`).
#[derive(Debug, Clone)]
pub struct ResNet18Encoder {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    blocks: Vec<BasicBlock>,
}

impl ResNet18Encoder {
    /// Builds the encoder under `vb` (the path that holds `conv1`, `layer1`, …).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let mut blocks = Vec::with_capacity(8);
        let mut in_channels = 64;
        for (layer, out_channels) in [64, 128, 256, 512].into_iter().enumerate() {
            let layer_vb = vb.pp(format!("layer{}", layer + 1));
            let stride = if layer == 0 { 1 } else { 2 };
            blocks.push(BasicBlock::new(in_channels, out_channels, stride, layer_vb.pp("0"))?);
            blocks.push(BasicBlock::new(out_channels, out_channels, 1, layer_vb.pp("1"))?);
            in_channels = out_channels;
        }
        Ok(Self {
            conv1: conv(3, 64, 7, 2, vb.pp("conv1"))?,
            bn1: bn(64, vb.pp("bn1"))?,
            blocks,
        })
    }

    /// This encoder for inference ([`Conv2d::freeze`], [`BatchNorm2d::freeze`]).
    pub fn freeze(&self) -> Result<Self> {
        Ok(Self {
            conv1: self.conv1.freeze()?,
            bn1: self.bn1.freeze()?,
            blocks: self.blocks.iter().map(BasicBlock::freeze).collect::<Result<_>>()?,
        })
    }
}

impl ModuleT for ResNet18Encoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        let mut x = max_pool2d(
            &x,
            MaxPool2dConfig {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
        )?;
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        global_avg_pool(&x)
    }
}
