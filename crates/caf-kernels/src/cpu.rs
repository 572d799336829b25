//! What the CPU can run, what the user lets it run, and the precision of
//! the matrix products.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The environment variable that caps the instruction set of this crate's
/// own kernels (to run, on one machine, the paths another CPU would take).
pub const CPU_CAP_VARIABLE: &str = "CAF_CPU_CAP";

/// The instruction sets this crate's own kernels have paths for, weakest
/// first. (The f32 matrix products of the `gemm` crate pick their own
/// micro-kernels and are not capped.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InstructionSet {
    /// Plain Rust, compiled for the baseline target (SSE2 on x86-64).
    Portable,
    /// AVX2 and FMA: the plain Rust loops of the Winograd transforms,
    /// batch norm, Adam and the sums compiled for 256-bit vectors; max
    /// pooling stays on the baseline.
    Avx2,
    /// AVX-512F and BW: Winograd transforms, max pooling.
    Avx512,
    /// AVX-512 with AVX512-BF16: bf16 products by `vdpbf16ps`.
    Avx512Bf16,
    /// AVX512-BF16 with AMX tiles (AMX-TILE and AMX-BF16, enabled by the
    /// operating system for this process): bf16 products by `tdpbf16ps`.
    AmxBf16,
}

impl InstructionSet {
    /// Every set, weakest first.
    pub const ALL: [InstructionSet; 5] = [
        Self::Portable,
        Self::Avx2,
        Self::Avx512,
        Self::Avx512Bf16,
        Self::AmxBf16,
    ];

    /// The strongest set this CPU has (for AMX, in this process: the first
    /// call asks Linux for the tile data).
    pub fn detected() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 =
                std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw");
            if avx512 && std::arch::is_x86_feature_detected!("avx512bf16") {
                return if amx_bf16_usable() {
                    Self::AmxBf16
                } else {
                    Self::Avx512Bf16
                };
            }
            if avx512 {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// The name [`FromStr`] reads and `CAF_CPU_CAP` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Avx512Bf16 => "avx512-bf16",
            Self::AmxBf16 => "amx-bf16",
        }
    }
}

/// Whether this process may run AMX's bf16 tile products: the CPU has
/// AMX-TILE and AMX-BF16 (CPUID leaf 7), the operating system saves the tile
/// state (XCR0 bits 17 and 18), and Linux granted this process the tile
/// data (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, asked once;
/// without it the first tile instruction faults). Elsewhere than Linux,
/// false.
#[cfg(target_arch = "x86_64")]
fn amx_bf16_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        const AMX_BF16: u32 = 1 << 22;
        const AMX_TILE: u32 = 1 << 24;
        const OSXSAVE: u32 = 1 << 27;
        const XTILE_STATE: u64 = 0b11 << 17;
        // (Leaf 7 exists: it is where the AVX-512 features already found are reported.)
        let (leaf1, leaf7) = (__cpuid(1), __cpuid_count(7, 0));
        if leaf7.edx & (AMX_BF16 | AMX_TILE) != AMX_BF16 | AMX_TILE || leaf1.ecx & OSXSAVE == 0 {
            return false;
        }
        // SAFETY: OSXSAVE says XGETBV is enabled.
        let xcr0 = unsafe { read_xcr0() };
        xcr0 & XTILE_STATE == XTILE_STATE && request_tile_data()
    })
}

/// XCR0, the state components the operating system saves.
///
/// # Safety
/// The CPU has XSAVE enabled by the OS (CPUID.1:ECX.OSXSAVE).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn read_xcr0() -> u64 {
    // SAFETY: the caller checked OSXSAVE.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
use crate::linux::request_tile_data;

/// Only Linux is known to grant the tile data this way.
#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_tile_data() -> bool {
    false
}

impl fmt::Display for InstructionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an [`InstructionSet`]'s, or a `CAF_CPU_CAP` that holds one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuCapError {
    #[error("unknown instruction set `{0}` (use portable, avx2, avx512, avx512-bf16 or amx-bf16)")]
    Unknown(String),
    #[error("{CPU_CAP_VARIABLE}=`{0}` is not an instruction set: use portable, avx2, avx512, avx512-bf16 or amx-bf16, or unset it")]
    Variable(String),
}

