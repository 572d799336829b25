//! A trained model exported for the Hub (`cargo xtask export`'s library
//! call) and loaded back, from its folder and through a Hub cache the test
//! builds: the folder holds the prediction weights only, its config and card
//! say what the model is, and it predicts exactly as its checkpoint.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use caf_backbone::{Checkpoint, HubOptions, Precision, WeightSource, MODEL_FILE};
use caf_e2e::hub::write_cache;
use caf_e2e::setups::tiny_run;
use caf_infer::{FaceSearch, PhotoOptions, Predictor};
use caf_train::{evaluate_checkpoint, evaluation_set, export_for_hub, HubExport, Method, Provenance, Trainer};
use candle_core::Device;
use serde_json::Value;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/faces").join(name)
}

/// Every face's reading of the fixture photos, each taken whole.
fn readings(predictor: &Predictor) -> Result<Vec<[f32; 2]>> {
    let mut out = Vec::new();
    for name in ["group.png", "coffee.png"] {
        let photo = caf_infer::read_photo(&fixture(name), predictor.decode_limits())?;
        for face in predictor.predict_photo(&photo, None, &PhotoOptions::new(FaceSearch::Whole))? {
            out.push([face.va.valence, face.va.arousal]);
        }
    }
    Ok(out)
}

#[test]
fn an_exported_model_predicts_as_its_checkpoint_from_a_folder_and_from_the_hub() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let summary = Trainer::new(tiny_run(
        &dir.path().join("data"),
        &dir.path().join("run"),
        Method::Caf,
        1,
    ))?
    .run(&AtomicBool::new(false))?;
    let checkpoint = Checkpoint::read(&summary.best, &Device::Cpu)?;
    let dataset = evaluation_set(&checkpoint, None)?;
    let evaluation = evaluate_checkpoint(&checkpoint, &dataset, 16, &Device::Cpu, Precision::F32)?;
    let out = dir.path().join("export");
    let files = export_for_hub(
        &HubExport {
            checkpoint: &checkpoint,
            source: summary.best.display().to_string(),
            license: "cc-by-nc-4.0".into(),
            validation: Some((&evaluation, "the run's validation people".into())),
        },
        &out,
    )?;
    assert_eq!(files.weights, out.join(MODEL_FILE));

    // The prediction weights, bit for bit, and nothing of training.
    let exported = Checkpoint::read(&files.weights, &Device::Cpu)?;
    assert_eq!(exported.spec, checkpoint.spec);
    assert!(checkpoint.tensors.keys().any(|name| name.starts_with("critic.")));
    let mut kept: Vec<_> = exported.tensors.keys().cloned().collect();
    kept.sort();
    let mut expected: Vec<_> = checkpoint
        .tensors
        .keys()
        .filter(|name| name.starts_with("encoder.") || name.starts_with("regressor."))
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(kept, expected);
    for name in &kept {
        let (a, b) = (&exported.tensors[name], &checkpoint.tensors[name]);
        assert_eq!(
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
            "{name}"
        );
    }
    assert_eq!(
        Provenance::of(&exported)?,
        None,
        "an exported model holds no run to resume"
    );

    // What a loader elsewhere needs.
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&files.config)?)?;
    assert_eq!(config["architecture"], "alexnet");
    assert_eq!(
        (config["input_size"].as_u64(), config["resize"].as_u64()),
        (Some(64), Some(64))
    );
    assert_eq!(
        config["preprocessing"]["mean"],
        serde_json::json!([0.485, 0.456, 0.406])
    );
    assert_eq!(config["weights"], MODEL_FILE);

    // The card: the Hub's metadata header, the run, the metrics per axis and band.
    let card = std::fs::read_to_string(&files.card)?;
    assert!(
        card.starts_with("---\nlicense: cc-by-nc-4.0\nlibrary_name: caf-rs\n"),
        "{card}"
    );
    let ccc = |axis: &caf_objective::AxisMetrics| format!("{:.4} |", axis.ccc);
    for line in [
        "| method | caf |".to_string(),
        "| epochs | 1 of 1 |".to_string(),
        format!("| valence | {:.4} |", evaluation.summary.valence.rmse),
        format!("| arousal | {:.4} |", evaluation.summary.arousal.rmse),
        "| band | images | CCC valence | CCC arousal |".to_string(),
        "## Intended use and limits".to_string(),
        format!("hf://OWNER/NAME/{MODEL_FILE}"),
    ] {
        assert!(card.contains(&line), "the card lacks `{line}`:\n{card}");
    }
    for (_, band) in &evaluation.breakdown().bands {
        assert!(
            card.contains(&format!("| {} | {}", band.count, ccc(&band.valence))),
            "{card}"
        );
    }

    // Loaded from the folder, and as hf://owner/name/model.safetensors from a cache.
    let original = readings(&Predictor::from_checkpoint(&summary.best, &Device::Cpu)?)?;
    let from_folder = WeightSource::File(out.clone()).checkpoint_file(&HubOptions::default())?;
    assert_eq!(
        readings(&Predictor::from_checkpoint(&from_folder, &Device::Cpu)?)?,
        original
    );
    let cache = dir.path().join("hub");
    write_cache(
        &cache,
        "someone/caf-alexnet",
        MODEL_FILE,
        &std::fs::read(&files.weights)?,
    )?;
    let hub = HubOptions {
        cache_dir: Some(cache),
        offline: true,
    };
    let source: WeightSource = format!("hf://someone/caf-alexnet/{MODEL_FILE}")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let from_hub = source.checkpoint_file(&hub)?;
    assert_eq!(
        readings(&Predictor::from_checkpoint(&from_hub, &Device::Cpu)?)?,
        original
    );

    // A folder that is not an export says what it wants.
    let message = WeightSource::File(dir.path().join("data"))
        .checkpoint_file(&hub)
        .expect_err("no model file")
        .to_string();
    assert!(message.contains(MODEL_FILE) && message.contains("export"), "{message}");
    Ok(())
}
