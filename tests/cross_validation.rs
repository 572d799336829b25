//! Subject-disjoint cross-validation end to end: each fold trains and
//! validates on the people it should, `eval` of a fold's checkpoint scores
//! that fold's people, and the folds' results differ.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use caf_backbone::Checkpoint;
use caf_e2e::setups::tiny_run;
use caf_train::{run_series, validation_set, Method, Series, TrainConfig};
use candle_core::Device;

fn people(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

/// 8 people × 6 images; 4 folds of 2 people, 1 epoch each.
fn base(dir: &Path) -> TrainConfig {
    let mut config = tiny_run(&dir.join("data"), &dir.join("cv"), Method::Caf, 1);
    config.data = caf_train::DatasetSpec::Synthetic {
        dir: dir.join("data"),
        subjects: 8,
        images_per_subject: 6,
        size: 64,
        seed: 2,
    };
    config.batch_size = 6;
    config
}

#[test]
fn k_fold_runs_validate_on_disjoint_people_that_partition_the_subjects() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = base(dir.path());
    let expected_folds = {
        let dataset = base.data.load()?;
        caf_data::subject_folds(&dataset, 4, base.seed)?
            .iter()
            .map(|fold| {
                let names: Vec<String> = fold
                    .validation
                    .iter()
                    .map(|&i| dataset.samples[i].subject.clone())
                    .collect();
                people(&names)
            })
            .collect::<Vec<_>>()
    };
    let mut seen = Vec::new();
    let outcome = run_series(
        Series::Folds(4).runs(&base)?,
        &AtomicBool::new(false),
        |label, trainer| {
            seen.push((
                label.to_string(),
                people(trainer.training_subjects()),
                people(trainer.validation_subjects()),
            ))
        },
        |_, _| {},
    )?;
    assert!(outcome.interrupted.is_none());
    assert_eq!(outcome.runs.len(), 4);

    let mut validated = BTreeSet::new();
    for (k, (label, training, validation)) in seen.iter().enumerate() {
        assert_eq!(validation, &expected_folds[k], "{label} validates on fold {k}'s people");
        assert!(training.is_disjoint(validation), "{label}: a person on both sides");
        assert_eq!(training.len() + validation.len(), 8, "{label}: every person used once");
        assert!(
            validated.is_disjoint(validation),
            "{label}: validated in an earlier fold too"
        );
        validated.extend(validation.iter().cloned());
        assert_eq!(&people(&outcome.runs[k].1.validation_subjects), validation);
    }
    assert_eq!(validated.len(), 8, "the folds' validation sets cover every person");

    // `eval` of a fold's checkpoint finds that fold's validation people.
    for (k, (_, summary)) in outcome.runs.iter().enumerate() {
        let checkpoint = Checkpoint::read(&summary.last, &Device::Cpu)?;
        let config = TrainConfig::of_checkpoint(&checkpoint, &[])?.expect("a training checkpoint");
        let found: Vec<String> = validation_set(&config)?
            .subjects()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(people(&found), expected_folds[k], "eval of fold {k}'s checkpoint");
    }

    // Different people, different scores: the table has spread.
    let ccc: Vec<f64> = outcome.runs.iter().map(|(_, s)| s.validation.valence.ccc).collect();
    assert!(ccc.windows(2).any(|pair| pair[0] != pair[1]), "{ccc:?}");
    let ccc_row = outcome
        .table
        .lines()
        .find(|l| l.starts_with("valence"))
        .expect("valence row");
    assert!(!ccc_row.trim_end().ends_with("± 0.0000"), "{}", outcome.table);
    Ok(())
}
