//! Matrix products of f32 views with their operands rounded to bf16 and the
//! sums kept in f32 ([`Precision::Bf16`](crate::Precision)).
//!
//! Three paths compute the same thing: with AMX, operands are packed as
//! bf16 pairs in tiles and multiplied by `tdpbf16ps` (a 16 × 32 by 32 × 16
//! product each); on AVX512-BF16, packed as bf16 pairs and multiplied by
//! `vdpbf16ps` (16 lanes of two products each); elsewhere the operands are
//! rounded to bf16 values held in f32 and multiplied by the f32 product,
//! which is exact for them (a product of two 8-bit significands fits f32's
//! 24), so the paths differ only in the order of the f32 sums.

use super::patches::{Patches, Rhs};
use super::{matmul, Matrix, Threads};
use crate::cpu::InstructionSet;

/// `x` rounded to the nearest bf16, ties to even, as `vcvtne2ps2bf16`
/// rounds, as an f32: a NaN stays a quiet NaN, values past bf16's largest
/// round to infinity, and a subnormal becomes a zero of its sign (the
/// instruction treats subnormal inputs as zero). Written without
/// branches, so that loops of it vectorise.
#[inline]
pub(crate) fn round_to_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    // The carry of the rounding bias can reach the exponent (rounding up
    // to the next binade or to infinity) but never past the sign bit.
    let nearest = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000;
    let rounded = if (bits & 0x7FFF_FFFF) > 0x7F80_0000 {
        // A NaN, kept quiet.
        (bits | 0x0040_0000) & 0xFFFF_0000
    } else if bits & 0x7F80_0000 == 0 {
        // A zero or a subnormal: a zero of its sign.
        bits & 0x8000_0000
    } else {
        nearest
    };
    f32::from_bits(rounded)
}

/// The bits of [`round_to_bf16`]`(x)` as a bf16.
pub(crate) fn bf16_bits(x: f32) -> u16 {
    (round_to_bf16(x).to_bits() >> 16) as u16
}

/// How a bf16 product runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bf16Path {
    /// Rounded operands through the f32 product: any CPU.
    RoundedF32,
    /// Packed bf16 pairs through `vdpbf16ps`.
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    /// Packed bf16 pairs through `tdpbf16ps` on AMX tiles.
    #[cfg(target_arch = "x86_64")]
    AmxBf16,
}

impl Bf16Path {
    /// The path an instruction set runs.
    pub(crate) fn for_set(set: InstructionSet) -> Self {
        match set {
            #[cfg(target_arch = "x86_64")]
            InstructionSet::Avx512Bf16 => Self::Avx512Bf16,
            #[cfg(target_arch = "x86_64")]
            InstructionSet::AmxBf16 => Self::AmxBf16,
            _ => Self::RoundedF32,
        }
    }
}

/// Whether bf16 products run on bf16 instructions here (AVX512-BF16 or
/// AMX), at a higher rate than the f32 ones, rather than as f32 products
/// of rounded values.
pub(crate) fn bf16_in_hardware() -> bool {
    Bf16Path::for_set(crate::cpu::instruction_set()) != Bf16Path::RoundedF32
}

/// The left operand of bf16 products, rounded and laid out once for the
/// path that multiplies it: a weight used again and again (a frozen
/// convolution's) is packed once and kept ([`super::PackedLhs`]).
pub(super) struct Bf16Lhs {
    rows: usize,
    cols: usize,
    packed: Packed,
}

