//! Architectures, the preprocessing a model expects, and the assembled CAF network.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use caf_kernels::Precision;
use candle_core::{ModuleT, Result as CandleResult, Tensor};
use candle_nn::VarBuilder;

use crate::alexnet::{AlexNetEncoder, ALEXNET_FEATURES};
use crate::dropout::DropoutRng;
use crate::error::{Error, Result};
use crate::heads::{Critic, Regressor};
use crate::resnet::{ResNet18Encoder, RESNET18_FEATURES};

/// Metadata key: the architecture (`alexnet` or `resnet18`).
pub const META_ARCH: &str = "caf.arch";
/// Metadata key: side of the square crop fed to the network.
pub const META_IMAGE_SIZE: &str = "caf.image_size";
/// Metadata key: shorter side the image is resized to before cropping.
pub const META_RESIZE: &str = "caf.resize";

/// Top-level tensor prefixes of a checkpoint.
pub const ENCODER: &str = "encoder";
pub const REGRESSOR: &str = "regressor";
pub const CRITIC: &str = "critic";

/// The encoder architecture `f_e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    AlexNet,
    ResNet18,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::AlexNet, Arch::ResNet18];

    /// Width of the encoder's output, the input of both heads.
    pub fn feature_dim(self) -> usize {
        match self {
            Arch::AlexNet => ALEXNET_FEATURES,
            Arch::ResNet18 => RESNET18_FEATURES,
        }
    }

    /// The smallest square input side every layer of the encoder fits
    /// (`image_size` below it fails in the first pooling or convolution
    /// window that no longer fits).
    pub fn min_image_size(self) -> usize {
        let fits = |side: usize| match self {
            Arch::AlexNet => crate::alexnet::feature_side(side).is_some(),
            Arch::ResNet18 => crate::resnet::feature_side(side).is_some(),
        };
        (1..).find(|&side| fits(side)).unwrap_or(usize::MAX)
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::AlexNet => "alexnet",
            Arch::ResNet18 => "resnet18",
        }
    }

    /// Parses an architecture name found in `file`, naming the file when it is unknown.
    pub fn parse_in(name: &str, file: &Path) -> Result<Self> {
        name.parse().map_err(|_| Error::UnknownArch {
            file: file.to_path_buf(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "alexnet" => Ok(Arch::AlexNet),
            "resnet18" => Ok(Arch::ResNet18),
            _ => Err(format!("unknown architecture `{s}` (known: alexnet, resnet18)")),
        }
    }
}

/// What a checkpoint must say about itself so that the file alone rebuilds
/// the model and its preprocessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    pub arch: Arch,
    /// Side of the square crop fed to the network (224 for ImageNet-style training).
    pub image_size: usize,
    /// Shorter side the image is resized to before the crop (256 for 224 crops).
    pub resize: usize,
}

impl ModelSpec {
    /// The paper's preprocessing: resize to 256, crop 224.
    pub fn new(arch: Arch) -> Self {
        Self {
            arch,
            image_size: 224,
            resize: 256,
        }
    }

    pub fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            (META_ARCH.to_string(), self.arch.to_string()),
            (META_IMAGE_SIZE.to_string(), self.image_size.to_string()),
            (META_RESIZE.to_string(), self.resize.to_string()),
        ])
    }

    /// Reads the spec from safetensors metadata found in `file`.
    pub fn from_metadata(metadata: &HashMap<String, String>, file: &Path) -> Result<Self> {
        let get = |key: &str| {
            metadata.get(key).ok_or_else(|| {
                Error::bad_file(file, format!("metadata key `{key}` is missing; a CAF checkpoint needs {META_ARCH}, {META_IMAGE_SIZE} and {META_RESIZE}"))
            })
        };
        let size = |key: &str| -> Result<usize> {
            let value = get(key)?;
            match value.parse::<usize>() {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(Error::bad_file(
                    file,
                    format!("metadata `{key}` = `{value}` is not a positive integer"),
                )),
            }
        };
        let spec = Self {
            arch: Arch::parse_in(get(META_ARCH)?, file)?,
            image_size: size(META_IMAGE_SIZE)?,
            resize: size(META_RESIZE)?,
        };
        if spec.resize < spec.image_size {
            return Err(Error::bad_file(
                file,
                format!(
                    "{META_RESIZE} ({}) is smaller than {META_IMAGE_SIZE} ({})",
                    spec.resize, spec.image_size
                ),
            ));
        }
        Ok(spec)
    }
}

