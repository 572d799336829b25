//! Left operands laid out once for the kernel that multiplies them: a
//! frozen convolution's weight, or its Winograd transform's one per point,
//! meets a fresh right operand on every call and is packed only once.

use super::bf16::{matmul_bf16_packed, Bf16Lhs, PairsLhs};
use super::Threads;
use super::{Matrix, Patches};
use crate::cpu::Precision;

/// A left operand packed for products in one [`Precision`].
pub(crate) struct PackedLhs(Packed);

enum Packed {
    /// For bf16 products, on the CPU's bf16 path.
    Bf16(Bf16Lhs),
    /// For f32 products on AVX-512, in panels that keep every lane busy
    /// whatever the right operand's column count.
    #[cfg(target_arch = "x86_64")]
    F32Panels(super::f32_panels::PackedA),
}

impl PackedLhs {
    /// `a` packed, to be kept, for products in `precision` on the CPU's
    /// instruction set ([`crate::cpu::instruction_set`]); `None` for f32
    /// products below AVX-512, which `gemm` packs as it goes.
    pub(crate) fn for_products(precision: Precision, a: Matrix<f32>) -> Option<Self> {
        match precision {
            Precision::Bf16 => Some(Self(Packed::Bf16(Bf16Lhs::kept(a)))),
            #[cfg(target_arch = "x86_64")]
            Precision::F32 if crate::cpu::instruction_set() >= crate::cpu::InstructionSet::Avx512 => {
                Some(Self(Packed::F32Panels(super::f32_panels::PackedA::new(a))))
            }
            Precision::F32 => None,
        }
    }

    /// `a` packed for the bf16 products of one call, by all workers when
    /// `threads` allows.
    pub(crate) fn bf16(a: Matrix<f32>, threads: Threads) -> Self {
        Self(Packed::Bf16(Bf16Lhs::new(a, threads)))
    }

    /// This packing as one whose products can read a convolution's
    /// patches in place ([`PatchesLhs::multiply_patches`]): bf16 pairs and
    /// the f32 row panels; `None` for any other.
    pub(crate) fn patches(&self) -> Option<PatchesLhs<'_>> {
        match &self.0 {
            Packed::Bf16(a) => a.pairs().map(|a| PatchesLhs(PatchesPacking::Pairs(a))),
            #[cfg(target_arch = "x86_64")]
            Packed::F32Panels(a) => Some(PatchesLhs(PatchesPacking::F32Panels(a))),
        }
    }

    /// Whether multiplying from this packing beats packing afresh for a
    /// right operand of `columns` columns: always for bf16 (whose
    /// products always pack); for f32, where `gemm`'s vectors would run
    /// partly empty ([`super::row_panels_pay`]).
    pub(crate) fn pays_for(&self, columns: usize) -> bool {
        match &self.0 {
            Packed::Bf16(_) => true,
            #[cfg(target_arch = "x86_64")]
            Packed::F32Panels(a) => super::row_panels_pay(columns, a.cols()),
        }
    }
}

/// A packed left operand whose products read a convolution's patches in
/// place ([`PackedLhs::patches`]).
#[derive(Clone, Copy)]
pub(crate) struct PatchesLhs<'a>(PatchesPacking<'a>);

#[derive(Clone, Copy)]
enum PatchesPacking<'a> {
    /// bf16 pairs.
    Pairs(PairsLhs<'a>),
    /// f32 row panels (AVX-512F).
    #[cfg(target_arch = "x86_64")]
    F32Panels(&'a super::f32_panels::PackedA),
}

impl PatchesLhs<'_> {
    /// `dst = a · b` (or `+=` when `accumulate`), where `a` is `self` and
    /// `b` a convolution's patches.
    pub(crate) fn multiply_patches(self, dst: &mut [f32], accumulate: bool, b: Patches, threads: Threads) {
        match self.0 {
            PatchesPacking::Pairs(a) => a.multiply_patches(dst, accumulate, b, threads),
            #[cfg(target_arch = "x86_64")]
            PatchesPacking::F32Panels(a) => super::f32_panels::matmul_patches(dst, accumulate, a, b, threads),
        }
    }
}

/// `dst = a · b` (or `+=` when `accumulate`) in the precision `a` was
/// packed for.
#[inline(never)]
pub(super) fn matmul_packed(dst: &mut [f32], accumulate: bool, a: &PackedLhs, b: Matrix<f32>, threads: Threads) {
    match &a.0 {
        Packed::Bf16(a) => matmul_bf16_packed(dst, accumulate, a, b, threads),
        #[cfg(target_arch = "x86_64")]
        Packed::F32Panels(a) => super::f32_panels::matmul(dst, accumulate, a, b, threads),
    }
}
