//! `cargo xtask bench`: training steps, inference, the data pipeline and the
//! contrastive objective, timed on the same inputs, optionally beside PyTorch;
//! with `--detection`, face detection instead; with `--serve`, the HTTP
//! service under load; with `--video`, video.

mod detection;
mod serve;
mod video;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use caf_backbone::{save_checkpoint, seeded_init, Arch, Checkpoint, ModelSpec, Precision, VaNet, CRITIC_OUTPUTS};
use caf_data::synthetic::{draw_label, SyntheticConfig};
use caf_data::{Augment, Batch, BatchLoader, LoaderConfig, Preprocess, Rng};
use caf_objective::critic_objective;
use caf_sampler::{group, GroupingRule};
use caf_train::{parse_device, strong_and_weak, CafStep, Method, TrainConfig};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Bench {
    /// Training batch size
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Side of the square network input
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Architectures, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "alexnet,resnet18", value_parser = crate::parse_arch)]
    arch: Vec<Arch>,
    /// Untimed runs before the timed ones
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs of each measurement at least (the median is reported)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds of timed runs of each measurement at least: short ones (batch-1
    /// inference) repeat until then, so that one passing hiccup of a shared
    /// machine does not make all their runs
    #[arg(long, default_value_t = 1.0)]
    min_seconds: f64,
    /// `cpu`, `cuda` or `cuda:N`
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision of the convolutions' products: f32, or bf16 (inference; mixed precision for the
    /// training steps); --compare-torch then runs PyTorch under autocast bf16
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Batch of the stand-alone measurement of grouping + contrastive objective
    #[arg(long, default_value_t = 256)]
    objective_batch: usize,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
    /// Also run bench/torch_bench.py (needs a Python with torch and torchvision) and print ratios
    #[arg(long)]
    compare_torch: bool,
    /// Also run bench/onnx_bench.py: the same inference network exported to ONNX, run by ONNX
    /// Runtime (f32) and OpenVINO (at --precision), with ratios (needs torch, torchvision, onnx,
    /// onnxruntime and openvino in --python)
    #[arg(long)]
    compare_onnx: bool,
    /// The Python used by --compare-torch and --compare-onnx
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Time face detection instead (MTCNN on 640×480 and 1920×1080 photos with one and four faces);
    /// with --compare-torch, beside facenet-pytorch (needs it in --python)
    #[arg(long)]
    detection: bool,
    /// Load the HTTP service instead (`serve` on loopback, the first --arch at --size): --clients
    /// concurrent clients post photos for --serve-seconds; beside predict's library path on the same photos
    #[arg(long)]
    serve: bool,
    /// Concurrent clients of --serve (1 to 64)
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds under load of --serve (10 to 600)
    #[arg(long, default_value_t = 60.0)]
    serve_seconds: f64,
    /// Time video instead: a 640×480 H.264 video of two faces crossing, made here, decoded, then
    /// predicted with faces searched in every frame, one in 5 and one in 15 (the first --arch at --size);
    /// with --compare-torch, beside OpenCV + facenet-pytorch + torchvision (needs them in --python)
    #[arg(long)]
    video: bool,
    /// Length of the --video video, in seconds at 30 frames a second (1 to 600)
    #[arg(long, default_value_t = 10.0)]
    video_seconds: f64,
}

