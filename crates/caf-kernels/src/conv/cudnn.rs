//! The CUDA route of the convolutions (feature `cudnn`): cuDNN's forward,
//! backward-data (input gradient) and backward-filter (weight gradient)
//! passes and its bias gradient, behind the same custom operations the CPU
//! kernels run.
//!
//! What this file holds runs without a GPU and is tested here: the tensor
//! sizes as cuDNN's `int`s ([`Dims`], the key of a convolution's plan), the
//! choice among the algorithms cuDNN's search reports ([`choose`], under
//! [`WORKSPACE_CAP`]), and the math mode ([`CudaMath`]). The calls into
//! cuDNN are in `device.rs`.

// Without the feature the planning is compiled for its tests only.
#![cfg_attr(not(feature = "cudnn"), allow(dead_code))]

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::Result;

use super::Geometry;
use crate::switch::Switch;

/// How cuDNN may round the products of f32 convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CudaMath {
    /// Tensor cores in TF32 (10-bit mantissas, f32 sums) where cuDNN finds
    /// them faster, as PyTorch's cuDNN convolutions run by default
    /// (`torch.backends.cudnn.allow_tf32`). `NVIDIA_TF32_OVERRIDE=0` in the
    /// environment still turns TF32 off for the whole process.
    #[default]
    Tf32,
    /// f32 products only (FMA math): the mode the parity tests compare
    /// against the CPU kernels in.
    StrictF32,
}

static CUDA_MATH: AtomicU8 = AtomicU8::new(0);

/// Sets the math mode of the CUDA convolutions started from now on, in the
/// whole process (a convolution's plan is made per mode, so switching back
/// and forth keeps both).
pub fn set_cuda_math(math: CudaMath) {
    CUDA_MATH.store(math as u8, Ordering::Relaxed);
}

/// The math mode of the CUDA convolutions ([`set_cuda_math`]; TF32 unless set).
pub fn cuda_math() -> CudaMath {
    match CUDA_MATH.load(Ordering::Relaxed) {
        0 => CudaMath::Tf32,
        _ => CudaMath::StrictF32,
    }
}

/// The environment variable that turns the cuDNN route off (`off`) for a
/// comparison with candle's own CUDA convolutions; `on` or unset: cuDNN.
pub const CUDNN_VARIABLE: &str = "CAF_CUDNN";

/// Whether the cuDNN route is on ([`CUDNN_VARIABLE`]), read once; a value
/// other than `on` or `off` is an error on every convolution it would route.
pub(crate) fn cudnn_switched_on() -> Result<bool> {
    static SWITCH: Switch = Switch::new(CUDNN_VARIABLE, "cuDNN convolutions", "candle's");
    SWITCH.is_on()
}

/// The most device memory one convolution pass may use as workspace: an
/// algorithm that needs more is passed over for the fastest one that fits.
pub(crate) const WORKSPACE_CAP: usize = 1 << 30;

/// The element type of a convolution's tensors on cuDNN; the sums are f32
/// for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Element {
    F32,
    /// bf16 operands and results: the CUDA side of `autocast` bf16, as
    /// PyTorch's autocast runs its convolutions.
    Bf16,
}

/// One convolution's sizes as cuDNN takes them (`int`s) and its element
/// type: the key under which its descriptors and chosen algorithms are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Dims {
    /// Input `B, C, H, W`.
    pub x: [i32; 4],
    /// Weight `O, C, kh, kw`.
    pub w: [i32; 4],
    /// Output `B, O, out_h, out_w`.
    pub y: [i32; 4],
    pub padding: i32,
    pub stride: i32,
    pub element: Element,
}