enum Packed {
    /// [`Bf16Path::RoundedF32`]: the values rounded, row-major.
    Rounded(Vec<f32>),
    /// [`Bf16Path::Avx512Bf16`]: bf16 pairs in the 8 × 48 kernel's panels.
    #[cfg(target_arch = "x86_64")]
    Pairs(avx512::PackedA),
    /// [`Bf16Path::Avx512Bf16`] for an operand kept for many products (a
    /// frozen weight's): also in row panels, which the products whose
    /// columns would leave the 8 × 48 kernel's lanes empty take
    /// ([`super::bf16_row_panels_pay`]).
    #[cfg(target_arch = "x86_64")]
    KeptPairs(avx512::PackedA, avx512::row_panels::PackedA),
    /// [`Bf16Path::AmxBf16`]: bf16 pairs in rows for the tiles, multiplied
    /// by `kernel` (in tests, also the tiles' arithmetic emulated on CPUs
    /// without AMX).
    #[cfg(target_arch = "x86_64")]
    Tiles(amx::PackedA, amx::TileKernel),
    /// In tests, row panels for every product, whatever its columns.
    #[cfg(all(test, target_arch = "x86_64"))]
    RowPanels(avx512::row_panels::PackedA),
}

impl Bf16Lhs {
    /// `a`, packed for the path of [`crate::cpu::instruction_set`].
    /// On the AVX512-BF16 path the panels are packed by all workers when
    /// `threads` allows.
    pub(crate) fn new(a: Matrix<f32>, threads: Threads) -> Self {
        Self::on(Bf16Path::for_set(crate::cpu::instruction_set()), a, threads)
    }

    /// [`Self::new`] for an operand kept for many products: on AVX512-BF16
    /// packed both ways ([`Packed::KeptPairs`]).
    pub(crate) fn kept(a: Matrix<f32>) -> Self {
        // Made once per weight (inside a `OnceLock`), on the calling thread:
        // a parallel loop there could let it take up work that waits on the
        // same lock.
        let packed = Self::new(a, Threads::One);
        match packed.packed {
            #[cfg(target_arch = "x86_64")]
            Packed::Pairs(by_columns) => Self {
                packed: Packed::KeptPairs(by_columns, avx512::row_panels::PackedA::new(a)),
                ..packed
            },
            _ => packed,
        }
    }