/// A network of the first --arch with seeded weights, for --size crops
/// resized from size·256/224 (torchvision's evaluation resize), written to
/// `file`: the model the service and video benchmarks load.
fn seeded_deployed_checkpoint(args: &Bench, file: &Path) -> Result<ModelSpec> {
    let arch = args.arch.first().copied().unwrap_or(Arch::AlexNet);
    let varmap = VarMap::new();
    VaNet::new(arch, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    seeded_init(&varmap, arch, 0)?;
    let spec = ModelSpec {
        arch,
        image_size: args.size,
        resize: args.size * 256 / 224,
    };
    save_checkpoint(file, &spec, &varmap, &Default::default())?;
    Ok(spec)
}

/// Seconds of repeated runs of one measurement.
#[derive(Debug, Clone, Copy, Serialize)]
struct Timing {
    median_s: f64,
    min_s: f64,
    max_s: f64,
    runs: usize,
}

/// The most timed runs of one measurement, however short its runs.
const MAX_RUNS: usize = 10_000;

impl Timing {
    /// `args.warmup` untimed runs, then timed ones until there are
    /// `args.runs` of them and they add up to `args.min_seconds`.
    fn measure(args: &Bench, device: &Device, mut run: impl FnMut() -> Result<()>) -> Result<Self> {
        for _ in 0..args.warmup {
            run()?;
        }
        device.synchronize()?;
        let mut seconds = Vec::with_capacity(args.runs);
        let mut total = 0.0;
        while seconds.len() < MAX_RUNS && (seconds.len() < args.runs || total < args.min_seconds) {
            let started = Instant::now();
            run()?;
            device.synchronize()?;
            let elapsed = started.elapsed().as_secs_f64();
            seconds.push(elapsed);
            total += elapsed;
        }
        seconds.sort_by(f64::total_cmp);
        Ok(Self {
            median_s: median(&seconds),
            min_s: seconds[0],
            max_s: seconds[seconds.len() - 1],
            runs: seconds.len(),
        })
    }

    fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            median_s: value.get("median_s")?.as_f64()?,
            min_s: value.get("min_s")?.as_f64()?,
            max_s: value.get("max_s")?.as_f64()?,
            runs: value.get("runs")?.as_u64()? as usize,
        })
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The measurements of one architecture, in the key names torch_bench.py uses.
const MODEL_KEYS: [&str; 4] = ["caf_step", "baseline_step", "infer_batch1", "infer_batch64"];