impl Dims {
    /// The sizes of `g`, or an error naming the one past cuDNN's `int`
    /// (elements are counted in `int` too: a tensor of more than
    /// 2³¹ − 1 elements is refused).
    pub(crate) fn new(g: &Geometry, element: Element) -> Result<Self> {
        let int = |what: &str, value: usize| -> Result<i32> {
            i32::try_from(value).map_err(|_| {
                candle_core::Error::Msg(format!(
                    "conv2d on CUDA: {what} is {value}, past cuDNN's limit of {}; use a smaller batch",
                    i32::MAX
                ))
            })
        };
        let elements = [
            ("the input's element count", g.batch.checked_mul(g.image_len())),
            ("the output's element count", g.batch.checked_mul(g.output_len())),
            ("the weight's element count", g.out_channels.checked_mul(g.patch())),
        ];
        for (what, count) in elements {
            int(what, count.unwrap_or(usize::MAX))?;
        }
        Ok(Self {
            x: [
                int("the batch", g.batch)?,
                int("the channels", g.channels)?,
                int("the height", g.height)?,
                int("the width", g.width)?,
            ],
            w: [
                int("the output channels", g.out_channels)?,
                int("the channels", g.channels)?,
                int("the kernel height", g.kernel_h)?,
                int("the kernel width", g.kernel_w)?,
            ],
            y: [
                int("the batch", g.batch)?,
                int("the output channels", g.out_channels)?,
                int("the output height", g.out_h)?,
                int("the output width", g.out_w)?,
            ],
            padding: int("the padding", g.padding)?,
            stride: int("the stride", g.stride)?,
            element,
        })
    }
}

/// One algorithm as cuDNN's search (`cudnnFindConvolution*Algorithm`)
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate<A> {
    pub algo: A,
    /// Whether it ran (`CUDNN_STATUS_SUCCESS`).
    pub ran: bool,
    /// Milliseconds it took.
    pub time_ms: f32,
    /// Workspace bytes it needs.
    pub workspace: usize,
}

/// The fastest candidate that ran and needs at most `cap` bytes of
/// workspace (cuDNN lists them fastest first, but the choice does not rely
/// on it), or `None` when none qualifies.
pub(crate) fn choose<A: Copy>(candidates: &[Candidate<A>], cap: usize) -> Option<Candidate<A>> {
    candidates
        .iter()
        .filter(|c| c.ran && c.workspace <= cap && c.time_ms.is_finite())
        .min_by(|a, b| a.time_ms.total_cmp(&b.time_ms))
        .copied()
}

/// The workspace length to grow to for a pass that needs `needed` bytes
/// when `current` are allocated: `None` when the current one is enough (it
/// never shrinks, so every plan's passes reuse one allocation).
pub(crate) fn grown_workspace(current: usize, needed: usize) -> Option<usize> {
    (needed > current).then_some(needed)
}

#[cfg(feature = "cudnn")]
mod device;

#[cfg(feature = "cudnn")]
pub(crate) use on_device::*;

/// The passes on candle's CUDA storage, as the custom operations call them:
/// f32 operands, or bf16 ones (the CUDA side of `autocast` bf16), each pass
/// in the element type of its operands.
#[cfg(feature = "cudnn")]
mod on_device {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{DType, Layout, Result};

    use super::device::{self, CudnnElement};
    use crate::conv::Geometry;
    use crate::cuda::{f32_view, storage, typed_view};
    use crate::elementwise::Activation;

    /// `activation(conv(x, w) + bias)`; bf16 operands take neither a bias
    /// nor an activation (the caller applies them in f32).
    pub(crate) fn forward(
        op: &str,
        g: &Geometry,
        activation: Activation,
        (x, x_layout): (&CudaStorage, &Layout),
        (w, w_layout): (&CudaStorage, &Layout),
        bias: Option<(&CudaStorage, &Layout)>,
    ) -> Result<CudaStorage> {
        let device = x.device();
        if x.dtype() == DType::BF16 {
            if bias.is_some() || activation != Activation::Identity {
                candle_core::bail!("{op}: a bf16 convolution on cuDNN takes no bias or activation")
            }
            return typed::<half::bf16>(op, x, (x_layout, w, w_layout), |x, w| device::forward(device, x, w, g));
        }
        let y = device::forward(device, &f32_view(x, x_layout, op)?, &f32_view(w, w_layout, op)?, g)?;
        let relu = activation == Activation::Relu;
        let y = match bias {
            Some((b, b_layout)) => {
                crate::cuda::bias_act(device, &y.slice(..), &f32_view(b, b_layout, op)?, g.positions(), relu)?
            }
            None if relu => crate::cuda::unary(device, crate::kernel_signatures::RELU, &y.slice(..))?,
            None => y,
        };
        Ok(storage(y, device))
    }

