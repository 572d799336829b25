//! The training loop around [`CafStep`]: data, validation every epoch,
//! checkpoints that resume exactly, the metrics log, progress and the
//! non-finite-loss policy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use caf_backbone::{load_pretrained_encoder, varmap_tensors, write_file_atomically, write_tensors};
use caf_backbone::{Checkpoint, HubOptions, ModelSpec, WeightSource};
use caf_data::BatchLoader;
use caf_objective::{LagrangeMultiplier, MetricsSummary};
use candle_core::Device;
use serde_json::json;

use crate::config::{TrainConfig, CHECKPOINT_CONFIG_KEY as META_CONFIG};
use crate::datasets::{loaders, subject_names, training_and_validation_sets};
use crate::error::{Result, TrainError};
use crate::evaluate::{evaluate, Evaluation, Predictions};
use crate::metrics_log::MetricsLog;
use crate::progress::Progress;
use crate::step::{CafStep, StepReport};

/// Metadata keys of the training state inside a checkpoint (the config's is
/// [`CHECKPOINT_CONFIG_KEY`](crate::config::CHECKPOINT_CONFIG_KEY)).
pub(crate) const META_STEP: &str = "caf.train.step";
pub(crate) const META_EPOCH: &str = "caf.train.epoch";
const META_BATCH: &str = "caf.train.batch";
const META_LAMBDA: &str = "caf.train.lambda";
pub(crate) const META_BEST: &str = "caf.train.best_mean_ccc";
const META_COUNTERS: &str = "caf.train.counters";

/// Where training stands: enough, with the weights and optimiser moments, to resume.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Iterations done.
    pub step: u64,
    /// The epoch in progress (0-based) and the next batch in it.
    pub epoch: usize,
    pub batch: usize,
    pub lambda: LagrangeMultiplier,
    pub best_mean_ccc: f64,
    pub counters: Counters,
}

/// Things that went wrong or were skipped, over the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Iterations whose batch had no strong/weak pair (regression step only).
    pub no_pair: u64,
    /// Iterations skipped because a loss was NaN or infinite.
    pub nonfinite: u64,
    /// Unreadable training images skipped.
    pub skipped_images: u64,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub output: PathBuf,
    pub last: PathBuf,
    pub best: PathBuf,
    /// Validation metrics of the final weights.
    pub validation: MetricsSummary,
    pub state: TrainState,
    /// True when a stop was requested (Ctrl-C) before the last epoch ended.
    pub interrupted: bool,
    pub predictions: Predictions,
    /// The people validated on, sorted.
    pub validation_subjects: Vec<String>,
}

/// The loop's position in the data and what it has seen; the step holds
/// the iteration count and λ.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Position {
    epoch: usize,
    batch: usize,
    best_mean_ccc: f64,
    counters: Counters,
}

/// The sets a run trains and validates on.
struct RunData {
    train: BatchLoader,
    validation: BatchLoader,
    training_subjects: Vec<String>,
    validation_subjects: Vec<String>,
}

impl RunData {
    fn of(config: &TrainConfig) -> Result<Self> {
        let (train_set, validation_set) = training_and_validation_sets(config)?;
        tracing::info!(
            train = train_set.len(),
            train_subjects = train_set.subjects().len(),
            validation = validation_set.len(),
            validation_subjects = validation_set.subjects().len(),
            "data ready"
        );
        let (train, validation) = loaders(config, &train_set, &validation_set)?;
        Ok(Self {
            train,
            validation,
            training_subjects: subject_names(&train_set),
            validation_subjects: subject_names(&validation_set),
        })
    }
}

/// Stops a run after `limit` iterations in a row with a non-finite loss.
struct NonFinitePolicy {
    limit: usize,
    in_a_row: usize,
}

impl NonFinitePolicy {
    /// Counts `report`; true when the run must stop.
    fn must_stop(&mut self, report: &StepReport) -> bool {
        if report.nonfinite.is_none() {
            self.in_a_row = 0;
            return false;
        }
        self.in_a_row += 1;
        self.in_a_row >= self.limit
    }
}

