//! Milliseconds of one inference pass of a frozen network (`VaNet::freeze`,
//! as `predict` runs it) on random images, on the CPU: the thing to put under
//! `perf` when inference is slow, without a training step beside it.
//!
//! ```sh
//! cargo run --release -p caf-backbone --example infer_speed -- [--arch resnet18] [--batch 1] [--size 224] [--precision f32|bf16] [--passes 200]
//! ```
//!
//! Prints the median, fastest and slowest pass after five untimed ones.

use std::time::Instant;

// As in xtask (run with MIMALLOC_PURGE_DELAY=-1 for its setting).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use caf_backbone::{seeded_init, Arch, Precision, VaNet};
use candle_core::{DType, Device, Error, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};

struct Options {
    arch: Arch,
    batch: usize,
    size: usize,
    precision: Precision,
    passes: usize,
}

fn options() -> Result<Options> {
    let mut options = Options {
        arch: Arch::ResNet18,
        batch: 1,
        size: 224,
        precision: Precision::F32,
        passes: 200,
    };
    let count = |flag: &str, value: &str| {
        value
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::Msg(format!("{flag} {value}: not a positive count")))
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| Error::Msg(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--arch" => options.arch = value.parse::<Arch>().map_err(|e| Error::Msg(e.to_string()))?,
            "--batch" => options.batch = count(&flag, &value)?,
            "--size" => options.size = count(&flag, &value)?,
            "--passes" => options.passes = count(&flag, &value)?,
            "--precision" => options.precision = value.parse().map_err(|e| Error::Msg(format!("{e}")))?,
            other => {
                return Err(Error::Msg(format!(
                    "unknown option {other} (--arch, --batch, --size, --precision, --passes)"
                )))
            }
        }
    }
    Ok(options)
}

fn main() -> Result<()> {
    let options = options()?;
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let net = VaNet::new(options.arch, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    seeded_init(&varmap, options.arch, 0).map_err(|e| Error::Msg(e.to_string()))?;
    let net = net.freeze(options.precision)?;
    let images = Tensor::randn(0f32, 1.0, (options.batch, 3, options.size, options.size), &device)?;
    for _ in 0..5 {
        net.predict(&images)?;
    }
    let mut ms = Vec::with_capacity(options.passes);
    for _ in 0..options.passes {
        let started = Instant::now();
        net.predict(&images)?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{} batch {} at {} px, {}, {} threads: median {:.3} ms (fastest {:.3}, slowest {:.3}) over {} passes",
        options.arch,
        options.batch,
        options.size,
        options.precision.name(),
        rayon::current_num_threads(),
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    );
    Ok(())
}
