//! # caf-kernels
//!
//! CPU tensor operations that candle runs slowly, as candle custom ops with
//! gradients, so the rest of caf-rs trains at the machine's speed:
//!
//! * [`conv2d`]: 2-D convolution as im2col + GEMM (the `gemm` crate, AVX-512
//!   where the CPU has it), forward and both backward passes, parallel over
//!   images or inside each product; 3×3 stride-1 layers with enough channels
//!   and tiles by Winograd's F(2×2, 3×3) (2.25 times fewer multiplications,
//!   in all three passes); the input gradient is skipped when the input is
//!   not part of the graph (a network's image); [`conv2d_relu`] with the
//!   ReLU applied in the same operation; a [`FrozenWeight`] (an inference
//!   network's) keeps its Winograd transform instead of making it on every
//!   call, which also sends single small maps to Winograd;
//! * [`relu`]: one parallel pass forward and one backward; [`add_relu`]: a
//!   residual sum and its ReLU in one pass;
//! * [`batch_norm_train`]: training-mode batch normalisation in one
//!   statistics pass, one normalisation pass and two backward passes;
//!   [`scale_shift`]: evaluation mode, folded, as one pass.
//!
//! `conv2d` and `relu` fall back to candle's own operations on other devices
//! and dtypes (which have CUDA kernels and gradients); `batch_norm_train` is
//! CPU-only and its callers keep candle-nn's BatchNorm for other devices.

mod batch_norm;
mod conv;
mod elementwise;
mod gemm;
mod parallel;
pub mod phases;
mod reduce;
mod scratch;
mod storage;

pub use batch_norm::{batch_norm_train, batch_norm_train_relu, scale_shift, ChannelStats};
pub use conv::{conv2d, conv2d_relu, Conv2dParams, ConvWeight, FrozenWeight};
pub use elementwise::{add_relu, relu};
pub use storage::runs_on_cpu_kernels;
