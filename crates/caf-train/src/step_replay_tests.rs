//! One CAF iteration against a replay by hand: the same passes on a twin of
//! the networks, each phase's gradient taken from that phase's loss alone and
//! applied by a hand-written Adam. Every weight the trainer ends with, and λ,
//! must match the replay: the regression phase moves exactly `f_e` and `f_r`,
//! the critic phase exactly `f_c` (the encoder's features detached), the
//! adversarial phase exactly `f_e` (the critic frozen), and the critic sees
//! the strong and weak samples grouping chose.

use std::collections::HashMap;

use anyhow::Result;
use caf_objective::{adaptive_ks, adversarial_loss, critic_loss, va_loss, RHO};
use caf_sampler::group;
use candle_core::{backprop::GradStore, Tensor, Var};

use super::tests_support::{batch, tiny, LABELS};
use super::*;

/// Adam as its formulas read, in f64, one state per parameter name.
struct HandAdam {
    config: AdamConfig,
    state: HashMap<String, (Vec<f64>, Vec<f64>, i32)>,
}

impl HandAdam {
    fn new(config: AdamConfig) -> Self {
        Self {
            config,
            state: HashMap::new(),
        }
    }

    /// Steps every variable under `prefix` that has a gradient in `grads`.
    fn step(&mut self, vars: &[(String, Var)], prefix: &str, grads: &GradStore) -> Result<usize> {
        let c = self.config;
        let mut stepped = 0;
        for (name, var) in vars.iter().filter(|(name, _)| name.starts_with(prefix)) {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let grad = grad.flatten_all()?.to_vec1::<f32>()?;
            let value = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let (m, v, t) = self
                .state
                .entry(name.clone())
                .or_insert_with(|| (vec![0.0; grad.len()], vec![0.0; grad.len()], 0));
            *t += 1;
            let (c1, c2) = (1.0 - c.beta1.powi(*t), 1.0 - c.beta2.powi(*t));
            let updated: Vec<f32> = (0..grad.len())
                .map(|i| {
                    let g = grad[i] as f64;
                    m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g;
                    v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
                    (value[i] as f64 - c.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + c.eps)) as f32
                })
                .collect();
            var.set(&Tensor::from_vec(updated, var.shape(), var.device())?)?;
            stepped += 1;
        }
        Ok(stepped)
    }
}

fn has_gradient(vars: &[(String, Var)], prefix: &str, grads: &GradStore) -> bool {
    vars.iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .any(|(_, var)| grads.get(var.as_tensor()).is_some())
}

#[test]
fn one_caf_step_matches_a_replay_of_its_three_phases_by_hand() -> Result<()> {
    let batch = batch(LABELS)?;
    let mut step = tiny(|_| {})?;
    let twin = tiny(|_| {})?;
    let report = step.run(&batch)?;
    assert_eq!(report.nonfinite, None, "{report:?}");

    let vars = trainable(&twin.varmap, "");
    let config = *step.optimisers.encoder.config();
    let mut adam = HandAdam::new(config);
    let (encoder, regressor, critic) = (&twin.net.va.encoder, &twin.net.va.regressor, &twin.net.critic);
    twin.net.va.dropout.reseed(twin.settings.seed, &[0, 0xd0]);

    // 1. Regression: L_AV's gradient reaches f_e and f_r, never f_c.
    let predictions = regressor.forward_t(&encoder.forward_t(&batch.images, true)?, true)?;
    let grads = va_loss(&predictions, &batch.labels)?.total.backward()?;
    assert!(!has_gradient(&vars, "critic.", &grads));
    assert_eq!(adam.step(&vars, "encoder.", &grads)?, 10);
    assert_eq!(adam.step(&vars, "regressor.", &grads)?, 6);

    // 2. Critic: the groups grouping chose, the encoder's features detached.
    let groups = group(&batch.label_values, twin.settings.grouping).expect("pairs");
    assert_eq!(report.pairs, groups.len());
    let rows = |indices: &[usize]| -> Result<Tensor> {
        let indices = Tensor::new(indices.iter().map(|&i| i as u32).collect::<Vec<u32>>(), &twin.device)?;
        Ok(batch.images.index_select(&indices, 0)?)
    };
    let (x_strong, x_weak) = (rows(&groups.strong)?, rows(&groups.weak)?);
    let s = critic.forward_t(&encoder.forward_t(&x_strong, true)?.detach(), true)?;
    let weak_features = encoder.forward_t(&x_weak, true)?;
    let w = critic.forward_t(&weak_features.detach(), true)?;
    let contrast = critic_loss(&s, &w, &adaptive_ks(&s, &w)?, 0.0)?;
    let grads = contrast.loss.backward()?;
    assert!(!has_gradient(&vars, "encoder.", &grads) && !has_gradient(&vars, "regressor.", &grads));
    assert_eq!(adam.step(&vars, "critic.", &grads)?, 6);
    let constraint = contrast
        .constraint
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    // What the step reports of the critic phase is this phase's.
    let mean = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(candle_core::DType::F64)?.mean_all()?.to_scalar()?) };
    let reported = report.critic.expect("the critic phase ran");
    let active = contrast.d_an.gt(0.0)?;
    for (what, got, want) in [
        ("d_ap", reported.d_ap, mean(&contrast.d_ap)?),
        ("d_an", reported.d_an, mean(&contrast.d_an)?),
        ("active hinges", reported.active_hinges, mean(&active)?),
        ("margin", reported.margin, mean(&contrast.margin)?),
        (
            "strong-weak distance",
            reported.strong_weak_distance,
            mean(&contrast.negative_distance)?,
        ),
    ] {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{what}: reported {got}, replayed {want}"
        );
    }

    // 3. Adversarial: through the updated, frozen critic into f_e only.
    let grads = adversarial_loss(&critic.forward_t(&weak_features, true)?)?.backward()?;
    assert_eq!(adam.step(&vars, "encoder.", &grads)?, 10);

    let expected = snapshot(&twin)?;
    let actual = snapshot(&step)?;
    let mut worst = (0f64, String::new());
    for (name, values) in &expected {
        for (a, e) in actual[name].iter().zip(values) {
            let difference = (a - e).abs() as f64;
            if difference > worst.0 {
                worst = (difference, name.clone());
            }
        }
    }
    // The updates are about lr = 1e-3 per weight. The replay's f64 Adam and
    // the fused f32 one agree to rounding, except where a gradient is near
    // Adam's ε (1e-8): there `g/(|g| + ε)` magnifies the gradients' own
    // rounding (4e-6 on this batch). A missing or misdirected phase moves
    // weights by about lr.
    assert!(
        worst.0 < 2e-5,
        "largest difference from the replay: {} in {}",
        worst.0,
        worst.1
    );
    let lambda = step.lambda().value;
    assert!(
        (lambda - RHO * constraint).abs() <= 1e-6 * (RHO * constraint).abs(),
        "λ = {lambda}, ρ·C = {}",
        RHO * constraint
    );
    Ok(())
}

/// Every trainable tensor, by name.
fn snapshot(step: &CafStep) -> Result<HashMap<String, Vec<f32>>> {
    trainable(&step.varmap, "")
        .into_iter()
        .map(|(name, var)| Ok((name, var.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
        .collect()
}