pub fn bench(args: Bench) -> Result<()> {
    ensure!(
        args.batch >= 2,
        "--batch must be at least 2 (CAF needs a strong/weak pair)"
    );
    ensure!(args.runs >= 1, "--runs must be at least 1");
    ensure!(
        args.min_seconds.is_finite() && args.min_seconds >= 0.0,
        "--min-seconds must be a number of seconds, 0 or more"
    );
    ensure!(
        args.size >= 32,
        "--size must be at least 32 (AlexNet's smallest input is 32 px here)"
    );
    let device = parse_device(&args.device)?;
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let threads = measured_threads();
    if args.detection {
        let mut report = detection::bench_detection(&args, &device, threads, scratch.path())?;
        report["runs_at_least"] = json!(args.runs);
        report["min_seconds"] = json!(args.min_seconds);
        match args.json {
            true => println!("{}", serde_json::to_string(&report)?),
            false => detection::print_detection(&report),
        }
        return Ok(());
    }
    if args.video {
        let mut report = video::bench_video(&args, &device, threads, scratch.path())?;
        report["command"] = json!(std::env::args().skip(1).collect::<Vec<_>>().join(" "));
        match args.json {
            true => println!("{}", serde_json::to_string(&report)?),
            false => video::print_video(&report),
        }
        return Ok(());
    }
    if args.serve {
        let mut report = serve::bench_serve(&args, &device, threads, scratch.path())?;
        report["command"] = json!(std::env::args().skip(1).collect::<Vec<_>>().join(" "));
        match args.json {
            true => println!("{}", serde_json::to_string(&report)?),
            false => serve::print_serve(&report),
        }
        return Ok(());
    }
    tracing::info!(batch = args.batch, size = args.size, device = %args.device, threads, "benchmarking");

    let mut models = serde_json::Map::new();
    let mut caf_steps = Vec::new();
    for &arch in &args.arch {
        let result = bench_arch(&args, arch, &device, scratch.path())?;
        if let Some(step) = result.get("caf_step") {
            caf_steps.push((arch, step.median_s));
        }
        models.insert(arch.name().into(), serde_json::to_value(result)?);
    }
    let objective = bench_objective(&args, args.batch, &device)?;
    let objective_large = bench_objective(&args, args.objective_batch, &device)?;
    let pipeline = bench_pipeline(&args, threads, scratch.path())?;
    let shares: serde_json::Map<String, Value> = caf_steps
        .iter()
        .map(|(arch, step)| {
            (
                arch.name().to_string(),
                json!({
                    "at_batch": objective.median_s / step,
                    "objective_batch_vs_step": objective_large.median_s / step,
                }),
            )
        })
        .collect();
    let mut report = json!({
        "caf_rs": env!("CARGO_PKG_VERSION"),
        "device": args.device,
        "machine": machine(),
        "precision": args.precision.name(),
        "kernels": caf_kernels::checked_instruction_set()?.name(),
        "threads": threads,
        "batch": args.batch,
        "size": args.size,
        "runs_at_least": args.runs,
        "min_seconds": args.min_seconds,
        "arch": models,
        "objective": { "batch": args.batch, "timing": objective },
        "objective_large": { "batch": args.objective_batch, "timing": objective_large },
        "objective_share_of_caf_step": shares,
        "data_pipeline": pipeline,
        "peak_rss_mib": peak_rss_mib(),
    });
    if args.compare_torch {
        let torch = run_torch(&args, threads, scratch.path())?;
        report["ratios"] = ratios(&report["arch"], &torch["arch"]);
        report["torch"] = torch;
    }
    if args.compare_onnx {
        let onnx = run_onnx(&args, threads, scratch.path())?;
        let mut onnx_ratios = serde_json::Map::new();
        for (runtime, timings) in onnx["runtimes"].as_object().into_iter().flatten() {
            onnx_ratios.insert(runtime.clone(), ratios(&report["arch"], timings));
        }
        report["onnx_ratios"] = Value::Object(onnx_ratios);
        report["onnx"] = onnx;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// bench/onnx_bench.py, built in as the PyTorch script is.
const ONNX_BENCH: &str = include_str!("../../bench/onnx_bench.py");

fn run_onnx(args: &Bench, threads: usize, scratch: &Path) -> Result<Value> {
    run_python_bench(
        args,
        scratch,
        ("onnx_bench.py", ONNX_BENCH),
        &model_script_args(args, threads, &[]),
        "torch, torchvision, onnx, onnxruntime and openvino",
    )
}

/// What both model scripts take: --size, --arch, --threads and --precision
/// as this run has them, then `extra` (flag, value) pairs.
fn model_script_args(args: &Bench, threads: usize, extra: &[[&str; 2]]) -> Vec<String> {
    let arch = args.arch.iter().map(|a| a.name()).collect::<Vec<_>>().join(",");
    let common = [
        ["--size", &args.size.to_string()],
        ["--arch", &arch],
        ["--threads", &threads.to_string()],
        ["--precision", args.precision.name()],
    ]
    .iter()
    .flatten()
    .map(|s| s.to_string())
    .collect::<Vec<_>>();
    common
        .into_iter()
        .chain(extra.iter().flatten().map(|s| s.to_string()))
        .collect()
}

fn bench_arch(
    args: &Bench,
    arch: Arch,
    device: &Device,
    scratch: &Path,
) -> Result<std::collections::BTreeMap<&'static str, Timing>> {
    let batch = random_batch(args.batch, args.size, device, 0)?;
    let mut timings = std::collections::BTreeMap::new();
    for (key, method) in [("caf_step", Method::Caf), ("baseline_step", Method::Baseline)] {
        let settings = TrainConfig {
            method,
            arch: arch.name().into(),
            precision: args.precision.name().into(),
            ..TrainConfig::default()
        }
        .step_settings()?;
        let mut step = CafStep::seeded(settings, device)?;
        tracing::info!(arch = arch.name(), step = key, "timing");
        timings.insert(
            key,
            Timing::measure(args, device, || {
                let report = step.run(&batch)?;
                ensure!(report.nonfinite.is_none(), "the benchmark step's loss was not finite");
                Ok(())
            })?,
        );
    }
    // Inference as deployed: a network read from a checkpoint file.
    let varmap = VarMap::new();
    VaNet::new(arch, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    seeded_init(&varmap, arch, 0)?;
    let spec = ModelSpec {
        arch,
        image_size: args.size,
        resize: args.size,
    };
    let file = scratch.join(format!("{arch}.safetensors"));
    save_checkpoint(&file, &spec, &varmap, &Default::default())?;
    let net = Checkpoint::read(&file, device)?.va_net(device, args.precision)?;
    for (key, n) in [("infer_batch1", 1), ("infer_batch64", 64)] {
        let images = random_batch(n, args.size, device, 1)?.images;
        tracing::info!(arch = arch.name(), batch = n, "timing inference");
        timings.insert(
            key,
            Timing::measure(args, device, || {
                net.predict(&images)?;
                Ok(())
            })?,
        );
    }
    Ok(timings)
}

/// Normal images and labels spread over the unit disc, the same for every run.
fn random_batch(n: usize, size: usize, device: &Device, seed: u64) -> Result<Batch> {
    let mut rng = Rng::new(seed);
    let pixels: Vec<f32> = (0..n * 3 * size * size).map(|_| rng.normal() as f32).collect();
    let label_values: Vec<[f32; 2]> = (0..n).map(|_| draw_label(&mut rng)).collect();
    let flat: Vec<f32> = label_values.iter().flatten().copied().collect();
    Ok(Batch {
        images: Tensor::from_vec(pixels, (n, 3, size, size), device)?,
        labels: Tensor::from_vec(flat, (n, 2), device)?,
        label_values,
        subjects: vec![String::new(); n],
        indices: (0..n).collect(),
        skipped: Vec::new(),
    })
}

/// Grouping, adaptive k-NN and the critic loss with its backward pass, on
/// critic outputs of a batch of `n` (the networks excluded).
fn bench_objective(args: &Bench, n: usize, device: &Device) -> Result<Timing> {
    let mut rng = Rng::new(3);
    let labels: Vec<[f32; 2]> = (0..n).map(|_| draw_label(&mut rng)).collect();
    let outputs: Vec<f32> = (0..n * CRITIC_OUTPUTS).map(|_| rng.normal() as f32).collect();
    let outputs = Var::from_tensor(&Tensor::from_vec(outputs, (n, CRITIC_OUTPUTS), device)?)?;
    Timing::measure(args, device, || {
        let groups = group(&labels, GroupingRule::Otsu)?;
        let (strong, weak) = strong_and_weak(&outputs, &groups)?;
        critic_objective(&strong, &weak, 0.5)?.loss.backward()?;
        Ok(())
    })
}

/// Decode + training augmentation + normalisation of JPEG files, `resize`
/// then a `size` crop (256 → 224 at the defaults), all worker threads.
fn bench_pipeline(args: &Bench, threads: usize, scratch: &Path) -> Result<Value> {
    let resize = (args.size * 8 / 7) as u32;
    let images_per_subject = 32;
    let synthetic = SyntheticConfig {
        subjects: 4,
        images_per_subject,
        size: resize,
        seed: 0,
        jpeg: true,
    };
    let report = caf_data::synthetic::generate(&scratch.join("jpeg"), &synthetic)?;
    let dataset = caf_data::load_generic_csv(&report.csv, &report.root)?;
    let config = LoaderConfig {
        workers: threads,
        prefetch: 2 * threads,
        augment: Some(Augment::paper()),
        ..LoaderConfig::training(args.batch.min(dataset.len()), 0)
    };
    let loader = BatchLoader::new(&dataset, Preprocess::imagenet(resize, args.size as u32)?, config)?;
    let mut images = 0;
    let mut epoch = 0;
    let timing = Timing::measure(args, &Device::Cpu, || {
        images = 0;
        for batch in loader.epoch(epoch, &Device::Cpu) {
            images += batch?.label_values.len();
        }
        epoch += 1;
        Ok(())
    })?;
    Ok(json!({
        "jpeg_side": resize,
        "workers": threads,
        "images_per_run": images,
        "timing": timing,
        "images_per_s": images as f64 / timing.median_s,
    }))
}

/// The threads every side of a comparison gets: ours are rayon's workers
/// (`RAYON_NUM_THREADS` sets them), and each peer is given the same count,
/// since a comparison at unequal thread counts measures the cores, not the
/// code.
fn measured_threads() -> usize {
    rayon::current_num_threads()
}

/// The CPU a figure was measured on (Linux): its name, family and model, the instruction-set
/// flags our kernels choose between, and the cores this process may use.
fn machine() -> Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim() == name)
            .map(|(_, value)| value.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let has: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
        .into_iter()
        .filter(|flag| flags.split_whitespace().any(|f| f == *flag))
        .collect();
    json!({
        "cpu": field("model name"),
        // Two CPUs of one name can differ in what they run (an AMD EPYC
        // of family 25 is model 1 without AVX-512, model 17 with it).
        "family": field("cpu family"),
        "model": field("model"),
        "flags": has,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// Peak resident memory of this process so far (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// bench/torch_bench.py, built in so that a binary carried to another machine
/// (a GPU one, say) compares against the same script.
const TORCH_BENCH: &str = include_str!("../../bench/torch_bench.py");

fn run_torch(args: &Bench, threads: usize, scratch: &Path) -> Result<Value> {
    run_python_bench(
        args,
        scratch,
        ("torch_bench.py", TORCH_BENCH),
        &model_script_args(
            args,
            threads,
            &[["--batch", &args.batch.to_string()], ["--device", &args.device]],
        ),
        "torch and torchvision",
    )
}

/// Writes `script` (name, text) into `scratch`, runs it with `--python`, the
/// timing settings of `args` and `script_args`, and parses the one JSON
/// object it prints; `needs` names the packages it imports, for the error.
fn run_python_bench(
    args: &Bench,
    scratch: &Path,
    (name, text): (&str, &str),
    script_args: &[String],
    needs: &str,
) -> Result<Value> {
    let script = scratch.join(name);
    std::fs::write(&script, text).with_context(|| format!("cannot write {}", script.display()))?;
    tracing::info!(python = %args.python.display(), script = name, "running the PyTorch side");
    let output = Command::new(&args.python)
        .arg(&script)
        .args(["--warmup", &args.warmup.to_string(), "--runs", &args.runs.to_string()])
        .args(["--min-seconds", &args.min_seconds.to_string()])
        .args(script_args)
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (pass --python with a Python that has {needs})",
                args.python.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}); does that Python have {needs}? Use --python.\n{}",
            args.python.display(),
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("{} printed no JSON: {text}", script.display()))
}

/// Throughput ratios, caf-rs over PyTorch (above 1: caf-rs is faster).
fn ratios(ours: &Value, torch: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (arch, measurements) in ours.as_object().into_iter().flatten() {
        let mut row = serde_json::Map::new();
        for key in MODEL_KEYS {
            let pair = (
                Timing::from_json(&measurements[key]),
                Timing::from_json(&torch[arch.as_str()][key]),
            );
            if let (Some(ours), Some(theirs)) = pair {
                row.insert(key.into(), json!(theirs.median_s / ours.median_s));
            }
        }
        out.insert(arch.clone(), Value::Object(row));
    }
    Value::Object(out)
}

fn print_table(report: &Value) {
    let batch = report["batch"].as_u64().unwrap_or(0) as f64;
    println!(
        "caf-rs bench: batch {batch}, {0}×{0}, {1}, {2} threads (median of at least {3} runs and {4} s per measurement; min–max)",
        report["size"],
        report["device"].as_str().unwrap_or("?"),
        report["threads"],
        report["runs_at_least"],
        report["min_seconds"]
    );
    println!(
        "{:<24} {:>12} {:>17} {:>12} {:>12} {:>8}",
        "measurement", "median", "min–max", "images/s", "torch im/s", "ratio"
    );
    for (arch, measurements) in report["arch"].as_object().into_iter().flatten() {
        for key in MODEL_KEYS {
            let Some(timing) = Timing::from_json(&measurements[key]) else {
                continue;
            };
            let images = match key {
                "infer_batch1" => 1.0,
                "infer_batch64" => 64.0,
                _ => batch,
            };
            let torch = Timing::from_json(&report["torch"]["arch"][arch.as_str()][key]);
            let (torch_rate, ratio) = match torch {
                Some(t) => (
                    format!("{:.1}", images / t.median_s),
                    format!("{:.2}", t.median_s / timing.median_s),
                ),
                None => ("–".into(), "–".into()),
            };
            println!(
                "{:<24} {:>10.4} s {:>7.4}–{:<7.4} s {:>10.1} {:>12} {:>8}",
                format!("{arch} {key}"),
                timing.median_s,
                timing.min_s,
                timing.max_s,
                images / timing.median_s,
                torch_rate,
                ratio
            );
        }
    }
    for key in ["objective", "objective_large"] {
        if let Some(timing) = Timing::from_json(&report[key]["timing"]) {
            println!(
                "{:<24} {:>10.4} s {:>7.4}–{:<7.4} s",
                format!("objective batch {}", report[key]["batch"]),
                timing.median_s,
                timing.min_s,
                timing.max_s
            );
        }
    }
    for (arch, share) in report["objective_share_of_caf_step"].as_object().into_iter().flatten() {
        println!(
            "{arch}: grouping + objective = {:.3} % of a CAF step at batch {batch}; the batch-{} objective = {:.3} % of it",
            100.0 * share["at_batch"].as_f64().unwrap_or(f64::NAN),
            report["objective_large"]["batch"],
            100.0 * share["objective_batch_vs_step"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let pipeline = &report["data_pipeline"];
    println!(
        "data pipeline (JPEG {} px → decode, augment, crop {}): {:.1} images/s with {} workers",
        pipeline["jpeg_side"],
        report["size"],
        pipeline["images_per_s"].as_f64().unwrap_or(f64::NAN),
        pipeline["workers"]
    );
    if let Some(rss) = report["peak_rss_mib"].as_f64() {
        println!("peak resident memory: {rss:.0} MiB");
    }
    for (runtime, by_arch) in report["onnx_ratios"].as_object().into_iter().flatten() {
        for (arch, by_key) in by_arch.as_object().into_iter().flatten() {
            let cells: Vec<String> = by_key
                .as_object()
                .into_iter()
                .flatten()
                .map(|(key, ratio)| format!("{key} {:.2}", ratio.as_f64().unwrap_or(f64::NAN)))
                .collect();
            println!("against {runtime} ({arch}): {}", cells.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record names the CPU by family and model as well as by name,
    /// each read from its own line (`model` is not `model name`).
    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn the_machine_is_named_by_family_and_model() {
        let machine = machine();
        let number = |key: &str| {
            machine[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} missing from {machine}"))
                .parse::<u32>()
                .unwrap_or_else(|_| panic!("{key} is not a number in {machine}"))
        };
        assert!(number("family") > 0, "{machine}");
        number("model");
        assert!(
            machine["cpu"].as_str().is_some_and(|name| !name.is_empty()),
            "{machine}"
        );
    }

    #[test]
    fn peers_get_the_threads_our_kernels_run_on() {
        for workers in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .build()
                .expect("a pool");
            assert_eq!(pool.install(measured_threads), workers);
        }
    }
}
