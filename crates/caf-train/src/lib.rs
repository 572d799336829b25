//! # caf-train
//!
//! Trains CAF (or the plain regression baseline) and evaluates it, as
//! docs/method.md describes:
//!
//! * [`CafStep`]: the three-phase iteration ([`Phase`]: regression, critic,
//!   adversarial) over a batch in memory, with three in-place [`Adam`]
//!   optimisers, the step learning-rate schedule and the Lagrange multiplier;
//! * [`Trainer`]: the loop around it: data, validation every epoch, the
//!   metrics log, the non-finite-loss policy;
//! * checkpoints holding weights, optimiser moments, the multiplier, the
//!   schedule position, the data position and the configuration, so
//!   [`Trainer::resume`] continues exactly;
//! * the people a run trains and validates on ([`training_and_validation_sets`],
//!   [`validation_set`]), and series of runs: subject-disjoint K-fold
//!   cross-validation and seed series ([`Series`], [`run_series`]);
//! * [`evaluate`]: metrics over a whole set; SVG plots ([`run_report`], [`circumplex`]);
//! * [`TrainConfig`]: every hyper-parameter, from TOML with overrides;
//! * [`TrainError`]: what can go wrong, as values to match.
//!
//! Cross-validation folds the people, never the images of one person:
//!
//! ```
//! use caf_train::{Series, TrainConfig};
//!
//! let base = TrainConfig::default();
//! let runs = Series::Folds(4).runs(&base)?;
//! assert_eq!(runs.len(), 4);
//! assert_eq!((runs[2].label.as_str(), runs[2].config.fold), ("fold 3/4", 2));
//! assert_eq!(runs[2].config.output, base.output.join("fold-2"));
//! # Ok::<(), caf_train::TrainError>(())
//! ```

mod adam;
mod breakdown;
mod comparison;
mod config;
mod datasets;
mod diagnostics;
mod error;
mod evaluate;
mod export;
mod metrics_log;
mod progress;
mod provenance;
mod report;
mod schedule;
mod series;
mod smoothed;
mod step;
mod trainer;

pub use adam::{Adam, AdamConfig};
pub use breakdown::{Band, Breakdown};
pub use caf_data::DatasetSpec;
pub use caf_kernels::{parse_device, DeviceError};
pub use comparison::{paired, seed_scores, PairedComparison, RunScores, ValidationWindow};
pub use config::{Method, TrainConfig};
pub use datasets::{evaluation_set, training_and_validation_sets, validation_set, validation_split};
pub use diagnostics::Diagnostics;
pub use error::{Result, TrainError};
pub use evaluate::{evaluate, evaluate_checkpoint, Evaluation, Predictions};
pub use export::{export_for_hub, ExportedFiles, HubExport};
pub use metrics_log::{fold_table, mean_ccc, summary_json};
pub use provenance::Provenance;
pub use report::{circumplex, run_report};
pub use schedule::{step_lr, warmup_ramp, LrSchedule};
pub use series::{run_series, Series, SeriesOutcome, SeriesRun};
pub use smoothed::{smoothed_metrics, SmoothedMetrics};
pub use step::{strong_and_weak, CafStep, CriticStats, Phase, StepReport, StepSettings};
pub use trainer::{Counters, RunSummary, TrainState, Trainer};