/// The encoder `f_e` of either architecture.
#[derive(Debug, Clone)]
pub enum Encoder {
    AlexNet(AlexNetEncoder),
    ResNet18(ResNet18Encoder),
}

impl Encoder {
    /// Builds the encoder whose tensors live directly under `vb` (torchvision names).
    pub fn new(arch: Arch, vb: VarBuilder) -> CandleResult<Self> {
        Ok(match arch {
            Arch::AlexNet => Encoder::AlexNet(AlexNetEncoder::new(vb)?),
            Arch::ResNet18 => Encoder::ResNet18(ResNet18Encoder::new(vb)?),
        })
    }

    /// Whether a training-mode forward pass changes nothing in the encoder
    /// (AlexNet), so that two passes over the same images with the same
    /// weights are the same pass; ResNet-18's batch norms update their running
    /// statistics on every pass.
    pub fn training_pass_is_pure(&self) -> bool {
        matches!(self, Encoder::AlexNet(_))
    }

    /// This encoder for inference (see [`VaNet::freeze`]).
    pub fn freeze(&self, precision: Precision) -> CandleResult<Self> {
        Ok(match self {
            Encoder::AlexNet(e) => Encoder::AlexNet(e.freeze(precision)?),
            Encoder::ResNet18(e) => Encoder::ResNet18(e.freeze(precision)?),
        })
    }
}

impl ModuleT for Encoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        match self {
            Encoder::AlexNet(e) => e.forward_t(x, train),
            Encoder::ResNet18(e) => e.forward_t(x, train),
        }
    }
}

/// What inference needs: the encoder `f_e` and the regressor `f_r`, under
/// the checkpoint prefixes `encoder` and `regressor`.
#[derive(Debug, Clone)]
pub struct VaNet {
    pub arch: Arch,
    pub encoder: Encoder,
    pub regressor: Regressor,
    /// The stream of every dropout mask of this network (see [`DropoutRng`]).
    pub dropout: DropoutRng,
}

impl VaNet {
    pub fn new(arch: Arch, vb: VarBuilder) -> CandleResult<Self> {
        Self::with_dropout(arch, &DropoutRng::new(0), vb)
    }

    fn with_dropout(arch: Arch, dropout: &DropoutRng, vb: VarBuilder) -> CandleResult<Self> {
        Ok(Self {
            arch,
            encoder: Encoder::new(arch, vb.pp(ENCODER))?,
            regressor: Regressor::new(arch.feature_dim(), dropout, vb.pp(REGRESSOR))?,
            dropout: dropout.clone(),
        })
    }

    /// Valence and arousal (`B×2`) for a batch of normalised images. On the
    /// CPU the pass runs on a worker of rayon's pool
    /// ([`caf_kernels::on_pool`]).
    pub fn forward_t(&self, images: &Tensor, train: bool) -> CandleResult<Tensor> {
        caf_kernels::on_pool(images.device(), || {
            self.regressor.forward_t(&self.encoder.forward_t(images, train)?, train)
        })
    }

    /// Valence and arousal (`B×2`) in evaluation mode.
    pub fn predict(&self, images: &Tensor) -> CandleResult<Tensor> {
        self.forward_t(images, false)
    }

    /// [`Self::predict`] and the regressor's bottleneck activations (`B×8`,
    /// see [`Regressor::forward_with_bottleneck_t`]).
    pub fn predict_with_bottleneck(&self, images: &Tensor) -> CandleResult<(Tensor, Tensor)> {
        caf_kernels::on_pool(images.device(), || {
            self.regressor
                .forward_with_bottleneck_t(&self.encoder.forward_t(images, false)?, false)
        })
    }

    /// A copy of this network for inference: every weight copied, so that
    /// training this one further leaves the copy as it is; the convolutions'
    /// weights frozen ([`caf_kernels::FrozenWeight`]), so that what the
    /// kernels derive from a weight is made once and kept (so single images
    /// through AlexNet's 13×13 layers run by Winograd); ResNet-18's batch
    /// norms folded into the convolutions before
    /// them (one pass over the activations instead of two). The copy
    /// computes the same function in evaluation mode, up to rounding; it
    /// builds no gradient for its weights, and a training-mode pass through
    /// a frozen ResNet-18 is refused (its batch statistics are gone).
    ///
    /// The convolutions' products run in `precision`
    /// ([`caf_kernels::Precision`]); the regressor's are small and stay f32.
    pub fn freeze(&self, precision: Precision) -> CandleResult<Self> {
        Ok(Self {
            arch: self.arch,
            encoder: self.encoder.freeze(precision)?,
            regressor: self.regressor.freeze()?,
            dropout: self.dropout.clone(),
        })
    }
}

