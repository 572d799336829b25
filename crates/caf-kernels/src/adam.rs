//! Adam's update of one parameter, in place, in one fused pass.
//!
//! candle's `AdamW` builds about ten new tensors per parameter and step. Here
//! the parameter and its two moments are updated in one pass over memory
//! that already exists: on the CPU (f32) a parallel loop, on CUDA (f32) one
//! kernel launch (`caf_adam_f32`), with the moments kept on the device. Other
//! devices fall back to tensor operations with the same arithmetic.

use std::sync::Mutex;

use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Shape, Tensor, Var};
use rayon::prelude::*;

use crate::cpu::vectorised;

/// The scalars of one update step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Bias corrections `1 − β₁ᵗ` and `1 − β₂ᵗ` of this step `t`.
    pub correction1: f64,
    pub correction2: f64,
    /// Decoupled weight decay's factor `1 − lr · wd` (1 for plain Adam).
    pub decay: f64,
}

/// The first and second moments of one f32 parameter, on its device.
pub struct AdamMoments(Store);

enum Store {
    Host {
        m: Vec<f32>,
        v: Vec<f32>,
    },
    #[cfg(feature = "cuda")]
    Cuda {
        m: candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>,
        v: candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>,
        device: candle_core::cuda_backend::CudaDevice,
    },
    Tensors {
        m: Tensor,
        v: Tensor,
    },
}

impl AdamMoments {
    /// Zero moments for `param`, where it lives.
    pub fn zeros(param: &Tensor) -> Result<Self> {
        let zeros = vec![0f32; param.elem_count()];
        Self::from_host(param, zeros.clone(), zeros)
    }

    /// Moments read from `m` and `v` (e.g. a checkpoint's), which must have
    /// `param`'s shape; they are moved to `param`'s device.
    pub fn from_tensors(param: &Tensor, m: &Tensor, v: &Tensor) -> Result<Self> {
        if m.dims() != param.dims() || v.dims() != param.dims() {
            candle_core::bail!(
                "Adam moments of shape {:?} and {:?} for a parameter of shape {:?}",
                m.dims(),
                v.dims(),
                param.dims()
            )
        }
        let host = |t: &Tensor| t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>();
        Self::from_host(param, host(m)?, host(v)?)
    }

    fn from_host(param: &Tensor, m: Vec<f32>, v: Vec<f32>) -> Result<Self> {
        if param.dtype() != candle_core::DType::F32 {
            candle_core::bail!("Adam: parameters must be f32, got {:?}", param.dtype())
        }
        Ok(Self(match param.device() {
            candle_core::Device::Cpu => Store::Host { m, v },
            #[cfg(feature = "cuda")]
            candle_core::Device::Cuda(device) => {
                let on_device = |host: &[f32]| -> Result<_> {
                    let mut slice = device.alloc_zeros::<f32>(host.len())?;
                    device.memcpy_htod(host, &mut slice)?;
                    Ok(slice)
                };
                Store::Cuda {
                    m: on_device(&m)?,
                    v: on_device(&v)?,
                    device: device.clone(),
                }
            }
            device => Store::Tensors {
                m: Tensor::from_vec(m, param.shape(), device)?,
                v: Tensor::from_vec(v, param.shape(), device)?,
            },
        }))
    }

    /// The moments as CPU tensors of `shape` (the parameter's), e.g. for a checkpoint.
    pub fn to_host_tensors(&self, shape: &Shape) -> Result<(Tensor, Tensor)> {
        let cpu = &candle_core::Device::Cpu;
        match &self.0 {
            Store::Host { m, v } => Ok((Tensor::from_slice(m, shape, cpu)?, Tensor::from_slice(v, shape, cpu)?)),
            #[cfg(feature = "cuda")]
            Store::Cuda { m, v, device } => Ok((
                Tensor::from_vec(device.clone_dtoh(m)?, shape, cpu)?,
                Tensor::from_vec(device.clone_dtoh(v)?, shape, cpu)?,
            )),
            Store::Tensors { m, v } => Ok((m.to_device(cpu)?, v.to_device(cpu)?)),
        }
    }
}