    /// The input gradient of output gradient `dy` through weight `w`.
    pub(crate) fn input_gradient(
        op: &str,
        g: &Geometry,
        (dy, dy_layout): (&CudaStorage, &Layout),
        (w, w_layout): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let device = dy.device();
        match dy.dtype() {
            DType::BF16 => typed::<half::bf16>(op, dy, (dy_layout, w, w_layout), |dy, w| {
                device::backward_data(device, dy, w, g)
            }),
            _ => typed::<f32>(op, dy, (dy_layout, w, w_layout), |dy, w| {
                device::backward_data(device, dy, w, g)
            }),
        }
    }

    /// The weight gradient of output gradient `dy` over input `x`.
    pub(crate) fn weight_gradient(
        op: &str,
        g: &Geometry,
        (dy, dy_layout): (&CudaStorage, &Layout),
        (x, x_layout): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let device = dy.device();
        match dy.dtype() {
            DType::BF16 => typed::<half::bf16>(op, dy, (dy_layout, x, x_layout), |dy, x| {
                device::backward_filter(device, dy, x, g)
            }),
            _ => typed::<f32>(op, dy, (dy_layout, x, x_layout), |dy, x| {
                device::backward_filter(device, dy, x, g)
            }),
        }
    }

    /// Runs `pass` on two operands viewed as `T` (an error names the op
    /// where either is of another type) and wraps its result.
    fn typed<T: CudnnElement>(
        op: &str,
        a: &CudaStorage,
        (a_layout, b, b_layout): (&Layout, &CudaStorage, &Layout),
        pass: impl FnOnce(
            &candle_core::cuda_backend::cudarc::driver::CudaView<T>,
            &candle_core::cuda_backend::cudarc::driver::CudaView<T>,
        ) -> Result<candle_core::cuda_backend::cudarc::driver::CudaSlice<T>>,
    ) -> Result<CudaStorage> {
        let out = pass(&typed_view::<T>(a, a_layout, op)?, &typed_view::<T>(b, b_layout, op)?)?;
        Ok(T::wrap_cuda_slice(out, a.device().clone()))
    }

