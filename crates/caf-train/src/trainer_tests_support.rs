//! What the trainer's tests start from: a tiny run and a fixed batch.

use std::path::Path;

use anyhow::Result;
use caf_data::Batch;
use candle_core::{Device, Tensor};

use super::*;
use crate::config::DataConfig;

/// A CAF run over 6 generated people at 64 px, batch 8.
pub(super) fn tiny(dir: &Path, overrides: impl FnOnce(&mut TrainConfig)) -> Result<Trainer> {
    let mut config = TrainConfig {
        image_size: 64,
        resize: 64,
        data: DataConfig::Synthetic {
            dir: dir.join("data"),
            subjects: 6,
            images_per_subject: 4,
            size: 64,
            seed: 1,
        },
        validation_ratio: 0.34,
        batch_size: 8,
        epochs: 1,
        lr: 1e-3,
        output: dir.join("run"),
        ..TrainConfig::default()
    };
    overrides(&mut config);
    Trainer::new(config)
}

/// Eight samples, strong and weak, with the given labels.
pub(super) fn batch(labels: [[f32; 2]; 8]) -> Result<Batch> {
    let values: Vec<f32> = (0..8 * 3 * 64 * 64).map(|i| (i as f32 * 0.618).sin()).collect();
    let images = Tensor::from_vec(values, (8, 3, 64, 64), &Device::Cpu)?;
    Ok(Batch {
        images,
        labels: Tensor::from_iter(labels.iter().flatten().copied(), &Device::Cpu)?.reshape((8, 2))?,
        label_values: labels.to_vec(),
        subjects: (0..8).map(|i| format!("s{i}")).collect(),
        indices: (0..8).collect(),
        skipped: Vec::new(),
    })
}

pub(super) const LABELS: [[f32; 2]; 8] = [
    [0.9, 0.8],
    [-0.8, 0.7],
    [0.05, -0.1],
    [-0.1, 0.05],
    [0.85, -0.9],
    [0.0, 0.1],
    [-0.9, -0.8],
    [0.1, 0.0],
];
