//! Adam over a network's named parameters: one moment pair and one step
//! count per parameter, updated by caf-kernels' fused pass (in place, on the
//! parameter's device), and saved and restored with checkpoints.

use std::collections::HashMap;

use caf_kernels::{adam_update, AdamMoments, AdamStep};
use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

/// Hyper-parameters; `weight_decay` is decoupled (AdamW), 0 gives Adam.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamConfig {
    /// The paper's optimiser: Adam, betas (0.5, 0.9).
    pub fn paper(lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// The scalars of update number `step` (from 1).
    fn step(&self, step: u64) -> AdamStep {
        AdamStep {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            correction1: 1.0 - self.beta1.powi(step as i32),
            correction2: 1.0 - self.beta2.powi(step as i32),
            decay: 1.0 - self.lr * self.weight_decay,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    moments: AdamMoments,
    /// Updates this parameter has had (PyTorch keeps one count per parameter).
    steps: u64,
}

/// Adam over a named set of f32 variables.
pub struct Adam {
    slots: Vec<Slot>,
    config: AdamConfig,
}

impl Adam {
    pub fn new(vars: Vec<(String, Var)>, config: AdamConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                if var.dtype() != DType::F32 {
                    candle_core::bail!("Adam: parameter {name} is {:?}, only f32 is supported", var.dtype())
                }
                Ok(Slot {
                    moments: AdamMoments::zeros(&var)?,
                    name,
                    var,
                    steps: 0,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { slots, config })
    }

    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for slot in &mut self.slots {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            slot.steps += 1;
            adam_update(&slot.var, grad, &mut slot.moments, &self.config.step(slot.steps))?;
        }
        Ok(())
    }

    /// Moments and step counts as named CPU tensors (`{prefix}.m.{name}`,
    /// `{prefix}.v.{name}`, `{prefix}.t.{name}`), for checkpoints.
    pub fn state(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(3 * self.slots.len());
        for slot in &self.slots {
            let (m, v) = slot.moments.to_host_tensors(slot.var.shape())?;
            out.push((format!("{prefix}.m.{}", slot.name), m));
            out.push((format!("{prefix}.v.{}", slot.name), v));
            out.push((
                format!("{prefix}.t.{}", slot.name),
                Tensor::new(slot.steps as i64, &candle_core::Device::Cpu)?,
            ));
        }
        Ok(out)
    }

    /// Restores what [`Adam::state`] wrote; every parameter's state must be there.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        for slot in &mut self.slots {
            let get = |kind: &str| {
                tensors.get(&format!("{prefix}.{kind}.{}", slot.name)).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimiser state `{prefix}.{kind}.{}` is missing", slot.name))
                })
            };
            let (m, v) = (get("m")?, get("v")?);
            slot.moments = AdamMoments::from_tensors(&slot.var, m, v)
                .map_err(|e| candle_core::Error::Msg(format!("optimiser state of {}: {e}", slot.name)))?;
            slot.steps = get("t")?.to_dtype(DType::I64)?.to_scalar::<i64>()?.max(0) as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};

    fn quadratic_loss(vars: &[Var], target: &Tensor) -> Result<Tensor> {
        let mut loss = Tensor::new(0f32, &Device::Cpu)?;
        for var in vars {
            loss = (loss + (var.as_tensor().broadcast_sub(target)?.sqr()?.sum_all()? * 0.5)?)?;
        }
        Ok(loss)
    }

    #[test]
    fn matches_candle_adamw_with_small_weight_decay() -> Result<()> {
        for weight_decay in [0.0, 1e-6, 1e-2] {
            let start = [
                Tensor::new(&[[0.5f32, -1.0, 2.0], [0.1, 0.0, -3.0]], &Device::Cpu)?,
                Tensor::new(&[0.3f32, 0.7, -0.2], &Device::Cpu)?,
            ];
            let target = Tensor::new(0.25f32, &Device::Cpu)?;
            let ours: Vec<Var> = start.iter().map(Var::from_tensor).collect::<Result<_>>()?;
            let theirs: Vec<Var> = start.iter().map(Var::from_tensor).collect::<Result<_>>()?;
            let config = AdamConfig {
                lr: 0.05,
                beta1: 0.5,
                beta2: 0.9,
                eps: 1e-8,
                weight_decay,
            };
            let mut adam = Adam::new(
                ours.iter()
                    .enumerate()
                    .map(|(i, v)| (format!("p{i}"), v.clone()))
                    .collect(),
                config,
            )?;
            let params = ParamsAdamW {
                lr: 0.05,
                beta1: 0.5,
                beta2: 0.9,
                eps: 1e-8,
                weight_decay,
            };
            let mut reference = AdamW::new(theirs.clone(), params)?;
            for _ in 0..25 {
                adam.step(&quadratic_loss(&ours, &target)?.backward()?)?;
                reference.backward_step(&quadratic_loss(&theirs, &target)?)?;
            }
            for (a, b) in ours.iter().zip(&theirs) {
                let diff = (a.as_tensor() - b.as_tensor())?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                assert!(diff < 1e-6, "weight decay {weight_decay}: max difference {diff}");
            }
        }
        Ok(())
    }

    #[test]
    fn state_round_trips_and_parameters_without_gradients_wait() -> Result<()> {
        let a = Var::new(&[1f32, 2.0], &Device::Cpu)?;
        let b = Var::new(&[3f32], &Device::Cpu)?;
        let mut adam = Adam::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            AdamConfig::paper(0.1),
        )?;
        let grads = (a.as_tensor().sqr()?.sum_all()?).backward()?;
        adam.step(&grads)?;
        assert_eq!(b.as_tensor().to_vec1::<f32>()?, [3.0], "no gradient, no update");
        let state: HashMap<String, Tensor> = adam.state("opt")?.into_iter().collect();
        assert_eq!(state["opt.t.a"].to_scalar::<i64>()?, 1);
        assert_eq!(state["opt.t.b"].to_scalar::<i64>()?, 0);
        let copy = Var::from_tensor(a.as_tensor())?;
        let mut restored = Adam::new(
            vec![
                ("a".into(), copy.clone()),
                ("b".into(), Var::new(&[3f32], &Device::Cpu)?),
            ],
            AdamConfig::paper(0.1),
        )?;
        restored.load_state(&state, "opt")?;
        adam.step(&(a.as_tensor().sqr()?.sum_all()?).backward()?)?;
        restored.step(&(copy.as_tensor().sqr()?.sum_all()?).backward()?)?;
        assert_eq!(a.as_tensor().to_vec1::<f32>()?, copy.as_tensor().to_vec1::<f32>()?);
        assert!(restored.load_state(&HashMap::new(), "opt").is_err());
        Ok(())
    }
}