    /// `a`, packed for `path` (which must be one the CPU can run).
    pub(crate) fn on(path: Bf16Path, a: Matrix<f32>, threads: Threads) -> Self {
        let packed = match path {
            Bf16Path::RoundedF32 => Packed::Rounded(rounded(a)),
            #[cfg(target_arch = "x86_64")]
            Bf16Path::Avx512Bf16 => {
                assert!(
                    InstructionSet::detected() >= InstructionSet::Avx512Bf16,
                    "the AVX512-BF16 product asked for on a CPU without it"
                );
                Packed::Pairs(avx512::PackedA::new(a, threads))
            }
            #[cfg(target_arch = "x86_64")]
            Bf16Path::AmxBf16 => {
                assert!(
                    InstructionSet::detected() >= InstructionSet::AmxBf16,
                    "the AMX product asked for on a CPU or in a process without it"
                );
                Packed::Tiles(amx::PackedA::new(a), amx::TileKernel::Hardware)
            }
        };
        Self {
            rows: a.rows,
            cols: a.cols,
            packed,
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
impl Bf16Lhs {
    /// `a` packed for the AMX path, its tiles multiplied by the emulation
    /// of `tdpbf16ps` (to run the path's packing, blocking and write-back
    /// on a CPU with AVX512-BF16 but no AMX).
    pub(crate) fn emulated_tiles(a: Matrix<f32>) -> Self {
        assert!(
            InstructionSet::detected() >= InstructionSet::Avx512Bf16,
            "the AMX path's packing needs AVX512-BF16"
        );
        Self {
            rows: a.rows,
            cols: a.cols,
            packed: Packed::Tiles(amx::PackedA::new(a), amx::TileKernel::Emulated),
        }
    }

    /// `a` packed in the AVX512-BF16 row panels alone, which then multiply
    /// every product (the kept packing takes them for some column counts
    /// only).
    pub(crate) fn row_panels(a: Matrix<f32>) -> Self {
        assert!(
            InstructionSet::detected() >= InstructionSet::Avx512Bf16,
            "the row panels need AVX512-BF16"
        );
        Self {
            rows: a.rows,
            cols: a.cols,
            packed: Packed::RowPanels(avx512::row_panels::PackedA::new(a)),
        }
    }
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`) with bf16 operands,
/// on the path of [`crate::cpu::instruction_set`]; as [`matmul`] otherwise.
pub(crate) fn matmul_bf16(dst: &mut [f32], accumulate: bool, a: Matrix<f32>, b: Matrix<f32>, threads: Threads) {
    matmul_bf16_packed(dst, accumulate, &Bf16Lhs::new(a, threads), b, threads)
}

/// [`matmul_bf16`] on a given path (which must be one the CPU can run).
#[cfg(test)]
pub(crate) fn matmul_bf16_on(
    path: Bf16Path,
    dst: &mut [f32],
    accumulate: bool,
    a: Matrix<f32>,
    b: Matrix<f32>,
    threads: Threads,
) {
    matmul_bf16_packed(dst, accumulate, &Bf16Lhs::on(path, a, threads), b, threads)
}

/// [`matmul_bf16`] with the left operand packed beforehand (on its path).
pub(super) fn matmul_bf16_packed(dst: &mut [f32], accumulate: bool, a: &Bf16Lhs, b: Matrix<f32>, threads: Threads) {
    match &a.packed {
        Packed::Rounded(values) => matmul(
            dst,
            accumulate,
            Matrix::row_major(values, a.rows, a.cols),
            Matrix::row_major(&rounded(b), b.rows, b.cols),
            threads,
        ),
        #[cfg(target_arch = "x86_64")]
        Packed::Tiles(packed, kernel) => amx::matmul(*kernel, dst, accumulate, packed, b, threads),
        #[cfg(all(test, target_arch = "x86_64"))]
        Packed::RowPanels(packed) => avx512::row_panels::matmul(dst, accumulate, packed, b.into(), threads),
        #[cfg(target_arch = "x86_64")]
        Packed::Pairs(_) | Packed::KeptPairs(..) => match a.pairs() {
            Some(pairs) => pairs.multiply(dst, accumulate, b.into(), threads),
            None => unreachable!("bf16 pairs are packed as pairs"),
        },
    }
}

/// A left operand packed as bf16 pairs for AVX512-BF16: its products read
/// their right operand through [`Rhs`], a convolution's patches in place
/// among them ([`Self::multiply_patches`]).
#[derive(Clone, Copy)]
pub(crate) struct PairsLhs<'a>(Pairs<'a>);

#[derive(Clone, Copy)]
enum Pairs<'a> {
    /// Packed for the 8 × 48 kernel alone.
    #[cfg(target_arch = "x86_64")]
    ByColumns(&'a avx512::PackedA),
    /// Kept, in both layouts: `inner` deep.
    #[cfg(target_arch = "x86_64")]
    Kept {
        by_columns: &'a avx512::PackedA,
        by_rows: &'a avx512::row_panels::PackedA,
        inner: usize,
    },
    /// No such packing off x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    None(std::convert::Infallible, std::marker::PhantomData<&'a ()>),
}

impl Bf16Lhs {
    /// This packing as bf16 pairs, if it is.
    pub(super) fn pairs(&self) -> Option<PairsLhs<'_>> {
        match &self.packed {
            #[cfg(target_arch = "x86_64")]
            Packed::Pairs(by_columns) => Some(PairsLhs(Pairs::ByColumns(by_columns))),
            #[cfg(target_arch = "x86_64")]
            Packed::KeptPairs(by_columns, by_rows) => Some(PairsLhs(Pairs::Kept {
                by_columns,
                by_rows,
                inner: self.cols,
            })),
            _ => None,
        }
    }
}

impl PairsLhs<'_> {
    /// `dst = a · b` (or `+=` when `accumulate`), where `a` is `self`:
    /// with the row panels where they pay ([`super::bf16_row_panels_pay`]).
    fn multiply(self, dst: &mut [f32], accumulate: bool, b: Rhs, threads: Threads) {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Pairs::ByColumns(packed) => avx512::matmul(dst, accumulate, packed, b, threads),
            #[cfg(target_arch = "x86_64")]
            Pairs::Kept {
                by_columns,
                by_rows,
                inner,
            } => {
                if super::bf16_row_panels_pay(b.kernel_columns(), inner) {
                    avx512::row_panels::matmul(dst, accumulate, by_rows, b, threads)
                } else {
                    avx512::matmul(dst, accumulate, by_columns, b, threads)
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Pairs::None(never, _) => match never {},
        }
    }

    /// `dst = a · patches` (or `+=` when `accumulate`), where `a` is `self`.
    pub(crate) fn multiply_patches(self, dst: &mut [f32], accumulate: bool, b: Patches, threads: Threads) {
        self.multiply(dst, accumulate, Rhs::Patches(b), threads)
    }
}

/// A convolution's weight (`O × C·taps`, `C` even) packed for bf16
/// products on AVX512-BF16 that read the image in place as bf16 pairs of
/// channels ([`pair_channels`]): the inner dimension taken as (channel
/// pair, tap, channel of the pair), so that each pair of it is one
/// laid-out `u32`. No packing of the right operand is left to the
/// products.
pub(crate) struct ChannelPairsLhs {
    #[cfg(target_arch = "x86_64")]
    packed: avx512::row_panels::PackedA,
    #[cfg(not(target_arch = "x86_64"))]
    never: std::convert::Infallible,
}

impl ChannelPairsLhs {
    /// `weight` packed, where the CPU's bf16 path is AVX512-BF16 and the
    /// channels are even; `None` elsewhere.
    pub(crate) fn new(weight: &[f32], out_channels: usize, channels: usize, taps: usize) -> Option<Self> {
        assert_eq!(
            weight.len(),
            out_channels * channels * taps,
            "a weight of {out_channels}×{channels}×{taps} holds {} values",
            weight.len()
        );
        #[cfg(target_arch = "x86_64")]
        if Bf16Path::for_set(crate::cpu::instruction_set()) == Bf16Path::Avx512Bf16 && channels.is_multiple_of(2) {
            let inner = channels * taps;
            let mut reordered = vec![0.0; weight.len()];
            for (row, out) in weight.chunks_exact(inner).zip(reordered.chunks_exact_mut(inner)) {
                for (c, taps_of_c) in row.chunks_exact(taps).enumerate() {
                    for (t, &value) in taps_of_c.iter().enumerate() {
                        out[((c / 2) * taps + t) * 2 + c % 2] = value;
                    }
                }
            }
            let packed = avx512::row_panels::PackedA::new(Matrix::row_major(&reordered, out_channels, inner));
            return Some(Self { packed });
        }
        None
    }

    /// `dst = a · b` (or `+=` when `accumulate`), where `a` is `self` and
    /// `b` the patches of an image laid out by [`pair_channels`].
    pub(crate) fn multiply(&self, dst: &mut [f32], accumulate: bool, b: Patches<u32>, threads: Threads) {
        #[cfg(target_arch = "x86_64")]
        avx512::row_panels::matmul_pair_patches(dst, accumulate, &self.packed, b, threads);
        #[cfg(not(target_arch = "x86_64"))]
        match self.never {}
    }
}

/// `out[i]` = the bf16 pair of `even[i]` (low half) and `odd[i]` (high
/// half), each rounded as [`round_to_bf16`]: two channels of a laid-out
/// image as the pairs [`ChannelPairsLhs`] reads.
pub(crate) fn pair_channels(even: &[f32], odd: &[f32], out: &mut [u32]) {
    for ((out, &even), &odd) in out.iter_mut().zip(even).zip(odd) {
        *out = u32::from(bf16_bits(even)) | u32::from(bf16_bits(odd)) << 16;
    }
}

/// [`Element::convolve_on_tiles`](super::Element::convolve_on_tiles) for
/// f32: on AMX ([`Bf16Path::AmxBf16`] in use) for shapes whose channels and
/// output channels come in whole tiles, the weight packed now or `kept`.
pub(super) fn convolve_on_tiles(
    x: &[f32],
    (weight, orientation): (&[f32], super::Orientation),
    kept: Option<&TileWeight>,
    epilogue: super::Epilogue<f32>,
    shape: &super::ConvShape,
) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if convolves_on_tiles(shape) {
        let packed_now;
        let packed = match kept.and_then(|kept| kept.0.as_ref()) {
            Some(packed) => packed,
            None => {
                packed_now = amx::conv::PackedWeight::new(weight, shape, orientation);
                &packed_now
            }
        };
        return Some(amx::conv::forward(
            amx::TileKernel::Hardware,
            x,
            packed,
            epilogue,
            shape,
        ));
    }
    let _ = (x, weight, orientation, kept, epilogue, shape);
    None
}

/// One convolution of [`convolve_pair_on_tiles`]: its weight
/// (`out_channels × channels × kh × kw`), that weight packed already where
/// kept, its bias and its shape.
pub(crate) type PairOperands<'a> = (
    &'a [f32],
    Option<&'a TileWeight>,
    Option<&'a [f32]>,
    &'a super::ConvShape,
);

/// `relu(conv(relu(conv(x, first) + bias), second) + bias + residual)`, a
/// residual block's two convolutions, on AMX tiles with the first one's
/// output going straight into the second one's operand, where the tiles
/// take both shapes ([`convolve_pair_on_tiles_fits`]); `None` otherwise.
pub(crate) fn convolve_pair_on_tiles(
    x: &[f32],
    first: PairOperands,
    second: PairOperands,
    residual: &[f32],
) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if convolve_pair_on_tiles_fits(first.3, second.3) {
        let (packed_first, packed_second) = (packed_unless_kept(first), packed_unless_kept(second));
        return Some(amx::conv::forward_pair(
            amx::TileKernel::Hardware,
            x,
            tile_layer(first, &packed_first),
            tile_layer(second, &packed_second),
            residual,
        ));
    }
    let _ = (x, first, second, residual);
    None
}

/// `operands`' weight packed for the tiles now, unless it is kept packed.
#[cfg(target_arch = "x86_64")]
fn packed_unless_kept((weight, kept, _, shape): PairOperands) -> Option<amx::conv::PackedWeight> {
    match kept.and_then(|kept| kept.0.as_ref()) {
        Some(_) => None,
        None => Some(amx::conv::PackedWeight::new(weight, shape, super::Orientation::AsIs)),
    }
}

/// `operands` on the tiles: their kept packing, or `now`, the one
/// [`packed_unless_kept`] made.
#[cfg(target_arch = "x86_64")]
fn tile_layer<'a>(operands: PairOperands<'a>, now: &'a Option<amx::conv::PackedWeight>) -> amx::conv::PairLayer<'a> {
    let kept = operands.1.and_then(|kept| kept.0.as_ref());
    let weight = kept.or(now.as_ref()).expect("a weight kept or packed above");
    (weight, operands.2, operands.3)
}

/// One residual block of [`convolve_blocks_on_tiles`]: its two
/// convolutions and the downsampling one of its shortcut (the identity
/// where `None`).
#[derive(Clone, Copy)]
pub(crate) struct BlockOperands<'a> {
    pub(crate) first: PairOperands<'a>,
    pub(crate) second: PairOperands<'a>,
    pub(crate) downsample: Option<PairOperands<'a>>,
}

/// A run of residual blocks for inference on AMX tiles, each worker taking
/// its images through every block with the images in bf16 rows between
/// them (each identity shortcut rounded to bf16), where the tiles take the
/// blocks ([`convolve_blocks_on_tiles_fits`]); `None` otherwise.
pub(crate) fn convolve_blocks_on_tiles(x: &[f32], blocks: &[BlockOperands]) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if convolve_blocks_on_tiles_fits(blocks) {
        let packed: Vec<_> = blocks
            .iter()
            .map(|block| {
                (
                    packed_unless_kept(block.first),
                    packed_unless_kept(block.second),
                    block.downsample.map(packed_unless_kept),
                )
            })
            .collect();
        let layers: Vec<_> = blocks
            .iter()
            .zip(&packed)
            .map(|(block, (first, second, downsample))| amx::conv::BlockLayers {
                first: tile_layer(block.first, first),
                second: tile_layer(block.second, second),
                downsample: block
                    .downsample
                    .zip(downsample.as_ref())
                    .map(|(operands, now)| tile_layer(operands, now)),
            })
            .collect();
        return Some(amx::conv::forward_blocks(amx::TileKernel::Hardware, x, &layers));
    }
    let _ = (x, blocks);
    None
}

/// Whether [`convolve_blocks_on_tiles`] takes `blocks` on this CPU: every
/// convolution on the tiles; each block a pair of them; the first block's
/// shortcut a downsampling convolution from its input to its output, or
/// the identity where its two convolutions have one shape; every later
/// block an identity shortcut and both convolutions of the first block's
/// second one's shape.
pub(crate) fn convolve_blocks_on_tiles_fits(blocks: &[BlockOperands]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let shapes: Vec<_> = blocks
            .iter()
            .map(|block| amx::conv::BlockShapes {
                first: *block.first.3,
                second: *block.second.3,
                downsample: block.downsample.map(|operands| *operands.3),
            })
            .collect();
        let on_tiles = shapes.iter().all(|block| {
            [Some(block.first), Some(block.second), block.downsample]
                .iter()
                .flatten()
                .all(convolves_on_tiles)
        });
        on_tiles && amx::conv::blocks_fit_tiles(&shapes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = blocks;
        false
    }
}

/// Whether [`convolve_pair_on_tiles`] takes `first` then `second` on this
/// CPU: both on the tiles, `second` a stride-1 convolution of `first`'s
/// output with channels in whole tile steps.
pub(crate) fn convolve_pair_on_tiles_fits(first: &super::ConvShape, second: &super::ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    if convolves_on_tiles(first) && convolves_on_tiles(second) {
        return amx::conv::pair_fits_tiles(first, second);
    }
    let _ = (first, second);
    false
}

/// [`Element::weight_gradient_on_tiles`](super::Element::weight_gradient_on_tiles)
/// for f32, where [`convolve_on_tiles`] runs and the tiles take the
/// weight gradient's shape (stride 1, channels in whole steps).
pub(super) fn weight_gradient_on_tiles(dy: &[f32], x: &[f32], shape: &super::ConvShape) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if convolves_on_tiles(shape) && shape.gradient_fits_tiles() {
        return Some(amx::conv::weight_gradient(amx::TileKernel::Hardware, dy, x, shape));
    }
    let _ = (dy, x, shape);
    None
}

/// A frozen weight packed for [`convolve_on_tiles`], where the CPU has the
/// tiles and the weight's shape fits them.
pub(crate) struct TileWeight(#[cfg(target_arch = "x86_64")] Option<amx::conv::PackedWeight>);

impl TileWeight {
    /// `weight` packed for `shape`'s convolutions on tiles, or nothing
    /// where they do not run.
    pub(crate) fn new(weight: &[f32], shape: &super::ConvShape) -> Self {
        #[cfg(target_arch = "x86_64")]
        return Self(
            convolves_on_tiles(shape).then(|| amx::conv::PackedWeight::new(weight, shape, super::Orientation::AsIs)),
        );
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (weight, shape);
            Self()
        }
    }
}

/// Whether [`convolve_on_tiles`] takes `shape` on this CPU (with the
/// instruction set in use).
pub(crate) fn convolves_on_tiles(shape: &super::ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    if Bf16Path::for_set(crate::cpu::instruction_set()) == Bf16Path::AmxBf16 {
        return shape.fits_tiles();
    }
    let _ = shape;
    false
}

/// The view's elements, row-major, rounded to bf16.
fn rounded(view: Matrix<f32>) -> Vec<f32> {
    let mut values = view.to_vec();
    for value in &mut values {
        *value = round_to_bf16(*value);
    }
    values
}

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;
