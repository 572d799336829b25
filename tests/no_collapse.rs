//! The default run (`cargo xtask train` with no arguments: CAF, AlexNet, the
//! built-in data, CPU) learns both axes: its validation predictions follow
//! valence and arousal each, instead of lying on one line (valence and
//! arousal one number, as a collapsed model's). It is the whole default run
//! (seed 3, one of the five the README reports), several minutes on two cores,
//! because the collapse is what its first few hundred steps look like.

use std::sync::atomic::AtomicBool;

use anyhow::Result;
use caf_train::{DatasetSpec, Diagnostics, TrainConfig, Trainer};

#[test]
fn the_default_run_moves_both_axes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let defaults = TrainConfig::default();
    let DatasetSpec::Synthetic {
        subjects,
        images_per_subject,
        size,
        seed,
        ..
    } = defaults.data.clone()
    else {
        panic!("the default run is on the built-in data")
    };
    let config = TrainConfig {
        data: DatasetSpec::Synthetic {
            dir: dir.path().join("data"),
            subjects,
            images_per_subject,
            size,
            seed,
        },
        output: dir.path().join("run"),
        seed: SEED,
        log_every: 1000,
        progress_seconds: 1e9,
        ..defaults
    };
    let summary = Trainer::new(config)?.run(&AtomicBool::new(false))?;
    let diagnostics = Diagnostics::of(&summary.predictions);
    let (valence, arousal) = (summary.validation.valence, summary.validation.arousal);
    println!(
        "{} steps: valence PCC {:.3} CCC {:.3}, arousal PCC {:.3} CCC {:.3}, predicted V/A correlation {:.3} (labels {:.3}), {} live units",
        summary.state.step,
        valence.pcc,
        valence.ccc,
        arousal.pcc,
        arousal.ccc,
        diagnostics.predicted_va_correlation,
        diagnostics.label_va_correlation,
        diagnostics.live_units
    );
    assert!(
        valence.pcc > MIN_PCC && arousal.pcc > MIN_PCC,
        "each axis must follow its label: valence PCC {:.3}, arousal PCC {:.3}",
        valence.pcc,
        arousal.pcc
    );
    assert!(
        diagnostics.predicted_va_correlation.abs() < MAX_PREDICTED_CORRELATION,
        "predictions along a line: predicted valence and arousal correlate at {:.3}, the labels at {:.3}",
        diagnostics.predicted_va_correlation,
        diagnostics.label_va_correlation
    );
    assert!(
        diagnostics.live_units >= MIN_LIVE_UNITS,
        "{} live bottleneck units of 8",
        diagnostics.live_units
    );
    Ok(())
}

/// The run's seed: it draws the split, the initial weights and the batches.
const SEED: u64 = 3;

/// Pearson correlation each axis's predictions must reach with its labels,
/// and the most the predicted valence and arousal may correlate. The
/// default's seeds clear both with room for another machine's rounding
/// (which acts like another seed); the collapsed default of the learning
/// rate 1e-3 and the 24-epoch default each broke one on this seed
/// (docs/method.md, "The predictions over a run", has the figures).
const MIN_PCC: f64 = 0.3;
const MAX_PREDICTED_CORRELATION: f64 = 0.6;

/// Live units of the regressor's 8-unit bottleneck the run must keep. With
/// one, the two outputs are affine in one number and lie on a line whatever
/// the rest of the network does. More is not asked for: units that die in the
/// first epoch stay dead, and a run that keeps half of them can still spread
/// its predictions over the plane (docs/method.md).
const MIN_LIVE_UNITS: usize = 2;
