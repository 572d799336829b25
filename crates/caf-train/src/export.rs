//! A trained model as a folder ready for the Hugging Face Hub: the
//! prediction weights (`model.safetensors`), what a loader needs to
//! preprocess and read them (`config.json`), and a model card (`README.md`)
//! with the Hub's metadata header.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use caf_backbone::{write_file_atomically, write_tensors, Checkpoint, ENCODER, MODEL_FILE, REGRESSOR};
use caf_data::{IMAGENET_MEAN, IMAGENET_STD};
use serde_json::json;

use crate::breakdown::Band;
use crate::error::{Result, TrainError};
use crate::evaluate::Evaluation;
use crate::metrics_log::mean_ccc;
use crate::provenance::Provenance;

/// What goes into an exported folder besides the weights.
#[derive(Debug, Clone)]
pub struct HubExport<'a> {
    pub checkpoint: &'a Checkpoint,
    /// Where the checkpoint came from, as the user named it.
    pub source: String,
    /// The licence in the card's metadata (a Hub licence id such as `mit`,
    /// `apache-2.0`, `cc-by-nc-4.0`, or `other`).
    pub license: String,
    /// Validation metrics for the card, and the data they were measured on.
    pub validation: Option<(&'a Evaluation, String)>,
}

/// The files an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFiles {
    pub weights: PathBuf,
    pub config: PathBuf,
    pub card: PathBuf,
}

