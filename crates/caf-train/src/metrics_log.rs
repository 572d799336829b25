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
