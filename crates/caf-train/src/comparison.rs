//! Two methods compared over the same seeds (hence the same splits): the
//! paired difference of each run's validation scores, with a 95 % interval
//! (Student's t over the seeds). A run's scores are those of its last
//! validation (its final weights) or the mean of its last few: one reading
//! swings from epoch to epoch by as much as the differences a comparison
//! looks for, and the mean of several is steadier.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::Value;

use crate::error::{Result, TrainError};

/// The scores a comparison reads from one run: of its last validation row,
/// or the means of its last few ([`seed_scores`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunScores {
    pub valence_ccc: f64,
    pub arousal_ccc: f64,
    /// Mean CCC of the two axes.
    pub mean_ccc: f64,
    /// Mean CCC of the two axes on weak labels (`|(v, a)| < 0.3`).
    pub weak_mean_ccc: f64,
}

impl RunScores {
    const NAMES: [&'static str; 4] = ["mean CCC", "weak-band mean CCC", "valence CCC", "arousal CCC"];

    fn values(&self) -> [f64; 4] {
        [self.mean_ccc, self.weak_mean_ccc, self.valence_ccc, self.arousal_ccc]
    }
}

/// How many of a run's last validations its scores average: one, its final
/// weights' ([`ValidationWindow::FINAL`]), or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationWindow(std::num::NonZeroUsize);

impl ValidationWindow {
    /// The last validation alone: the final weights' scores.
    pub const FINAL: Self = Self(std::num::NonZeroUsize::MIN);

    /// The last `count` validations; `None` for zero.
    pub fn last(count: usize) -> Option<Self> {
        std::num::NonZeroUsize::new(count).map(Self)
    }

    /// How many validations it averages.
    pub fn count(self) -> usize {
        self.0.get()
    }
}

impl fmt::Display for ValidationWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.count() {
            1 => write!(f, "each run's last validation (its final weights)"),
            n => write!(f, "the mean of each run's last {n} validations"),
        }
    }
}

/// The scores of each `seed-N` run under `folder` (what `train --seeds`
/// writes), by seed: each the mean over the run's last `window` validation
/// rows of its `metrics.jsonl`.
pub fn seed_scores(folder: &Path, window: ValidationWindow) -> Result<BTreeMap<u64, RunScores>> {
    let mut scores = BTreeMap::new();
    let entries = std::fs::read_dir(folder).map_err(TrainError::file("read", folder))?;
    for entry in entries {
        let entry = entry.map_err(TrainError::file("read", folder))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(seed) = name.strip_prefix("seed-").and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let metrics = entry.path().join("metrics.jsonl");
        scores.insert(seed, run_scores(&metrics, window)?);
    }
    if scores.is_empty() {
        return Err(TrainError::malformed(
            folder,
            "no seed-N runs (write them with `cargo xtask train --seeds …`)",
        ));
    }
    Ok(scores)
}

fn run_scores(metrics: &Path, window: ValidationWindow) -> Result<RunScores> {
    let text = std::fs::read_to_string(metrics).map_err(TrainError::file("read", metrics))?;
    let rows: Vec<Value> = text
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|row| row["kind"] == "validation")
        .take(window.count())
        .collect();
    if rows.is_empty() {
        return Err(TrainError::malformed(
            metrics,
            "no validation row (did the run finish an epoch?)",
        ));
    }
    if rows.len() < window.count() {
        return Err(TrainError::malformed(
            metrics,
            format!(
                "the comparison averages the last {} validations, but the run has only {} (average fewer)",
                window.count(),
                rows.len()
            ),
        ));
    }
    let mut sums = [0.0; 4];
    for (back, row) in rows.iter().enumerate() {
        for (sum, value) in sums.iter_mut().zip(row_scores(metrics, row, back)?.values()) {
            *sum += value;
        }
    }
    let [mean_ccc, weak_mean_ccc, valence_ccc, arousal_ccc] = sums.map(|sum| sum / rows.len() as f64);
    Ok(RunScores {
        valence_ccc,
        arousal_ccc,
        mean_ccc,
        weak_mean_ccc,
    })
}