    /// The bias gradient of output gradient `dy` (f32: a bf16 convolution's
    /// bias is added, and its gradient taken, in f32).
    pub(crate) fn bias_gradient(
        op: &str,
        g: &Geometry,
        (dy, dy_layout): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let device = dy.device();
        let db = device::backward_bias(device, &f32_view(dy, dy_layout, op)?, g)?;
        Ok(storage(db, device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::Conv2dParams;

    fn geometry(input: [usize; 4], weight: [usize; 4], stride: usize, padding: usize) -> Geometry {
        Geometry::new(&input, &weight, Conv2dParams { stride, padding }).expect("a valid geometry")
    }

    #[test]
    fn dims_are_the_tensors_sizes_in_cudnn_order() {
        let dims = Dims::new(&geometry([2, 3, 224, 200], [64, 3, 11, 11], 4, 2), Element::F32).unwrap();
        assert_eq!(dims.x, [2, 3, 224, 200]);
        assert_eq!(dims.w, [64, 3, 11, 11]);
        // (224 + 4 − 11) / 4 + 1 = 55, (200 + 4 − 11) / 4 + 1 = 49.
        assert_eq!(dims.y, [2, 64, 55, 49]);
        assert_eq!((dims.padding, dims.stride), (2, 4));
    }

    #[test]
    fn sizes_past_cudnns_int_are_refused_with_the_size_named() {
        // 2¹¹ images of 2²¹ elements: 2³² elements in the input.
        let error = Dims::new(&geometry([2048, 32, 256, 256], [8, 32, 1, 1], 1, 0), Element::F32)
            .unwrap_err()
            .to_string();
        assert!(error.contains("the input's element count is 4294967296"), "{error}");
        assert!(error.contains("smaller batch"), "{error}");
        let wide = Dims::new(&geometry([1, 1, 1, 1usize << 31], [1, 1, 1, 1], 1, 0), Element::F32)
            .unwrap_err()
            .to_string();
        assert!(wide.contains("element count"), "{wide}");
    }

    #[test]
    fn the_plan_key_tells_geometries_apart() {
        let a = Dims::new(&geometry([16, 64, 56, 56], [64, 64, 3, 3], 1, 1), Element::F32).unwrap();
        let b = Dims::new(&geometry([16, 64, 56, 56], [64, 64, 3, 3], 2, 1), Element::F32).unwrap();
        let c = Dims::new(&geometry([1, 64, 56, 56], [64, 64, 3, 3], 1, 1), Element::F32).unwrap();
        let a_bf16 = Dims::new(&geometry([16, 64, 56, 56], [64, 64, 3, 3], 1, 1), Element::Bf16).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, a_bf16);
        assert_eq!((a.x, a.w, a.y), (a_bf16.x, a_bf16.w, a_bf16.y));
        assert_eq!(
            a,
            Dims::new(&geometry([16, 64, 56, 56], [64, 64, 3, 3], 1, 1), Element::F32).unwrap()
        );
    }

    fn candidate(algo: u32, ran: bool, time_ms: f32, workspace: usize) -> Candidate<u32> {
        Candidate {
            algo,
            ran,
            time_ms,
            workspace,
        }
    }

    #[test]
    fn the_fastest_algorithm_that_ran_within_the_cap_is_chosen() {
        let candidates = [
            candidate(0, false, 0.1, 0),      // failed: never chosen
            candidate(1, true, 0.2, 2 << 30), // fastest that ran, but over the cap
            candidate(2, true, 0.5, 1 << 20), // slower, fits
            candidate(3, true, 0.3, 1 << 30), // fits exactly at the cap: the choice
            candidate(4, true, f32::NAN, 0),  // no time: never chosen
        ];
        assert_eq!(choose(&candidates, WORKSPACE_CAP).map(|c| c.algo), Some(3));
        // A larger cap lets the fastest through; a zero cap only what needs none.
        assert_eq!(choose(&candidates, 4 << 30).map(|c| c.algo), Some(1));
        assert_eq!(choose(&candidates, 0).map(|c| c.algo), None);
        assert_eq!(choose::<u32>(&[], WORKSPACE_CAP), None);
    }

    #[test]
    fn the_workspace_grows_to_the_largest_need_and_never_shrinks() {
        let mut allocated = 0;
        let mut allocations = 0;
        for needed in [0, 1000, 200, 1000, 5000, 0, 4999] {
            if let Some(size) = grown_workspace(allocated, needed) {
                allocated = size;
                allocations += 1;
            }
            assert!(allocated >= needed);
        }
        assert_eq!((allocated, allocations), (5000, 2));
    }

    #[test]
    fn the_math_mode_defaults_to_tf32_and_switches() {
        assert_eq!(CudaMath::default(), CudaMath::Tf32);
        // The setting is process-wide: restore it for the other tests.
        let before = cuda_math();
        set_cuda_math(CudaMath::StrictF32);
        assert_eq!(cuda_math(), CudaMath::StrictF32);
        set_cuda_math(CudaMath::Tf32);
        assert_eq!(cuda_math(), CudaMath::Tf32);
        set_cuda_math(before);
    }
}