/// Writes `export` into `out` (created if missing): the encoder and
/// regressor tensors with the checkpoint's architecture and preprocessing
/// metadata (no critic, no optimiser state, no run), `config.json` and
/// `README.md`. The weights are the checkpoint's own bytes, so the folder
/// predicts exactly as the checkpoint.
pub fn export_for_hub(export: &HubExport, out: &Path) -> Result<ExportedFiles> {
    std::fs::create_dir_all(out).map_err(TrainError::file("create the folder", out))?;
    let checkpoint = export.checkpoint;
    let provenance = Provenance::of(checkpoint)?;
    let mut tensors: Vec<_> = checkpoint
        .tensors
        .iter()
        .filter(|(name, _)| {
            [ENCODER, REGRESSOR]
                .iter()
                .any(|part| name.starts_with(&format!("{part}.")))
        })
        .map(|(name, tensor)| (name.clone(), tensor.clone()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let files = ExportedFiles {
        weights: out.join(MODEL_FILE),
        config: out.join("config.json"),
        card: out.join("README.md"),
    };
    let mut metadata = std::collections::HashMap::new();
    if let Some(provenance) = &provenance {
        metadata.insert("caf.method".to_string(), provenance.method.clone());
    }
    write_tensors(&files.weights, &checkpoint.spec, &tensors, &metadata)?;
    let config = serde_json::to_string_pretty(&loader_config(checkpoint)).expect("plain JSON");
    write_file_atomically(&files.config, format!("{config}\n").as_bytes())?;
    write_file_atomically(&files.card, model_card(export, provenance.as_ref()).as_bytes())?;
    Ok(files)
}

/// What a loader in any language needs: the network, the preprocessing and
/// what the two outputs mean.
fn loader_config(checkpoint: &Checkpoint) -> serde_json::Value {
    let spec = &checkpoint.spec;
    json!({
        "library_name": "caf-rs",
        "model_type": "caf-valence-arousal",
        "architecture": spec.arch.name(),
        "weights": MODEL_FILE,
        "tensor_prefixes": [ENCODER, REGRESSOR],
        "preprocessing": {
            "color": "RGB, values scaled to [0, 1]",
            "resize_shorter_side": spec.resize,
            "interpolation": "bilinear",
            "center_crop": spec.image_size,
            "mean": IMAGENET_MEAN.map(as_written),
            "std": IMAGENET_STD.map(as_written),
            "layout": "NCHW float32",
        },
        "input_size": spec.image_size,
        "resize": spec.resize,
        "outputs": ["valence", "arousal"],
        "output_range": {
            "labels": [-1.0, 1.0],
            "note": "a linear head: predictions are not clamped and can fall slightly outside the label range",
        },
    })
}

/// An f32 constant as its source writes it (0.485, not 0.48500001430511475).
fn as_written(value: f32) -> f64 {
    value.to_string().parse().expect("a float prints as a float")
}

fn model_card(export: &HubExport, provenance: Option<&Provenance>) -> String {
    let spec = &export.checkpoint.spec;
    let arch = spec.arch.name();
    let title = match spec.arch {
        caf_backbone::Arch::AlexNet => "AlexNet",
        caf_backbone::Arch::ResNet18 => "ResNet-18",
    };
    let mut card = String::new();
    let dataset = provenance.map(|p| p.dataset.as_str());
    // The Hub's metadata header.
    let _ = writeln!(card, "---");
    let _ = writeln!(card, "license: {}", export.license);
    let _ = writeln!(card, "library_name: caf-rs");
    let _ = writeln!(card, "tags:");
    for tag in [
        "facial-expression-recognition",
        "valence-arousal",
        "affective-computing",
        "candle",
        "safetensors",
        arch,
    ] {
        let _ = writeln!(card, "- {tag}");
    }
    if let Some(dataset) = dataset.filter(|d| *d != "synthetic") {
        let _ = writeln!(card, "datasets:\n- {dataset}");
    }
    let _ = writeln!(card, "---\n");

    let _ = writeln!(card, "# Valence and arousal from faces ({title}, caf-rs)\n");
    let _ = writeln!(
        card,
        "Reads a face crop and predicts **valence** (unpleasant → pleasant) and **arousal** \
         (calm → excited), each on the scale −1 to 1 of AffectNet's and Aff-Wild2's labels. \
         An {title} encoder ({}×{} px crops of faces resized to {} px) under a small regression head, \
         trained with [caf-rs](https://github.com/caf-rs/caf-rs), which implements Contrastive \
         Adversarial Learning for person-independent recognition (Kim & Song, AAAI 2021).\n",
        spec.image_size, spec.image_size, spec.resize
    );

    let _ = writeln!(card, "## Training\n");
    match provenance {
        Some(p) => {
            let _ = writeln!(card, "| | |\n|---|---|");
            let _ = writeln!(card, "| method | {} |", p.method);
            let _ = writeln!(card, "| data | {} |", p.dataset);
            let start = p.pretrained.as_deref().unwrap_or("random weights");
            let _ = writeln!(card, "| encoder initialised from | {start} |");
            let _ = writeln!(card, "| epochs | {} of {} |", p.epochs_done, p.epochs_planned);
            let _ = writeln!(card, "| iterations | {} (batch {}) |", p.iterations, p.batch_size);
            let _ = writeln!(card, "| seed | {} |", p.seed);
            if let Some(best) = p.best_mean_ccc {
                let _ = writeln!(card, "| best mean validation CCC during training | {best:.4} |");
            }
            let _ = writeln!(card);
        }
        None => {
            let _ = writeln!(
                card,
                "The checkpoint this folder was exported from (`{}`) holds no record of its training \
                 (an imported model).\n",
                export.source
            );
        }
    }

    let _ = writeln!(card, "## Validation\n");
    match &export.validation {
        Some((evaluation, data)) => write_metrics(&mut card, evaluation, data),
        None => {
            let _ = writeln!(
                card,
                "No validation metrics were given when this folder was exported \
                 (`cargo xtask export --eval-on-run` or `--eval FILE` adds them).\n"
            );
        }
    }

    let _ = writeln!(card, "## Intended use and limits\n");
    let _ = writeln!(
        card,
        "For research and for applications that read expressed affect in aggregate: user studies, \
         media analysis, human–computer interaction. It reads what a face *shows*, not what a person \
         feels; expressions differ between people and cultures, and the model has only seen the people \
         and conditions of its training data. Do not use it to make decisions about individuals \
         (hiring, policing, credit, health) or to infer emotions without consent. Accuracy drops on \
         faces that are small, occluded, in profile or poorly lit, and for groups under-represented \
         in the training data. Check the licence of the training data before commercial use.\n"
    );

    let _ = writeln!(card, "## How to use\n");
    let _ = writeln!(
        card,
        "With the caf-rs command line (the Hub file is fetched into the usual Hugging Face cache):\n"
    );
    let _ = writeln!(card, "```bash");
    let _ = writeln!(
        card,
        "cargo xtask predict --checkpoint hf://OWNER/NAME/{MODEL_FILE} photo.jpg"
    );
    let _ = writeln!(card, "cargo xtask serve --checkpoint hf://OWNER/NAME/{MODEL_FILE}");
    let _ = writeln!(card, "```\n");
    let _ = writeln!(card, "From Rust:\n");
    let _ = writeln!(card, "```rust,ignore");
    let _ = writeln!(
        card,
        "let predictor = caf_infer::Predictor::from_checkpoint(\"{MODEL_FILE}\".as_ref(), &candle_core::Device::Cpu)?;"
    );
    let _ = writeln!(card, "```\n");
    let _ = writeln!(
        card,
        "Elsewhere: `config.json` gives the preprocessing (resize the shorter side, centre crop, \
         ImageNet normalisation) and `{MODEL_FILE}` holds torchvision-named `encoder.*` tensors \
         and the head's `regressor.*` tensors."
    );
    card
}

fn write_metrics(card: &mut String, evaluation: &Evaluation, data: &str) {
    let summary = &evaluation.summary;
    let _ = writeln!(
        card,
        "On {data}: {} images, mean CCC {:.4}.\n",
        summary.count,
        mean_ccc(summary)
    );
    let _ = writeln!(card, "| axis | RMSE | SAGR | PCC | CCC |\n|---|---|---|---|---|");
    for (name, axis) in [("valence", &summary.valence), ("arousal", &summary.arousal)] {
        let _ = writeln!(
            card,
            "| {name} | {:.4} | {:.4} | {:.4} | {:.4} |",
            axis.rmse, axis.sagr, axis.pcc, axis.ccc
        );
    }
    let breakdown = evaluation.breakdown();
    let _ = writeln!(
        card,
        "\nBy label intensity |(v, a)| (the paper's claim is about weak expressions):\n"
    );
    let _ = writeln!(card, "| band | images | CCC valence | CCC arousal |\n|---|---|---|---|");
    for band in Band::ALL {
        if let Some((_, band_summary)) = breakdown.bands.iter().find(|(b, _)| *b == band) {
            let _ = writeln!(
                card,
                "| {} | {} | {:.4} | {:.4} |",
                band.name(),
                band_summary.count,
                band_summary.valence.ccc,
                band_summary.arousal.ccc
            );
        }
    }
    if let Some((subject, ccc)) = breakdown.worst_subject() {
        let _ = writeln!(
            card,
            "\n{} people; median per-person mean CCC {:.4}, the worst ({subject}) {ccc:.4}.",
            breakdown.subjects.len(),
            breakdown.median_subject_ccc()
        );
    }
    let _ = writeln!(card);
}