/// The scores of one validation row, `back` rows before the last.
fn row_scores(metrics: &Path, row: &Value, back: usize) -> Result<RunScores> {
    let which = match back {
        0 => "the last validation row".to_string(),
        n => format!("the validation row {n} before the last"),
    };
    let number = |value: &Value, what: &str| {
        value
            .as_f64()
            .ok_or_else(|| TrainError::malformed(metrics, format!("{which} has no {what}")))
    };
    let weak = row["breakdown"]["bands"]
        .as_array()
        .and_then(|bands| {
            bands
                .iter()
                .find(|band| band["band"].as_str().is_some_and(|b| b.starts_with("weak")))
        })
        .ok_or_else(|| TrainError::malformed(metrics, format!("{which} has no weak band")))?;
    Ok(RunScores {
        valence_ccc: number(&row["metrics"]["valence"]["ccc"], "valence CCC")?,
        arousal_ccc: number(&row["metrics"]["arousal"]["ccc"], "arousal CCC")?,
        mean_ccc: number(&row["mean_ccc"], "mean CCC")?,
        weak_mean_ccc: number(&weak["mean_ccc"], "weak-band mean CCC")?,
    })
}

/// Student's t quantile for a two-sided 95 % interval with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    TABLE.get(df.saturating_sub(1)).copied().unwrap_or(1.96)
}

/// The paired difference `a − b` of each score over the seeds both hold.
#[derive(Debug, Clone)]
pub struct PairedComparison {
    pub seeds: Vec<u64>,
    /// Per seed, both runs' scores.
    pub pairs: Vec<(RunScores, RunScores)>,
    /// Per score (mean CCC, weak-band mean CCC, valence CCC, arousal CCC):
    /// the mean difference and the half-width of its 95 % interval.
    pub differences: [(f64, f64); 4],
}

/// Pairs the runs of `a` and `b` by seed; at least two seeds in common.
pub fn paired(a: &BTreeMap<u64, RunScores>, b: &BTreeMap<u64, RunScores>) -> Result<PairedComparison> {
    let seeds: Vec<u64> = a.keys().filter(|seed| b.contains_key(seed)).copied().collect();
    if seeds.len() < 2 {
        return Err(TrainError::settings(format!(
            "a paired comparison needs at least two seeds in common (found {seeds:?})"
        )));
    }
    let pairs: Vec<(RunScores, RunScores)> = seeds.iter().map(|s| (a[s], b[s])).collect();
    let n = pairs.len() as f64;
    let differences = std::array::from_fn(|k| {
        let d: Vec<f64> = pairs.iter().map(|(x, y)| x.values()[k] - y.values()[k]).collect();
        let mean = d.iter().sum::<f64>() / n;
        let variance = d.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
        (mean, t95(pairs.len() - 1) * (variance / n).sqrt())
    });
    Ok(PairedComparison {
        seeds,
        pairs,
        differences,
    })
}

