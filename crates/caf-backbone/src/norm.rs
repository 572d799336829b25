//! `BatchNorm2d` with torchvision's tensor names; caf-kernels picks how each
//! device runs it.

use caf_kernels::{batch_norm_train, batch_norm_train_relu, relu, scale_shift, ChannelStats};
use candle_core::{DType, ModuleT, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

/// caf-kernels' training-mode pass: `(x, weight, bias, eps) → (y, batch statistics)`.
type TrainingNormalisation = fn(&Tensor, &Tensor, &Tensor, f64) -> Result<(Tensor, ChannelStats)>;

/// torchvision's defaults.
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// BatchNorm2d (eps 1e-5, momentum 0.1, affine): `weight`, `bias`,
/// `running_mean`, `running_var`. Training mode normalises with the batch's
/// statistics and updates the running ones (unbiased variance, as PyTorch);
/// evaluation mode is the folded `x·scale + shift`, the same bits whether or
/// not the weights are variables.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
}

impl BatchNorm2d {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let running = |name: &str, init: f64| -> Result<Var> {
            Var::from_tensor(&vb.get_with_hints(channels, name, Init::Const(init))?)
        };
        Ok(Self {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            running_mean: running("running_mean", 0.0)?,
            running_var: running("running_var", 1.0)?,
        })
    }

    /// Evaluation mode as `x·scale + shift` per channel, with
    /// `scale = weight / √(running_var + eps)` and `shift = bias − running_mean·scale`
    /// (differentiable in weight and bias, e.g. for fine-tuning with frozen statistics).
    pub(crate) fn folded(&self) -> Result<(Tensor, Tensor)> {
        let running_mean = self.running_mean.as_tensor().detach();
        let inv_std = (self.running_var.as_tensor().detach() + EPS)?.sqrt()?.recip()?;
        let scale = (&self.weight * inv_std)?;
        let shift = (&self.bias - (running_mean * &scale)?)?;
        Ok((scale, shift))
    }

    /// `relu(self.forward_t(x, train))`; in training as one operation
    /// ([`caf_kernels::batch_norm_train_relu`]).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.train(x, batch_norm_train_relu)
        } else {
            relu(&self.forward_t(x, train)?)
        }
    }

    /// Training mode through `normalise`, then the running statistics updated.
    fn train(&self, x: &Tensor, normalise: TrainingNormalisation) -> Result<Tensor> {
        let (y, stats) = normalise(x, &self.weight, &self.bias, EPS)?;
        self.update_running(&stats)?;
        Ok(y)
    }

    /// Blends the batch's statistics into the running ones, on the device
    /// they are on (the unbiased variance is formed in f64).
    fn update_running(&self, stats: &ChannelStats) -> Result<()> {
        let dtype = self.running_mean.dtype();
        let unbiased = stats.count as f64 / (stats.count as f64 - 1.0);
        let blend = |running: &Var, batch: &Tensor| -> Result<()> {
            let batch = batch.to_dtype(dtype)?;
            running.set(&((running.as_tensor() * (1.0 - MOMENTUM))? + (batch * MOMENTUM)?)?)
        };
        blend(&self.running_mean, &stats.mean)?;
        blend(&self.running_var, &(stats.variance.to_dtype(DType::F64)? * unbiased)?)
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.train(x, batch_norm_train)
        } else {
            let (scale, shift) = self.folded()?;
            scale_shift(x, &scale, &shift)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{batch_norm, BatchNorm, BatchNormConfig, VarMap};

    /// The fused training path and candle-nn's agree on outputs, gradients
    /// and running statistics (candle-nn's layer is the reference here).
    #[test]
    fn fused_training_matches_candle_nn() -> Result<()> {
        let build = || -> Result<(VarMap, BatchNorm2d, BatchNorm)> {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            let ours = BatchNorm2d::new(3, vb.pp("bn"))?;
            let reference = batch_norm(3, BatchNormConfig::default(), vb.pp("bn"))?;
            Ok((varmap, ours, reference))
        };
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 4.0 * 5.0, &Device::Cpu)?
            .reshape((2, 3, 4, 5))?
            .sin()?;
        let (ours_map, ours, _) = build()?;
        let (reference_map, _, reference) = build()?;
        let y = ours.forward_t(&x, true)?;
        let expected = reference.forward_t(&x, true)?;
        assert!((&y - &expected)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        let named = |map: &VarMap, name: &str| -> Result<Vec<f32>> {
            let data = map
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
            data[name].as_tensor().to_vec1::<f32>()
        };
        for name in ["bn.running_mean", "bn.running_var"] {
            let (a, b) = (named(&ours_map, name)?, named(&reference_map, name)?);
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() < 1e-6, "{name}: {a} vs {b}");
            }
        }
        let probe = x.cos()?;
        let grads = (y * &probe)?.sum_all()?.backward()?;
        let expected_grads = (expected * &probe)?.sum_all()?.backward()?;
        let weight = |map: &VarMap| -> Result<Tensor> {
            let data = map
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
            Ok(data["bn.weight"].as_tensor().clone())
        };
        let (a, b) = (weight(&ours_map)?, weight(&reference_map)?);
        let difference = (grads.get(&a).expect("ours") - expected_grads.get(&b).expect("candle-nn's"))?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(difference < 1e-4, "{difference}");
        // Evaluation mode uses the running statistics (here: variables, so
        // candle's broadcast ops run) ...
        let tracked = ours.forward_t(&x, false)?;
        let eval = (&tracked - reference.forward_t(&x, false)?)?;
        assert!(eval.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        // ... and with plain tensors (a loaded checkpoint) the fused pass gives the same bits.
        let (weight, bias) = (weight(&ours_map)?, named(&ours_map, "bn.bias")?);
        let frozen = VarBuilder::from_tensors(
            [
                ("weight".to_string(), weight.detach()),
                ("bias".to_string(), Tensor::new(bias, &Device::Cpu)?),
                (
                    "running_mean".to_string(),
                    Tensor::new(named(&ours_map, "bn.running_mean")?, &Device::Cpu)?,
                ),
                (
                    "running_var".to_string(),
                    Tensor::new(named(&ours_map, "bn.running_var")?, &Device::Cpu)?,
                ),
            ]
            .into_iter()
            .collect(),
            DType::F32,
            &Device::Cpu,
        );
        let folded = BatchNorm2d::new(3, frozen)?.forward_t(&x, false)?;
        let difference = (folded - reference.forward_t(&x, false)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(difference < 1e-5, "{difference}");
        Ok(())
    }
}
