//! What the step's tests start from: a step built from settings alone
//! (no dataset) and a fixed batch in memory.

use anyhow::Result;
use caf_data::Batch;
use candle_core::{Device, Tensor};

use super::*;
use crate::config::TrainConfig;

/// A CAF step with AlexNet at lr 1e-3, the other settings the defaults.
pub(super) fn tiny(overrides: impl FnOnce(&mut TrainConfig)) -> Result<CafStep> {
    let mut config = TrainConfig {
        lr: 1e-3,
        ..TrainConfig::default()
    };
    overrides(&mut config);
    Ok(CafStep::seeded(config.step_settings()?, &Device::Cpu)?)
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
