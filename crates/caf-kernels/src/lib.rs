//! # caf-kernels
//!
//! Tensor operations that candle runs slowly, as candle custom ops with
//! gradients, so the rest of caf-rs trains at the machine's speed:
//!
//! * [`conv2d`]: 2-D convolution as im2col + GEMM (the `gemm` crate, AVX-512
//!   where the CPU has it), forward and both backward passes, parallel over
//!   images or inside each product; 3×3 stride-1 layers with enough channels
//!   and tiles by Winograd's F(2×2, 3×3) (2.25 times fewer multiplications,
//!   in all three passes), or F(4×4, 3×3) (4 times fewer) on maps that tile
//!   by 4, and 5×5 ones by F(2×2, 5×5); the input gradient is skipped when the input is
//!   not part of the graph (a network's image); [`conv2d_relu`] with the
//!   ReLU applied in the same operation, and [`conv2d_add_relu`] with a
//!   residual block's shortcut added before it, and (for inference)
//!   [`conv2d_relu_max_pool2d`] with the max pooling after it; a
//!   [`FrozenWeight`] (an inference network's) keeps its Winograd transform instead of making it on every
//!   call, which also sends single small maps to Winograd, and on AVX-512
//!   keeps its f32 product operands packed for a kernel of ours that fills
//!   every vector lane where `gemm`'s would run partly empty (few or
//!   ragged columns: small maps, single images);
//! * [`relu`]: one parallel pass forward and one backward; [`add_relu`]: a
//!   residual sum and its ReLU in one pass;
//! * [`batch_norm_train`]: training-mode batch normalisation in one
//!   statistics pass, one normalisation pass and two backward passes;
//!   [`scale_shift`]: evaluation mode, folded, as one pass;
//! * [`max_pool2d`]: max pooling whose gradient goes to the first maximum of
//!   each window (PyTorch's rule), keeping the places in training, with
//!   PyTorch's `ceil_mode`;
//! * [`prelu`]: parametric ReLU with a slope per channel, in one pass;
//! * [`adam_update`]: Adam's update of a parameter and its [`AdamMoments`]
//!   in place, in one pass.
//!
//! Convolutions run in f32 or, as [`Precision::Bf16`], with the operands of
//! their products rounded to bfloat16 and f32 sums: a [`FrozenWeight`] made
//! [`FrozenWeight::with_precision`] for inference, and trainable weights
//! inside [`autocast`] (mixed-precision training). With AMX (on Linux) the
//! bf16 products run on tiles by `tdpbf16ps`, on CPUs with AVX512-BF16 on
//! `vdpbf16ps`, elsewhere on the rounded operands in f32.
//! [`instruction_set`] says which kernels run, and the `CAF_CPU_CAP`
//! environment variable caps it (`portable`, `avx2`, `avx512`, `avx512-bf16`,
//! `amx-bf16`) to run on one machine what another CPU would.
//!
//! Each function picks the device path itself, so a layer calls one function
//! everywhere. f32 and f64 on the CPU run the CPU kernels. With the `cuda`
//! feature, f32 on CUDA runs this crate's CUDA kernels (`src/cuda/kernels.cu`,
//! compiled by NVRTC on first use) for ReLU, the residual ReLU, a
//! convolution's bias and ReLU (after candle's convolution), max pooling,
//! training batch normalisation and Adam; the rest (the convolution itself,
//! PReLU, and every other device and dtype) runs candle's own operations,
//! which have CUDA kernels and gradients. The CUDA kernels compile here
//! (NVRTC, no GPU needed) but have not yet run on a GPU.
//!
//! ```
//! use caf_kernels::{conv2d, Conv2dParams};
//! use candle_core::{Device, Tensor};
//!
//! let image = Tensor::ones((1, 1, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
//! let kernel = Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let bias = Tensor::new(&[0f32, 1.0], &Device::Cpu)?;
//! let y = conv2d(&image, &kernel, Some(&bias), Conv2dParams { stride: 1, padding: 0 })?;
//! assert_eq!(y.dims(), [1, 2, 2, 2]);
//! assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [9.0, 9.0, 9.0, 9.0, 10.0, 10.0, 10.0, 10.0]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod adam;
mod batch_norm;
mod conv;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod device;
mod elementwise;
mod gemm;
mod huge_pages;
#[cfg(any(test, feature = "cuda"))]
mod kernel_signatures;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod linux;
mod parallel;
mod phases;
mod pool;
mod prelu;
mod reduce;
mod scratch;
mod storage;
mod switch;

pub use adam::{adam_update, AdamMoments, AdamStep};
pub use batch_norm::{batch_norm_train, batch_norm_train_relu, scale_shift, ChannelStats};
pub use conv::{
    conv2d, conv2d_add_relu, conv2d_relu, conv2d_relu_conv2d_add_relu, conv2d_relu_max_pool2d, cuda_math,
    residual_blocks, set_cuda_math, window_output, Conv2dParams, ConvWeight, CudaMath, FrozenConv, FrozenWeight,
    ResidualBlock, CUDNN_VARIABLE,
};
pub use cpu::{
    autocast, autocast_precision, checked_instruction_set, instruction_set, on_pool, CpuCapError, InstructionSet,
    Precision, PrecisionError, CPU_CAP_VARIABLE,
};
pub use device::{parse_device, DeviceError, CUDA_SETUP_VARIABLE};
pub use elementwise::{add_relu, relu};
pub use pool::{max_pool2d, MaxPool2dConfig};
pub use prelu::prelu;
pub use storage::runs_on_cpu_kernels;
