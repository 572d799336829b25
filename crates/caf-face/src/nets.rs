//! MTCNN's three networks, layer for layer as facenet-pytorch defines them
//! (and under its tensor names), for inference only.
//!
//! Two details come from the networks' TensorFlow origin and are kept
//! exactly: max pooling rounds its output size up (`ceil_mode=True`), and
//! R-Net and O-Net flatten their last map in W×H×C order. The second is
//! folded into the first dense layer's weight when it is loaded, so the
//! forward pass flattens in candle's C×H×W order.

use std::collections::HashMap;

use caf_kernels::{Conv2dParams, FrozenWeight, MaxPool2dConfig};
use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// The weights of one network, by name, with the file they came from for errors.
pub(crate) struct NamedTensors<'a> {
    pub tensors: &'a HashMap<String, Tensor>,
    pub prefix: &'static str,
    pub source_name: &'a str,
}

impl NamedTensors<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}.{name}", self.prefix);
        let tensor = self.tensors.get(&full).ok_or_else(|| Error::Weights {
            source_name: self.source_name.to_string(),
            message: format!(
                "tensor `{full}` is missing (expected shape {shape:?}); convert facenet-pytorch's \
                 pnet.pt, rnet.pt and onet.pt with `cargo xtask import-mtcnn`"
            ),
        })?;
        if tensor.dims() != shape {
            return Err(Error::Weights {
                source_name: self.source_name.to_string(),
                message: format!("tensor `{full}` has shape {:?}, MTCNN needs {shape:?}", tensor.dims()),
            });
        }
        Ok(tensor.to_dtype(DType::F32)?)
    }

    fn conv(&self, name: &str, in_channels: usize, out_channels: usize, kernel: usize) -> Result<Conv> {
        let weight = self.get(&format!("{name}.weight"), &[out_channels, in_channels, kernel, kernel])?;
        Ok(Conv {
            weight: FrozenWeight::new(&weight)?,
            bias: self.get(&format!("{name}.bias"), &[out_channels])?,
        })
    }

    fn prelu(&self, name: &str, channels: usize) -> Result<PRelu> {
        Ok(PRelu {
            slope: self.get(&format!("{name}.weight"), &[channels])?,
        })
    }

    fn dense(&self, name: &str, inputs: usize, outputs: usize) -> Result<Dense> {
        Ok(Dense {
            weight_t: self
                .get(&format!("{name}.weight"), &[outputs, inputs])?
                .t()?
                .contiguous()?,
            bias: self.get(&format!("{name}.bias"), &[outputs])?,
        })
    }

    /// A dense layer after a `channels×side×side` map that the original
    /// flattens in W×H×C order: its weight columns reordered to C×H×W.
    fn dense_after_map(&self, name: &str, channels: usize, side: usize, outputs: usize) -> Result<Dense> {
        let inputs = channels * side * side;
        let dense = self.dense(name, inputs, outputs)?;
        let weight_t = dense
            .weight_t
            .reshape((side, side, channels, outputs))? // rows in (w, h, c) order
            .permute((2, 1, 0, 3))? // → (c, h, w)
            .reshape((inputs, outputs))?
            .contiguous()?;
        Ok(Dense {
            weight_t,
            bias: dense.bias,
        })
    }
}

struct Conv {
    weight: FrozenWeight,
    bias: Tensor,
}

impl Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let params = Conv2dParams { stride: 1, padding: 0 };
        Ok(caf_kernels::conv2d(x, &self.weight, Some(&self.bias), params)?)
    }
}

/// Parametric ReLU with one slope per channel (dimension 1).
struct PRelu {
    slope: Tensor,
}

impl PRelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(caf_kernels::prelu(x, &self.slope)?)
    }
}

struct Dense {
    weight_t: Tensor,
    bias: Tensor,
}

impl Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight_t)?.broadcast_add(&self.bias)?)
    }
}

/// Max pooling whose output size rounds up (`ceil_mode=True`).
fn max_pool_ceil(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    let config = MaxPool2dConfig {
        kernel,
        stride,
        padding: 0,
        ceil_mode: true,
    };
    Ok(caf_kernels::max_pool2d(x, config)?)
}

/// Probability of "face" from the two-way softmax's logits along `dim`:
/// softmax(a)₁ = σ(a₁ − a₀).
fn face_probability(logits: &Tensor, dim: usize) -> Result<Tensor> {
    let background = logits.narrow(dim, 0, 1)?;
    let face = logits.narrow(dim, 1, 1)?;
    Ok(sigmoid(&(face - background)?)?.squeeze(dim)?)
}

fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// The proposal network: fully convolutional, run on every pyramid level.
pub(crate) struct PNet {
    conv1: Conv,
    prelu1: PRelu,
    conv2: Conv,
    prelu2: PRelu,
    conv3: Conv,
    prelu3: PRelu,
    conv4_1: Conv,
    conv4_2: Conv,
}