impl FromStr for InstructionSet {
    type Err = CpuCapError;

    fn from_str(name: &str) -> Result<Self, CpuCapError> {
        Self::ALL
            .into_iter()
            .find(|set| set.name() == name)
            .ok_or_else(|| CpuCapError::Unknown(name.to_string()))
    }
}

/// The instruction set this crate's kernels use: the detected one, capped
/// by `CAF_CPU_CAP` when that is set (a cap above what the CPU has changes
/// nothing). Read once per process.
///
/// # Panics
/// When `CAF_CPU_CAP` holds no instruction set's name: a program that
/// honours the variable should call [`checked_instruction_set`] first, to
/// report that as an error.
pub fn instruction_set() -> InstructionSet {
    match checked_instruction_set() {
        Ok(set) => set,
        Err(error) => panic!("{error}"),
    }
}

/// Runs `kernel` compiled with AVX-512F where the kernels may use it
/// ([`instruction_set`] at least [`InstructionSet::Avx512`]), with AVX2 and
/// FMA where they may use those, else as built for the baseline (SSE2 on
/// x86-64): the loops the compiler vectorises in it get 512-bit or 256-bit
/// vectors instead of 128-bit ones. The results are the same bits either
/// way: without FMA contraction (Rust never fuses a multiply and an add on
/// its own) or reassociation, each lane of a vectorised loop does the
/// scalar loop's arithmetic. `kernel` gains only what is inlined into it: pass a closure marked `#[inline(always)]` around
/// the loop, and mark the functions it calls so too (a loop the compiler
/// leaves in a function of its own is built for the baseline).
#[inline(always)]
pub(crate) fn vectorised<R>(kernel: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if instruction_set() >= InstructionSet::Avx512 {
        // SAFETY: the instruction set in use is at most the detected one,
        // so this CPU has AVX-512F.
        return unsafe { with_avx512(kernel) };
    }
    #[cfg(target_arch = "x86_64")]
    if instruction_set() >= InstructionSet::Avx2 {
        // SAFETY: as above, this CPU has AVX2 and FMA.
        return unsafe { with_avx2(kernel) };
    }
    kernel()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(kernel: impl FnOnce() -> R) -> R {
    kernel()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn with_avx512<R>(kernel: impl FnOnce() -> R) -> R {
    kernel()
}

/// [`instruction_set`], with a bad `CAF_CPU_CAP` as an error.
pub fn checked_instruction_set() -> Result<InstructionSet, CpuCapError> {
    static IN_USE: OnceLock<Result<InstructionSet, CpuCapError>> = OnceLock::new();
    IN_USE
        .get_or_init(|| {
            let detected = InstructionSet::detected();
            match std::env::var(CPU_CAP_VARIABLE) {
                Err(std::env::VarError::NotPresent) => Ok(detected),
                Ok(cap) if cap.is_empty() => Ok(detected),
                Ok(cap) => match cap.parse::<InstructionSet>() {
                    Ok(cap) => Ok(detected.min(cap)),
                    Err(_) => Err(CpuCapError::Variable(cap)),
                },
                Err(std::env::VarError::NotUnicode(cap)) => Err(CpuCapError::Variable(cap.to_string_lossy().into())),
            }
        })
        .clone()
}

/// The precision of a network's matrix products (its convolutions).
///
/// `F32` is the default and the reference. With `Bf16`, each product's two
/// operands are rounded to bfloat16 (8 significant bits, f32's range) and
/// multiplied with f32 sums; everything else (activations between layers,
/// biases, batch-norm statistics, losses) stays f32, as under PyTorch's
/// autocast. With AMX they run on tiles (`tdpbf16ps`); on a CPU with
/// AVX512-BF16 on `vdpbf16ps`, twice the multiply-adds of an f32
/// instruction; elsewhere the rounded
/// operands are multiplied in f32, with the same rounding and the same
/// results up to the order of the sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    /// The name [`FromStr`] reads: `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    /// The precision [`autocast`] set on this thread.
    static AUTOCAST: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// Runs `f` with the convolutions of trainable f32 weights that this thread
/// starts computing their products in `precision`: the forward pass and,
/// when the graph is run backward, both gradients (mixed-precision
/// training, as under PyTorch's `torch.autocast`). The weights, their
/// gradients, the optimiser and the batch-norm statistics stay f32. Frozen
/// weights keep the precision they were frozen with. The setting before is
/// restored afterwards, also when `f` panics.
///
/// ```
/// use caf_kernels::{autocast, conv2d, Conv2dParams, Precision};
/// use candle_core::{Device, Tensor};
///
/// let x = Tensor::new(&[[[[1.0f32 + 1.0 / 128.0]]]], &Device::Cpu)?;
/// let w = Tensor::new(&[[[[1.0f32]]]], &Device::Cpu)?;
/// let params = Conv2dParams { stride: 1, padding: 0 };
/// let y = autocast(Precision::Bf16, || conv2d(&x, &w, None, params))?;
/// // 1 + 2⁻⁷ is a bf16, 1 + 2⁻⁹ is not: it rounds to 1.
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [1.0 + 1.0 / 128.0]);
/// let x = Tensor::new(&[[[[1.0f32 + 1.0 / 512.0]]]], &Device::Cpu)?;
/// let y = autocast(Precision::Bf16, || conv2d(&x, &w, None, params))?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [1.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    struct Restore(Precision);
    impl Drop for Restore {
        fn drop(&mut self) {
            AUTOCAST.set(self.0);
        }
    }
    let _restore = Restore(AUTOCAST.replace(precision));
    f()
}

