//! Series of runs: subject-disjoint K-fold cross-validation and seed series,
//! each run into a folder of its own, then mean ± std of the final metrics.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::metrics_log::fold_table;
use crate::trainer::{RunSummary, Trainer};

/// Which runs a series makes from one base configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Series {
    /// K-fold cross-validation: run `k` validates on fold `k`'s people and
    /// trains on the others' (`<output>/fold-K`). The base's seed draws the folds.
    Folds(usize),
    /// One run per seed (`<output>/seed-N`); the seed also draws each run's split.
    Seeds(Vec<u64>),
}

/// One run of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRun {
    /// `fold 2/4`, `seed 3`.
    pub label: String,
    pub config: TrainConfig,
}

impl Series {
    /// The runs of this series over `base`, each checked.
    pub fn runs(&self, base: &TrainConfig) -> Result<Vec<SeriesRun>> {
        let runs: Vec<SeriesRun> = match self {
            Series::Folds(k) => {
                if *k < 2 {
                    return Err(TrainError::settings(format!(
                        "cross-validation needs at least 2 folds (got {k})"
                    )));
                }
                if base.validation.is_some() {
                    return Err(TrainError::settings(
                        "cross-validation splits `data` into folds; remove the separate `validation` set",
                    ));
                }
                (0..*k)
                    .map(|fold| SeriesRun {
                        label: format!("fold {}/{k}", fold + 1),
                        config: TrainConfig {
                            folds: *k,
                            fold,
                            output: base.output.join(format!("fold-{fold}")),
                            ..base.clone()
                        },
                    })
                    .collect()
            }
            Series::Seeds(seeds) => {
                if seeds.is_empty() {
                    return Err(TrainError::settings("a seed series needs at least one seed"));
                }
                seeds
                    .iter()
                    .map(|&seed| SeriesRun {
                        label: format!("seed {seed}"),
                        config: TrainConfig {
                            seed,
                            output: base.output.join(format!("seed-{seed}")),
                            ..base.clone()
                        },
                    })
                    .collect()
            }
        };
        for run in &runs {
            run.config.validate().map_err(|e| e.in_run(&run.label))?;
        }
        Ok(runs)
    }

    /// Where the series' table is written, under the base's output folder.
    pub fn table_path(&self, base: &TrainConfig) -> PathBuf {
        base.output.join(match self {
            Series::Folds(_) => "cv.txt",
            Series::Seeds(_) => "seeds.txt",
        })
    }
}

/// What a series did.
#[derive(Debug, Clone)]
pub struct SeriesOutcome {
    /// Each finished run's label and summary, in order.
    pub runs: Vec<(String, RunSummary)>,
    /// The run a stop request interrupted (it can be resumed from its `last`
    /// checkpoint); the runs after it were not started.
    pub interrupted: Option<(String, RunSummary)>,
    /// Mean ± std of each final validation metric over the finished runs
    /// ([`fold_table`]); empty when none finished.
    pub table: String,
}

/// Trains the runs in turn. `on_start` is called before each run with its
/// label and trainer (to say which people it validates on, say), `on_end`
/// after each finished run. Stops early when `stop` is set.
pub fn run_series(
    runs: Vec<SeriesRun>,
    stop: &AtomicBool,
    mut on_start: impl FnMut(&str, &Trainer),
    mut on_end: impl FnMut(&str, &RunSummary),
) -> Result<SeriesOutcome> {
    let mut finished = Vec::with_capacity(runs.len());
    for SeriesRun { label, config } in runs {
        let mut trainer = Trainer::new(config).map_err(|e| e.in_run(&label))?;
        on_start(&label, &trainer);
        let summary = trainer.run(stop).map_err(|e| e.in_run(&label))?;
        if summary.interrupted {
            return Ok(SeriesOutcome {
                table: table_of(&finished),
                runs: finished,
                interrupted: Some((label, summary)),
            });
        }
        on_end(&label, &summary);
        finished.push((label, summary));
    }
    Ok(SeriesOutcome {
        table: table_of(&finished),
        runs: finished,
        interrupted: None,
    })
}

fn table_of(runs: &[(String, RunSummary)]) -> String {
    if runs.is_empty() {
        return String::new();
    }
    fold_table(&runs.iter().map(|(_, summary)| summary.validation).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Result;

    #[test]
    fn folds_and_seeds_make_one_run_each_into_its_own_folder() -> Result<()> {
        let base = TrainConfig::default();
        let folds = Series::Folds(4).runs(&base)?;
        assert_eq!(folds.len(), 4);
        for (k, run) in folds.iter().enumerate() {
            assert_eq!((run.config.folds, run.config.fold, run.config.seed), (4, k, base.seed));
            assert_eq!(run.config.output, base.output.join(format!("fold-{k}")));
            assert_eq!(run.label, format!("fold {}/4", k + 1));
        }
        let seeds = Series::Seeds(vec![3, 7]).runs(&base)?;
        assert_eq!(seeds.iter().map(|r| r.config.seed).collect::<Vec<_>>(), [3, 7]);
        assert!(seeds.iter().all(|r| r.config.folds == 0));
        assert_eq!(seeds[1].config.output, base.output.join("seed-7"));
        assert_eq!(Series::Folds(4).table_path(&base), base.output.join("cv.txt"));
        Ok(())
    }

    #[test]
    fn impossible_series_are_refused() {
        let base = TrainConfig::default();
        assert!(Series::Folds(1).runs(&base).is_err());
        assert!(Series::Seeds(vec![]).runs(&base).is_err());
        let separate = TrainConfig {
            validation: Some(base.data.clone()),
            ..base
        };
        let error = Series::Folds(3).runs(&separate).expect_err("separate validation set");
        assert!(format!("{error:#}").contains("validation"), "{error:#}");
    }
}
