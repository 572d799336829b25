//! `cargo xtask train` and `cargo xtask eval`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use caf_backbone::{Checkpoint, HubOptions, Precision, WeightSource};
use caf_train::{
    evaluate_checkpoint, mean_ccc, parse_device, run_series, Breakdown, DatasetSpec, Diagnostics, Series, TrainConfig,
    Trainer,
};

#[derive(clap::Args)]
pub struct Train {
    /// TOML file with the run's settings (defaults: CAF, AlexNet, the built-in data, CPU)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override any setting: `--set epochs=3 --set data.dir=/tmp/faces` (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// `caf` or `baseline` (regression step only)
    #[arg(long)]
    method: Option<String>,
    /// `alexnet` or `resnet18`
    #[arg(long)]
    arch: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// `cpu`, `cuda` or `cuda:N`
    #[arg(long)]
    device: Option<String>,
    /// Precision of the training steps' convolution products: `f32`, or `bf16` (mixed precision:
    /// f32 weights, gradients and optimiser; docs/precision.md)
    #[arg(long)]
    precision: Option<String>,
    /// Folder for checkpoints, metrics and the resolved config
    #[arg(long)]
    output: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (its config, plus any overrides)
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Train once per seed (`--seeds 0,1,2`) into `<output>/seed-N` and print mean ± std
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["seed", "resume"])]
    seeds: Vec<u64>,
}

impl Train {
    fn overrides(&self) -> Vec<String> {
        let mut overrides = self.set.clone();
        let mut quoted = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                overrides.push(format!("{key}={}", toml_string(&value)));
            }
        };
        quoted("method", self.method.clone());
        quoted("arch", self.arch.clone());
        quoted("device", self.device.clone());
        quoted("precision", self.precision.clone());
        quoted("output", self.output.as_ref().map(|p| p.display().to_string()));
        for (key, value) in [
            ("epochs", self.epochs.map(|v| v as u64)),
            ("batch_size", self.batch_size.map(|v| v as u64)),
            ("seed", self.seed),
        ] {
            if let Some(value) = value {
                overrides.push(format!("{key}={value}"));
            }
        }
        overrides
    }
}

fn toml_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[derive(clap::Args)]
pub struct Cv {
    /// Number of subject-disjoint folds
    #[arg(long, default_value_t = 5)]
    folds: usize,
    #[command(flatten)]
    train: Train,
}

/// Trains one run per fold (`<output>/fold-N`) and prints mean ± std of each metric.
pub fn cv(args: Cv) -> Result<()> {
    anyhow::ensure!(
        args.train.resume.is_none() && args.train.seeds.is_empty(),
        "cv starts fresh runs of one seed; resume a fold with `train --resume <output>/fold-N/last.safetensors`"
    );
    let base = TrainConfig::load(args.train.config.as_deref(), &args.train.overrides())?;
    let title = format!(
        "{}-fold subject-disjoint cross-validation (folds drawn by seed {}), final weights of each fold",
        args.folds, base.seed
    );
    train_series(&base, Series::Folds(args.folds), &title)
}

/// One run per seed (`<output>/seed-N`), then mean ± std of each metric.
fn train_seeds(args: &Train) -> Result<()> {
    let base = TrainConfig::load(args.config.as_deref(), &args.overrides())?;
    let title = format!("{:?} over seeds {:?}, final weights", base.method, args.seeds);
    train_series(&base, Series::Seeds(args.seeds.clone()), &title)
}

/// Trains each run of `series` in turn, saying which people each validates
/// on, then prints and writes the mean ± std of their final validation metrics.
fn train_series(base: &TrainConfig, series: Series, title: &str) -> Result<()> {
    let runs = series.runs(base)?;
    let stop = stop_on_ctrl_c()?;
    let outcome = run_series(
        runs,
        &stop,
        |label, trainer| {
            let config = trainer.config();
            println!(
                "{label}: training {:?} into {}; validating on {} people: {}",
                config.method,
                config.output.display(),
                trainer.validation_subjects().len(),
                listed(trainer.validation_subjects())
            );
        },
        |label, summary| println!("{label}:\n{}", summary.validation),
    )?;
    if let Some((label, summary)) = &outcome.interrupted {
        println!(
            "stopped during {label}; resume it with: cargo xtask train --resume {}",
            summary.last.display()
        );
        return Ok(());
    }
    println!("{title} (mean ± std):\n{}", outcome.table);
    let table_path = series.table_path(base);
    caf_backbone::write_file_atomically(&table_path, outcome.table.as_bytes())?;
    println!("table: {}", table_path.display());
    Ok(())
}

