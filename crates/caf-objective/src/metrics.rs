//! Evaluation metrics over a whole set, streamed in f64.

use std::fmt;

/// Running moments of one axis (label `y`, prediction `ŷ`), updated one pair
/// at a time (Welford) and mergeable (Chan et al.), so nothing but these few
/// numbers is kept however large the set.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct AxisMoments {
    count: u64,
    mean_label: f64,
    mean_prediction: f64,
    /// Σ (y − μ_y)²
    m2_label: f64,
    /// Σ (ŷ − μ_ŷ)²
    m2_prediction: f64,
    /// Σ (y − μ_y)(ŷ − μ_ŷ)
    co_moment: f64,
    /// Σ (ŷ − y)²
    squared_error: f64,
    /// Pairs whose signs agree (see [`AxisMetrics::sagr`]).
    sign_agreements: u64,
}

impl AxisMoments {
    fn push(&mut self, label: f64, prediction: f64) {
        self.count += 1;
        let n = self.count as f64;
        let delta_label = label - self.mean_label;
        self.mean_label += delta_label / n;
        let delta_prediction = prediction - self.mean_prediction;
        self.mean_prediction += delta_prediction / n;
        self.m2_label += delta_label * (label - self.mean_label);
        self.m2_prediction += delta_prediction * (prediction - self.mean_prediction);
        self.co_moment += delta_label * (prediction - self.mean_prediction);
        self.squared_error += (prediction - label) * (prediction - label);
        self.sign_agreements += (sign(label) == sign(prediction)) as u64;
    }

    fn merge(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta_label = other.mean_label - self.mean_label;
        let delta_prediction = other.mean_prediction - self.mean_prediction;
        let weight = na * nb / n;
        self.m2_label += other.m2_label + delta_label * delta_label * weight;
        self.m2_prediction += other.m2_prediction + delta_prediction * delta_prediction * weight;
        self.co_moment += other.co_moment + delta_label * delta_prediction * weight;
        self.mean_label += delta_label * nb / n;
        self.mean_prediction += delta_prediction * nb / n;
        self.count += other.count;
        self.squared_error += other.squared_error;
        self.sign_agreements += other.sign_agreements;
    }

    fn metrics(&self) -> AxisMetrics {
        if self.count == 0 {
            return AxisMetrics {
                rmse: f64::NAN,
                sagr: f64::NAN,
                pcc: f64::NAN,
                ccc: f64::NAN,
            };
        }
        let n = self.count as f64;
        let mean_gap = self.mean_label - self.mean_prediction;
        AxisMetrics {
            rmse: (self.squared_error / n).sqrt(),
            sagr: self.sign_agreements as f64 / n,
            pcc: self.co_moment / (self.m2_label * self.m2_prediction).sqrt(),
            ccc: 2.0 * self.co_moment / (self.m2_label + self.m2_prediction + n * mean_gap * mean_gap),
        }
    }
}

/// −1, 0 or +1, as numpy's `sign`.
fn sign(x: f64) -> i8 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}

/// The metrics of one axis over a whole set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisMetrics {
    /// Root mean squared error.
    pub rmse: f64,
    /// Sign agreement rate: the fraction of samples whose label and prediction
    /// have the same sign, each sign being −1, 0 or +1 (so an exact 0 agrees
    /// only with an exact 0, as with numpy's `sign` in the reference code).
    pub sagr: f64,
    /// Pearson correlation; NaN when labels or predictions have zero variance.
    pub pcc: f64,
    /// Concordance correlation `2·cov / (σ_y² + σ_ŷ² + (μ_y − μ_ŷ)²)`;
    /// NaN only when both sides are the same constant.
    pub ccc: f64,
}

/// Valence and arousal metrics of a set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsSummary {
    pub count: u64,
    pub valence: AxisMetrics,
    pub arousal: AxisMetrics,
}

impl fmt::Display for MetricsSummary {
    /// The metric table, one row per axis.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<8} {:>8} {:>8} {:>8} {:>8}   (n = {})",
            "", "RMSE", "SAGR", "PCC", "CCC", self.count
        )?;
        for (name, axis) in [("valence", &self.valence), ("arousal", &self.arousal)] {
            writeln!(
                f,
                "{name:<8} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
                axis.rmse, axis.sagr, axis.pcc, axis.ccc
            )?;
        }
        Ok(())
    }
}

/// Streaming accumulator of [`MetricsSummary`]: push predictions batch by
/// batch, merge accumulators of parallel workers, read the summary at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VaMetrics {
    valence: AxisMoments,
    arousal: AxisMoments,
}

impl VaMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample: `(valence, arousal)` prediction and label.
    pub fn push(&mut self, prediction: [f32; 2], label: [f32; 2]) {
        self.valence.push(label[0] as f64, prediction[0] as f64);
        self.arousal.push(label[1] as f64, prediction[1] as f64);
    }

    /// Adds a batch; `predictions` and `labels` must have the same length.
    pub fn extend(&mut self, predictions: &[[f32; 2]], labels: &[[f32; 2]]) {
        assert_eq!(
            predictions.len(),
            labels.len(),
            "VaMetrics::extend: {} predictions for {} labels",
            predictions.len(),
            labels.len()
        );
        for (prediction, label) in predictions.iter().zip(labels) {
            self.push(*prediction, *label);
        }
    }

    /// Folds another accumulator's samples into this one.
    pub fn merge(&mut self, other: &VaMetrics) {
        self.valence.merge(&other.valence);
        self.arousal.merge(&other.arousal);
    }

    pub fn count(&self) -> u64 {
        self.valence.count
    }

    pub fn summary(&self) -> MetricsSummary {
        MetricsSummary {
            count: self.count(),
            valence: self.valence.metrics(),
            arousal: self.arousal.metrics(),
        }
    }
}
