//! Training end to end on a tiny built-in dataset: finite losses, reloadable
//! checkpoints, evaluation, and exact resumption.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use caf_backbone::{Checkpoint, Precision};
use caf_data::{BatchLoader, LoaderConfig, Preprocess};
use caf_e2e::setups::tiny_run;
use caf_train::{evaluate, Method, Trainer};
use candle_core::{Device, Tensor};

fn weights(path: &Path) -> Result<HashMap<String, Vec<f32>>> {
    let checkpoint = Checkpoint::read(path, &Device::Cpu)?;
    checkpoint
        .tensors
        .iter()
        .filter(|(name, _)| !name.starts_with("optim.") || name.contains(".m.") || name.contains(".v."))
        .map(|(name, t)| {
            Ok((
                name.clone(),
                t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?,
            ))
        })
        .collect()
}

#[test]
fn caf_and_baseline_train_save_reload_and_evaluate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    for method in [Method::Caf, Method::Baseline] {
        let output = dir.path().join(format!("{method:?}"));
        let mut trainer = Trainer::new(tiny_run(&data, &output, method, 2))?;
        let summary = trainer.run(&AtomicBool::new(false))?;
        assert!(!summary.interrupted);
        assert_eq!(summary.state.epoch, 2);
        let log = std::fs::read_to_string(output.join("metrics.jsonl"))?;
        let records: Vec<serde_json::Value> = log.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        let train: Vec<&serde_json::Value> = records.iter().filter(|r| r["kind"] == "train").collect();
        assert_eq!(train.len() as u64, summary.state.step);
        for record in &train {
            assert!(record["loss_av"].as_f64().is_some_and(f64::is_finite), "{record}");
            if method == Method::Caf && record["no_pair"] == false {
                assert!(record["loss_critic"].as_f64().is_some_and(f64::is_finite), "{record}");
                assert!(
                    record["loss_adversarial"].as_f64().is_some_and(f64::is_finite),
                    "{record}"
                );
            } else {
                assert!(record["loss_critic"].is_null(), "{record}");
            }
        }
        let validation: Vec<&serde_json::Value> = records.iter().filter(|r| r["kind"] == "validation").collect();
        assert_eq!(validation.len(), 2);
        for record in validation {
            let throughput = &record["throughput"];
            assert!(
                throughput["images_per_second"].as_f64().is_some_and(|v| v > 0.0),
                "{record}"
            );
            let share = throughput["data_wait_share"].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1.0).contains(&share), "{record}");
        }

        // The checkpoint alone rebuilds the model and its preprocessing; evaluation reproduces the run's.
        let checkpoint = Checkpoint::read(&summary.last, &Device::Cpu)?;
        assert_eq!((checkpoint.spec.image_size, checkpoint.spec.resize), (64, 64));
        let net = checkpoint.va_net(&Device::Cpu, Precision::F32)?;
        let dataset = caf_data::DatasetSpec::Generic {
            csv: data.join("labels.csv"),
            root: data.clone(),
        }
        .load()?;
        let split = caf_data::subject_split(&dataset, 0.34, 0)?;
        let validation = dataset.subset(&split.validation, "validation");
        let loader = BatchLoader::new(&validation, Preprocess::imagenet(64, 64)?, LoaderConfig::evaluation(5))?;
        let caf_train::Evaluation {
            summary: metrics,
            predictions,
            ..
        } = evaluate(&net, &loader, &Device::Cpu)?;
        for (ours, run) in [
            (metrics.valence, summary.validation.valence),
            (metrics.arousal, summary.validation.arousal),
        ] {
            for (a, b) in [(ours.rmse, run.rmse), (ours.pcc, run.pcc), (ours.ccc, run.ccc)] {
                assert!(
                    (a - b).abs() < 1e-5,
                    "evaluation of the reloaded checkpoint: {a} vs the run's {b}"
                );
            }
        }
        assert_eq!(predictions.predicted.len(), validation.len());
        assert!(Checkpoint::read(&summary.best, &Device::Cpu).is_ok());
    }
    Ok(())
}

#[test]
fn resuming_gives_the_same_weights_as_training_straight_through() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let straight =
        Trainer::new(tiny_run(&data, &dir.path().join("straight"), Method::Caf, 2))?.run(&AtomicBool::new(false))?;

    // One epoch, then resume for the second.
    let first =
        Trainer::new(tiny_run(&data, &dir.path().join("split"), Method::Caf, 1))?.run(&AtomicBool::new(false))?;
    let resumed = Trainer::resume(&first.last, &["epochs=2".into()])?.run(&AtomicBool::new(false))?;
    assert_eq!(resumed.state.step, straight.state.step);
    assert_eq!(
        weights(&resumed.last)?,
        weights(&straight.last)?,
        "1 epoch + resume + 1 epoch = 2 epochs"
    );

    // Stopped mid-epoch (as Ctrl-C does: after the current iteration), then resumed.
    let stopped =
        Trainer::new(tiny_run(&data, &dir.path().join("stopped"), Method::Caf, 2))?.run(&AtomicBool::new(true))?;
    assert!(stopped.interrupted);
    assert_eq!(
        (stopped.state.step, stopped.state.epoch, stopped.state.batch),
        (1, 0, 1)
    );
    let finished = Trainer::resume(&stopped.last, &[])?.run(&AtomicBool::new(false))?;
    assert_eq!(
        weights(&finished.last)?,
        weights(&straight.last)?,
        "interrupted after one iteration, then resumed"
    );
    Ok(())
}

#[test]
fn a_plain_checkpoint_is_not_resumable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("plain.safetensors");
    let spec = caf_backbone::ModelSpec::new(caf_backbone::Arch::AlexNet);
    caf_backbone::write_tensors(
        &path,
        &spec,
        &[("x".into(), Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu)?)],
        &HashMap::new(),
    )?;
    let error = Trainer::resume(&path, &[]).err().expect("not a training checkpoint");
    assert!(format!("{error:#}").contains("not a training checkpoint"), "{error:#}");
    Ok(())
}
