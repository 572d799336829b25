//! Metrics as JSON lines beside the checkpoints.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use caf_objective::{AxisMetrics, MetricsSummary};
use serde_json::{json, Value};

/// Appends one JSON object per line to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn write(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}").with_context(|| format!("cannot write {}", self.path.display()))
    }
}

fn axis(metrics: &AxisMetrics) -> Value {
    json!({ "rmse": metrics.rmse, "sagr": metrics.sagr, "pcc": metrics.pcc, "ccc": metrics.ccc })
}

/// A metric summary as JSON (`{"count", "valence": {...}, "arousal": {...}}`).
pub fn summary_json(summary: &MetricsSummary) -> Value {
    json!({ "count": summary.count, "valence": axis(&summary.valence), "arousal": axis(&summary.arousal) })
}

/// Mean CCC over both axes: the number the best checkpoint is chosen by.
pub fn mean_ccc(summary: &MetricsSummary) -> f64 {
    (summary.valence.ccc + summary.arousal.ccc) / 2.0
}

/// Mean ± standard deviation (population) of every metric over folds or seeds, as a table.
pub fn fold_table(results: &[MetricsSummary]) -> String {
    let stat = |pick: &dyn Fn(&MetricsSummary) -> f64| {
        let values: Vec<f64> = results.iter().map(pick).collect();
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len().max(1) as f64;
        format!("{mean:.4} ± {:.4}", var.sqrt())
    };
    let mut table = format!(
        "{:<8} {:>17} {:>17} {:>17} {:>17}   (n = {} runs)\n",
        "",
        "RMSE",
        "SAGR",
        "PCC",
        "CCC",
        results.len()
    );
    type Axis = fn(&MetricsSummary) -> &AxisMetrics;
    for (name, axis) in [
        ("valence", (|s| &s.valence) as Axis),
        ("arousal", (|s| &s.arousal) as Axis),
    ] {
        table.push_str(&format!(
            "{name:<8} {:>17} {:>17} {:>17} {:>17}\n",
            stat(&|s| axis(s).rmse),
            stat(&|s| axis(s).sagr),
            stat(&|s| axis(s).pcc),
            stat(&|s| axis(s).ccc)
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(ccc: f64) -> MetricsSummary {
        let axis = AxisMetrics {
            rmse: 0.2,
            sagr: 0.8,
            pcc: 0.5,
            ccc,
        };
        MetricsSummary {
            count: 10,
            valence: axis,
            arousal: axis,
        }
    }

    #[test]
    fn fold_table_gives_mean_and_population_std() {
        let table = fold_table(&[summary(0.4), summary(0.6)]);
        assert!(table.contains("0.5000 ± 0.1000"), "{table}");
        assert!(table.contains("0.2000 ± 0.0000"), "{table}");
        assert!(table.contains("(n = 2 runs)"), "{table}");
        assert_eq!(mean_ccc(&summary(0.4)), 0.4);
    }
}
