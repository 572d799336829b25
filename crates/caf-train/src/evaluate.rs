//! Evaluation over a whole set, in evaluation mode, streamed into the metrics.

use anyhow::Result;
use caf_backbone::VaNet;
use caf_data::BatchLoader;
use caf_objective::{MetricsSummary, VaMetrics};
use candle_core::Device;

/// Predictions beside their labels and people, and how the regressor's
/// bottleneck behaved, for plots and [`Diagnostics`](crate::Diagnostics).
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub predicted: Vec<[f32; 2]>,
    pub labels: Vec<[f32; 2]>,
    /// Each sample's subject.
    pub subjects: Vec<String>,
    /// For each bottleneck unit, on how many samples it was above 0.
    pub bottleneck_active: Vec<usize>,
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
        let (va, bottleneck) = net.predict_with_bottleneck(&batch.images)?;
        let predicted: Vec<[f32; 2]> = va.to_vec2::<f32>()?.into_iter().map(|row| [row[0], row[1]]).collect();
        let active = bottleneck
            .gt(0f32)?
            .to_dtype(candle_core::DType::U32)?
            .sum(0)?
            .to_vec1::<u32>()?;
        if predictions.bottleneck_active.is_empty() {
            predictions.bottleneck_active = vec![0; active.len()];
        }
        for (total, count) in predictions.bottleneck_active.iter_mut().zip(active) {
            *total += count as usize;
        }
        metrics.extend(&predicted, &batch.label_values);
        predictions.predicted.extend_from_slice(&predicted);
        predictions.labels.extend_from_slice(&batch.label_values);
        predictions.subjects.extend(batch.subjects.iter().cloned());
    }
    Ok((metrics.summary(), predictions, epoch.skipped()))
}
