//! The training loop: the three-step CAF iteration (docs/method.md),
//! checkpoints that resume exactly, validation every epoch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use caf_backbone::{load_pretrained_encoder, seeded_init, CafNet, Checkpoint, HubOptions, ModelSpec, WeightSource};
use caf_backbone::{varmap_tensors, write_file_atomically, write_tensors};
use caf_backbone::{CRITIC, ENCODER, REGRESSOR};
use caf_data::{Batch, BatchLoader};
use caf_objective::{adaptive_ks, adversarial_loss, critic_loss, va_loss, LagrangeMultiplier, MetricsSummary};
use caf_sampler::{group, GroupingRule};
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;

use crate::adam::{Adam, AdamConfig};
use crate::breakdown::Breakdown;
use crate::config::{Method, TrainConfig, CHECKPOINT_CONFIG_KEY as META_CONFIG};
use crate::datasets::{loaders, subject_names, training_and_validation_sets};
use crate::diagnostics::Diagnostics;
use crate::evaluate::{evaluate, Predictions};
use crate::metrics_log::{mean_ccc, summary_json, MetricsLog};
use crate::progress::Progress;
use crate::schedule::{step_lr, warmup_ramp};

/// Metadata keys of the training state inside a checkpoint (the config's is
/// [`CHECKPOINT_CONFIG_KEY`]).
const META_STEP: &str = "caf.train.step";
const META_EPOCH: &str = "caf.train.epoch";
const META_BATCH: &str = "caf.train.batch";
const META_LAMBDA: &str = "caf.train.lambda";
const META_BEST: &str = "caf.train.best_mean_ccc";
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

/// The three phases of a CAF iteration, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `f_e` and `f_r` minimise `L_AV` on the whole batch.
    Regression,
    /// `f_c` minimises `L_c` on the strong and weak samples' detached features; λ moves.
    Critic,
    /// `f_e` minimises `L_adv` through the frozen critic.
    Adversarial,
}

/// What one iteration did, for logs.
///
/// A phase's update is applied only when its loss is finite. A non-finite
/// loss ends the iteration at that phase: the phases before it keep their
/// updates, that phase and the ones after it change nothing (λ included), and
/// `nonfinite` names the phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepReport {
    pub loss_av: f64,
    pub loss_critic: Option<f64>,
    pub loss_adversarial: Option<f64>,
    pub pairs: usize,
    pub no_pair: bool,
    /// The phase whose loss was NaN or infinite, if one was.
    pub nonfinite: Option<Phase>,
    /// What the critic phase saw, when it ran.
    pub critic: Option<CriticStats>,
    /// The mean critic output over the weak samples in the adversarial
    /// phase (`L_adv = −0.1 ×` this), when it ran.
    pub weak_critic_output: Option<f64>,
}

