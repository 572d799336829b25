//! torchvision's ResNet-18 through `layer4`, followed by global average pooling.

use caf_kernels::{add_relu, residual_blocks, Precision, ResidualBlock};
use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::conv::{Conv2d, ConvInit, ConvSpec};
use crate::norm::BatchNorm2d;
use crate::pool::{global_avg_pool, max_pool2d, MaxPool2dConfig};

/// Output width of the ResNet-18 encoder.
pub const RESNET18_FEATURES: usize = 512;

/// Blocks in each of the four stages (`layer1`–`layer4`).
const BLOCKS_PER_STAGE: usize = 2;

/// The max pool after the stem convolution.
const STEM_POOL: MaxPool2dConfig = MaxPool2dConfig {
    kernel: 3,
    stride: 2,
    padding: 1,
    ceil_mode: false,
};

/// Side of the last feature map for a square input of side `input`, or
/// `None` when some window does not fit: the 7×7/2 stem, its pool, then the
/// first convolution of layers 2–4 (3×3/2; the downsampling 1×1/2 gives the
/// same side).
pub(crate) fn feature_side(input: usize) -> Option<usize> {
    use caf_kernels::window_output;
    let mut side = STEM_POOL.output_len(window_output(input, 7, 2, 3)?).ok()?;
    for _ in 0..3 {
        side = window_output(side, 3, 2, 1)?;
    }
    Some(side)
}

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

/// A convolution and the batch norm after it. Frozen for inference, the
/// norm's evaluation-mode `x·scale + shift` is folded into the convolution's
/// weight and bias: one pass over the activations instead of two.
#[derive(Debug, Clone)]
enum ConvBn {
    Separate(Conv2d, BatchNorm2d),
    Folded(Conv2d),
}

impl ConvBn {
    fn new(conv: Conv2d, bn: BatchNorm2d) -> Self {
        ConvBn::Separate(conv, bn)
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ConvBn::Separate(conv, bn) => bn.forward_t(&conv.forward(x)?, train),
            ConvBn::Folded(conv) => conv.forward(Self::evaluating(x, train)?),
        }
    }

    fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ConvBn::Separate(conv, bn) => bn.forward_relu_t(&conv.forward(x)?, train),
            ConvBn::Folded(conv) => conv.forward_relu(Self::evaluating(x, train)?),
        }
    }

    /// `max_pool2d(relu(self.forward_t(x)), pool)`: one operation where
    /// folded.
    fn forward_relu_max_pool_t(&self, x: &Tensor, pool: MaxPool2dConfig, train: bool) -> Result<Tensor> {
        match self {
            ConvBn::Separate(..) => max_pool2d(&self.forward_relu_t(x, train)?, pool),
            ConvBn::Folded(conv) => conv.forward_relu_max_pool(Self::evaluating(x, train)?, pool),
        }
    }

    /// `relu(self.forward_t(x) + residual)`: one operation where folded.
    fn forward_add_relu_t(&self, x: &Tensor, residual: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ConvBn::Separate(..) => add_relu(&self.forward_t(x, train)?, residual),
            ConvBn::Folded(conv) => conv.forward_add_relu(Self::evaluating(x, train)?, residual),
        }
    }

    /// The folded convolution, for [`residual_blocks`]; `None` while the
    /// norm is separate.
    fn frozen(&self) -> Option<caf_kernels::FrozenConv<'_>> {
        match self {
            ConvBn::Separate(..) => None,
            ConvBn::Folded(conv) => conv.frozen(),
        }
    }

    /// `x`, unless `train` asks a folded norm for batch statistics it no longer has.
    fn evaluating(x: &Tensor, train: bool) -> Result<&Tensor> {
        if train {
            candle_core::bail!(
                "a frozen ResNet-18 runs in evaluation mode only (its batch norms are folded into the convolutions); \
                 train the network it was frozen from"
            )
        }
        Ok(x)
    }

    fn freeze(&self, precision: Precision) -> Result<Self> {
        Ok(ConvBn::Folded(match self {
            ConvBn::Separate(conv, bn) => {
                let (scale, shift) = bn.folded()?;
                conv.freeze_with_affine(&scale, &shift, precision)?
            }
            ConvBn::Folded(conv) => conv.freeze(precision)?,
        }))
    }
}

