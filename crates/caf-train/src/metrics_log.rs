//! Metrics as JSON lines beside the checkpoints.

use std::path::Path;

use caf_backbone::{write_file_atomically, RowFile};
use caf_objective::{AxisMetrics, MetricsSummary};
use serde_json::{json, Value};

use crate::error::{Result, TrainError};

/// Appends one JSON object per line to `metrics.jsonl`. A row is written
/// whole or not at all: one that fails part-way (a full disk) is cut off
/// again, so every row in the file stays readable.
pub struct MetricsLog {
    rows: RowFile,
}

impl MetricsLog {
    /// Opens the log of a run that stands at iteration `step` (0 for a fresh
    /// run): rows about later iterations, which a killed run wrote after its
    /// last checkpoint and a resumed run writes again, are removed first, and
    /// so is a line cut short by the kill. The file is rewritten atomically.
    pub fn resume_at(path: &Path, step: u64) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut kept = String::with_capacity(text.len());
                let mut dropped = 0usize;
                for line in text.lines() {
                    let row_step = serde_json::from_str::<Value>(line)
                        .ok()
                        .and_then(|record| record["step"].as_u64());
                    match row_step {
                        Some(row_step) if row_step <= step => {
                            kept.push_str(line);
                            kept.push('\n');
                        }
                        _ => dropped += 1,
                    }
                }
                if dropped > 0 {
                    tracing::info!(
                        path = %path.display(),
                        rows = dropped,
                        step,
                        "metrics rows past the checkpoint's step removed"
                    );
                    write_file_atomically(path, kept.as_bytes())?;
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(TrainError::file("read", path)(error)),
        }
        Ok(Self {
            rows: RowFile::append_to(path)?,
        })
    }

    /// Appends `record` as one line, in one write; on failure the file is
    /// cut back to its last whole row and the error names the file.
    pub fn write(&mut self, record: &Value) -> Result<()> {
        self.rows
            .append(format!("{record}\n").as_bytes())
            .map_err(|error| match error {
                caf_backbone::Error::Io { file, error } => TrainError::File {
                    path: file,
                    action: "write a metrics row to",
                    source: error,
                },
                other => other.into(),
            })
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
    use anyhow::Result;

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
    fn resuming_cuts_rows_past_the_step_and_a_torn_last_line() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("metrics.jsonl");
        let rows = [
            r#"{"kind":"train","step":1}"#,
            r#"{"kind":"train","step":2}"#,
            r#"{"kind":"validation","step":2,"epoch":1}"#,
            r#"{"kind":"train","step":3}"#,
            r#"{"kind":"train","st"#,
        ];
        std::fs::write(&path, rows.join("\n"))?;
        let mut log = MetricsLog::resume_at(&path, 2)?;
        log.write(&json!({"kind": "train", "step": 3}))?;
        drop(log);
        let expected = format!(
            "{}\n{}\n{}\n{}\n",
            rows[0], rows[1], rows[2], r#"{"kind":"train","step":3}"#
        );
        assert_eq!(std::fs::read_to_string(&path)?, expected);
        MetricsLog::resume_at(&path, 0)?;
        assert_eq!(std::fs::read_to_string(&path)?, "", "a fresh run starts a fresh log");
        Ok(())
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
