//! Milliseconds of `caf_kernels::conv2d` forward, input gradient and weight
//! gradient on every convolution shape of AlexNet and ResNet-18 at 224×224,
//! with the direct-convolution GFLOPS they amount to, in f32 or under
//! `caf_kernels::autocast` bf16 as a training step runs them, on the CPU or
//! a CUDA device:
//!
//! ```sh
//! cargo run --release -p caf-kernels --example conv_speed -- [--batch 16] [--layer resnet] [--precision f32|bf16] [--device cpu|cuda] [--frozen] [--runs 10] [--json]
//! ```
//!
//! `--runs` sets how many timed runs each figure is the fastest of: raise
//! it to put one layer (`--layer`) under `perf`.
//!
//! `--frozen` times the forward pass alone with a `FrozenWeight` in the
//! given precision, as inference runs it (its kept operands made before
//! the timing).
//!
//! Each pass is timed inside the graph a training step builds: the forward
//! pass; `(y · dy).sum()` backward with the image tracked (both gradients)
//! and untracked (the weight gradient only); and the same loss over a
//! stand-in output, whose cost is taken off the weight gradient.
//! `bench/gpu/conv_shapes.py` times PyTorch the same way on the shapes
//! `--json` prints.

use std::time::Instant;

// As in xtask (run with MIMALLOC_PURGE_DELAY=-1 for its setting): freed
// tensors are reused instead of page-faulted in again on every call.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use caf_kernels::{autocast, conv2d, parse_device, Conv2dParams, FrozenWeight, Precision};
use candle_core::{Device, Result, Tensor, Var};