/// How the critic separated strong from weak outputs in one iteration
/// (docs/method.md, "What a healthy run looks like").
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CriticStats {
    /// Mean `d_ap`: squared distance between paired strong outputs.
    pub d_ap: f64,
    /// Mean hinge `d_an = relu(m − ‖s − w‖²)`.
    pub d_an: f64,
    /// Share of pairs whose hinge is active (`d_an > 0`): the weak output is
    /// still inside the strong one's margin.
    pub active_hinges: f64,
    /// Mean margin `m`.
    pub margin: f64,
    /// Mean squared distance between paired strong and weak outputs.
    pub strong_weak_distance: f64,
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

struct Optimisers {
    encoder: Adam,
    regressor: Adam,
    critic: Adam,
}

/// A training run: networks, optimisers, data and state.
pub struct Trainer {
    config: TrainConfig,
    spec: ModelSpec,
    device: Device,
    net: CafNet,
    varmap: VarMap,
    optimisers: Optimisers,
    grouping: GroupingRule,
    train: BatchLoader,
    validation: BatchLoader,
    training_subjects: Vec<String>,
    validation_subjects: Vec<String>,
    state: TrainState,
}

/// Trainable variables under `prefix` (BatchNorm running statistics excluded), by name.
fn trainable(varmap: &VarMap, prefix: &str) -> Vec<(String, Var)> {
    let vars = varmap.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut named: Vec<(String, Var)> = vars
        .iter()
        .filter(|(name, _)| {
            name.starts_with(prefix) && !name.ends_with("running_mean") && !name.ends_with("running_var")
        })
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// One epoch's training speed, logged with its validation row.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Throughput {
    images_per_second: f64,
    /// The share of the epoch's training time spent waiting for the next batch.
    data_wait_share: f64,
}

impl Throughput {
    fn of(images: usize, waited: std::time::Duration, elapsed: std::time::Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            images_per_second: images as f64 / seconds,
            data_wait_share: (waited.as_secs_f64() / seconds).min(1.0),
        }
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The critic step's loss, its constraint `C` (for λ) and its statistics,
/// read from the device in one transfer (this runs every iteration).
fn critic_readings(contrast: &caf_objective::CriticLoss) -> Result<(f64, f64, CriticStats)> {
    let active = contrast.d_an.gt(0.0)?.to_dtype(contrast.d_an.dtype())?;
    let per_pair = [
        &contrast.d_ap,
        &contrast.d_an,
        &active,
        &contrast.margin,
        &contrast.negative_distance,
    ];
    let means = Tensor::stack(&per_pair, 0)?.mean(1)?;
    let scalars = Tensor::stack(&[&contrast.loss, &contrast.constraint], 0)?.to_dtype(means.dtype())?;
    let values = Tensor::cat(&[&scalars, &means], 0)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let stats = CriticStats {
        d_ap: values[2],
        d_an: values[3],
        active_hinges: values[4],
        margin: values[5],
        strong_weak_distance: values[6],
    };
    Ok((values[0], values[1], stats))
}

impl Trainer {
    /// A fresh run: seeded initial weights, then the pretrained encoder if configured.
    pub fn new(config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let device = caf_kernels::parse_device(&config.device)?;
        let arch = config.arch()?;
        let varmap = VarMap::new();
        let net = CafNet::new(arch, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
        seeded_init(&varmap, arch, config.seed)?;
        if !config.pretrained.is_empty() {
            let source: WeightSource = config.pretrained.parse().map_err(anyhow::Error::msg)?;
            load_pretrained_encoder(&varmap, arch, &source, &HubOptions::from_env(), &device)?;
        }
        let state = TrainState {
            step: 0,
            epoch: 0,
            batch: 0,
            lambda: LagrangeMultiplier::default(),
            best_mean_ccc: f64::NEG_INFINITY,
            counters: Counters::default(),
        };
        Self::assemble(config, device, net, varmap, state)
    }

    /// Continues the run saved in `checkpoint`, with `overrides` applied to
    /// its saved configuration (e.g. more epochs).
    pub fn resume(checkpoint: &Path, overrides: &[String]) -> Result<Self> {
        // Read once on the host; `caf_net` moves the weights to the run's device.
        let file = Checkpoint::read(checkpoint, &Device::Cpu)?;
        let overridden = TrainConfig::of_checkpoint(&file, overrides)?.with_context(|| {
            format!(
                "{}: not a training checkpoint (no {META_CONFIG}); use it as pretrained weights instead",
                checkpoint.display()
            )
        })?;
        let device = caf_kernels::parse_device(&overridden.device)?;
        let meta = |key: &str| {
            file.metadata
                .get(key)
                .with_context(|| format!("{}: metadata {key} is missing", checkpoint.display()))
        };
        let number = |key: &str| -> Result<u64> {
            meta(key)?
                .parse()
                .with_context(|| format!("{}: metadata {key} is not a number", checkpoint.display()))
        };
        let (net, varmap) = file.caf_net(&device)?;
        let state = TrainState {
            step: number(META_STEP)?,
            epoch: number(META_EPOCH)? as usize,
            batch: number(META_BATCH)? as usize,
            lambda: LagrangeMultiplier {
                value: meta(META_LAMBDA)?.parse().context("lambda")?,
                ..LagrangeMultiplier::default()
            },
            best_mean_ccc: meta(META_BEST)?.parse().context("best mean CCC")?,
            counters: serde_json::from_str(meta(META_COUNTERS)?).context("counters")?,
        };
        let mut trainer = Self::assemble(overridden, device, net, varmap, state)?;
        trainer.optimisers.encoder.load_state(&file.tensors, "optim.encoder")?;
        trainer
            .optimisers
            .regressor
            .load_state(&file.tensors, "optim.regressor")?;
        trainer.optimisers.critic.load_state(&file.tensors, "optim.critic")?;
        tracing::info!(checkpoint = %checkpoint.display(), step = trainer.state.step, epoch = trainer.state.epoch + 1, "resuming");
        Ok(trainer)
    }

    fn assemble(config: TrainConfig, device: Device, net: CafNet, varmap: VarMap, state: TrainState) -> Result<Self> {
        let adam = AdamConfig {
            lr: config.lr,
            beta1: config.beta1,
            beta2: config.beta2,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let optimisers = Optimisers {
            encoder: Adam::new(trainable(&varmap, &format!("{ENCODER}.")), adam)?,
            regressor: Adam::new(trainable(&varmap, &format!("{REGRESSOR}.")), adam)?,
            critic: Adam::new(trainable(&varmap, &format!("{CRITIC}.")), adam)?,
        };
        let (train_set, validation_set) = training_and_validation_sets(&config)?;
        tracing::info!(
            train = train_set.len(),
            train_subjects = train_set.subjects().len(),
            validation = validation_set.len(),
            validation_subjects = validation_set.subjects().len(),
            "data ready"
        );
        let (train, validation) = loaders(&config, &train_set, &validation_set)?;
        let spec = ModelSpec {
            arch: config.arch()?,
            image_size: config.image_size as usize,
            resize: config.resize as usize,
        };
        let grouping = config.grouping()?;
        Ok(Self {
            config,
            spec,
            device,
            net,
            varmap,
            optimisers,
            grouping,
            train,
            validation,
            training_subjects: subject_names(&train_set),
            validation_subjects: subject_names(&validation_set),
            state,
        })
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The people this run trains on, sorted.
    pub fn training_subjects(&self) -> &[String] {
        &self.training_subjects
    }

    /// The people this run validates on, sorted (none of them is trained on
    /// unless a separate validation set shares people with `data`).
    pub fn validation_subjects(&self) -> &[String] {
        &self.validation_subjects
    }

    /// The scheduled learning rate of iteration `step` (0-based).
    fn lr_at(&self, step: u64) -> f64 {
        let c = &self.config;
        step_lr(c.lr, c.lr_gamma, c.lr_step, step) * warmup_ramp(c.warmup, step)
    }

    /// One iteration on a batch, as in the paper's algorithm. Each call is
    /// one iteration: it advances the iteration counter, so the learning-rate
    /// schedule and the dropout masks move on when `step` is called in a loop
    /// of one's own. A non-finite loss ends the iteration early (see
    /// [`StepReport`]).
    pub fn step(&mut self, batch: &Batch) -> Result<StepReport> {
        let report = self.phases(batch);
        self.state.step += 1;
        report
    }

    fn phases(&mut self, batch: &Batch) -> Result<StepReport> {
        let lr = self.lr_at(self.state.step);
        for optimiser in [
            &mut self.optimisers.encoder,
            &mut self.optimisers.regressor,
            &mut self.optimisers.critic,
        ] {
            optimiser.set_lr(lr);
        }
        self.net.va.dropout.reseed(self.config.seed, &[self.state.step, 0xd0]);
        let (encoder, regressor, critic) = (&self.net.va.encoder, &self.net.va.regressor, &self.net.critic);
        let mut report = StepReport::default();

        // 1. Regression step: f_e and f_r minimise L_AV on the whole batch.
        let loss_av = va_loss(
            &regressor.forward_t(&encoder.forward_t(&batch.images, true)?, true)?,
            &batch.labels,
        )?;
        // Each phase builds its backward pass before reading its loss, so on
        // a GPU the device computes while the host waits for the one number.
        let grads = loss_av.total.backward()?;
        report.loss_av = scalar(&loss_av.total)?;
        if !report.loss_av.is_finite() {
            report.nonfinite = Some(Phase::Regression);
            return Ok(report);
        }
        self.optimisers.encoder.step(&grads)?;
        self.optimisers.regressor.step(&grads)?;
        if self.config.method == Method::Baseline {
            return Ok(report);
        }

        // Grouping into strong (P) and weak (Q) samples, paired in order.
        let Ok(groups) = group(&batch.label_values, self.grouping) else {
            report.no_pair = true;
            return Ok(report);
        };
        report.pairs = groups.len();
        let rows = |indices: &[usize]| -> Result<Tensor> {
            let indices = Tensor::new(indices.iter().map(|&i| i as u32).collect::<Vec<u32>>(), &self.device)?;
            Ok(batch.images.index_select(&indices, 0)?)
        };
        let (x_strong, x_weak) = (rows(&groups.strong)?, rows(&groups.weak)?);

        // 2. Critic step: f_c contrasts strong and weak outputs; encoder features fixed.
        // f_e does not change before step 3, so a pure encoder's pass over the
        // weak samples serves both steps (detached here, with its graph there;
        // ResNet-18's batch norms count every pass, so it makes its own).
        let s = critic.forward_t(&encoder.forward_t(&x_strong, true)?.detach(), true)?;
        let weak_features = encoder.forward_t(&x_weak, true)?;
        let w = critic.forward_t(&weak_features.detach(), true)?;
        let weak_features = encoder.training_pass_is_pure().then_some(weak_features);
        let neighbourhood = adaptive_ks(&s, &w)?;
        let contrast = critic_loss(&s, &w, &neighbourhood, self.state.lambda.value)?;
        let grads = contrast.loss.backward()?;
        let (loss_critic, constraint, stats) = critic_readings(&contrast)?;
        report.loss_critic = Some(loss_critic);
        report.critic = Some(stats);
        if !loss_critic.is_finite() {
            report.nonfinite = Some(Phase::Critic);
            return Ok(report);
        }
        self.optimisers.critic.step(&grads)?;
        self.state.lambda.update(constraint);

        // 3. Adversarial step: f_e raises the critic's outputs of weak samples; f_c frozen.
        let weak_features = match weak_features {
            Some(features) => features,
            None => encoder.forward_t(&x_weak, true)?,
        };
        let loss_adversarial = adversarial_loss(&critic.forward_t(&weak_features, true)?)?;
        let grads = loss_adversarial.backward()?;
        let value = scalar(&loss_adversarial)?;
        report.loss_adversarial = Some(value);
        report.weak_critic_output = Some(-value / caf_objective::ADVERSARIAL_WEIGHT);
        if !value.is_finite() {
            report.nonfinite = Some(Phase::Adversarial);
            return Ok(report);
        }
        self.optimisers.encoder.step(&grads)?;
        Ok(report)
    }

    /// Trains until the configured number of epochs, or until `stop` is set
    /// (then the current iteration finishes, `last.safetensors` is written
    /// and the summary says `interrupted`).
    pub fn run(&mut self, stop: &AtomicBool) -> Result<RunSummary> {
        let output = self.config.output.clone();
        std::fs::create_dir_all(&output).with_context(|| format!("cannot create {}", output.display()))?;
        write_file_atomically(&output.join("config.toml"), self.config.to_toml()?.as_bytes())?;
        // Rows a killed run wrote after this checkpoint are cut: they are about to be written again.
        let mut log = MetricsLog::resume_at(&output.join("metrics.jsonl"), self.state.step)?;
        let (last, best) = (output.join("last.safetensors"), output.join("best.safetensors"));
        let mut consecutive_nonfinite = 0usize;
        let mut interrupted = false;
        let mut latest = None;
        while self.state.epoch < self.config.epochs && !interrupted {
            let epoch = self.state.epoch;
            let plan_len = self.train.batches_per_epoch();
            let mut progress = Progress::new(
                plan_len,
                self.state.batch,
                (epoch, self.config.epochs),
                self.config.batch_size,
                std::time::Duration::from_secs_f64(self.config.progress_seconds),
            );
            let mut batches = self.train.epoch_from(epoch as u64, self.state.batch, &self.device);
            let started = Instant::now();
            let mut running = [0f64; 3];
            // How long the steps waited for the loader: the share of the
            // epoch the data pipeline, not the device, set the pace.
            let (mut waited, mut images) = (std::time::Duration::ZERO, 0usize);
            loop {
                let asked = Instant::now();
                let Some(batch) = batches.next() else {
                    break;
                };
                waited += asked.elapsed();
                let batch = batch?;
                images += batch.label_values.len();
                let report = self.step(&batch)?;
                self.state.batch += 1;
                if report.no_pair {
                    self.state.counters.no_pair += 1;
                    tracing::debug!(
                        step = self.state.step,
                        "no strong/weak pair in this batch: regression step only"
                    );
                }
                if let Some(phase) = report.nonfinite {
                    self.state.counters.nonfinite += 1;
                    consecutive_nonfinite += 1;
                    tracing::warn!(
                        step = self.state.step,
                        ?phase,
                        "non-finite loss: this phase's update and the later phases' skipped"
                    );
                    if consecutive_nonfinite >= self.config.max_nonfinite {
                        self.save(&last)?;
                        bail!(
                            "{consecutive_nonfinite} iterations in a row had a non-finite loss (step {}); the run is stopped and saved to {}. Try a lower lr, check the labels, or resume from an earlier checkpoint",
                            self.state.step,
                            last.display()
                        );
                    }
                } else {
                    consecutive_nonfinite = 0;
                }
                running = [
                    0.9 * running[0] + 0.1 * report.loss_av,
                    0.9 * running[1] + 0.1 * report.loss_critic.unwrap_or(running[1]),
                    0.9 * running[2] + 0.1 * report.loss_adversarial.unwrap_or(running[2]),
                ];
                progress.advance(
                    self.state.step,
                    format!(
                        "L_AV {:.3}  L_c {:.3}  L_adv {:.4}  λ {:.2e}",
                        running[0], running[1], running[2], self.state.lambda.value
                    ),
                );
                if self.state.step % self.config.log_every as u64 == 0 {
                    log.write(&json!({
                        "kind": "train", "step": self.state.step, "epoch": epoch + 1,
                        "loss_av": report.loss_av, "loss_critic": report.loss_critic, "loss_adversarial": report.loss_adversarial,
                        "lambda": self.state.lambda.value, "pairs": report.pairs, "no_pair": report.no_pair,
                        "nonfinite": report.nonfinite, "critic": report.critic,
                        "weak_critic_output": report.weak_critic_output,
                        "lr": self.lr_at(self.state.step - 1),
                    }))?;
                }
                if stop.load(Ordering::SeqCst) {
                    interrupted = true;
                    break;
                }
            }
            let throughput = Throughput::of(images, waited, started.elapsed());
            self.state.counters.skipped_images += batches.skipped() as u64;
            drop(batches);
            progress.finish();
            if interrupted {
                self.save(&last)?;
                break;
            }
            self.state.epoch += 1;
            self.state.batch = 0;
            let (summary, predictions, skipped) = evaluate(&self.net.va, &self.validation, &self.device)?;
            let score = mean_ccc(&summary);
            let diagnostics = Diagnostics::of(&predictions);
            log.write(&json!({
                "kind": "validation", "epoch": epoch + 1, "step": self.state.step, "seconds": started.elapsed().as_secs_f64(),
                "metrics": summary_json(&summary), "mean_ccc": score, "skipped_images": skipped, "counters": self.state.counters,
                "diagnostics": diagnostics, "breakdown": Breakdown::of(&predictions).to_json(false),
                "throughput": throughput,
            }))?;
            tracing::info!(
                epoch = epoch + 1,
                images_per_s = format!("{:.1}", throughput.images_per_second),
                data_wait = format!("{:.0} %", 100.0 * throughput.data_wait_share),
                mean_ccc = format!("{score:.4}"),
                live_units = diagnostics.live_units,
                va_correlation = format!(
                    "{:.2} (labels {:.2})",
                    diagnostics.predicted_va_correlation, diagnostics.label_va_correlation
                ),
                "validation\n{summary}"
            );
            if score > self.state.best_mean_ccc || !best.exists() {
                self.state.best_mean_ccc = self.state.best_mean_ccc.max(score);
                self.save(&best)?;
            }
            if self.config.checkpoint_every > 0 && self.state.epoch % self.config.checkpoint_every == 0 {
                self.save(&output.join(format!("epoch-{}.safetensors", self.state.epoch)))?;
            }
            self.save(&last)?;
            latest = Some((summary, predictions));
        }
        let (validation, predictions) = match latest {
            Some(latest) => latest,
            None => {
                let (summary, predictions, _) = evaluate(&self.net.va, &self.validation, &self.device)?;
                (summary, predictions)
            }
        };
        Ok(RunSummary {
            output,
            last,
            best,
            validation,
            state: self.state.clone(),
            interrupted,
            predictions,
            validation_subjects: self.validation_subjects.clone(),
        })
    }

    /// Writes weights, optimiser moments and the training state to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = varmap_tensors(&self.varmap);
        tensors.extend(self.optimisers.encoder.state("optim.encoder")?);
        tensors.extend(self.optimisers.regressor.state("optim.regressor")?);
        tensors.extend(self.optimisers.critic.state("optim.critic")?);
        let metadata = HashMap::from([
            (META_CONFIG.to_string(), self.config.to_toml()?),
            (META_STEP.to_string(), self.state.step.to_string()),
            (META_EPOCH.to_string(), self.state.epoch.to_string()),
            (META_BATCH.to_string(), self.state.batch.to_string()),
            (META_LAMBDA.to_string(), self.state.lambda.value.to_string()),
            (META_BEST.to_string(), self.state.best_mean_ccc.to_string()),
            (META_COUNTERS.to_string(), serde_json::to_string(&self.state.counters)?),
            (
                "caf.method".to_string(),
                format!("{:?}", self.config.method).to_lowercase(),
            ),
        ]);
        write_tensors(path, &self.spec, &tensors, &metadata)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "trainer_tests_support.rs"]
mod tests_support;

#[cfg(test)]
#[path = "trainer_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "trainer_step_tests.rs"]
mod step_tests;