/// One Adam update of `param` with gradient `grad`:
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ·decay − lr · (m/c₁) / (√(v/c₂) + ε)`.
pub fn adam_update(param: &Var, grad: &Tensor, moments: &mut AdamMoments, step: &AdamStep) -> Result<()> {
    if grad.dims() != param.dims() {
        candle_core::bail!(
            "Adam: a gradient of shape {:?} for a parameter of shape {:?}",
            grad.dims(),
            param.dims()
        )
    }
    if let Store::Tensors { m, v } = &mut moments.0 {
        *m = ((&*m * step.beta1)? + (grad * (1.0 - step.beta1))?)?;
        *v = ((&*v * step.beta2)? + (grad.sqr()? * (1.0 - step.beta2))?)?;
        let denominator = ((&*v / step.correction2)?.sqrt()? + step.eps)?;
        let update = ((&*m / step.correction1)? / denominator)?;
        let decayed = (param.as_tensor() * step.decay)?;
        return param.set(&(decayed - (update * step.lr)?)?);
    }
    let grad = grad.contiguous()?;
    let op = FusedAdam {
        moments: Mutex::new(&mut moments.0),
        scalars: F32Scalars::new(step),
    };
    param.as_tensor().inplace_op2(&grad, &op)
}

/// The step's scalars as the f32 kernels use them: reciprocal corrections,
/// and `1 − β` taken in f64 (in f32, `1 − 0.999` keeps only four digits).
#[derive(Clone, Copy)]
pub(crate) struct F32Scalars {
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) one_minus_beta1: f32,
    pub(crate) one_minus_beta2: f32,
    pub(crate) lr: f32,
    pub(crate) inv_c1: f32,
    pub(crate) inv_c2: f32,
    pub(crate) eps: f32,
    pub(crate) decay: f32,
}

impl F32Scalars {
    fn new(step: &AdamStep) -> Self {
        Self {
            beta1: step.beta1 as f32,
            beta2: step.beta2 as f32,
            one_minus_beta1: (1.0 - step.beta1) as f32,
            one_minus_beta2: (1.0 - step.beta2) as f32,
            lr: step.lr as f32,
            inv_c1: (1.0 / step.correction1) as f32,
            inv_c2: (1.0 / step.correction2) as f32,
            eps: step.eps as f32,
            decay: step.decay as f32,
        }
    }
}

struct FusedAdam<'a> {
    moments: Mutex<&'a mut Store>,
    scalars: F32Scalars,
}

const CHUNK: usize = 1 << 14;

impl<'a> FusedAdam<'a> {
    fn store(&self) -> Result<std::sync::MutexGuard<'_, &'a mut Store>> {
        self.moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused Adam: poisoned moments".into()))
    }
}

fn offsets(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("fused Adam: the {what} must be contiguous")))
}

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
        let ((p0, p1), (g0, g1)) = (offsets(param_layout, "parameter")?, offsets(grad_layout, "gradient")?);
        let (param, grad) = (&mut param[p0..p1], &grad[g0..g1]);
        let mut store = self.store()?;
        let Store::Host { m, v } = &mut **store else {
            candle_core::bail!("fused Adam: a CPU parameter with moments on another device")
        };
        if grad.len() != param.len() || m.len() != param.len() {
            candle_core::bail!(
                "fused Adam: {} parameters, {} gradients, {} moments",
                param.len(),
                grad.len(),
                m.len()
            )
        }
        let s = self.scalars;
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| {
                vectorised(
                    #[inline(always)]
                    || {
                        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                            *m = s.beta1 * *m + s.one_minus_beta1 * g;
                            *v = s.beta2 * *v + s.one_minus_beta2 * g * g;
                            *p = *p * s.decay - s.lr * (*m * s.inv_c1) / ((*v * s.inv_c2).sqrt() + s.eps);
                        }
                    },
                )
            });
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        param: &mut candle_core::CudaStorage,
        param_layout: &Layout,
        grad: &candle_core::CudaStorage,
        grad_layout: &Layout,
    ) -> Result<()> {
        let ((p0, p1), (g0, g1)) = (offsets(param_layout, "parameter")?, offsets(grad_layout, "gradient")?);
        let mut store = self.store()?;
        let Store::Cuda { m, v, device } = &mut **store else {
            candle_core::bail!("fused Adam: a CUDA parameter with moments on another device")
        };
        let n = p1 - p0;
        if g1 - g0 != n || m.len() != n {
            candle_core::bail!("fused Adam: {n} parameters, {} gradients, {} moments", g1 - g0, m.len())
        }
        let grad = grad
            .as_cuda_slice::<f32>()
            .map_err(|_| candle_core::Error::Msg("fused Adam: gradients must be f32".into()))?
            .slice(g0..g1);
        let param = param
            .as_cuda_slice_mut::<f32>()
            .map_err(|_| candle_core::Error::Msg("fused Adam: parameters must be f32".into()))?;
        let mut param = param.slice_mut(p0..p1);
        crate::cuda::adam(device, &mut param, &grad, m, v, &self.scalars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn step_one(beta1: f64, beta2: f64, lr: f64) -> AdamStep {
        AdamStep {
            lr,
            beta1,
            beta2,
            eps: 1e-8,
            correction1: 1.0 - beta1,
            correction2: 1.0 - beta2,
            decay: 1.0,
        }
    }

    /// On a parameter long enough for the vector loop (and its remainder),
    /// every value is the scalar formula's, bit for bit, with weight decay.
    #[test]
    fn the_vectorised_pass_gives_the_scalar_formulas_bits() -> Result<()> {
        let n = 1003;
        let start: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let grad: Vec<f32> = (0..n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 23.0).collect();
        let param = Var::from_tensor(&Tensor::new(start.as_slice(), &Device::Cpu)?)?;
        let grad_tensor = Tensor::new(grad.as_slice(), &Device::Cpu)?;
        let mut moments = AdamMoments::zeros(&param)?;
        let step = AdamStep {
            decay: 0.99,
            ..step_one(0.9, 0.999, 0.01)
        };
        let (mut p, mut m, mut v) = (start, vec![0f32; n], vec![0f32; n]);
        let s = F32Scalars::new(&step);
        for _ in 0..2 {
            adam_update(&param, &grad_tensor, &mut moments, &step)?;
            for i in 0..n {
                m[i] = s.beta1 * m[i] + s.one_minus_beta1 * grad[i];
                v[i] = s.beta2 * v[i] + s.one_minus_beta2 * grad[i] * grad[i];
                p[i] = p[i] * s.decay - s.lr * (m[i] * s.inv_c1) / ((v[i] * s.inv_c2).sqrt() + s.eps);
            }
        }
        let got = param.as_tensor().to_vec1::<f32>()?;
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&p));
        Ok(())
    }

    /// The fused pass and the tensor fallback give one result, and the
    /// moments round-trip through host tensors.
    #[test]
    fn fused_pass_matches_the_tensor_arithmetic() -> Result<()> {
        let start = Tensor::new(&[[0.5f32, -1.0, 2.0], [0.1, 0.0, -3.0]], &Device::Cpu)?;
        let grad = Tensor::new(&[[0.2f32, -0.4, 1.5], [0.0, 3.0, -0.7]], &Device::Cpu)?;
        let fused = Var::from_tensor(&start)?;
        let mut fused_moments = AdamMoments::zeros(&fused)?;
        let reference = Var::from_tensor(&start)?;
        let zeros = start.zeros_like()?;
        let mut tensor_moments = AdamMoments(Store::Tensors {
            m: zeros.clone(),
            v: zeros,
        });
        let step = step_one(0.8, 0.95, 0.1);
        for _ in 0..2 {
            adam_update(&fused, &grad, &mut fused_moments, &step)?;
            adam_update(&reference, &grad, &mut tensor_moments, &step)?;
        }
        let (a, b) = (
            fused.flatten_all()?.to_vec1::<f32>()?,
            reference.flatten_all()?.to_vec1::<f32>()?,
        );
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let (m, v) = fused_moments.to_host_tensors(start.shape())?;
        let restored = AdamMoments::from_tensors(&start, &m, &v)?;
        let (m2, v2) = restored.to_host_tensors(start.shape())?;
        assert_eq!(m.flatten_all()?.to_vec1::<f32>()?, m2.flatten_all()?.to_vec1::<f32>()?);
        assert_eq!(v.flatten_all()?.to_vec1::<f32>()?, v2.flatten_all()?.to_vec1::<f32>()?);
        // After two equal gradients m = g·(1 − β₁²) and v = g²·(1 − β₂²).
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let (m, v) = (m.flatten_all()?.to_vec1::<f32>()?, v.flatten_all()?.to_vec1::<f32>()?);
        for ((g, m), v) in g.iter().zip(&m).zip(&v) {
            assert!(
                (m - g * 0.36).abs() < 1e-6 && (v - g * g * 0.0975).abs() < 1e-6,
                "g {g}: m {m}, v {v}"
            );
        }
        let (m, v) = (Tensor::new(m, &Device::Cpu)?, Tensor::new(v, &Device::Cpu)?);
        assert!(
            AdamMoments::from_tensors(&start, &m, &v).is_err(),
            "flat moments for a 2×3 parameter"
        );
        Ok(())
    }

    /// Adam's first step moves each weight by `lr · g / (|g| + ε)`, whatever
    /// β₂. With β₂ = 0.999, `1 − β₂` taken in f32 is 1.3e-5 short and the
    /// step 6.4e-6 too long; the kernels get it from f64.
    #[test]
    fn the_first_step_is_lr_whatever_beta2() -> Result<()> {
        let grad = Tensor::new(&[0.3f32, -2.0, 1e-3, -7e-5], &Device::Cpu)?;
        for beta2 in [0.9, 0.99, 0.999, 0.9999] {
            let weights = Var::from_tensor(&grad.zeros_like()?)?;
            let mut moments = AdamMoments::zeros(&weights)?;
            adam_update(&weights, &grad, &mut moments, &step_one(0.5, beta2, 1.0))?;
            let (moved, g) = (weights.to_vec1::<f32>()?, grad.to_vec1::<f32>()?);
            for (moved, g) in moved.iter().zip(&g) {
                let expected = -(*g as f64) / (g.abs() as f64 + 1e-8);
                assert!(
                    (*moved as f64 - expected).abs() < 5e-7,
                    "β₂ {beta2}, g {g}: moved {moved}, expected {expected}"
                );
            }
        }
        Ok(())
    }
}
