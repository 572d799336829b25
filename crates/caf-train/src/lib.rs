//! # caf-train
//!
//! Trains CAF (or the plain regression baseline) and evaluates it, as
//! docs/method.md describes:
//!
//! * [`Trainer`]: the three-phase iteration ([`Phase`]: regression, critic,
//!   adversarial) with three in-place [`Adam`] optimisers, the step
//!   learning-rate schedule and the Lagrange multiplier;
//! * checkpoints holding weights, optimiser moments, the multiplier, the
//!   schedule position, the data position and the configuration, so
//!   [`Trainer::resume`] continues exactly;
//! * the people a run trains and validates on ([`training_and_validation_sets`],
//!   [`validation_set`]), and series of runs: subject-disjoint K-fold
//!   cross-validation and seed series ([`Series`], [`run_series`]);
//! * [`evaluate`]: metrics over a whole set; SVG plots ([`run_report`], [`circumplex`]);
//! * [`TrainConfig`]: every hyper-parameter, from TOML with overrides.
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
//! # Ok::<(), anyhow::Error>(())
//! ```

mod adam;
mod breakdown;
mod comparison;
mod config;
mod datasets;
mod diagnostics;
mod evaluate;
mod metrics_log;
mod progress;
mod report;
mod schedule;
mod series;
mod trainer;

pub use adam::{Adam, AdamConfig};
pub use breakdown::{Band, Breakdown};
pub use caf_kernels::{parse_device, DeviceError};
pub use comparison::{paired, seed_scores, FinalScores, PairedComparison};
pub use config::{DataConfig, Method, TrainConfig};
pub use datasets::{training_and_validation_sets, validation_set, validation_split};
pub use diagnostics::Diagnostics;
pub use evaluate::{evaluate, Predictions};
pub use metrics_log::{fold_table, mean_ccc, summary_json};
pub use report::{circumplex, run_report};
pub use schedule::{step_lr, warmup_ramp};
pub use series::{run_series, Series, SeriesOutcome, SeriesRun};
pub use trainer::{Counters, CriticStats, Phase, RunSummary, StepReport, TrainState, Trainer};