/// P-Net's answer for one image: per output cell, the face probability
/// (`H'×W'`) and the box regression (`4×H'×W'`).
pub(crate) struct ProposalMaps {
    pub probability: Tensor,
    pub regression: Tensor,
}

impl PNet {
    pub fn load(w: &NamedTensors) -> Result<Self> {
        Ok(Self {
            conv1: w.conv("conv1", 3, 10, 3)?,
            prelu1: w.prelu("prelu1", 10)?,
            conv2: w.conv("conv2", 10, 16, 3)?,
            prelu2: w.prelu("prelu2", 16)?,
            conv3: w.conv("conv3", 16, 32, 3)?,
            prelu3: w.prelu("prelu3", 32)?,
            conv4_1: w.conv("conv4_1", 32, 2, 1)?,
            conv4_2: w.conv("conv4_2", 32, 4, 1)?,
        })
    }

    /// `x`: one normalised image, `1×3×H×W` with H, W ≥ 12.
    pub fn forward(&self, x: &Tensor) -> Result<ProposalMaps> {
        let x = self.prelu1.forward(&self.conv1.forward(x)?)?;
        let x = max_pool_ceil(&x, 2, 2)?;
        let x = self.prelu2.forward(&self.conv2.forward(&x)?)?;
        let x = self.prelu3.forward(&self.conv3.forward(&x)?)?;
        let probability = face_probability(&self.conv4_1.forward(&x)?, 1)?.squeeze(0)?;
        let regression = self.conv4_2.forward(&x)?.squeeze(0)?;
        Ok(ProposalMaps {
            probability,
            regression,
        })
    }
}

/// The refinement network, on 24×24 crops.
pub(crate) struct RNet {
    conv1: Conv,
    prelu1: PRelu,
    conv2: Conv,
    prelu2: PRelu,
    conv3: Conv,
    prelu3: PRelu,
    dense4: Dense,
    prelu4: PRelu,
    dense5_1: Dense,
    dense5_2: Dense,
}

/// R-Net's or O-Net's answer for a batch of crops: face probability (`N`),
/// box regression (`N×4`) and, from O-Net, the landmarks (`N×10`, five x
/// then five y, relative to the box).
pub(crate) struct CropScores {
    pub probability: Tensor,
    pub regression: Tensor,
    pub landmarks: Option<Tensor>,
}

impl RNet {
    pub fn load(w: &NamedTensors) -> Result<Self> {
        Ok(Self {
            conv1: w.conv("conv1", 3, 28, 3)?,
            prelu1: w.prelu("prelu1", 28)?,
            conv2: w.conv("conv2", 28, 48, 3)?,
            prelu2: w.prelu("prelu2", 48)?,
            conv3: w.conv("conv3", 48, 64, 2)?,
            prelu3: w.prelu("prelu3", 64)?,
            dense4: w.dense_after_map("dense4", 64, 3, 128)?,
            prelu4: w.prelu("prelu4", 128)?,
            dense5_1: w.dense("dense5_1", 128, 2)?,
            dense5_2: w.dense("dense5_2", 128, 4)?,
        })
    }

    /// `x`: normalised crops, `N×3×24×24`.
    pub fn forward(&self, x: &Tensor) -> Result<CropScores> {
        let x = self.prelu1.forward(&self.conv1.forward(x)?)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = self.prelu2.forward(&self.conv2.forward(&x)?)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = self.prelu3.forward(&self.conv3.forward(&x)?)?;
        let x = self.prelu4.forward(&self.dense4.forward(&x.flatten_from(1)?)?)?;
        Ok(CropScores {
            probability: face_probability(&self.dense5_1.forward(&x)?, 1)?,
            regression: self.dense5_2.forward(&x)?,
            landmarks: None,
        })
    }
}

/// The output network, on 48×48 crops: final score, box and landmarks.
pub(crate) struct ONet {
    conv1: Conv,
    prelu1: PRelu,
    conv2: Conv,
    prelu2: PRelu,
    conv3: Conv,
    prelu3: PRelu,
    conv4: Conv,
    prelu4: PRelu,
    dense5: Dense,
    prelu5: PRelu,
    dense6_1: Dense,
    dense6_2: Dense,
    dense6_3: Dense,
}

impl ONet {
    pub fn load(w: &NamedTensors) -> Result<Self> {
        Ok(Self {
            conv1: w.conv("conv1", 3, 32, 3)?,
            prelu1: w.prelu("prelu1", 32)?,
            conv2: w.conv("conv2", 32, 64, 3)?,
            prelu2: w.prelu("prelu2", 64)?,
            conv3: w.conv("conv3", 64, 64, 3)?,
            prelu3: w.prelu("prelu3", 64)?,
            conv4: w.conv("conv4", 64, 128, 2)?,
            prelu4: w.prelu("prelu4", 128)?,
            dense5: w.dense_after_map("dense5", 128, 3, 256)?,
            prelu5: w.prelu("prelu5", 256)?,
            dense6_1: w.dense("dense6_1", 256, 2)?,
            dense6_2: w.dense("dense6_2", 256, 4)?,
            dense6_3: w.dense("dense6_3", 256, 10)?,
        })
    }

