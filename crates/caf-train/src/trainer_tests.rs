//! The iteration counter and the non-finite-loss policy of `Trainer::step`.

use std::collections::HashMap;

use anyhow::Result;

use super::tests_support::{batch, tiny, LABELS};
use super::*;

/// Every trainable tensor of the run, by name, and which network it belongs to.
fn snapshot(trainer: &Trainer) -> Result<HashMap<String, Vec<f32>>> {
    let vars = trainer.varmap().data().lock().expect("varmap lock");
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
    let dir = tempfile::tempdir()?;
    let mut trainer = tiny(dir.path(), |c| {
        c.lr_step = 1;
        c.lr_gamma = 0.5;
    })?;
    let batch = batch(LABELS)?;
    let mut learning_rates = Vec::new();
    for expected_step in 1..=3u64 {
        trainer.step(&batch)?;
        assert_eq!(trainer.state().step, expected_step);
        learning_rates.push(trainer.optimisers.encoder.config().lr);
    }
    // The rate used by iteration t (0-based) is lr · γ^t.
    assert_eq!(learning_rates, [1e-3, 5e-4, 2.5e-4]);
    Ok(())
}

#[test]
fn the_warm_up_ramps_every_optimiser() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = tiny(dir.path(), |c| c.warmup = 4)?;
    let batch = batch(LABELS)?;
    let mut learning_rates = Vec::new();
    for _ in 0..5 {
        trainer.step(&batch)?;
        let optimisers = &trainer.optimisers;
        let rates = [&optimisers.encoder, &optimisers.regressor, &optimisers.critic].map(|o| o.config().lr);
        assert!(rates.iter().all(|&r| r == rates[0]), "{rates:?}");
        learning_rates.push(rates[0]);
    }
    assert_eq!(learning_rates, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3]);
    Ok(())
}

#[test]
fn the_second_call_draws_new_dropout_masks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let batch = batch(LABELS)?;
    // Same seed, same batch, a constant learning rate: the only difference
    // between the two runs' second iterations is the counter the dropout
    // masks are drawn from.
    let mut looped = tiny(&dir.path().join("looped"), |_| {})?;
    looped.step(&batch)?;
    looped.step(&batch)?;
    let mut repeated = tiny(&dir.path().join("repeated"), |_| {})?;
    repeated.step(&batch)?;
    repeated.state.step = 0;
    repeated.step(&batch)?;
    assert!(
        snapshot(&looped)? != snapshot(&repeated)?,
        "the second iteration reused the first one's dropout masks"
    );
    Ok(())
}

#[test]
fn a_nonfinite_regression_loss_changes_nothing_but_counts_the_iteration() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = tiny(dir.path(), |_| {})?;
    let mut labels = LABELS;
    labels[3][0] = f32::NAN;
    let before = snapshot(&trainer)?;
    let report = trainer.step(&batch(labels)?)?;
    assert_eq!(report.nonfinite, Some(Phase::Regression));
    assert!(report.loss_critic.is_none() && report.loss_adversarial.is_none());
    assert!(moved(&before, &snapshot(&trainer)?).is_empty());
    assert_eq!((trainer.state().step, trainer.state().lambda.value), (1, 0.0));
    Ok(())
}

#[test]
fn a_nonfinite_critic_loss_keeps_the_regression_update_and_skips_the_rest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = tiny(dir.path(), |_| {})?;
    // λ enters L_c only: a NaN multiplier makes the critic's loss NaN while
    // the regression loss stays finite.
    trainer.state.lambda.value = f64::NAN;
    let before = snapshot(&trainer)?;
    let report = trainer.step(&batch(LABELS)?)?;
    assert_eq!(report.nonfinite, Some(Phase::Critic));
    assert!(report.loss_av.is_finite() && report.loss_adversarial.is_none());
    assert_eq!(moved(&before, &snapshot(&trainer)?), ["encoder", "regressor"]);
    assert!(
        trainer.state().lambda.value.is_nan(),
        "λ is not updated from a skipped critic step"
    );

    // The same iteration with a finite λ moves every network.
    let mut healthy = tiny(&dir.path().join("healthy"), |_| {})?;
    let before = snapshot(&healthy)?;
    let report = healthy.step(&batch(LABELS)?)?;
    assert_eq!(report.nonfinite, None, "{report:?}");
    assert_eq!(moved(&before, &snapshot(&healthy)?), ["critic", "encoder", "regressor"]);
    Ok(())
}
