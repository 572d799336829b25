//! Whether a model reads valence and arousal as two things: the regressor's
//! live bottleneck units, and how correlated its two outputs are beside how
//! correlated the labels are.

use serde::Serialize;

use crate::evaluate::Predictions;

/// A share of samples below which a bottleneck unit counts as dead.
const LIVE_SHARE: f64 = 0.01;

/// Signs of a collapsed model, from one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostics {
    /// Bottleneck units above 0 on at least 1 % of the samples (of 8). With
    /// one, every prediction lies on a line; with two, on a bent one.
    pub live_units: usize,
    /// Each unit's share of samples on which it was above 0.
    pub unit_activity: Vec<f64>,
    /// Pearson correlation of predicted valence with predicted arousal…
    pub predicted_va_correlation: f64,
    /// …and of the labels' valence with their arousal: a healthy model's
    /// first is near its second; a collapsed one's near ±1.
    pub label_va_correlation: f64,
}

impl Diagnostics {
    pub fn of(predictions: &Predictions) -> Self {
        let count = predictions.predicted.len().max(1) as f64;
        let unit_activity: Vec<f64> = predictions
            .bottleneck_active
            .iter()
            .map(|&active| active as f64 / count)
            .collect();
        Self {
            live_units: unit_activity.iter().filter(|&&share| share >= LIVE_SHARE).count(),
            unit_activity,
            predicted_va_correlation: correlation(&predictions.predicted),
            label_va_correlation: correlation(&predictions.labels),
        }
    }
}

/// Pearson correlation of the two columns (NaN when either is constant).
pub(crate) fn correlation(points: &[[f32; 2]]) -> f64 {
    let n = points.len() as f64;
    let mean = |axis: usize| points.iter().map(|p| p[axis] as f64).sum::<f64>() / n;
    let (mx, my) = (mean(0), mean(1));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for p in points {
        let (dx, dy) = (p[0] as f64 - mx, p[1] as f64 - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    sxy / (sxx * syy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_on_a_line_is_told_from_a_healthy_one() {
        let labels: Vec<[f32; 2]> = (0..200)
            .map(|i| {
                let t = i as f32 * 0.37;
                [t.sin() * 0.8, (t * 1.7).cos() * 0.6]
            })
            .collect();
        let on_a_line: Vec<[f32; 2]> = labels.iter().map(|l| [l[0], 0.5 * l[0] - 0.1]).collect();
        let collapsed = Diagnostics::of(&Predictions {
            predicted: on_a_line,
            labels: labels.clone(),
            subjects: vec![String::new(); 200],
            bottleneck_active: vec![0, 200, 1, 0, 0, 0, 0, 0],
            indices: (0..200).collect(),
        });
        assert_eq!(collapsed.live_units, 1, "1 of 200 is under 1 %");
        assert!((collapsed.predicted_va_correlation - 1.0).abs() < 1e-9);
        assert!(collapsed.label_va_correlation.abs() < 0.2, "{collapsed:?}");
        let healthy = Diagnostics::of(&Predictions {
            predicted: labels.clone(),
            labels,
            subjects: vec![String::new(); 200],
            bottleneck_active: vec![120; 8],
            indices: (0..200).collect(),
        });
        assert_eq!(healthy.live_units, 8);
        assert!((healthy.predicted_va_correlation - healthy.label_va_correlation).abs() < 1e-12);
        assert_eq!(healthy.unit_activity[0], 0.6);
    }
}
