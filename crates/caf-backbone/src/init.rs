//! Reproducible initial weights.
//!
//! candle initialises variables from a thread-local generator that cannot be
//! seeded. [`seeded_init`] redraws every random variable from a seed with
//! PyTorch's defaults, so a training run starts from the same weights every
//! time (and a resumed run can be compared with an uninterrupted one).

use caf_rng::Rng;
use candle_core::{Result, Tensor};
use candle_nn::VarMap;

use crate::model::Arch;

/// Redraws the weights and biases of convolutions and linear layers in
/// `varmap` from `seed`: torchvision's initialisation for ResNet-18
/// convolutions (Kaiming normal over fan-out), PyTorch's default for the
/// rest (uniform in ±1/√fan_in, biases too). BatchNorm parameters and
/// statistics keep their constant starts (1, 0, running 0 and 1). Each
/// tensor's values depend only on the seed and its name.
pub fn seeded_init(varmap: &VarMap, arch: Arch, seed: u64) -> Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("model variables are poisoned".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let dims = var.dims();
        let is_norm = name.contains(".bn") || name.starts_with("encoder.bn") || name.contains("downsample.1");
        if is_norm || name.ends_with("running_mean") || name.ends_with("running_var") {
            continue;
        }
        let mut rng = Rng::derive(
            seed,
            &[name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            })],
        );
        let values: Vec<f32> = match (dims.len(), arch) {
            (4, Arch::ResNet18) => {
                let fan_out = dims[0] * dims[2] * dims[3];
                let std = (2.0 / fan_out as f64).sqrt();
                (0..var.elem_count()).map(|_| (rng.normal() * std) as f32).collect()
            }
            _ => {
                let fan_in = fan_in_of(name, dims, &vars);
                let bound = 1.0 / (fan_in as f64).sqrt();
                (0..var.elem_count())
                    .map(|_| rng.uniform(-bound, bound) as f32)
                    .collect()
            }
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Fan-in of a weight (its size per output) or of a bias (its weight's).
fn fan_in_of(name: &str, dims: &[usize], vars: &std::collections::HashMap<String, candle_core::Var>) -> usize {
    if let Some(prefix) = name.strip_suffix(".bias") {
        if let Some(weight) = vars.get(&format!("{prefix}.weight")) {
            return weight.dims().iter().skip(1).product::<usize>().max(1);
        }
    }
    dims.iter().skip(1).product::<usize>().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CafNet;
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    fn values(varmap: &VarMap, name: &str) -> Vec<f32> {
        varmap.data().lock().expect("lock")[name]
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .expect("values")
    }

    #[test]
    fn same_seed_same_weights() -> Result<()> {
        for arch in Arch::ALL {
            let (a, b) = (VarMap::new(), VarMap::new());
            CafNet::new(arch, VarBuilder::from_varmap(&a, DType::F32, &Device::Cpu))?;
            CafNet::new(arch, VarBuilder::from_varmap(&b, DType::F32, &Device::Cpu))?;
            seeded_init(&a, arch, 3)?;
            seeded_init(&b, arch, 3)?;
            let names: Vec<String> = a.data().lock().expect("lock").keys().cloned().collect();
            for name in names {
                assert_eq!(values(&a, &name), values(&b, &name), "{name}");
            }
            let lin0 = values(&a, "regressor.lin0.weight");
            let bound = 1.0 / (arch.feature_dim() as f32).sqrt();
            assert!(lin0.iter().all(|v| v.abs() <= bound) && lin0.iter().any(|v| v.abs() > bound * 0.9));
            seeded_init(&b, arch, 4)?;
            assert_ne!(values(&b, "regressor.lin0.weight"), lin0);
        }
        let resnet = VarMap::new();
        CafNet::new(
            Arch::ResNet18,
            VarBuilder::from_varmap(&resnet, DType::F32, &Device::Cpu),
        )?;
        seeded_init(&resnet, Arch::ResNet18, 0)?;
        assert!(values(&resnet, "encoder.bn1.weight").iter().all(|&v| v == 1.0));
        assert!(values(&resnet, "encoder.layer1.0.bn2.running_var")
            .iter()
            .all(|&v| v == 1.0));
        let conv = values(&resnet, "encoder.layer4.1.conv2.weight");
        let std = (conv.iter().map(|v| v * v).sum::<f32>() / conv.len() as f32).sqrt();
        assert!((std - (2.0f32 / (512.0 * 9.0)).sqrt()).abs() < 1e-3, "{std}");
        Ok(())
    }
}