/// Up to 24 names, then how many more.
fn listed<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 24;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(" ");
    if names.len() > SHOWN {
        text.push_str(&format!(" … and {} more", names.len() - SHOWN));
    }
    text
}

fn stop_on_ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let handler_flag = stop.clone();
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this iteration (Ctrl-C again to quit at once)…");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

pub fn train(args: Train) -> Result<()> {
    if !args.seeds.is_empty() {
        return train_seeds(&args);
    }
    let overrides = args.overrides();
    let mut trainer = match &args.resume {
        Some(checkpoint) => Trainer::resume(checkpoint, &overrides)?,
        None => Trainer::new(TrainConfig::load(args.config.as_deref(), &overrides)?)?,
    };
    let stop = stop_on_ctrl_c()?;
    let config = trainer.config().clone();
    println!(
        "training {:?} with {} on {}: {} epochs, batch {}, output {}",
        config.method,
        config.arch,
        config.device,
        config.epochs,
        config.batch_size,
        config.output.display()
    );
    let summary = trainer.run(&stop)?;
    if summary.interrupted {
        println!(
            "stopped at step {} (epoch {}); saved {}",
            summary.state.step,
            summary.state.epoch + 1,
            summary.last.display()
        );
        println!("resume with: cargo xtask train --resume {}", summary.last.display());
        return Ok(());
    }
    println!(
        "\nvalidation (subject-disjoint), final weights:\n{}\n{}",
        summary.validation,
        Breakdown::of(&summary.predictions)
    );
    let diagnostics = Diagnostics::of(&summary.predictions);
    println!(
        "bottleneck units alive: {} of {}; correlation of predicted valence with arousal {:.3} (labels: {:.3})",
        diagnostics.live_units,
        diagnostics.unit_activity.len(),
        diagnostics.predicted_va_correlation,
        diagnostics.label_va_correlation
    );
    println!(
        "mean CCC {:.4} (best {:.4})",
        mean_ccc(&summary.validation),
        summary.state.best_mean_ccc
    );
    let counters = summary.state.counters;
    println!(
        "iterations {}; without a strong/weak pair {}; skipped for a non-finite loss {}; unreadable images {}",
        summary.state.step, counters.no_pair, counters.nonfinite, counters.skipped_images
    );
    println!(
        "checkpoints: {} (last), {} (best)",
        summary.last.display(),
        summary.best.display()
    );
    println!("metrics: {}", summary.output.join("metrics.jsonl").display());
    for plot in caf_train::run_report(&summary.output, &summary.predictions)? {
        println!("report: {}", plot.display());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Eval {
    /// Checkpoint to evaluate: a .safetensors file, a folder written by export, or hf://owner/name/file (@revision optional)
    #[arg(long)]
    checkpoint: WeightSource,
    #[command(flatten)]
    data: EvalData,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision of the convolutions' products: f32, or bf16 (faster on CPUs with AVX512-BF16;
    /// readings differ from f32's by about 1 % of their range, docs/precision.md)
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Where to write the metrics as JSON (default: eval.json beside the checkpoint, or in the
    /// current folder for a Hub checkpoint)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Frame rate of the videos, for the metrics of the smoothed predictions (reported for afew_va
    /// and aff_wild2, and for any data of numbered frames in per-video folders when given)
    #[arg(long)]
    fps: Option<f64>,
    /// Time constant, in seconds, of the smoothing of each video's predictions (as `predict`
    /// smooths a video's face tracks)
    #[arg(long, default_value_t = caf_video::DEFAULT_TIME_CONSTANT_S)]
    smoothing: f64,
}

/// The frame rate assumed for a video dataset's frames when `--fps` is not given.
const VIDEO_DATASET_FPS: f64 = 30.0;

/// The data a checkpoint is evaluated on: shared by `eval` and `export`.
#[derive(clap::Args)]
pub struct EvalData {
    /// Dataset format; each takes the paths of the same name as its fields (datasets/README.md).
    /// Without it, a training checkpoint is evaluated on its run's validation subjects
    /// (the way to evaluate on the built-in synthetic data, which has no paths to give).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
        DatasetSpec::FORMATS.into_iter().filter(|format| *format != "synthetic")
    ))]
    format: Option<String>,
    /// Index file (generic CSV or AffectNet CSV)
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Folder the index's image paths are relative to (or AFEW-VA's root)
    #[arg(long)]
    root: Option<PathBuf>,
    /// Aff-Wild2 annotation folder
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// Aff-Wild2 frames folder
    #[arg(long)]
    frames: Option<PathBuf>,
    /// AffectNet: crop to the face box grown by this fraction per side
    #[arg(long)]
    face_margin: Option<f32>,
}