/// The losses smoothed over recent iterations, for the progress line.
#[derive(Default)]
struct RunningLosses([f64; 3]);

impl RunningLosses {
    fn add(&mut self, report: &StepReport) {
        let [av, critic, adversarial] = self.0;
        self.0 = [
            0.9 * av + 0.1 * report.loss_av,
            0.9 * critic + 0.1 * report.loss_critic.unwrap_or(critic),
            0.9 * adversarial + 0.1 * report.loss_adversarial.unwrap_or(adversarial),
        ];
    }

    fn line(&self, lambda: f64) -> String {
        let [av, critic, adversarial] = self.0;
        format!("L_AV {av:.3}  L_c {critic:.3}  L_adv {adversarial:.4}  λ {lambda:.2e}")
    }
}

/// One epoch's training speed, logged with its validation row.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Throughput {
    images_per_second: f64,
    /// The share of the epoch's training time spent waiting for the next batch.
    data_wait_share: f64,
}

impl Throughput {
    fn of(images: usize, waited: Duration, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            images_per_second: images as f64 / seconds,
            data_wait_share: (waited.as_secs_f64() / seconds).min(1.0),
        }
    }
}

/// The checkpoint files of a run: `last` after every epoch (and on a stop),
/// `best` when the mean CCC improves, `epoch-N` every `every` epochs.
struct Checkpoints {
    output: PathBuf,
    last: PathBuf,
    best: PathBuf,
    every: usize,
}

impl Checkpoints {
    fn of(config: &TrainConfig) -> Self {
        let output = config.output.clone();
        Self {
            last: output.join("last.safetensors"),
            best: output.join("best.safetensors"),
            every: config.checkpoint_every,
            output,
        }
    }

    /// The extra files to write after `epoch` (1-based) epochs.
    fn periodic(&self, epoch: usize) -> Option<PathBuf> {
        (self.every > 0 && epoch.is_multiple_of(self.every))
            .then(|| self.output.join(format!("epoch-{epoch}.safetensors")))
    }
}

/// How an epoch ended.
enum EpochEnd {
    Finished { evaluation: Evaluation },
    Interrupted,
}

/// A training run: the step, the data and where the loop stands.
pub struct Trainer {
    config: TrainConfig,
    spec: ModelSpec,
    step: CafStep,
    data: RunData,
    position: Position,
}

impl Trainer {
    /// A fresh run: seeded initial weights, then the pretrained encoder if configured.
    pub fn new(config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let device = caf_kernels::parse_device(&config.device)?;
        let step = CafStep::seeded(config.step_settings()?, &device)?;
        if !config.pretrained.is_empty() {
            let source: WeightSource = config
                .pretrained
                .parse()
                .map_err(|e| TrainError::settings(format!("pretrained = `{}`: {e}", config.pretrained)))?;
            load_pretrained_encoder(
                step.varmap(),
                step.settings().arch,
                &source,
                &HubOptions::from_env(),
                &device,
            )?;
        }
        let position = Position {
            epoch: 0,
            batch: 0,
            best_mean_ccc: f64::NEG_INFINITY,
            counters: Counters::default(),
        };
        Self::assemble(config, step, position)
    }