/// The precision [`autocast`] set on this thread (f32 outside it).
pub fn autocast_precision() -> Precision {
    AUTOCAST.get()
}

/// Runs `f`, the work of `device`, and returns what it returns: for the
/// CPU on one of rayon's workers, in this thread's [`autocast`] precision
/// (from a worker of a pool, where it is); for any other device here.
///
/// From outside the pool (a program's main thread), each parallel loop of
/// the kernels hands its work to the workers and sleeps until they are
/// done, a wake-up per loop, and a network's pass runs dozens of loops. A
/// pass (or a training step) inside `on_pool` pays one hand-over, and its
/// loops start on a worker (docs/performance.md).
///
/// ```
/// use caf_kernels::{autocast, on_pool, Precision};
/// use candle_core::Device;
///
/// let (worker, precision) = autocast(Precision::Bf16, || {
///     on_pool(&Device::Cpu, || (rayon::current_thread_index(), caf_kernels::autocast_precision()))
/// });
/// assert!(worker.is_some());
/// assert_eq!(precision, Precision::Bf16);
/// ```
pub fn on_pool<R: Send>(device: &candle_core::Device, f: impl FnOnce() -> R + Send) -> R {
    if !device.is_cpu() {
        return f();
    }
    let precision = autocast_precision();
    rayon::scope(|_| autocast(precision, f))
}

/// A name that is not a [`Precision`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}` (use f32 or bf16)")]
pub struct PrecisionError(pub String);

impl FromStr for Precision {
    type Err = PrecisionError;

    fn from_str(name: &str) -> Result<Self, PrecisionError> {
        match name {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(PrecisionError(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_unknown_names_are_refused() {
        for set in InstructionSet::ALL {
            assert_eq!(set.name().parse::<InstructionSet>(), Ok(set));
        }
        assert_eq!("avx".parse::<InstructionSet>(), Err(CpuCapError::Unknown("avx".into())));
        for precision in [Precision::F32, Precision::Bf16] {
            assert_eq!(precision.to_string().parse::<Precision>(), Ok(precision));
        }
        assert!("fp16".parse::<Precision>().is_err());
    }

    #[test]
    fn the_set_in_use_is_never_above_the_detected_one() {
        assert!(instruction_set() <= InstructionSet::detected());
    }
}
