//! One CAF iteration over a batch in memory: the networks, their three
//! optimisers, the Lagrange multiplier, the grouping rule and the
//! learning-rate schedule, with no data loading, checkpoint or log
//! (the loop around it is [`Trainer`](crate::Trainer)).

use caf_backbone::{seeded_init, Arch, CafNet, Precision};
use caf_backbone::{CRITIC, ENCODER, REGRESSOR};
use caf_data::Batch;
use caf_objective::{adversarial_loss, critic_objective, va_loss, LagrangeMultiplier};
use caf_sampler::{group, GroupingRule, Groups};
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::adam::{Adam, AdamConfig};
use crate::config::Method;
use crate::error::Result;
use crate::schedule::LrSchedule;

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
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
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

/// Everything an iteration needs besides the networks and a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    pub method: Method,
    pub arch: Arch,
    /// The optimisers' betas and ε; the rate comes from `schedule`.
    pub adam: AdamConfig,
    pub schedule: LrSchedule,
    pub grouping: GroupingRule,
    /// Seeds the initial weights ([`CafStep::seeded`]) and every iteration's dropout masks.
    pub seed: u64,
    /// The precision of the convolutions' products in every phase
    /// ([`caf_kernels::autocast`]).
    pub precision: Precision,
}

/// The optimisers of the three networks.
struct Optimisers {
    encoder: Adam,
    regressor: Adam,
    critic: Adam,
}

impl Optimisers {
    fn all(&mut self) -> [&mut Adam; 3] {
        [&mut self.encoder, &mut self.regressor, &mut self.critic]
    }
}

/// The checkpoint prefixes of the three optimisers' states.
const OPTIMISER_PREFIXES: [&str; 3] = ["optim.encoder", "optim.regressor", "optim.critic"];

