//! Adam updated in place, one fused pass per parameter.
//!
//! candle's `AdamW` builds about ten new tensors per parameter and step. On
//! the CPU this optimiser updates the parameter, its first and second moments
//! in one pass over memory that already exists (a candle in-place
//! operation), with no allocation. On other devices it falls back to tensor
//! operations with the same arithmetic.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var};
use rayon::prelude::*;

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
}

enum Moments {
    /// CPU parameters: moments live in host memory and are updated in place.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Other devices: moments are tensors beside the parameter.
    Device { m: Tensor, v: Tensor },
}

struct Slot {
    name: String,
    var: Var,
    moments: Moments,
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
                let moments = if var.device().is_cpu() {
                    Moments::Host {
                        m: vec![0.0; var.elem_count()],
                        v: vec![0.0; var.elem_count()],
                    }
                } else {
                    Moments::Device {
                        m: var.zeros_like()?,
                        v: var.zeros_like()?,
                    }
                };
                Ok(Slot {
                    name,
                    var,
                    moments,
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
        let config = self.config;
        for slot in &mut self.slots {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            slot.steps += 1;
            let hyper = StepScalars::new(&config, slot.steps);
            match &mut slot.moments {
                Moments::Host { m, v } => {
                    let grad = grad.contiguous()?;
                    let kernel = FusedAdam {
                        moments: Mutex::new((m, v)),
                        hyper,
                    };
                    slot.var.as_tensor().inplace_op2(&grad, &kernel)?;
                }
                Moments::Device { m, v } => {
                    *m = ((&*m * config.beta1)? + (grad * (1.0 - config.beta1))?)?;
                    *v = ((&*v * config.beta2)? + (grad.sqr()? * (1.0 - config.beta2))?)?;
                    let denominator = ((&*v / hyper.correction2)?.sqrt()? + config.eps)?;
                    let update = ((&*m / hyper.correction1)? / denominator)?;
                    let decayed = (slot.var.as_tensor() * hyper.decay)?;
                    slot.var.set(&(decayed - (update * config.lr)?)?)?;
                }
            }
        }
        Ok(())
    }

    /// Moments and step counts as named tensors (`{prefix}.m.{name}`,
    /// `{prefix}.v.{name}`, `{prefix}.t.{name}`), for checkpoints.
    pub fn state(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(3 * self.slots.len());
        for slot in &self.slots {
            let (m, v) = match &slot.moments {
                Moments::Host { m, v } => (
                    Tensor::from_slice(m, slot.var.shape(), &candle_core::Device::Cpu)?,
                    Tensor::from_slice(v, slot.var.shape(), &candle_core::Device::Cpu)?,
                ),
                Moments::Device { m, v } => (m.clone(), v.clone()),
            };
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
            if m.dims() != slot.var.dims() || v.dims() != slot.var.dims() {
                candle_core::bail!(
                    "optimiser state of {} has shape {:?}, the parameter {:?}",
                    slot.name,
                    m.dims(),
                    slot.var.dims()
                )
            }
            slot.steps = get("t")?.to_dtype(DType::I64)?.to_scalar::<i64>()?.max(0) as u64;
            slot.moments = match slot.moments {
                Moments::Host { .. } => Moments::Host {
                    m: m.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
                    v: v.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
                },
                Moments::Device { .. } => Moments::Device {
                    m: m.to_device(slot.var.device())?,
                    v: v.to_device(slot.var.device())?,
                },
            };
        }
        Ok(())
    }
}

/// Per-step scalars shared by every element.
#[derive(Debug, Clone, Copy)]
struct StepScalars {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    correction1: f64,
    correction2: f64,
    decay: f64,
}

impl StepScalars {
    fn new(config: &AdamConfig, step: u64) -> Self {
        Self {
            lr: config.lr,
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            correction1: 1.0 - config.beta1.powi(step as i32),
            correction2: 1.0 - config.beta2.powi(step as i32),
            decay: 1.0 - config.lr * config.weight_decay,
        }
    }
}

/// The fused CPU update: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ(1 − lr·wd) − lr · (m/c₁) / (√(v/c₂) + ε)`.
struct FusedAdam<'a> {
    moments: Mutex<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
    hyper: StepScalars,
}

const CHUNK: usize = 1 << 14;

impl InplaceOp2 for FusedAdam<'_> {
    fn name(&self) -> &'static str {
        "caf-fused-adam"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(param), CpuStorage::F32(grad)) = (param, grad) else {
            candle_core::bail!("fused Adam: parameters and gradients must be f32")
        };
        let (Some((p0, p1)), Some((g0, g1))) = (param_layout.contiguous_offsets(), grad_layout.contiguous_offsets())
        else {
            candle_core::bail!("fused Adam: parameter and gradient must be contiguous")
        };
        let (param, grad) = (&mut param[p0..p1], &grad[g0..g1]);
        let mut moments = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused Adam: poisoned moments".into()))?;
        let (m, v) = &mut *moments;
        if grad.len() != param.len() || m.len() != param.len() {
            candle_core::bail!(
                "fused Adam: {} parameters, {} gradients, {} moments",
                param.len(),
                grad.len(),
                m.len()
            )
        }
        let h = self.hyper;
        let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
        let (step, inv_c1, inv_c2, eps, decay) = (
            h.lr as f32,
            1.0 / h.correction1 as f32,
            1.0 / h.correction2 as f32,
            h.eps as f32,
            h.decay as f32,
        );
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| {
                for i in 0..p.len() {
                    let gi = g[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    p[i] = p[i] * decay - step * (m[i] * inv_c1) / ((v[i] * inv_c2).sqrt() + eps);
                }
            });
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
