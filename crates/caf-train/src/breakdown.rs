//! Metrics broken down the ways person-independence is judged: per person
//! (the median and the worst validated person), and per label intensity
//! (the paper's claim is about weak expressions).

use std::collections::BTreeMap;
use std::fmt;

use caf_objective::{MetricsSummary, VaMetrics};
use serde_json::{json, Value};

use crate::evaluate::Predictions;
use crate::metrics_log::{mean_ccc, summary_json};

/// Label intensity `|(v, a)|` bands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Band {
    /// `|(v, a)| < 0.3`.
    Weak,
    /// `0.3 ≤ |(v, a)| < 0.6`.
    Medium,
    /// `|(v, a)| ≥ 0.6`.
    Strong,
}

impl Band {
    pub const ALL: [Band; 3] = [Band::Weak, Band::Medium, Band::Strong];

    /// The band of a label.
    pub fn of(label: [f32; 2]) -> Self {
        let intensity = (label[0] * label[0] + label[1] * label[1]).sqrt();
        if intensity < 0.3 {
            Band::Weak
        } else if intensity < 0.6 {
            Band::Medium
        } else {
            Band::Strong
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Band::Weak => "weak (<0.3)",
            Band::Medium => "medium",
            Band::Strong => "strong (≥0.6)",
        }
    }
}

/// Metrics per person and per intensity band of one evaluation.
#[derive(Debug, Clone)]
pub struct Breakdown {
    /// Each person's metrics, by name.
    pub subjects: BTreeMap<String, MetricsSummary>,
    /// Each band's metrics (bands without a sample are left out).
    pub bands: Vec<(Band, MetricsSummary)>,
}

impl Breakdown {
    pub fn of(predictions: &Predictions) -> Self {
        let mut subjects: BTreeMap<String, VaMetrics> = BTreeMap::new();
        let mut bands: BTreeMap<Band, VaMetrics> = BTreeMap::new();
        for ((predicted, label), subject) in predictions
            .predicted
            .iter()
            .zip(&predictions.labels)
            .zip(&predictions.subjects)
        {
            subjects
                .entry(subject.clone())
                .or_default()
                .extend(&[*predicted], &[*label]);
            bands
                .entry(Band::of(*label))
                .or_default()
                .extend(&[*predicted], &[*label]);
        }
        Self {
            subjects: subjects.into_iter().map(|(name, m)| (name, m.summary())).collect(),
            bands: bands.into_iter().map(|(band, m)| (band, m.summary())).collect(),
        }
    }

    /// People ordered by mean CCC, worst first (NaN, a person whose labels or
    /// predictions are constant, counts as worst).
    fn ranked(&self) -> Vec<(&str, f64)> {
        let mut ranked: Vec<(&str, f64)> = self
            .subjects
            .iter()
            .map(|(name, summary)| (name.as_str(), mean_ccc(summary)))
            .collect();
        ranked.sort_by(|a, b| {
            let key = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
            key(a.1).total_cmp(&key(b.1))
        });
        ranked
    }

    /// The median person's mean CCC.
    pub fn median_subject_ccc(&self) -> f64 {
        let ranked = self.ranked();
        match ranked.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => ranked[n / 2].1,
            n => (ranked[n / 2 - 1].1 + ranked[n / 2].1) / 2.0,
        }
    }

    /// The worst person and their mean CCC.
    pub fn worst_subject(&self) -> Option<(&str, f64)> {
        self.ranked().first().copied()
    }

    /// As JSON; `each_subject` adds every person's metrics (large for a
    /// dataset whose every image is its own subject, as AffectNet's).
    pub fn to_json(&self, each_subject: bool) -> Value {
        let worst = self.worst_subject();
        let mut subjects = json!({
            "count": self.subjects.len(),
            "median_mean_ccc": self.median_subject_ccc(),
            "worst": worst.map(|(name, ccc)| json!({"subject": name, "mean_ccc": ccc})),
        });
        if each_subject {
            subjects["each"] = self
                .subjects
                .iter()
                .map(|(name, s)| (name.clone(), summary_json(s)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        json!({
            "subjects": subjects,
            "bands": self.bands.iter().map(|(band, s)| json!({"band": band.name(), "metrics": summary_json(s), "mean_ccc": mean_ccc(s)})).collect::<Vec<_>>(),
        })
    }
}

impl fmt::Display for Breakdown {
    /// Per band: n, RMSE and CCC of each axis; then the median and worst person.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:>6} {:>9} {:>9} {:>9} {:>9}",
            "label band", "n", "RMSE v", "CCC v", "RMSE a", "CCC a"
        )?;
        for (band, s) in &self.bands {
            writeln!(
                f,
                "{:<14} {:>6} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
                band.name(),
                s.count,
                s.valence.rmse,
                s.valence.ccc,
                s.arousal.rmse,
                s.arousal.ccc
            )?;
        }
        match self.worst_subject() {
            Some((name, worst)) => writeln!(
                f,
                "per person ({}): median mean CCC {:.4}, worst {name} {worst:.4}",
                self.subjects.len(),
                self.median_subject_ccc()
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_and_people_are_scored_apart() {
        let mut predictions = Predictions::default();
        // Person "a" predicted exactly, person "b" predicted backwards.
        for i in 0..20 {
            let t = i as f32 / 20.0;
            let label = [t - 0.5, 0.8 * (t * 6.0).sin()];
            for (subject, predicted) in [("a", label), ("b", [-label[0], -label[1]])] {
                predictions.labels.push(label);
                predictions.predicted.push(predicted);
                predictions.subjects.push(subject.into());
            }
        }
        let breakdown = Breakdown::of(&predictions);
        assert_eq!(breakdown.subjects.len(), 2);
        let (worst, ccc) = breakdown.worst_subject().expect("people");
        assert_eq!(worst, "b");
        assert!(ccc < -0.9, "{ccc}");
        assert!((mean_ccc(&breakdown.subjects["a"]) - 1.0).abs() < 1e-9);
        assert!((breakdown.median_subject_ccc() - (1.0 + ccc) / 2.0).abs() < 1e-9);
        let counted: u64 = breakdown.bands.iter().map(|(_, s)| s.count).sum();
        assert_eq!(counted, 40);
        assert_eq!(Band::of([0.2, 0.2]), Band::Weak);
        assert_eq!(Band::of([0.3, 0.0]), Band::Medium);
        assert_eq!(Band::of([0.0, -0.6]), Band::Strong);
        let text = breakdown.to_string();
        assert!(text.contains("worst b"), "{text}");
        let json = breakdown.to_json(true);
        assert_eq!(json["subjects"]["worst"]["subject"], "b");
        assert_eq!(json["subjects"]["each"]["a"]["count"], 20);
        assert!(breakdown.to_json(false)["subjects"].get("each").is_none());
    }
}