/// torchvision's `BasicBlock`: two 3×3 convolutions and a shortcut.
#[derive(Debug, Clone)]
struct BasicBlock {
    first: ConvBn,
    second: ConvBn,
    downsample: Option<ConvBn>,
}

impl BasicBlock {
    fn new(in_channels: usize, out_channels: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let downsample = if stride != 1 || in_channels != out_channels {
            let ds = vb.pp("downsample");
            Some(ConvBn::new(
                conv(in_channels, out_channels, 1, stride, ds.pp("0"))?,
                bn(out_channels, ds.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            first: ConvBn::new(
                conv(in_channels, out_channels, 3, stride, vb.pp("conv1"))?,
                bn(out_channels, vb.pp("bn1"))?,
            ),
            second: ConvBn::new(
                conv(out_channels, out_channels, 3, 1, vb.pp("conv2"))?,
                bn(out_channels, vb.pp("bn2"))?,
            ),
            downsample,
        })
    }

    /// The block for [`residual_blocks`], where every convolution is
    /// folded and frozen.
    fn frozen(&self) -> Option<ResidualBlock<'_>> {
        Some(ResidualBlock {
            first: self.first.frozen()?,
            second: self.second.frozen()?,
            downsample: match &self.downsample {
                Some(downsample) => Some(downsample.frozen()?),
                None => None,
            },
        })
    }

    fn freeze(&self, precision: Precision) -> Result<Self> {
        Ok(Self {
            first: self.first.freeze(precision)?,
            second: self.second.freeze(precision)?,
            downsample: self.downsample.as_ref().map(|d| d.freeze(precision)).transpose()?,
        })
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(block) = self.frozen() {
            return residual_blocks(ConvBn::evaluating(x, train)?, &[block]);
        }
        let shortcut = match &self.downsample {
            Some(downsample) => downsample.forward_t(x, train)?,
            None => x.clone(),
        };
        let y = self.first.forward_relu_t(x, train)?;
        self.second.forward_add_relu_t(&y, &shortcut, train)
    }
}

/// ResNet-18 encoder: `B×3×H×W → B×512`. Tensor names follow torchvision
/// (`conv1`, `bn1`, `layer1.0.conv1`, …, `layer4.1.bn2`, `layerN.0.downsample.{0,1}`).
#[derive(Debug, Clone)]
pub struct ResNet18Encoder {
    stem: ConvBn,
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
            for block in 1..BLOCKS_PER_STAGE {
                blocks.push(BasicBlock::new(
                    out_channels,
                    out_channels,
                    1,
                    layer_vb.pp(block.to_string()),
                )?);
            }
            in_channels = out_channels;
        }
        Ok(Self {
            stem: ConvBn::new(conv(3, 64, 7, 2, vb.pp("conv1"))?, bn(64, vb.pp("bn1"))?),
            blocks,
        })
    }

    /// This encoder for inference (evaluation mode only): every batch norm
    /// folded into the convolution before it ([`Conv2d::freeze_with_affine`]),
    /// the products in `precision`.
    pub fn freeze(&self, precision: Precision) -> Result<Self> {
        Ok(Self {
            stem: self.stem.freeze(precision)?,
            blocks: self
                .blocks
                .iter()
                .map(|block| block.freeze(precision))
                .collect::<Result<_>>()?,
        })
    }
}

impl ModuleT for ResNet18Encoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward_relu_max_pool_t(x, STEM_POOL, train)?;
        for stage in self.blocks.chunks(BLOCKS_PER_STAGE) {
            // Frozen, each stage as one operation: its images stay in
            // bf16 from block to block (`residual_blocks`).
            let frozen: Option<Vec<ResidualBlock>> = stage.iter().map(BasicBlock::frozen).collect();
            x = match frozen {
                Some(blocks) => residual_blocks(ConvBn::evaluating(&x, train)?, &blocks)?,
                None => stage.iter().try_fold(x, |x, block| block.forward_t(&x, train))?,
            };
        }
        global_avg_pool(&x)
    }
}