/// Trainable variables under `prefix` (BatchNorm running statistics excluded), by name.
pub(crate) fn trainable(varmap: &VarMap, prefix: &str) -> Vec<(String, Var)> {
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

/// The rows of `rows` (batch first) that `groups` names strong, then weak.
pub fn strong_and_weak(rows: &Tensor, groups: &Groups) -> Result<(Tensor, Tensor)> {
    let select = |indices: &[usize]| -> Result<Tensor> {
        let indices = Tensor::new(indices.iter().map(|&i| i as u32).collect::<Vec<u32>>(), rows.device())?;
        Ok(rows.index_select(&indices, 0)?)
    };
    Ok((select(&groups.strong)?, select(&groups.weak)?))
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

/// The CAF iteration (docs/method.md) over batches in memory.
///
/// ```
/// use caf_backbone::Arch;
/// use caf_data::Batch;
/// use caf_train::{CafStep, TrainConfig};
/// use candle_core::{Device, Tensor};
///
/// let settings = TrainConfig { arch: "resnet18".into(), ..TrainConfig::default() }.step_settings()?;
/// let mut step = CafStep::seeded(settings, &Device::Cpu)?;
/// let labels = [[0.9f32, 0.8], [-0.8, 0.7], [0.05, -0.1], [-0.1, 0.05]];
/// let batch = Batch {
///     images: Tensor::zeros((4, 3, 16, 16), candle_core::DType::F32, &Device::Cpu)?,
///     labels: Tensor::new(&labels, &Device::Cpu)?,
///     label_values: labels.to_vec(),
///     subjects: vec![String::new(); 4],
///     indices: (0..4).collect(),
///     skipped: Vec::new(),
/// };
/// let report = step.run(&batch)?;
/// assert_eq!((report.pairs, report.nonfinite, step.iteration()), (2, None, 1));
/// # Ok::<(), caf_train::TrainError>(())
/// ```
pub struct CafStep {
    settings: StepSettings,
    device: Device,
    net: CafNet,
    varmap: VarMap,
    optimisers: Optimisers,
    lambda: LagrangeMultiplier,
    iteration: u64,
}

impl CafStep {
    /// The networks of `varmap` (built by `net`'s constructor), at iteration 0
    /// with λ = 0 and fresh optimiser moments.
    pub fn new(net: CafNet, varmap: VarMap, settings: StepSettings, device: &Device) -> Result<Self> {
        let adam = |prefix: &str| Adam::new(trainable(&varmap, &format!("{prefix}.")), settings.adam);
        let optimisers = Optimisers {
            encoder: adam(ENCODER)?,
            regressor: adam(REGRESSOR)?,
            critic: adam(CRITIC)?,
        };
        Ok(Self {
            settings,
            device: device.clone(),
            net,
            varmap,
            optimisers,
            lambda: LagrangeMultiplier::default(),
            iteration: 0,
        })
    }

    /// Fresh networks with the seeded initial weights of `settings.seed`.
    pub fn seeded(settings: StepSettings, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let net = CafNet::new(settings.arch, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        seeded_init(&varmap, settings.arch, settings.seed)?;
        Self::new(net, varmap, settings, device)
    }

    /// Continues from a saved position: the iterations done and λ.
    pub fn at(mut self, iteration: u64, lambda: LagrangeMultiplier) -> Self {
        self.iteration = iteration;
        self.lambda = lambda;
        self
    }

    pub fn settings(&self) -> &StepSettings {
        &self.settings
    }

    pub fn net(&self) -> &CafNet {
        &self.net
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Iterations done.
    pub fn iteration(&self) -> u64 {
        self.iteration
    }

    pub fn lambda(&self) -> LagrangeMultiplier {
        self.lambda
    }

    /// The rate of the next iteration.
    pub fn lr(&self) -> f64 {
        self.settings.schedule.lr_at(self.iteration)
    }

    /// The three optimisers' moments and step counts as named tensors, for a checkpoint.
    pub fn optimiser_state(&self) -> Result<Vec<(String, Tensor)>> {
        let optimisers = [
            &self.optimisers.encoder,
            &self.optimisers.regressor,
            &self.optimisers.critic,
        ];
        let mut tensors = Vec::new();
        for (optimiser, prefix) in optimisers.into_iter().zip(OPTIMISER_PREFIXES) {
            tensors.extend(optimiser.state(prefix)?);
        }
        Ok(tensors)
    }

    /// Restores what [`CafStep::optimiser_state`] wrote.
    pub fn load_optimiser_state(&mut self, tensors: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        for (optimiser, prefix) in self.optimisers.all().into_iter().zip(OPTIMISER_PREFIXES) {
            optimiser.load_state(tensors, prefix)?;
        }
        Ok(())
    }

    /// One iteration on a batch, as in the paper's algorithm. Each call is
    /// one iteration: it advances the iteration counter, so the learning-rate
    /// schedule and the dropout masks move on. A non-finite loss ends the
    /// iteration early (see [`StepReport`]).
    pub fn run(&mut self, batch: &Batch) -> Result<StepReport> {
        // On the CPU the whole step runs on a worker of rayon's pool, where
        // the kernels' parallel loops start hot (caf_kernels::on_pool).
        let report = caf_kernels::autocast(self.settings.precision, || {
            caf_kernels::on_pool(batch.images.device(), || self.phases(batch))
        });
        self.iteration += 1;
        report
    }

    fn phases(&mut self, batch: &Batch) -> Result<StepReport> {
        let lr = self.lr();
        for optimiser in self.optimisers.all() {
            optimiser.set_lr(lr);
        }
        self.net.va.dropout.reseed(self.settings.seed, &[self.iteration, 0xd0]);
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
        if self.settings.method == Method::Baseline {
            return Ok(report);
        }

        // Grouping into strong (P) and weak (Q) samples, paired in order.
        let Ok(groups) = group(&batch.label_values, self.settings.grouping) else {
            report.no_pair = true;
            return Ok(report);
        };
        report.pairs = groups.len();
        let (x_strong, x_weak) = strong_and_weak(&batch.images, &groups)?;

        // 2. Critic step: f_c contrasts strong and weak outputs; encoder features fixed.
        // f_e does not change before step 3, so a pure encoder's pass over the
        // weak samples serves both steps (detached here, with its graph there;
        // ResNet-18's batch norms count every pass, so it makes its own).
        let s = critic.forward_t(&encoder.forward_t(&x_strong, true)?.detach(), true)?;
        let weak_features = encoder.forward_t(&x_weak, true)?;
        let w = critic.forward_t(&weak_features.detach(), true)?;
        let weak_features = encoder.training_pass_is_pure().then_some(weak_features);
        let contrast = critic_objective(&s, &w, self.lambda.value)?;
        let grads = contrast.loss.backward()?;
        let (loss_critic, constraint, stats) = critic_readings(&contrast)?;
        report.loss_critic = Some(loss_critic);
        report.critic = Some(stats);
        if !loss_critic.is_finite() {
            report.nonfinite = Some(Phase::Critic);
            return Ok(report);
        }
        self.optimisers.critic.step(&grads)?;
        self.lambda.update(constraint);

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

    /// The three optimisers, for the tests of the schedule.
    #[cfg(test)]
    fn optimiser_rates(&self) -> [f64; 3] {
        [
            &self.optimisers.encoder,
            &self.optimisers.regressor,
            &self.optimisers.critic,
        ]
        .map(|o| o.config().lr)
    }
}

#[cfg(test)]
#[path = "step_tests_support.rs"]
mod tests_support;

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "step_replay_tests.rs"]
mod replay_tests;