impl fmt::Display for PairedComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<6} {:>22} {:>22}",
            "seed", "mean CCC (a / b)", "weak mean CCC (a / b)"
        )?;
        for (seed, (a, b)) in self.seeds.iter().zip(&self.pairs) {
            writeln!(
                f,
                "{seed:<6} {:>10.4} / {:<9.4} {:>10.4} / {:.4}",
                a.mean_ccc, b.mean_ccc, a.weak_mean_ccc, b.weak_mean_ccc
            )?;
        }
        writeln!(
            f,
            "paired difference a − b over {} seeds (95 % interval):",
            self.seeds.len()
        )?;
        for (name, (mean, half)) in RunScores::NAMES.iter().zip(&self.differences) {
            writeln!(
                f,
                "  {name:<20} {mean:+.4} ± {half:.4}   [{:+.4}, {:+.4}]",
                mean - half,
                mean + half
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Result;

    fn scores(mean: f64, weak: f64) -> RunScores {
        RunScores {
            valence_ccc: mean - 0.1,
            arousal_ccc: mean + 0.1,
            mean_ccc: mean,
            weak_mean_ccc: weak,
        }
    }

    #[test]
    fn differences_are_paired_by_seed() -> Result<()> {
        let a = BTreeMap::from([
            (0, scores(0.5, 0.2)),
            (1, scores(0.6, 0.3)),
            (2, scores(0.4, 0.1)),
            (9, scores(0.9, 0.9)),
        ]);
        let b = BTreeMap::from([(0, scores(0.4, 0.2)), (1, scores(0.5, 0.3)), (2, scores(0.3, 0.1))]);
        let comparison = paired(&a, &b)?;
        assert_eq!(comparison.seeds, [0, 1, 2]);
        // Every pair differs by exactly 0.1: no spread, a zero-width interval.
        assert!((comparison.differences[0].0 - 0.1).abs() < 1e-12);
        assert!(comparison.differences[0].1 < 1e-12);
        assert_eq!(comparison.differences[1], (0.0, 0.0));
        let text = comparison.to_string();
        assert!(text.contains("+0.1000 ± 0.0000"), "{text}");
        assert!(paired(&a, &BTreeMap::from([(0, scores(0.1, 0.1))])).is_err());
        assert!((t95(4) - 2.776).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn final_scores_come_from_the_last_validation_row() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let run = dir.path().join("seed-3");
        std::fs::create_dir_all(&run)?;
        let row = |ccc: f64| {
            format!(
                r#"{{"kind":"validation","mean_ccc":{ccc},"metrics":{{"valence":{{"ccc":{ccc}}},"arousal":{{"ccc":{ccc}}}}},"breakdown":{{"bands":[{{"band":"weak (<0.3)","mean_ccc":0.25}}]}}}}"#
            )
        };
        std::fs::write(
            run.join("metrics.jsonl"),
            format!("{}\n{{\"kind\":\"train\"}}\n{}\n", row(0.1), row(0.7)),
        )?;
        let found = seed_scores(dir.path(), ValidationWindow::FINAL)?;
        assert_eq!(found[&3].mean_ccc, 0.7);
        assert_eq!(found[&3].weak_mean_ccc, 0.25);
        assert!(seed_scores(&dir.path().join("nothing"), ValidationWindow::FINAL).is_err());
        Ok(())
    }

    #[test]
    fn a_window_averages_the_last_validation_rows() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let run = dir.path().join("seed-0");
        std::fs::create_dir_all(&run)?;
        let row = |ccc: f64, weak: f64| {
            format!(
                r#"{{"kind":"validation","mean_ccc":{ccc},"metrics":{{"valence":{{"ccc":{ccc}}},"arousal":{{"ccc":{weak}}}}},"breakdown":{{"bands":[{{"band":"weak (<0.3)","mean_ccc":{weak}}}]}}}}"#
            )
        };
        let rows = [
            row(0.1, 0.0),
            row(0.4, 0.2),
            r#"{"kind":"train"}"#.to_string(),
            row(0.7, 0.6),
        ];
        std::fs::write(run.join("metrics.jsonl"), rows.join("\n"))?;
        let window = |n| ValidationWindow::last(n).expect("non-zero");
        let last_two = seed_scores(dir.path(), window(2))?[&0];
        assert!((last_two.mean_ccc - 0.55).abs() < 1e-12, "{last_two:?}");
        assert!((last_two.valence_ccc - 0.55).abs() < 1e-12);
        assert!((last_two.arousal_ccc - 0.4).abs() < 1e-12);
        assert!((last_two.weak_mean_ccc - 0.4).abs() < 1e-12);
        let all_three = seed_scores(dir.path(), window(3))?[&0];
        assert!((all_three.mean_ccc - 0.4).abs() < 1e-12, "{all_three:?}");
        let error = seed_scores(dir.path(), window(4)).unwrap_err().to_string();
        assert!(error.contains("only 3") && error.contains("metrics.jsonl"), "{error}");
        assert_eq!(ValidationWindow::last(0), None);
        assert_eq!(ValidationWindow::last(1), Some(ValidationWindow::FINAL));
        Ok(())
    }
}