    /// Continues the run saved in `checkpoint`, with `overrides` applied to
    /// its saved configuration (e.g. more epochs).
    pub fn resume(checkpoint: &Path, overrides: &[String]) -> Result<Self> {
        // Read once on the host; `caf_net` moves the weights to the run's device.
        let file = Checkpoint::read(checkpoint, &Device::Cpu)?;
        let config = TrainConfig::of_checkpoint(&file, overrides)?.ok_or_else(|| {
            TrainError::malformed(
                checkpoint,
                format!("not a training checkpoint (no {META_CONFIG}); use it as pretrained weights instead"),
            )
        })?;
        let device = caf_kernels::parse_device(&config.device)?;
        let meta = |key: &str| {
            file.metadata
                .get(key)
                .ok_or_else(|| TrainError::malformed(checkpoint, format!("metadata {key} is missing")))
        };
        fn parsed<T: std::str::FromStr>(checkpoint: &Path, key: &str, text: &str) -> Result<T> {
            text.parse()
                .map_err(|_| TrainError::malformed(checkpoint, format!("metadata {key} is not a number: `{text}`")))
        }
        let number = |key: &str| -> Result<u64> { parsed(checkpoint, key, meta(key)?) };
        let (net, varmap) = file.caf_net(&device)?;
        let lambda = LagrangeMultiplier {
            value: parsed(checkpoint, META_LAMBDA, meta(META_LAMBDA)?)?,
            ..LagrangeMultiplier::default()
        };
        let mut step = CafStep::new(net, varmap, config.step_settings()?, &device)?.at(number(META_STEP)?, lambda);
        step.load_optimiser_state(&file.tensors)?;
        let position = Position {
            epoch: number(META_EPOCH)? as usize,
            batch: number(META_BATCH)? as usize,
            best_mean_ccc: parsed(checkpoint, META_BEST, meta(META_BEST)?)?,
            counters: serde_json::from_str(meta(META_COUNTERS)?)
                .map_err(|e| TrainError::malformed(checkpoint, format!("metadata {META_COUNTERS}: {e}")))?,
        };
        let trainer = Self::assemble(config, step, position)?;
        tracing::info!(checkpoint = %checkpoint.display(), step = trainer.step.iteration(), epoch = position.epoch + 1, "resuming");
        Ok(trainer)
    }

    fn assemble(config: TrainConfig, step: CafStep, position: Position) -> Result<Self> {
        let data = RunData::of(&config)?;
        let spec = ModelSpec {
            arch: step.settings().arch,
            image_size: config.image_size as usize,
            resize: config.resize as usize,
        };
        Ok(Self {
            config,
            spec,
            step,
            data,
            position,
        })
    }

