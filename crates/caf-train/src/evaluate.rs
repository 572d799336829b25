//! Evaluation over a whole set, in evaluation mode, streamed into the metrics.

use anyhow::Result;
use caf_backbone::VaNet;
use caf_data::BatchLoader;
use caf_objective::{MetricsSummary, VaMetrics};
use candle_core::Device;

/// Predictions beside their labels, for plots.
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub predicted: Vec<[f32; 2]>,
    pub labels: Vec<[f32; 2]>,
}

/// Runs `net` over every batch of `loader` (which should use the evaluation
/// preprocessing) and returns the metrics, the predictions, and how many
/// images were unreadable.
pub fn evaluate(net: &VaNet, loader: &BatchLoader, device: &Device) -> Result<(MetricsSummary, Predictions, usize)> {
    let mut metrics = VaMetrics::new();
    let mut predictions = Predictions::default();
    let mut epoch = loader.epoch(0, device);
    for batch in epoch.by_ref() {
        let batch = batch?;
        let predicted: Vec<[f32; 2]> = net
            .predict(&batch.images)?
            .to_vec2::<f32>()?
            .into_iter()
            .map(|row| [row[0], row[1]])
            .collect();
        metrics.extend(&predicted, &batch.label_values);
        predictions.predicted.extend_from_slice(&predicted);
        predictions.labels.extend_from_slice(&batch.label_values);
    }
    Ok((metrics.summary(), predictions, epoch.skipped()))
}
