//! Metrics of a video dataset's predictions after causal smoothing: each
//! video's frames in order of their numbers, each prediction through the
//! smoothing that `predict` applies to a video's face tracks.

use std::collections::BTreeMap;
use std::path::Path;

use caf_data::Dataset;
use caf_objective::{MetricsSummary, VaMetrics};
use caf_video::{frame_number, Smoother};

use crate::error::{Result, TrainError};
use crate::evaluate::Predictions;

/// The metrics of the smoothed predictions, and over how many videos.
#[derive(Debug, Clone)]
pub struct SmoothedMetrics {
    pub summary: MetricsSummary,
    /// Videos (folders of frames) the predictions were smoothed over.
    pub videos: usize,
    pub fps: f64,
    pub time_constant_s: f64,
}

/// Smooths `predictions` of `dataset` per video (the folder holding the
/// frame, frames ordered by the number ending their names, a frame's time
/// `(number − first number) / fps`) with a causal filter of
/// `time_constant_s`, and scores them against the same labels. A sample
/// whose name ends in no number is an error that names it: the dataset is
/// not one of numbered video frames.
pub fn smoothed_metrics(
    dataset: &Dataset,
    predictions: &Predictions,
    fps: f64,
    time_constant_s: f64,
) -> Result<SmoothedMetrics> {
    let invalid = |message: String| TrainError::malformed(Path::new(&dataset.name), message);
    if !(fps.is_finite() && fps > 0.0) {
        return Err(invalid(format!("the frame rate must be a positive number, not {fps}")));
    }
    let smoother = Smoother::new(time_constant_s)
        .ok_or_else(|| invalid(format!("the time constant must be 0 s or more, not {time_constant_s}")))?;
    // Each video's predictions: (frame number, place in `predictions`).
    let mut videos: BTreeMap<&Path, Vec<(u64, usize)>> = BTreeMap::new();
    for (place, &index) in predictions.indices.iter().enumerate() {
        let sample = dataset.samples.get(index).ok_or_else(|| {
            invalid(format!(
                "prediction {place} is of sample {index}, past the dataset's end"
            ))
        })?;
        let number = frame_number(&sample.path).ok_or_else(|| {
            invalid(format!(
                "{} has no frame number at the end of its name: smoothing needs numbered video frames",
                sample.path.display()
            ))
        })?;
        let video = sample.path.parent().unwrap_or(Path::new(""));
        videos.entry(video).or_default().push((number, place));
    }
    let mut smoothed = predictions.predicted.clone();
    for frames in videos.values_mut() {
        frames.sort_unstable();
        let first = frames[0].0;
        let mut video_smoother = smoother.clone();
        for &(number, place) in frames.iter() {
            let time_s = (number - first) as f64 / fps;
            smoothed[place] = video_smoother.update(time_s, predictions.predicted[place]);
        }
    }
    let mut metrics = VaMetrics::new();
    metrics.extend(&smoothed, &predictions.labels);
    Ok(SmoothedMetrics {
        summary: metrics.summary(),
        videos: videos.len(),
        fps,
        time_constant_s,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use caf_data::Sample;

    use super::*;

    /// Two videos whose labels ramp; the predictions are the labels plus
    /// noise that flips sign every frame. The samples are listed shuffled.
    fn noisy_videos() -> (Dataset, Predictions) {
        let mut samples = Vec::new();
        let mut predictions = Predictions::default();
        let order: Vec<usize> = (0..60).map(|k| (k * 37) % 60).collect();
        for &k in &order {
            let (video, frame) = (k / 30, k % 30);
            let label = 0.02 * frame as f32 - 0.3;
            let noise = if frame % 2 == 0 { 0.2 } else { -0.2 };
            samples.push(Sample {
                path: PathBuf::from(format!("frames/video{video}/{:05}.jpg", frame + 1)),
                valence: label,
                arousal: -label,
                subject: format!("video{video}"),
                face: None,
            });
            predictions.indices.push(samples.len() - 1);
            predictions.predicted.push([label + noise, -label - noise]);
            predictions.labels.push([label, -label]);
        }
        let dataset = Dataset {
            name: "frames".into(),
            samples,
            report: Default::default(),
        };
        (dataset, predictions)
    }

    fn rmse(summary: &MetricsSummary) -> f64 {
        summary.valence.rmse
    }

    #[test]
    fn smoothing_each_video_in_frame_order_removes_frame_to_frame_noise() {
        let (dataset, predictions) = noisy_videos();
        let raw = {
            let mut metrics = VaMetrics::new();
            metrics.extend(&predictions.predicted, &predictions.labels);
            metrics.summary()
        };
        let smoothed = smoothed_metrics(&dataset, &predictions, 30.0, 0.2).expect("numbered frames");
        assert_eq!(smoothed.videos, 2);
        assert!(
            rmse(&smoothed.summary) < 0.5 * rmse(&raw),
            "smoothed {} vs raw {}",
            rmse(&smoothed.summary),
            rmse(&raw)
        );
        // No smoothing: the raw metrics.
        let none = smoothed_metrics(&dataset, &predictions, 30.0, 0.0).expect("numbered frames");
        assert!((rmse(&none.summary) - rmse(&raw)).abs() < 1e-9);
    }

    #[test]
    fn frames_without_numbers_are_refused_by_name() {
        let (mut dataset, predictions) = noisy_videos();
        dataset.samples[3].path = PathBuf::from("frames/video0/cover.jpg");
        let error = smoothed_metrics(&dataset, &predictions, 30.0, 0.5).expect_err("refused");
        assert!(error.to_string().contains("cover.jpg"), "{error}");
        assert!(smoothed_metrics(&dataset, &predictions, 0.0, 0.5).is_err());
    }
}
