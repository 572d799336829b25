//! Evaluation over a whole set, in evaluation mode, streamed into the metrics.

use caf_backbone::{Checkpoint, Precision, VaNet};
use caf_data::{BatchLoader, Dataset, LoaderConfig, Preprocess};
use caf_objective::{MetricsSummary, VaMetrics};
use candle_core::Device;
use serde_json::{json, Value};

use crate::breakdown::Breakdown;
use crate::diagnostics::Diagnostics;
use crate::error::Result;
use crate::metrics_log::{mean_ccc, summary_json};

/// Predictions beside their labels and people, and how the regressor's
/// bottleneck behaved, for plots and [`Diagnostics`].
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub predicted: Vec<[f32; 2]>,
    pub labels: Vec<[f32; 2]>,
    /// Each sample's subject.
    pub subjects: Vec<String>,
    /// Each prediction's place in the dataset's samples.
    pub indices: Vec<usize>,
    /// For each bottleneck unit, on how many samples it was above 0.
    pub bottleneck_active: Vec<usize>,
}

/// What one evaluation over a set measured.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub summary: MetricsSummary,
    pub predictions: Predictions,
    /// Images that could not be read and were left out.
    pub skipped_images: usize,
}

impl Evaluation {
    /// Mean CCC over both axes: what the best checkpoint is chosen by.
    pub fn mean_ccc(&self) -> f64 {
        mean_ccc(&self.summary)
    }

    pub fn diagnostics(&self) -> Diagnostics {
        Diagnostics::of(&self.predictions)
    }

    pub fn breakdown(&self) -> Breakdown {
        Breakdown::of(&self.predictions)
    }

    /// The metrics record that `eval`'s JSON and every validation row of a
    /// run's metrics log hold: `metrics`, `mean_ccc`, `skipped_images`,
    /// `breakdown` (with every person's metrics when `each_subject`) and
    /// `diagnostics`.
    pub fn record(&self, each_subject: bool) -> Value {
        json!({
            "metrics": summary_json(&self.summary),
            "mean_ccc": self.mean_ccc(),
            "skipped_images": self.skipped_images,
            "breakdown": self.breakdown().to_json(each_subject),
            "diagnostics": self.diagnostics(),
        })
    }
}

/// Scores the regression network of `checkpoint` on `dataset`, with the
/// checkpoint's evaluation preprocessing, `batch_size` images at a time,
/// its convolutions' products in `precision`.
pub fn evaluate_checkpoint(
    checkpoint: &Checkpoint,
    dataset: &Dataset,
    batch_size: usize,
    device: &Device,
    precision: Precision,
) -> Result<Evaluation> {
    let net = checkpoint.va_net(device, precision)?;
    let preprocess = Preprocess::imagenet(checkpoint.spec.resize as u32, checkpoint.spec.image_size as u32)?;
    let loader = BatchLoader::new(dataset, preprocess, LoaderConfig::evaluation(batch_size))?;
    evaluate(&net, &loader, device)
}

/// Runs `net` over every batch of `loader` (which should use the evaluation
/// preprocessing): the metrics, the predictions, and how many images were
/// unreadable.
pub fn evaluate(net: &VaNet, loader: &BatchLoader, device: &Device) -> Result<Evaluation> {
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
        predictions.indices.extend_from_slice(&batch.indices);
    }
    Ok(Evaluation {
        summary: metrics.summary(),
        predictions,
        skipped_images: epoch.skipped(),
    })
}