    /// Where the run stands.
    pub fn state(&self) -> TrainState {
        TrainState {
            step: self.step.iteration(),
            epoch: self.position.epoch,
            batch: self.position.batch,
            lambda: self.step.lambda(),
            best_mean_ccc: self.position.best_mean_ccc,
            counters: self.position.counters,
        }
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The networks, optimisers and λ.
    pub fn step(&self) -> &CafStep {
        &self.step
    }

    /// The people this run trains on, sorted.
    pub fn training_subjects(&self) -> &[String] {
        &self.data.training_subjects
    }

    /// The people this run validates on, sorted (none of them is trained on
    /// unless a separate validation set shares people with `data`).
    pub fn validation_subjects(&self) -> &[String] {
        &self.data.validation_subjects
    }

    /// Trains until the configured number of epochs, or until `stop` is set
    /// (then the current iteration finishes, `last.safetensors` is written
    /// and the summary says `interrupted`).
    pub fn run(&mut self, stop: &AtomicBool) -> Result<RunSummary> {
        let files = Checkpoints::of(&self.config);
        std::fs::create_dir_all(&files.output).map_err(TrainError::file("create", &files.output))?;
        write_file_atomically(&files.output.join("config.toml"), self.config.to_toml()?.as_bytes())?;
        // Rows a killed run wrote after this checkpoint are cut: they are about to be written again.
        let mut log = MetricsLog::resume_at(&files.output.join("metrics.jsonl"), self.step.iteration())?;
        let mut policy = NonFinitePolicy {
            limit: self.config.max_nonfinite,
            in_a_row: 0,
        };
        let mut latest = None;
        let mut interrupted = false;
        while self.position.epoch < self.config.epochs {
            match self.epoch(&mut log, &mut policy, &files, stop)? {
                EpochEnd::Finished { evaluation } => {
                    self.after_epoch(&files, &evaluation)?;
                    latest = Some(evaluation);
                }
                EpochEnd::Interrupted => {
                    self.save(&files.last)?;
                    interrupted = true;
                    break;
                }
            }
        }
        let evaluation = match latest {
            Some(evaluation) => evaluation,
            None => evaluate(&self.step.net().va, &self.data.validation, self.step.device())?,
        };
        Ok(RunSummary {
            output: files.output,
            last: files.last,
            best: files.best,
            validation: evaluation.summary,
            state: self.state(),
            interrupted,
            predictions: evaluation.predictions,
            validation_subjects: self.data.validation_subjects.clone(),
        })
    }

    /// The rest of the current epoch, then its validation and its row in the log.
    fn epoch(
        &mut self,
        log: &mut MetricsLog,
        policy: &mut NonFinitePolicy,
        files: &Checkpoints,
        stop: &AtomicBool,
    ) -> Result<EpochEnd> {
        let epoch = self.position.epoch;
        let mut progress = Progress::new(
            self.data.train.batches_per_epoch(),
            self.position.batch,
            (epoch, self.config.epochs),
            self.config.batch_size,
            Duration::from_secs_f64(self.config.progress_seconds),
        );
        let mut batches = self
            .data
            .train
            .epoch_from(epoch as u64, self.position.batch, self.step.device());
        let started = Instant::now();
        let mut losses = RunningLosses::default();
        // How long the steps waited for the loader: the share of the
        // epoch the data pipeline, not the device, set the pace.
        let (mut waited, mut images) = (Duration::ZERO, 0usize);
        let mut interrupted = false;
        loop {
            let asked = Instant::now();
            let Some(batch) = batches.next() else {
                break;
            };
            waited += asked.elapsed();
            let batch = batch?;
            images += batch.label_values.len();
            let lr = self.step.lr();
            let report = self.step.run(&batch)?;
            let step = self.step.iteration();
            self.position.batch += 1;
            self.count(&report, step);
            if policy.must_stop(&report) {
                self.save(&files.last)?;
                return Err(TrainError::Diverged {
                    iterations: policy.in_a_row,
                    step,
                    saved: files.last.clone(),
                });
            }
            losses.add(&report);
            progress.advance(step, losses.line(self.step.lambda().value));
            if step.is_multiple_of(self.config.log_every as u64) {
                log.write(&train_row(&report, step, epoch + 1, self.step.lambda().value, lr))?;
            }
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
        }
        let throughput = Throughput::of(images, waited, started.elapsed());
        self.position.counters.skipped_images += batches.skipped() as u64;
        drop(batches);
        progress.finish();
        if interrupted {
            return Ok(EpochEnd::Interrupted);
        }
        self.position.epoch += 1;
        self.position.batch = 0;
        let evaluation = evaluate(&self.step.net().va, &self.data.validation, self.step.device())?;
        let mut row = evaluation.record(false);
        for (key, value) in [
            ("kind", json!("validation")),
            ("epoch", json!(epoch + 1)),
            ("step", json!(self.step.iteration())),
            ("seconds", json!(started.elapsed().as_secs_f64())),
            ("counters", json!(self.position.counters)),
            ("throughput", json!(throughput)),
        ] {
            row[key] = value;
        }
        log.write(&row)?;
        let diagnostics = evaluation.diagnostics();
        tracing::info!(
            epoch = epoch + 1,
            images_per_s = format!("{:.1}", throughput.images_per_second),
            data_wait = format!("{:.0} %", 100.0 * throughput.data_wait_share),
            mean_ccc = format!("{:.4}", evaluation.mean_ccc()),
            live_units = diagnostics.live_units,
            va_correlation = format!(
                "{:.2} (labels {:.2})",
                diagnostics.predicted_va_correlation, diagnostics.label_va_correlation
            ),
            "validation\n{}",
            evaluation.summary
        );
        Ok(EpochEnd::Finished { evaluation })
    }

    /// Counts what went wrong in iteration `step`.
    fn count(&mut self, report: &StepReport, step: u64) {
        let counters = &mut self.position.counters;
        if report.no_pair {
            counters.no_pair += 1;
            tracing::debug!(step, "no strong/weak pair in this batch: regression step only");
        }
        if let Some(phase) = report.nonfinite {
            counters.nonfinite += 1;
            tracing::warn!(
                step,
                ?phase,
                "non-finite loss: this phase's update and the later phases' skipped"
            );
        }
    }

    /// The checkpoints an epoch ends with.
    fn after_epoch(&mut self, files: &Checkpoints, evaluation: &Evaluation) -> Result<()> {
        let score = evaluation.mean_ccc();
        if score > self.position.best_mean_ccc || !files.best.exists() {
            self.position.best_mean_ccc = self.position.best_mean_ccc.max(score);
            self.save(&files.best)?;
        }
        if let Some(path) = files.periodic(self.position.epoch) {
            self.save(&path)?;
        }
        self.save(&files.last)
    }

    /// Writes weights, optimiser moments and the training state to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = varmap_tensors(self.step.varmap());
        tensors.extend(self.step.optimiser_state()?);
        let state = self.state();
        let metadata = HashMap::from([
            (META_CONFIG.to_string(), self.config.to_toml()?),
            (META_STEP.to_string(), state.step.to_string()),
            (META_EPOCH.to_string(), state.epoch.to_string()),
            (META_BATCH.to_string(), state.batch.to_string()),
            (META_LAMBDA.to_string(), state.lambda.value.to_string()),
            (META_BEST.to_string(), state.best_mean_ccc.to_string()),
            (
                META_COUNTERS.to_string(),
                serde_json::to_string(&state.counters).expect("counters are plain numbers"),
            ),
            (
                "caf.method".to_string(),
                format!("{:?}", self.config.method).to_lowercase(),
            ),
        ]);
        write_tensors(path, &self.spec, &tensors, &metadata)?;
        Ok(())
    }
}