/// One convolution of the networks.
struct Layer {
    name: &'static str,
    channels: usize,
    side: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

const fn layer(
    name: &'static str,
    channels: usize,
    side: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Layer {
    Layer {
        name,
        channels,
        side,
        out_channels,
        kernel,
        stride,
        padding,
    }
}

/// Every distinct convolution shape of torchvision's AlexNet and ResNet-18 at 224×224.
const LAYERS: [Layer; 16] = [
    layer("alexnet conv1 11×11/4", 3, 224, 64, 11, 4, 2),
    layer("alexnet conv2 5×5", 64, 27, 192, 5, 1, 2),
    layer("alexnet conv3 3×3", 192, 13, 384, 3, 1, 1),
    layer("alexnet conv4 3×3", 384, 13, 256, 3, 1, 1),
    layer("alexnet conv5 3×3", 256, 13, 256, 3, 1, 1),
    layer("resnet stem 7×7/2", 3, 224, 64, 7, 2, 3),
    layer("resnet layer1 3×3", 64, 56, 64, 3, 1, 1),
    layer("resnet layer2 3×3/2", 64, 56, 128, 3, 2, 1),
    layer("resnet layer2 1×1/2", 64, 56, 128, 1, 2, 0),
    layer("resnet layer2 3×3", 128, 28, 128, 3, 1, 1),
    layer("resnet layer3 3×3/2", 128, 28, 256, 3, 2, 1),
    layer("resnet layer3 1×1/2", 128, 28, 256, 1, 2, 0),
    layer("resnet layer3 3×3", 256, 14, 256, 3, 1, 1),
    layer("resnet layer4 3×3/2", 256, 14, 512, 3, 2, 1),
    layer("resnet layer4 1×1/2", 256, 14, 512, 1, 2, 0),
    layer("resnet layer4 3×3", 512, 7, 512, 3, 1, 1),
];

struct Options {
    batch: usize,
    filter: String,
    precision: Precision,
    device: Device,
    frozen: bool,
    runs: usize,
    json: bool,
}

fn options() -> Result<Options> {
    let mut options = Options {
        batch: 16,
        filter: String::new(),
        precision: Precision::F32,
        device: Device::Cpu,
        frozen: false,
        runs: 10,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--json" || flag == "--frozen" {
            options.json |= flag == "--json";
            options.frozen |= flag == "--frozen";
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| candle_core::Error::Msg(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--batch" => {
                options.batch = value
                    .parse()
                    .map_err(|_| candle_core::Error::Msg(format!("--batch {value}: not a count")))?
            }
            "--layer" => options.filter = value,
            "--runs" => {
                options.runs = value
                    .parse()
                    .ok()
                    .filter(|&runs| runs > 0)
                    .ok_or_else(|| candle_core::Error::Msg(format!("--runs {value}: not a positive count")))?
            }
            "--precision" => options.precision = value.parse().map_err(|e| candle_core::Error::Msg(format!("{e}")))?,
            "--device" => options.device = parse_device(&value).map_err(|e| candle_core::Error::Msg(e.to_string()))?,
            other => {
                return Err(candle_core::Error::Msg(format!(
                    "unknown option {other} (--batch, --layer, --precision, --device, --frozen, --runs, --json)"
                )))
            }
        }
    }
    Ok(options)
}

/// The fastest of `runs` runs after two untimed ones, waiting for the
/// device after each. The gradients' times are differences of two such
/// figures: on a busy machine one can come out at or below zero.
fn best_ms(device: &Device, runs: usize, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..2 {
        run()?;
    }
    device.synchronize()?;
    let mut best = f64::MAX;
    for _ in 0..runs {
        let started = Instant::now();
        run()?;
        device.synchronize()?;
        best = best.min(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

fn main() -> Result<()> {
    let options = options()?;
    if !options.json {
        println!(
            "batch {}, {:?}, {} CPU threads, {}{}; ms (direct-equivalent GFLOPS)",
            options.batch,
            options.device,
            rayon::current_num_threads(),
            options.precision.name(),
            if options.frozen { ", frozen weights" } else { "" }
        );
        println!(
            "{:<22} {:>16} {:>16} {:>16}",
            "layer", "forward", "input grad", "weight grad"
        );
    }
    for layer in LAYERS.iter().filter(|layer| layer.name.contains(&options.filter)) {
        autocast(options.precision, || time_layer(layer, &options))?;
    }
    Ok(())
}

/// Times one layer's three passes and prints them as a row (or a JSON line).
fn time_layer(layer: &Layer, options: &Options) -> Result<()> {
    let (batch, device) = (options.batch, &options.device);
    let (c, side, k, kernel) = (layer.channels, layer.side, layer.out_channels, layer.kernel);
    let params = Conv2dParams {
        stride: layer.stride,
        padding: layer.padding,
    };
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (batch, c, side, side), device)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (k, c, kernel, kernel), device)?)?;
    let y = conv2d(&x, &w, None, params)?;
    let out = y.dim(2)?;
    let flops = 2.0 * (batch * k * out * out * c * kernel * kernel) as f64;
    let cell = |ms: f64| format!("{ms:7.2} ({:5.0})", flops / ms / 1e6);
    if options.frozen {
        let frozen = FrozenWeight::with_precision(w.as_tensor(), options.precision)?;
        let forward = best_ms(device, options.runs, || conv2d(&x, &frozen, None, params).map(drop))?;
        if options.json {
            println!(
                r#"{{"layer":"{}","batch":{},"precision":"{}","frozen":true,"forward_ms":{:.4}}}"#,
                layer.name,
                batch,
                options.precision.name(),
                forward
            );
        } else {
            println!("{:<22} {:>16} {:>16} {:>16}", layer.name, cell(forward), "–", "–");
        }
        return Ok(());
    }
    let forward = best_ms(device, options.runs, || conv2d(&x, &w, None, params).map(drop))?;
    let dy = Tensor::randn(0f32, 1.0, y.shape(), device)?;
    // Both gradients together, then the weight gradient alone (image untracked).
    let both = best_ms(device, options.runs, || {
        (conv2d(&x, &w, None, params)? * &dy)?.sum_all()?.backward().map(drop)
    })?;
    let image = x.as_tensor().detach();
    let weight_only = best_ms(device, options.runs, || {
        (conv2d(&image, &w, None, params)? * &dy)?
            .sum_all()?
            .backward()
            .map(drop)
    })?;
    // The loss and its backward pass on their own, over an output-sized variable.
    let stand_in = Var::from_tensor(&y.detach())?;
    let loss_only = best_ms(device, options.runs, || {
        (stand_in.as_tensor() * &dy)?.sum_all()?.backward().map(drop)
    })?;
    let input_grad = both - weight_only;
    let weight_grad = weight_only - forward - loss_only;
    if options.json {
        println!(
            concat!(
                r#"{{"layer":"{}","batch":{},"channels":{},"side":{},"out_channels":{},"kernel":{},"stride":{},"padding":{},"#,
                r#""precision":"{}","forward_ms":{:.4},"input_grad_ms":{:.4},"weight_grad_ms":{:.4}}}"#
            ),
            layer.name,
            batch,
            c,
            side,
            k,
            kernel,
            layer.stride,
            layer.padding,
            options.precision.name(),
            forward,
            input_grad,
            weight_grad
        );
    } else {
        println!(
            "{:<22} {:>16} {:>16} {:>16}",
            layer.name,
            cell(forward),
            cell(input_grad),
            cell(weight_grad)
        );
    }
    Ok(())
}
