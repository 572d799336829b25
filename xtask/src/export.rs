//! `cargo xtask export`: a checkpoint as a folder ready for the Hugging Face Hub.

use std::path::PathBuf;

use anyhow::{Context, Result};
use caf_backbone::{Checkpoint, HubOptions, Precision, WeightSource};
use caf_train::{evaluate_checkpoint, export_for_hub, HubExport};
use candle_core::Device;

use crate::train::EvalData;

#[derive(clap::Args)]
pub struct Export {
    /// Checkpoint: a .safetensors file, or hf://owner/name/file (@revision optional)
    #[arg(long)]
    checkpoint: WeightSource,
    /// Folder to write model.safetensors, config.json and README.md into (created if missing)
    #[arg(long)]
    out: PathBuf,
    /// The licence in the model card's metadata, as a Hub licence id (mit, apache-2.0, cc-by-nc-4.0, …);
    /// `other` until you set the one the training data allows
    #[arg(long, default_value = "other")]
    license: String,
    /// Write the card without validation metrics, instead of evaluating the model for it
    #[arg(long)]
    no_eval: bool,
    /// The data the card's metrics are measured on; without it, a training checkpoint is evaluated on
    /// its run's validation people
    #[command(flatten)]
    data: EvalData,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

pub fn export(args: Export) -> Result<()> {
    let file = args.checkpoint.checkpoint_file(&HubOptions::from_env())?;
    let checkpoint = Checkpoint::read(&file, &Device::Cpu)?;
    let evaluated = if args.no_eval {
        None
    } else {
        let spec = args.data.dataset_spec()?;
        let dataset = caf_train::evaluation_set(&checkpoint, spec.as_ref()).context(
            "the model card's metrics come from evaluating the model: name its data with --format and its paths, \
             or pass --no-eval for a card without metrics",
        )?;
        let evaluation = evaluate_checkpoint(&checkpoint, &dataset, args.batch_size, &Device::Cpu, Precision::F32)?;
        let described = format!("{}, {} people", dataset.name, dataset.subjects().len());
        Some((evaluation, described))
    };
    let export = HubExport {
        checkpoint: &checkpoint,
        source: args.checkpoint.to_string(),
        license: args.license.clone(),
        validation: evaluated.as_ref().map(|(evaluation, data)| (evaluation, data.clone())),
    };
    let files = export_for_hub(&export, &args.out)?;
    for path in [&files.weights, &files.config, &files.card] {
        println!("wrote {}", path.display());
    }
    println!(
        "upload with: huggingface-cli upload OWNER/NAME {}   (then: --checkpoint hf://OWNER/NAME/{})",
        args.out.display(),
        caf_backbone::MODEL_FILE
    );
    Ok(())
}
