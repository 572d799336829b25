//! Small runs and models that several end-to-end tests start from.

use std::path::Path;

use anyhow::Result;
use caf_backbone::{save_checkpoint, seeded_init, Arch, ModelSpec, VaNet};
use caf_train::{DatasetSpec, Method, TrainConfig};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

/// A tiny run: 6 people × 8 images of 64 px, AlexNet at 64 px, batch 8, CPU.
pub fn tiny_run(data: &Path, output: &Path, method: Method, epochs: usize) -> TrainConfig {
    TrainConfig {
        method,
        image_size: 64,
        resize: 64,
        data: DatasetSpec::Synthetic {
            dir: data.to_path_buf(),
            subjects: 6,
            images_per_subject: 8,
            size: 64,
            seed: 1,
        },
        validation_ratio: 0.34,
        batch_size: 8,
        epochs,
        lr: 1e-3,
        output: output.to_path_buf(),
        log_every: 1,
        workers: 2,
        color_jitter: 0.2,
        ..TrainConfig::default()
    }
}

/// Writes a checkpoint of `arch` with seeded weights, for `image_size` inputs
/// resized from `resize`, and returns its path in `dir`.
pub fn seeded_checkpoint(
    dir: &Path,
    arch: Arch,
    seed: u64,
    image_size: usize,
    resize: usize,
) -> Result<std::path::PathBuf> {
    let varmap = VarMap::new();
    VaNet::new(arch, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    seeded_init(&varmap, arch, seed)?;
    let spec = ModelSpec {
        arch,
        image_size,
        resize,
    };
    let path = dir.join(format!("{arch}.safetensors"));
    save_checkpoint(&path, &spec, &varmap, &Default::default())?;
    Ok(path)
}