/// The three networks of CAF: [`VaNet`] plus the critic `f_c` under `critic`.
#[derive(Debug, Clone)]
pub struct CafNet {
    pub va: VaNet,
    pub critic: Critic,
}

impl CafNet {
    pub fn new(arch: Arch, vb: VarBuilder) -> CandleResult<Self> {
        let dropout = DropoutRng::new(0);
        Ok(Self {
            va: VaNet::with_dropout(arch, &dropout, vb.clone())?,
            critic: Critic::new(arch.feature_dim(), &dropout, vb.pp(CRITIC))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};
    use candle_nn::{Optimizer, VarMap, SGD};

    fn build(arch: Arch) -> CandleResult<(CafNet, VarMap)> {
        let varmap = VarMap::new();
        let net = CafNet::new(arch, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
        Ok((net, varmap))
    }

    fn snapshot(varmap: &VarMap) -> HashMap<String, Vec<f32>> {
        let vars = varmap.data().lock().expect("varmap lock");
        vars.iter()
            .map(|(name, var)| {
                (
                    name.clone(),
                    var.as_tensor().flatten_all().and_then(|t| t.to_vec1()).expect("values"),
                )
            })
            .collect()
    }

    #[test]
    fn output_widths_at_224() -> CandleResult<()> {
        for arch in Arch::ALL {
            let (net, _) = build(arch)?;
            let x = Tensor::randn(0f32, 1., (2, 3, 224, 224), &Device::Cpu)?;
            let features = net.va.encoder.forward_t(&x, false)?;
            assert_eq!(features.dims(), [2, arch.feature_dim()]);
            assert_eq!(net.va.regressor.forward_t(&features, false)?.dims(), [2, 2]);
            assert_eq!(
                net.critic.forward_t(&features, false)?.dims(),
                [2, crate::CRITIC_OUTPUTS]
            );
        }
        Ok(())
    }

    #[test]
    fn a_training_step_changes_every_trainable_tensor() -> CandleResult<()> {
        for (arch, side) in [(Arch::AlexNet, 67), (Arch::ResNet18, 35)] {
            let (net, varmap) = build(arch)?;
            let before = snapshot(&varmap);
            let x = Tensor::randn(0f32, 1., (4, 3, side, side), &Device::Cpu)?;
            let target = Tensor::randn(0f32, 0.5, (4, 2), &Device::Cpu)?;
            let features = net.va.encoder.forward_t(&x, true)?;
            let va = net.va.regressor.forward_t(&features, true)?;
            let critic = net.critic.forward_t(&features, true)?;
            let loss = ((va - target)?.sqr()?.mean_all()? + critic.sum(D::Minus1)?.sqr()?.mean_all()?)?;
            let mut sgd = SGD::new(varmap.all_vars(), 0.01)?;
            sgd.backward_step(&loss)?;
            let after = snapshot(&varmap);
            // BatchNorm running statistics are not trained, but train mode updates them.
            for (name, values) in &before {
                assert_ne!(values, &after[name], "{arch}: `{name}` did not change");
            }
            assert_eq!(before.len(), varmap.all_vars().len());
        }
        Ok(())
    }

    /// What the trainer relies on to let one encoder pass serve two CAF steps.
    #[test]
    fn only_pure_encoders_leave_every_tensor_as_it_was_after_a_training_pass() -> CandleResult<()> {
        for (arch, side) in [(Arch::AlexNet, 67), (Arch::ResNet18, 35)] {
            let (net, varmap) = build(arch)?;
            let x = Tensor::randn(0f32, 1., (3, 3, side, side), &Device::Cpu)?;
            let before = snapshot(&varmap);
            let first = net.va.encoder.forward_t(&x, true)?;
            let unchanged = before == snapshot(&varmap);
            assert_eq!(unchanged, net.va.encoder.training_pass_is_pure(), "{arch}");
            if unchanged {
                let second = net.va.encoder.forward_t(&x, true)?;
                assert_eq!(
                    first.flatten_all()?.to_vec1::<f32>()?,
                    second.flatten_all()?.to_vec1::<f32>()?
                );
            }
        }
        Ok(())
    }

    /// A frozen network predicts what the live one does (at 224 px on two
    /// workers, where AlexNet's 13×13 layers take the kept Winograd
    /// transform; frozen after a training step, so that ResNet-18's folded
    /// batch norms have moved off their initial weights and statistics),
    /// and a training step on the live one afterwards leaves the frozen
    /// one's predictions exactly as they were.
    #[test]
    fn a_frozen_network_predicts_the_same_and_keeps_its_weights() -> CandleResult<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .map_err(candle_core::Error::wrap)?;
        pool.install(|| {
            for arch in Arch::ALL {
                let (net, varmap) = build(arch)?;
                let x = Tensor::randn(0f32, 1., (1, 3, 224, 224), &Device::Cpu)?;
                let target = Tensor::ones((1, 2), DType::F32, &Device::Cpu)?;
                let train_step = || -> CandleResult<()> {
                    let loss = (net.va.forward_t(&x, true)? - &target)?.sqr()?.mean_all()?;
                    SGD::new(varmap.all_vars(), 0.1)?.backward_step(&loss)
                };
                train_step()?;
                let frozen = net.va.freeze(Precision::F32)?;
                let (live, before) = (net.va.predict(&x)?, frozen.predict(&x)?);
                let scale = live.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
                let difference = (&live - &before)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(difference <= 1e-4 * scale, "{arch}: {difference} against {scale}");

                train_step()?;
                assert_ne!(net.va.predict(&x)?.to_vec2::<f32>()?, live.to_vec2::<f32>()?, "{arch}");
                assert_eq!(
                    frozen.predict(&x)?.to_vec2::<f32>()?,
                    before.to_vec2::<f32>()?,
                    "{arch}"
                );
                // Its batch norms folded away, a frozen ResNet-18 has no training mode.
                assert_eq!(frozen.forward_t(&x, true).is_err(), arch == Arch::ResNet18, "{arch}");
            }
            Ok(())
        })
    }

    #[test]
    fn dropout_acts_only_in_training() -> CandleResult<()> {
        let (net, _) = build(Arch::ResNet18)?;
        let features = Tensor::rand(0f32, 1., (8, 512), &Device::Cpu)?;
        let eval_a = net.va.regressor.forward_t(&features, false)?;
        let eval_b = net.va.regressor.forward_t(&features, false)?;
        assert_eq!(eval_a.to_vec2::<f32>()?, eval_b.to_vec2::<f32>()?);
        let train = net.va.regressor.forward_t(&features, true)?;
        assert_ne!(eval_a.to_vec2::<f32>()?, train.to_vec2::<f32>()?);
        let critic_eval = net.critic.forward_t(&features, false)?;
        assert_eq!(
            critic_eval.to_vec2::<f32>()?,
            net.critic.forward_t(&features, false)?.to_vec2::<f32>()?
        );
        assert_ne!(
            critic_eval.to_vec2::<f32>()?,
            net.critic.forward_t(&features, true)?.to_vec2::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn smallest_inputs_run_and_one_less_does_not() -> CandleResult<()> {
        assert_eq!(Arch::AlexNet.min_image_size(), 63);
        for arch in Arch::ALL {
            let (net, _) = build(arch)?;
            let side = arch.min_image_size();
            let ok = Tensor::zeros((2, 3, side, side), DType::F32, &Device::Cpu)?;
            assert_eq!(net.va.predict(&ok)?.dims(), [2, 2], "{arch} at {side}");
            if side > 1 {
                let small = Tensor::zeros((2, 3, side - 1, side - 1), DType::F32, &Device::Cpu)?;
                assert!(net.va.predict(&small).is_err(), "{arch} at {}", side - 1);
            }
        }
        Ok(())
    }

    #[test]
    fn arch_names_and_metadata() {
        assert_eq!("ResNet-18".parse::<Arch>(), Ok(Arch::ResNet18));
        assert_eq!("alexnet".parse::<Arch>(), Ok(Arch::AlexNet));
        assert!("vgg16".parse::<Arch>().is_err());
        let spec = ModelSpec {
            arch: Arch::AlexNet,
            image_size: 112,
            resize: 128,
        };
        assert_eq!(
            ModelSpec::from_metadata(&spec.to_metadata(), Path::new("x")).expect("round trip"),
            spec
        );
        let mut bad = spec.to_metadata();
        bad.insert(META_IMAGE_SIZE.into(), "big".into());
        let err = ModelSpec::from_metadata(&bad, Path::new("model.safetensors")).expect_err("not a number");
        assert!(
            err.to_string().contains("model.safetensors") && err.to_string().contains("big"),
            "{err}"
        );
    }
}
