//! `cargo xtask <command>`: every caf-rs workflow as one Rust binary.

mod bench;
mod cuda_setup;
mod export;
mod predict;
mod serve;
mod train;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use caf_backbone::{import_torch_model, Arch, Checkpoint, HubOptions, ModelSpec, WeightSource};
use caf_data::synthetic::SyntheticConfig;
use candle_core::Device;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "caf-rs workflows", arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a trained PyTorch model (encoder + regressor state dicts) into a caf-rs checkpoint
    ImportTorch(ImportTorch),
    /// Convert facenet-pytorch's MTCNN weights (pnet.pt, rnet.pt, onet.pt) into one safetensors file for face detection
    ImportMtcnn(ImportMtcnn),
    /// Print a checkpoint's architecture, preprocessing, metadata and tensors
    Inspect(Inspect),
    /// Write the built-in dataset of synthetic people (PNG images + labels.csv)
    MakeData(MakeData),
    /// Train CAF (or the baseline); with no arguments, on the built-in data, on CPU
    Train(train::Train),
    /// Evaluate a checkpoint: RMSE, SAGR, PCC and CCC per axis, as a table and JSON
    Eval(train::Eval),
    /// Subject-disjoint K-fold cross-validation: one run per fold, mean ± std of each metric
    Cv(train::Cv),
    /// Valence, arousal, intensity, quadrant and emotion word for image files and folders
    Predict(predict::Predict),
    /// Serve a model over HTTP: a JSON API for photos, a live webcam stream and a web page
    Serve(serve::Serve),
    /// Write a checkpoint as a folder ready for the Hugging Face Hub: model.safetensors, config.json, a model card
    Export(export::Export),
    /// Time training steps, inference, the data pipeline and the objective; optionally beside PyTorch
    Bench(bench::Bench),
    /// Install the CUDA toolkit for `--features cuda` from NVIDIA's PyPI wheels into .venv-cuda, and write its environment
    CudaSetup(cuda_setup::CudaSetup),
    /// Paired comparison of two seed series (`train --seeds` folders): mean difference with a 95 % interval
    Compare(Compare),
}

#[derive(clap::Args)]
struct Compare {
    /// Folder of the first method's `seed-N` runs
    a: PathBuf,
    /// Folder of the second method's `seed-N` runs, the same seeds
    b: PathBuf,
    /// Score each run by the mean of its last N validations instead of the
    /// last one alone (its final weights): a single reading swings from
    /// epoch to epoch
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_window)]
    last: caf_train::ValidationWindow,
}

fn parse_window(text: &str) -> std::result::Result<caf_train::ValidationWindow, String> {
    let count: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a count of validations"))?;
    caf_train::ValidationWindow::last(count)
        .ok_or_else(|| "average at least one validation (1: the final weights')".to_string())
}

#[derive(clap::Args)]
struct MakeData {
    /// Output folder
    #[arg(long, default_value = "datasets/generated/synthetic")]
    out: PathBuf,
    /// Number of people
    #[arg(long, default_value_t = 40)]
    subjects: usize,
    /// Images per person
    #[arg(long, default_value_t = 60)]
    images_per_subject: usize,
    /// Image side in pixels
    #[arg(long, default_value_t = 128)]
    size: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write JPEG files instead of PNG
    #[arg(long)]
    jpeg: bool,
}