    /// `x`: normalised crops, `N×3×48×48`.
    pub fn forward(&self, x: &Tensor) -> Result<CropScores> {
        let x = self.prelu1.forward(&self.conv1.forward(x)?)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = self.prelu2.forward(&self.conv2.forward(&x)?)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = self.prelu3.forward(&self.conv3.forward(&x)?)?;
        let x = max_pool_ceil(&x, 2, 2)?;
        let x = self.prelu4.forward(&self.conv4.forward(&x)?)?;
        let x = self.prelu5.forward(&self.dense5.forward(&x.flatten_from(1)?)?)?;
        Ok(CropScores {
            probability: face_probability(&self.dense6_1.forward(&x)?, 1)?,
            regression: self.dense6_2.forward(&x)?,
            landmarks: Some(self.dense6_3.forward(&x)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn ceil_mode_pooling_keeps_the_partial_last_window() -> Result<()> {
        // 1×1×3×5 map; 2×2/2 pooling with ceil rounding gives 2×3, the last
        // column and row from windows that hang over the edge.
        let values: Vec<f32> = (0..15).map(|v| -(v as f32)).collect();
        let x = Tensor::from_vec(values, (1, 1, 3, 5), &Device::Cpu)?;
        let y = max_pool_ceil(&x, 2, 2)?;
        assert_eq!(y.dims(), [1, 1, 2, 3]);
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            [0.0, -2.0, -4.0, -10.0, -12.0, -14.0]
        );
        // 3×3/2 over 10: ceil((10 − 3) / 2) + 1 = 5 outputs (floor would give 4).
        let x = Tensor::zeros((1, 1, 10, 10), DType::F32, &Device::Cpu)?;
        assert_eq!(max_pool_ceil(&x, 3, 2)?.dims(), [1, 1, 5, 5]);
        Ok(())
    }

    #[test]
    fn prelu_scales_only_negative_values_per_channel() -> Result<()> {
        let prelu = PRelu {
            slope: Tensor::new(&[0.5f32, 2.0], &Device::Cpu)?,
        };
        let x = Tensor::new(&[[[[-1f32, 3.0]], [[-1.0, 3.0]]]], &Device::Cpu)?;
        let y = prelu.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y, [-0.5, 3.0, -2.0, 3.0]);
        Ok(())
    }

    #[test]
    fn dense_after_map_reads_the_map_in_the_original_w_h_c_order() -> Result<()> {
        // One output whose weight picks input (w=1, h=0, c=1) of a 2×2×2 map
        // in the original W×H×C flattening: index 1·(2·2) + 0·2 + 1 = 5.
        let mut weight = vec![0f32; 8];
        weight[5] = 1.0;
        let tensors = HashMap::from([
            (
                "net.d.weight".to_string(),
                Tensor::from_vec(weight, (1, 8), &Device::Cpu)?,
            ),
            ("net.d.bias".to_string(), Tensor::zeros(1, DType::F32, &Device::Cpu)?),
        ]);
        let named = NamedTensors {
            tensors: &tensors,
            prefix: "net",
            source_name: "test",
        };
        let dense = named.dense_after_map("d", 2, 2, 1)?;
        // C×H×W map with a 1 only at (c=1, h=0, w=1).
        let mut map = vec![0f32; 8];
        map[4 + 1] = 1.0;
        let x = Tensor::from_vec(map, (1, 8), &Device::Cpu)?;
        assert_eq!(dense.forward(&x)?.flatten_all()?.to_vec1::<f32>()?, [1.0]);
        Ok(())
    }

    #[test]
    fn missing_and_misshapen_tensors_are_named() {
        let tensors = HashMap::from([(
            "pnet.conv1.weight".to_string(),
            Tensor::zeros((10, 3, 5, 5), DType::F32, &Device::Cpu).unwrap(),
        )]);
        let named = NamedTensors {
            tensors: &tensors,
            prefix: "pnet",
            source_name: "w.safetensors",
        };
        let error = PNet::load(&named).err().unwrap().to_string();
        assert!(
            error.contains("w.safetensors") && error.contains("pnet.conv1.weight") && error.contains("[10, 3, 3, 3]"),
            "{error}"
        );
        let error = named.get("conv1.bias", &[10]).err().unwrap().to_string();
        assert!(error.contains("`pnet.conv1.bias` is missing"), "{error}");
    }
}