impl EvalData {
    /// The dataset the flags name, read by the same definition as a
    /// training config's `[data]` table: each flag is the field of its name.
    pub fn dataset_spec(&self) -> Result<Option<DatasetSpec>> {
        let Some(format) = &self.format else {
            return Ok(None);
        };
        let mut fields = serde_json::Map::new();
        fields.insert("format".into(), format.clone().into());
        for (field, path) in [
            ("csv", &self.csv),
            ("root", &self.root),
            ("annotations", &self.annotations),
            ("frames", &self.frames),
        ] {
            if let Some(path) = path {
                fields.insert(field.into(), path.display().to_string().into());
            }
        }
        if let Some(margin) = self.face_margin {
            fields.insert("face_margin".into(), margin.into());
        }
        let spec = serde_json::from_value(fields.into()).map_err(|e| {
            anyhow::anyhow!(
                "--format {format}: {} (each field is given by the flag of its name: --csv, --root, --annotations, --frames, --face-margin)",
                e.to_string().replace('_', "-")
            )
        })?;
        Ok(Some(spec))
    }
}

pub fn eval(args: Eval) -> Result<()> {
    let spec = args.data.dataset_spec()?;
    let device = parse_device(&args.device)?;
    let file = args.checkpoint.checkpoint_file(&HubOptions::from_env())?;
    let checkpoint = Checkpoint::read(&file, &device)?;
    let dataset = caf_train::evaluation_set(&checkpoint, spec.as_ref())?;
    let evaluation = evaluate_checkpoint(&checkpoint, &dataset, args.batch_size, &device, args.precision)?;
    println!(
        "{} on {} ({} samples, {} subjects: {}, {} products):\n{}",
        args.checkpoint,
        dataset.name,
        dataset.len(),
        dataset.subjects().len(),
        listed(&dataset.subjects()),
        args.precision,
        evaluation.summary
    );
    println!("{}", evaluation.breakdown());
    if evaluation.skipped_images > 0 {
        println!("{} unreadable image(s) skipped", evaluation.skipped_images);
    }
    let json_path = match (&args.json, &args.checkpoint) {
        (Some(path), _) => path.clone(),
        (None, WeightSource::File(_)) => file.with_file_name("eval.json"),
        // Not into the Hub cache.
        (None, WeightSource::Hub(_)) => PathBuf::from("eval.json"),
    };
    let mut record = evaluation.record(true);
    record["precision"] = serde_json::json!(args.precision.name());
    let video_dataset = matches!(spec, Some(DatasetSpec::AfewVa { .. } | DatasetSpec::AffWild2 { .. }));
    if video_dataset || args.fps.is_some() {
        let fps = args.fps.unwrap_or(VIDEO_DATASET_FPS);
        let smoothed = caf_train::smoothed_metrics(&dataset, &evaluation.predictions, fps, args.smoothing)?;
        println!(
            "smoothed per video ({} videos, causal, time constant {} s at {fps} frames/s):\n{}",
            smoothed.videos, smoothed.time_constant_s, smoothed.summary
        );
        record["smoothed"] = serde_json::json!({
            "videos": smoothed.videos,
            "fps": fps,
            "time_constant_s": smoothed.time_constant_s,
            "metrics": caf_train::summary_json(&smoothed.summary),
            "mean_ccc": caf_train::mean_ccc(&smoothed.summary),
        });
    }
    record["checkpoint"] = args.checkpoint.to_string().into();
    record["dataset"] = dataset.name.clone().into();
    record["samples"] = dataset.len().into();
    caf_backbone::write_file_atomically(&json_path, serde_json::to_string_pretty(&record)?.as_bytes())?;
    println!("metrics written to {}", json_path.display());
    let plot = json_path.with_extension("svg");
    caf_train::circumplex(
        &evaluation.predictions,
        &format!("{}: true vs predicted", dataset.name),
        &plot,
    )?;
    println!("plot: {}", plot.display());
    Ok(())
}
