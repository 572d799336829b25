//! Milliseconds of `caf_kernels::conv2d` forward, input gradient and weight
//! gradient on the layers of AlexNet and ResNet-18 at 224×224, with the
//! direct-convolution GFLOPS they amount to, in f32 or under
//! `caf_kernels::autocast` bf16 as a training step runs them:
//! `cargo run --release -p caf-kernels --example conv_speed [batch] [layer filter] [f32|bf16]`.

use std::time::Instant;

// As in xtask (run with MIMALLOC_PURGE_DELAY=-1 for its setting): freed
// tensors are reused instead of page-faulted in again on every call.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use caf_kernels::{autocast, conv2d, Conv2dParams, Precision};
use candle_core::{Device, Result, Tensor, Var};

/// (name, channels, side, out_channels, kernel, stride, padding)
const LAYERS: [(&str, usize, usize, usize, usize, usize, usize); 11] = [
    ("alexnet conv1 11×11/4", 3, 224, 64, 11, 4, 2),
    ("alexnet conv2 5×5", 64, 27, 192, 5, 1, 2),
    ("alexnet conv3 3×3", 192, 13, 384, 3, 1, 1),
    ("alexnet conv4 3×3", 384, 13, 256, 3, 1, 1),
    ("alexnet conv5 3×3", 256, 13, 256, 3, 1, 1),
    ("resnet layer1 3×3", 64, 56, 64, 3, 1, 1),
    ("resnet layer2 3×3", 128, 28, 128, 3, 1, 1),
    ("resnet layer3 3×3", 256, 14, 256, 3, 1, 1),
    ("resnet layer4 3×3", 512, 7, 512, 3, 1, 1),
    ("resnet layer2 3×3/2", 64, 56, 128, 3, 2, 1),
    ("resnet stem 7×7/2", 3, 224, 64, 7, 2, 3),
];

fn best_ms(mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    run()?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        run()?;
        best = best.min(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

fn main() -> Result<()> {
    let batch: usize = std::env::args().nth(1).and_then(|b| b.parse().ok()).unwrap_or(16);
    let filter = std::env::args().nth(2).unwrap_or_default();
    let precision: Precision = match std::env::args().nth(3) {
        Some(name) => name.parse().map_err(candle_core::Error::wrap)?,
        None => Precision::F32,
    };
    println!(
        "batch {batch}, {} threads, {}; ms (direct-equivalent GFLOPS)",
        rayon::current_num_threads(),
        precision.name()
    );
    println!(
        "{:<22} {:>16} {:>16} {:>16}",
        "layer", "forward", "input grad", "weight grad"
    );
    for (name, c, side, k, kernel, stride, padding) in LAYERS.into_iter().filter(|layer| layer.0.contains(&filter)) {
        autocast(precision, || {
            time_layer(name, batch, [c, side, k, kernel, stride, padding])
        })?;
    }
    Ok(())
}

/// Times one layer's three passes and prints them as a row.
fn time_layer(name: &str, batch: usize, [c, side, k, kernel, stride, padding]: [usize; 6]) -> Result<()> {
    let params = Conv2dParams { stride, padding };
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (batch, c, side, side), &Device::Cpu)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (k, c, kernel, kernel), &Device::Cpu)?)?;
    let y = conv2d(&x, &w, None, params)?;
    let out = y.dim(2)?;
    let flops = 2.0 * (batch * k * out * out * c * kernel * kernel) as f64;
    let forward = best_ms(|| conv2d(&x, &w, None, params).map(drop))?;
    let dy = Tensor::randn(0f32, 1.0, y.shape(), &Device::Cpu)?;
    // Both gradients together, then the weight gradient alone (image untracked).
    let both = best_ms(|| (conv2d(&x, &w, None, params)? * &dy)?.sum_all()?.backward().map(drop))?;
    let image = x.as_tensor().detach();
    let weight_only = best_ms(|| {
        (conv2d(&image, &w, None, params)? * &dy)?
            .sum_all()?
            .backward()
            .map(drop)
    })?;
    let input_grad = both - weight_only;
    let weight_grad = weight_only - forward;
    let cell = |ms: f64| format!("{ms:7.2} ({:5.0})", flops / ms / 1e6);
    println!(
        "{name:<22} {:>16} {:>16} {:>16}",
        cell(forward),
        cell(input_grad),
        cell(weight_grad)
    );
    Ok(())
}
