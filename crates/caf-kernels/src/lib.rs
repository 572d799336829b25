//! # caf-kernels
//!
//! CPU tensor operations that candle runs slowly, as candle custom ops with
//! gradients, so the rest of caf-rs trains at the machine's speed:
//!
//! * [`conv2d`]: 2-D convolution as im2col + GEMM (the `gemm` crate, AVX-512
//!   where the CPU has it), forward and both backward passes, parallel over
//!   images or inside each product; the input gradient is skipped when the
//!   input is not part of the graph (a network's image).
//!
//! Other devices and dtypes fall back to candle's own operations, which have
//! CUDA kernels and gradients.

mod conv;
mod gemm;

pub use conv::{conv2d, Conv2dParams};