/// The metrics-log row of one iteration: the step's report, where the run
/// stands, and the rate the iteration used.
fn train_row(report: &StepReport, step: u64, epoch: usize, lambda: f64, lr: f64) -> serde_json::Value {
    let mut row = json!(report);
    for (key, value) in [
        ("kind", json!("train")),
        ("step", json!(step)),
        ("epoch", json!(epoch)),
        ("lambda", json!(lambda)),
        ("lr", json!(lr)),
    ] {
        row[key] = value;
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::Phase;

    fn report(nonfinite: Option<Phase>) -> StepReport {
        StepReport {
            nonfinite,
            ..StepReport::default()
        }
    }

    #[test]
    fn a_run_stops_at_the_limit_of_nonfinite_iterations_in_a_row() {
        let mut policy = NonFinitePolicy { limit: 3, in_a_row: 0 };
        let bad = report(Some(Phase::Critic));
        let good = report(None);
        let verdicts: Vec<bool> = [&bad, &bad, &good, &bad, &bad, &good, &good, &bad, &bad, &bad]
            .into_iter()
            .map(|r| policy.must_stop(r))
            .collect();
        assert_eq!(
            verdicts,
            [false, false, false, false, false, false, false, false, false, true]
        );
        // A limit of 0 or 1 stops at the first non-finite iteration, never at a finite one.
        for limit in [0, 1] {
            let mut policy = NonFinitePolicy { limit, in_a_row: 0 };
            assert!(!policy.must_stop(&good));
            assert!(policy.must_stop(&bad));
        }
    }

    #[test]
    fn periodic_checkpoints_follow_checkpoint_every() {
        let config = |every| TrainConfig {
            checkpoint_every: every,
            output: "run".into(),
            ..TrainConfig::default()
        };
        let files = Checkpoints::of(&config(2));
        assert_eq!(
            (1..=4).map(|epoch| files.periodic(epoch)).collect::<Vec<_>>(),
            [
                None,
                Some("run/epoch-2.safetensors".into()),
                None,
                Some("run/epoch-4.safetensors".into())
            ]
        );
        assert_eq!(Checkpoints::of(&config(0)).periodic(4), None);
    }
}
