//! # caf-train
//!
//! Trains CAF (or the plain regression baseline) and evaluates it:
//!
//! * [`Trainer`]: DESIGN.md's iteration (regression step, critic step,
//!   adversarial step) with three in-place [`Adam`] optimisers, the step
//!   learning-rate schedule and the Lagrange multiplier;
//! * checkpoints holding weights, optimiser moments, the multiplier, the
//!   schedule position and the data position, so `--resume` continues exactly;
//! * [`evaluate`]: metrics over a whole set;
//! * [`TrainConfig`]: every hyper-parameter, from TOML with overrides.

pub mod adam;
pub mod config;
pub mod evaluate;
pub mod metrics_log;
pub mod report;
pub mod schedule;
pub mod trainer;

pub use adam::{Adam, AdamConfig};
pub use config::{DataConfig, Method, TrainConfig};
pub use evaluate::{evaluate, Predictions};
pub use trainer::{parse_device, validation_split, Counters, RunSummary, StepReport, TrainState, Trainer};