#[derive(clap::Args)]
struct ImportTorch {
    /// Encoder architecture of the PyTorch model
    #[arg(long, value_parser = parse_arch)]
    arch: Arch,
    /// Encoder state dict (`features.*` for AlexNet, torchvision names for ResNet-18); .pth/.pt/.t7 or .safetensors,
    /// a path or hf://owner/name/file (@revision optional)
    #[arg(long)]
    encoder: WeightSource,
    /// Regressor state dict (`lin0.*`, `lin1.*`, `va_regressor.*`), a path or hf://owner/name/file (@revision optional)
    #[arg(long)]
    regressor: WeightSource,
    /// Side of the square crop the model was trained on
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Shorter side images are resized to before cropping
    #[arg(long, default_value_t = 256)]
    resize: usize,
    /// Output checkpoint (.safetensors)
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ImportMtcnn {
    /// Folder holding pnet.pt, rnet.pt and onet.pt (facenet_pytorch/data in its wheel)
    #[arg(long)]
    from: PathBuf,
    /// Output file (.safetensors)
    #[arg(long, default_value = "crates/caf-face/weights/mtcnn.safetensors")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct Inspect {
    /// Checkpoint file (.safetensors)
    checkpoint: PathBuf,
}

fn parse_arch(s: &str) -> std::result::Result<Arch, String> {
    s.parse()
}

fn main() -> ExitCode {
    keep_freed_memory();
    shorten_candle_spin();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    // A bad CAF_CPU_CAP is an error here, not a panic in the first kernel.
    if let Err(error) = caf_kernels::checked_instruction_set() {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::ImportTorch(args) => import_torch(args),
        Command::ImportMtcnn(args) => import_mtcnn(args),
        Command::Inspect(args) => inspect(args),
        Command::MakeData(args) => make_data(args),
        Command::Train(args) => train::train(args),
        Command::Eval(args) => train::eval(args),
        Command::Cv(args) => train::cv(args),
        Command::Predict(args) => predict::predict(args),
        Command::Serve(args) => serve::serve(args),
        Command::Export(args) => export::export(args),
        Command::Bench(args) => bench::bench(args),
        Command::Compare(args) => compare(args),
        Command::CudaSetup(args) => cuda_setup::cuda_setup(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Training allocates and frees tensors of tens of megabytes every step
/// (larger than glibc will keep in its heap). By default the allocator hands
/// freed memory back to the kernel, and every step faults it back in, zeroed:
/// a fifth of a ResNet-18 step here. Never purging keeps it mapped.
fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's process-wide options; no memory is touched.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// How long candle's own workers spin for more work before sleeping.
const CANDLE_SPIN_LIMIT: &str = "1000";

/// candle 0.11 runs its element-wise operations on a pool of its own, beside
/// rayon's (where our kernels run), and after each one its workers spin
/// 25 000 times before sleeping, on a core our kernels need; 1000 spins
/// keep its waits as short without taking that core (docs/performance.md). Read once,
/// when candle first uses the pool, so this runs before anything else; a
/// value the user set is kept.
fn shorten_candle_spin() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
    }
}

fn import_torch(args: ImportTorch) -> Result<()> {
    anyhow::ensure!(
        args.resize >= args.image_size,
        "--resize ({}) must be at least --image-size ({})",
        args.resize,
        args.image_size
    );
    let spec = ModelSpec {
        arch: args.arch,
        image_size: args.image_size,
        resize: args.resize,
    };
    let hub = HubOptions::from_env();
    let (encoder, regressor) = (args.encoder.local_path(&hub)?, args.regressor.local_path(&hub)?);
    let count = import_torch_model(&spec, &encoder, &regressor, &args.out)?;
    // Reading it back proves the file is a complete inference checkpoint.
    Checkpoint::read(&args.out, &Device::Cpu)?
        .va_net(&Device::Cpu, caf_backbone::Precision::F32)
        .with_context(|| format!("the written checkpoint {} does not load", args.out.display()))?;
    println!(
        "wrote {} ({} tensors, {}, crop {}, resize {})",
        args.out.display(),
        count,
        spec.arch,
        spec.image_size,
        spec.resize
    );
    Ok(())
}

fn import_mtcnn(args: ImportMtcnn) -> Result<()> {
    let [pnet, rnet, onet] = ["pnet.pt", "rnet.pt", "onet.pt"].map(|name| args.from.join(name));
    let count = caf_face::convert_facenet_weights(&pnet, &rnet, &onet, &args.out)?;
    println!("wrote {} ({count} tensors)", args.out.display());
    Ok(())
}

fn inspect(args: Inspect) -> Result<()> {
    let checkpoint = Checkpoint::read(&args.checkpoint, &Device::Cpu)?;
    let spec = checkpoint.spec;
    println!(
        "{}: {} (crop {}, resize {})",
        args.checkpoint.display(),
        spec.arch,
        spec.image_size,
        spec.resize
    );
    for (key, value) in checkpoint.metadata.iter().collect::<BTreeMap<_, _>>() {
        println!("  meta {key} = {value}");
    }
    let mut parameters = BTreeMap::<String, usize>::new();
    for (name, tensor) in &checkpoint.tensors {
        let part = name.split('.').next().unwrap_or(name).to_string();
        *parameters.entry(part).or_default() += tensor.elem_count();
    }
    for (part, count) in parameters {
        println!("  {part}: {count} values");
    }
    Ok(())
}

fn compare(args: Compare) -> Result<()> {
    let comparison = caf_train::paired(
        &caf_train::seed_scores(&args.a, args.last)?,
        &caf_train::seed_scores(&args.b, args.last)?,
    )?;
    println!(
        "a = {}, b = {}; scores: {}\n{comparison}",
        args.a.display(),
        args.b.display(),
        args.last
    );
    Ok(())
}

fn make_data(args: MakeData) -> Result<()> {
    let config = SyntheticConfig {
        subjects: args.subjects,
        images_per_subject: args.images_per_subject,
        size: args.size,
        seed: args.seed,
        jpeg: args.jpeg,
    };
    let started = std::time::Instant::now();
    let report = caf_data::synthetic::generate(&args.out, &config)?;
    println!(
        "wrote {} images of {} people ({}×{} px) and {} in {:.1} s",
        report.images,
        config.subjects,
        config.size,
        config.size,
        report.csv.display(),
        started.elapsed().as_secs_f64()
    );
    let ceiling = caf_data::synthetic::ceiling(CEILING_DRAWS, args.seed);
    println!(
        "ceiling of any person-independent predictor on people drawn like these (E[label | shown face], {} Monte Carlo draws):",
        ceiling.samples
    );
    for (axis, value) in [("valence", ceiling.valence), ("arousal", ceiling.arousal)] {
        println!("  {axis}: CCC {:.3}, RMSE {:.3}", value.ccc, value.rmse);
    }
    println!("  mean CCC {:.3}", ceiling.mean_ccc());
    Ok(())
}

/// Draws that estimate and then score the synthetic data's ceiling (about a
/// second on two cores; three decimals).
const CEILING_DRAWS: usize = 4_000_000;

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_we_mean() {
        // SAFETY: reads one of mimalloc's options.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        // Its default in mimalloc v3's options.c is 1000 ms (-1 once keep_freed_memory ran).
        assert!(
            delay == 1000 || delay == -1,
            "option {} is {delay}",
            super::MI_OPTION_PURGE_DELAY
        );
    }
}
