//! torchvision's AlexNet `features` followed by its 6×6 adaptive average pool.

use caf_kernels::Precision;
use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::conv::{Conv2d, ConvInit, ConvSpec};
use crate::pool::{adaptive_avg_pool2d, MaxPool2dConfig};

/// Output width of the AlexNet encoder: 256 channels × 6 × 6.
pub const ALEXNET_FEATURES: usize = 256 * 6 * 6;

const POOL: MaxPool2dConfig = MaxPool2dConfig {
    kernel: 3,
    stride: 2,
    padding: 0,
    ceil_mode: false,
};

/// `(index in features, in, out, kernel, stride, padding)` of the five
/// convolutions, each followed by ReLU; max pools follow indices 0, 3 and 10.
const CONVS: [(usize, usize, usize, usize, usize, usize); 5] = [
    (0, 3, 64, 11, 4, 2),
    (3, 64, 192, 5, 1, 2),
    (6, 192, 384, 3, 1, 1),
    (8, 384, 256, 3, 1, 1),
    (10, 256, 256, 3, 1, 1),
];
const POOL_AFTER: [usize; 3] = [0, 3, 10];

/// Side of the last feature map for a square input of side `input`, or
/// `None` when some window does not fit (the input is too small).
pub(crate) fn feature_side(input: usize) -> Option<usize> {
    let mut side = input;
    for &(index, _, _, kernel, stride, padding) in &CONVS {
        side = caf_kernels::window_output(side, kernel, stride, padding)?;
        if POOL_AFTER.contains(&index) {
            side = POOL.output_len(side).ok()?;
        }
    }
    Some(side)
}

/// AlexNet encoder: `B×3×H×W → B×9216`. Tensor names `features.{0,3,6,8,10}.{weight,bias}`.
#[derive(Debug, Clone)]
pub struct AlexNetEncoder {
    convs: Vec<(usize, Conv2d)>,
}

impl AlexNetEncoder {
    /// Builds the encoder under `vb` (pass the path that holds `features`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let features = vb.pp("features");
        let convs = CONVS
            .iter()
            .map(|&(index, in_channels, out_channels, kernel, stride, padding)| {
                let spec = ConvSpec {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    bias: true,
                };
                Ok((
                    index,
                    Conv2d::new(spec, ConvInit::TorchDefault, features.pp(index.to_string()))?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self { convs })
    }

    /// This encoder for inference ([`Conv2d::freeze`]), the products in `precision`.
    pub fn freeze(&self, precision: Precision) -> Result<Self> {
        let convs = self
            .convs
            .iter()
            .map(|(index, conv)| Ok((*index, conv.freeze(precision)?)))
            .collect::<Result<_>>()?;
        Ok(Self { convs })
    }
}

impl ModuleT for AlexNetEncoder {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (index, conv) in &self.convs {
            x = if POOL_AFTER.contains(index) {
                conv.forward_relu_max_pool(&x, POOL)?
            } else {
                conv.forward_relu(&x)?
            };
        }
        adaptive_avg_pool2d(&x, (6, 6))?.flatten_from(1)
    }
}
