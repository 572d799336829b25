//! The iteration counter and the non-finite-loss policy of `CafStep::run`.

use std::collections::HashMap;

use anyhow::Result;

use super::tests_support::{batch, tiny, LABELS};
use super::*;

/// Every trainable tensor of the run, by name, and which network it belongs to.
fn snapshot(step: &CafStep) -> Result<HashMap<String, Vec<f32>>> {
    let vars = step.varmap().data().lock().expect("varmap lock");
    vars.iter()
        .filter(|(name, _)| !name.contains("running_"))
        .map(|(name, var)| Ok((name.clone(), var.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
        .collect()
}

/// The networks (`encoder`, `regressor`, `critic`) with a tensor that changed.
fn moved(before: &HashMap<String, Vec<f32>>, after: &HashMap<String, Vec<f32>>) -> Vec<String> {
    let mut parts: Vec<String> = before
        .iter()
        .filter(|(name, values)| after[*name] != **values)
        .map(|(name, _)| name.split('.').next().unwrap_or(name).to_string())
        .collect();
    parts.sort();
    parts.dedup();
    parts
}

#[test]
fn each_call_is_one_iteration_of_the_schedule() -> Result<()> {
    let mut step = tiny(|c| {
        c.lr_step = 1;
        c.lr_gamma = 0.5;
    })?;
    let batch = batch(LABELS)?;
    let mut learning_rates = Vec::new();
    for expected_step in 1..=3u64 {
        step.run(&batch)?;
        assert_eq!(step.iteration(), expected_step);
        learning_rates.push(step.optimiser_rates()[0]);
    }
    // The rate used by iteration t (0-based) is lr · γ^t.
    assert_eq!(learning_rates, [1e-3, 5e-4, 2.5e-4]);
    Ok(())
}

#[test]
fn the_warm_up_ramps_every_optimiser() -> Result<()> {
    let mut step = tiny(|c| c.warmup = 4)?;
    let batch = batch(LABELS)?;
    let mut learning_rates = Vec::new();
    for _ in 0..5 {
        step.run(&batch)?;
        let rates = step.optimiser_rates();
        assert!(rates.iter().all(|&r| r == rates[0]), "{rates:?}");
        learning_rates.push(rates[0]);
    }
    assert_eq!(learning_rates, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3]);
    Ok(())
}

#[test]
fn the_second_call_draws_new_dropout_masks() -> Result<()> {
    let batch = batch(LABELS)?;
    // Same seed, same batch, a constant learning rate: the only difference
    // between the two runs' second iterations is the counter the dropout
    // masks are drawn from.
    let mut looped = tiny(|_| {})?;
    looped.run(&batch)?;
    looped.run(&batch)?;
    let mut repeated = tiny(|_| {})?;
    repeated.run(&batch)?;
    repeated.iteration = 0;
    repeated.run(&batch)?;
    assert!(
        snapshot(&looped)? != snapshot(&repeated)?,
        "the second iteration reused the first one's dropout masks"
    );
    Ok(())
}

#[test]
fn a_nonfinite_regression_loss_changes_nothing_but_counts_the_iteration() -> Result<()> {
    let mut step = tiny(|_| {})?;
    let mut labels = LABELS;
    labels[3][0] = f32::NAN;
    let before = snapshot(&step)?;
    let report = step.run(&batch(labels)?)?;
    assert_eq!(report.nonfinite, Some(Phase::Regression));
    assert!(report.loss_critic.is_none() && report.loss_adversarial.is_none());
    assert!(moved(&before, &snapshot(&step)?).is_empty());
    assert_eq!((step.iteration(), step.lambda().value), (1, 0.0));
    Ok(())
}

#[test]
fn a_nonfinite_critic_loss_keeps_the_regression_update_and_skips_the_rest() -> Result<()> {
    let mut step = tiny(|_| {})?;
    // λ enters L_c only: a NaN multiplier makes the critic's loss NaN while
    // the regression loss stays finite.
    step.lambda.value = f64::NAN;
    let before = snapshot(&step)?;
    let report = step.run(&batch(LABELS)?)?;
    assert_eq!(report.nonfinite, Some(Phase::Critic));
    assert!(report.loss_av.is_finite() && report.loss_adversarial.is_none());
    assert_eq!(moved(&before, &snapshot(&step)?), ["encoder", "regressor"]);
    assert!(
        step.lambda().value.is_nan(),
        "λ is not updated from a skipped critic step"
    );

    // The same iteration with a finite λ moves every network.
    let mut healthy = tiny(|_| {})?;
    let before = snapshot(&healthy)?;
    let report = healthy.run(&batch(LABELS)?)?;
    assert_eq!(report.nonfinite, None, "{report:?}");
    assert_eq!(moved(&before, &snapshot(&healthy)?), ["critic", "encoder", "regressor"]);
    Ok(())
}
