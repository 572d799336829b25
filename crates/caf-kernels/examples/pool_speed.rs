//! Microseconds of one `caf_kernels::max_pool2d` forward pass on AlexNet's
//! and ResNet-18's pooling shapes at 224×224, as inference runs it (an
//! untracked input: no places kept) and as training does (a tracked one):
//!
//! ```sh
//! cargo run --release -p caf-kernels --example pool_speed -- [--batch 1]
//! ```
//!
//! Prints the median of 200 passes (20 above batch 8) after 20 untimed ones.

use std::time::Instant;

// As in xtask (run with MIMALLOC_PURGE_DELAY=-1 for its setting).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use caf_kernels::{max_pool2d, MaxPool2dConfig};
use candle_core::{Device, Error, Result, Tensor, Var};

/// (name, channels, side, padding) of each 3×3 stride-2 pooling.
const POOLS: [(&str, usize, usize, usize); 4] = [
    ("alexnet pool1", 64, 55, 0),
    ("alexnet pool2", 192, 27, 0),
    ("alexnet pool3", 256, 13, 0),
    ("resnet pool", 64, 112, 1),
];

fn median_us(passes: usize, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..20 {
        run()?;
    }
    let mut us = Vec::with_capacity(passes);
    for _ in 0..passes {
        let started = Instant::now();
        run()?;
        us.push(started.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    Ok(us[passes / 2])
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let batch = match (args.next().as_deref(), args.next()) {
        (None, _) => 1,
        (Some("--batch"), Some(value)) => value
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::Msg(format!("--batch {value}: not a positive count")))?,
        _ => return Err(Error::Msg("the one option is --batch N".into())),
    };
    let passes = if batch > 8 { 20 } else { 200 };
    println!("batch {batch}, {} threads; median µs", rayon::current_num_threads());
    println!("{:<14} {:>10} {:>10}", "pool", "inference", "training");
    for (name, channels, side, padding) in POOLS {
        let config = MaxPool2dConfig {
            kernel: 3,
            stride: 2,
            padding,
            ceil_mode: false,
        };
        let x = Tensor::randn(0f32, 1.0, (batch, channels, side, side), &Device::Cpu)?;
        let inference = median_us(passes, || max_pool2d(&x, config).map(drop))?;
        let tracked = Var::from_tensor(&x)?;
        let training = median_us(passes, || max_pool2d(tracked.as_tensor(), config).map(drop))?;
        println!("{name:<14} {inference:>10.1} {training:>10.1}");
    }
    Ok(())
}
