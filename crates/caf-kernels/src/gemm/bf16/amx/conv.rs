//! Convolutions multiplied straight from the image on the AMX tiles, with
//! no column matrix: the image is laid out once in bf16 (zero-padded), and
//! each tile of the input a kernel tap needs is loaded from that layout in
//! place.
//!
//! The output's positions are taken on the padded width: position `v`
//! stands for output row `v / wp` and column `v % wp` (`wp` the padded
//! width), so that tap `(ky, kx)` of consecutive positions reads
//! consecutive positions of the layout from `v + ky·wp + kx`, across row
//! ends alike. The positions past the output's width are computed and
//! dropped (two columns in 58 on a 56×56 map with a 3×3 kernel). A block
//! of 32 output channels and 32 positions sums `taps × channels / 32`
//! steps of two tiles of the weight (packed in tile order) and two of the
//! image.
//!
//! Where the channels come in whole blocks of 32 (every layer past a
//! network's stem), the layout is rows ([`pack_rows`]): for each block of
//! 32 channels, a position's 32 channels in one 64-byte row, so that a
//! step's 32 positions are 2 KiB in one piece on whole cache lines at every
//! tap. The image is then the left operand of the products and the weight
//! the right one, and a block's sums come out by position; a write-back to
//! an f32 output turns them by channel ([`sums_by_channel`]), one into the
//! next convolution's rows rounds each position's row as it is
//! ([`write_back_rows`]). A stem's few channels are folded with the
//! kernel's columns instead ([`pack_folded`]): planes of channel pairs, a
//! pair per position, the image on the right of the products (a tile's 16
//! rows from 16 planes).
//!
//! A stride-2 convolution reads every other column and row: the padded map
//! is split into its phases (even and odd rows by even and odd columns),
//! each a map of half the width, so that tap `(ky, kx)` reads phase
//! `(ky mod 2, kx mod 2)` from `v + ⌊ky/2⌋·wp/2 + ⌊kx/2⌋`, consecutive
//! positions again; `wp/2` (rounded up) then stands for the width above.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::super::avx512::{pairs_of_rows, rounded_pairs};
use super::{store_tile_row, Operands, TileKernel, TileScope, Tiles, MR, NR, TILE};
use crate::elementwise::Activation;
use crate::gemm::x86::{first_lanes, transpose_16x16};
use crate::gemm::{ConvShape, Epilogue, Orientation};
use crate::huge_pages::HugePageBuffer;
use crate::parallel::{for_each_block, SharedOutput};
use crate::scratch::Scratch;

mod blocks;
mod space_to_depth;

pub(in crate::gemm) use blocks::{blocks_fit_tiles, forward_blocks, BlockLayers, BlockShapes};

use space_to_depth::{pack_space_to_depth, space_to_depth_images, space_to_depth_weight, weight_from_cells};

/// Channels in one step of the inner dimension: 16 pairs.
const STEP_CHANNELS: usize = 2 * TILE;
/// The most channels that folding a kernel's columns into them may make:
/// one step (ResNet's 3 × 7 = 21). Past it a strided convolution goes to
/// the image's space-to-depth ([`ConvShape::space_to_depth`]): AlexNet's
/// 3 × 11 = 33, padded to two steps for each of 11 kernel rows, takes 22
/// steps on planes where its cells take 18 on rows.
const MAX_FOLDED_CHANNELS: usize = STEP_CHANNELS;
/// Bytes of packed weight (whole row blocks, at least one) that one pass
/// over the positions keeps in L2 while they stream past it.
const WEIGHT_GROUP_BYTES: usize = 512 * 1024;
/// Bytes of planes (whole images, at least one) that a worker lays out
/// at a time in the forward pass when it has images of its own and the
/// weight comes in several groups: each group is read once for them all.
const PLANES_CHUNK_BYTES: usize = 1024 * 1024;

impl ConvShape {
    /// Whether the tiles take this shape whole: output channels in whole
    /// row blocks; channels in whole steps with stride 1 or 2 (every ResNet
    /// layer past the stem), or few enough to fold the kernel's columns
    /// into one step (ResNet's stem) or to cut a strided map into cells
    /// (AlexNet's stem, [`Self::space_to_depth`]); and a map at least the
    /// kernel.
    pub(in crate::gemm) fn fits_tiles(&self) -> bool {
        let channels_fit = if self.folds_columns() {
            self.channels * self.kernel_w <= MAX_FOLDED_CHANNELS || self.space_to_depth().is_some()
        } else {
            (1..=2).contains(&self.stride)
        };
        channels_fit
            && self.out_channels.is_multiple_of(MR)
            && self.channels > 0
            && self.out_channels > 0
            && self.stride > 0
            && self.height + 2 * self.padding >= self.kernel_h
            && self.width + 2 * self.padding >= self.kernel_w
    }

    /// Whether [`weight_gradient`] takes this shape: one the forward pass
    /// takes, at stride 1 with channels in whole steps, or cut into cells
    /// that it takes.
    pub(in crate::gemm) fn gradient_fits_tiles(&self) -> bool {
        let fits = match self.space_to_depth() {
            Some(cells) => cells.gradient_fits_tiles(),
            None => self.stride == 1 && !self.folds_columns(),
        };
        self.fits_tiles() && fits
    }

    /// Whether the kernel's columns are folded into the channels: where
    /// the channels do not come in whole steps, the inner dimension is
    /// channel `c` at kernel column `kx` as channel `c·kw + kx`, each
    /// kernel row a step.
    fn folds_columns(&self) -> bool {
        !self.channels.is_multiple_of(STEP_CHANNELS)
    }

    /// Channels of the inner dimension per tap: the channels, or folded
    /// with the kernel's columns and padded to whole steps.
    fn inner_channels(&self) -> usize {
        if self.folds_columns() {
            (self.channels * self.kernel_w).next_multiple_of(STEP_CHANNELS)
        } else {
            self.channels
        }
    }

    /// Kernel columns read as taps of their own (one where folded).
    fn tap_columns(&self) -> usize {
        if self.folds_columns() {
            1
        } else {
            self.kernel_w
        }
    }

    /// How the image meets the weight on the tiles: as rows of one
    /// position's 32 channels on the left of the products, the weight on the
    /// right ([`pack_rows`]), wherever the channels come in whole steps; as
    /// planes of folded channel pairs on the right ([`pack_folded`]) where
    /// they are folded.
    fn operands(&self) -> Operands {
        if self.folds_columns() {
            Operands::PackedLeft
        } else {
            Operands::PackedRight
        }
    }

    /// Bytes from one position to the next in the image's layout: a pair
    /// of a plane, or a row of 32 channels.
    fn position_bytes(&self) -> usize {
        match self.operands() {
            Operands::PackedLeft => 4,
            Operands::PackedRight => 4 * TILE,
        }
    }

    fn padded_h(&self) -> usize {
        self.height + 2 * self.padding
    }

    fn padded_w(&self) -> usize {
        self.width + 2 * self.padding
    }

    fn out_h(&self) -> usize {
        (self.padded_h() - self.kernel_h) / self.stride + 1
    }

    fn out_w(&self) -> usize {
        (self.padded_w() - self.kernel_w) / self.stride + 1
    }

    /// Rows of each phase of the padded map.
    fn phase_h(&self) -> usize {
        self.padded_h().div_ceil(self.stride)
    }

    /// The width that positions are taken on: a phase's (the padded width
    /// over the stride, rounded up), or the output's where folded (the
    /// taps of a row are the channels there).
    fn plane_w(&self) -> usize {
        if self.folds_columns() {
            self.out_w()
        } else {
            self.padded_w().div_ceil(self.stride)
        }
    }

    /// Phases of rows and of columns that some tap reads (a 1×1 kernel
    /// reads only the first of each; folded columns have none).
    fn row_phases(&self) -> usize {
        self.stride.min(self.kernel_h)
    }

    fn column_phases(&self) -> usize {
        self.stride.min(self.tap_columns())
    }

    /// Positions on [`Self::plane_w`], rounded up to whole blocks of [`NR`].
    fn positions(&self) -> usize {
        (self.out_h() * self.plane_w()).next_multiple_of(NR)
    }

    /// Positions in one phase of the map: the phase's map, and room for the
    /// last block's reads past it (at most `NR + kernel_w`; zeros). A
    /// phase of a channel pair's plane holds a pair per position; of a
    /// block of channels' rows, a row per position.
    fn phase_len(&self) -> usize {
        self.phase_h() * self.plane_w() + NR + self.kernel_w
    }

    /// Positions in one channel pair's plane, or in one block of channels'
    /// rows: the phases one after another.
    fn plane_len(&self) -> usize {
        self.row_phases() * self.column_phases() * self.phase_len()
    }

    /// Pairs in one image's planes or rows.
    fn planes_len(&self) -> usize {
        self.inner_channels() / 2 * self.plane_len()
    }

    /// Steps of the inner dimension: each tap, each [`STEP_CHANNELS`].
    fn steps(&self) -> usize {
        self.kernel_h * self.tap_columns() * self.channel_blocks()
    }

    /// Blocks of [`STEP_CHANNELS`] in the inner dimension.
    fn channel_blocks(&self) -> usize {
        self.inner_channels() / STEP_CHANNELS
    }

    /// The step that multiplies block `channel_block` of the channels at
    /// tap `tap` (`ky · tap_columns + kx`): channel blocks outer, taps
    /// inner, so that a block's taps, which read the same few lines of its
    /// 16 planes, run one after another and find them in L1 (taps outer
    /// read every plane's lines once per tap, from L2).
    fn step(&self, channel_block: usize, tap: usize) -> usize {
        channel_block * self.kernel_h * self.tap_columns() + tap
    }

    /// Where each step's tile rows start in the image's layout (bytes), in
    /// the order of [`Self::step`]: its rows one plane apart in planes, one
    /// after the other in rows.
    fn step_offsets(&self) -> Vec<usize> {
        let (s, wq) = (self.stride, self.plane_w());
        let plane_bytes = self.plane_len() * 4;
        let mut offsets = vec![0; self.steps()];
        for block in 0..self.channel_blocks() {
            for ky in 0..self.kernel_h {
                for kx in 0..self.tap_columns() {
                    let phase = (ky % s) * self.column_phases() + kx % s;
                    let within = phase * self.phase_len() + ky / s * wq + kx / s;
                    offsets[self.step(block, ky * self.tap_columns() + kx)] =
                        within * self.position_bytes() + block * TILE * plane_bytes;
                }
            }
        }
        offsets
    }

    /// For each step, the rows of the planes that it fetches ahead into L1
    /// ([`Tiles::b_ahead`](super::Tiles)): a step of a kernel column's first
    /// tap fetches the lines that its tap reads in the next block of
    /// channels (from the first block, of the next block of positions,
    /// after the last), which the block's other taps of that kernel row
    /// then find too.
    fn steps_ahead(&self, offsets: &[usize]) -> Vec<usize> {
        let (blocks, taps) = (self.channel_blocks(), self.kernel_h * self.tap_columns());
        let mut ahead = vec![super::NOTHING_AHEAD; offsets.len()];
        for block in 0..blocks {
            for tap in (0..taps).step_by(self.tap_columns()) {
                ahead[self.step(block, tap)] = if block + 1 < blocks {
                    offsets[self.step(block + 1, tap)]
                } else {
                    offsets[self.step(0, tap)] + NR * self.position_bytes()
                };
            }
        }
        ahead
    }

    fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    fn output_len(&self) -> usize {
        self.out_channels * self.out_h() * self.out_w()
    }
}

/// A weight (`out_channels × channels × kh × kw`) rounded and packed in
/// tile order for the steps of [`ConvShape::step_offsets`]: row block after
/// row block of [`MR`] output channels, each step's two tiles, on the side
/// of the products [`ConvShape::operands`] puts it (on the left, a tile's
/// rows are output channels; on the right, its columns). A frozen weight
/// keeps it.
pub(in crate::gemm) struct PackedWeight {
    out_channels: usize,
    channels: usize,
    kernel: (usize, usize),
    pairs: HugePageBuffer,
}

impl PackedWeight {
    /// Packs `weight` for `shape`'s channels and kernel, read in
    /// `orientation`, row blocks in parallel. The caller has checked the
    /// CPU (AVX512-BF16).
    pub(in crate::gemm) fn new(weight: &[f32], shape: &ConvShape, orientation: Orientation) -> Self {
        match shape.space_to_depth() {
            Some(cells) => {
                // Only a forward pass is strided: an input gradient is
                // the stride-1 convolution of a flipped weight.
                assert_eq!(
                    orientation,
                    Orientation::AsIs,
                    "direct tile convolution: a space-to-depth weight read as it is"
                );
                Self {
                    channels: shape.channels,
                    kernel: (shape.kernel_h, shape.kernel_w),
                    ..Self::packed(&space_to_depth_weight(weight, shape, &cells), &cells, orientation)
                }
            }
            None => Self::packed(weight, shape, orientation),
        }
    }

    /// [`Self::new`] for a shape that the tiles compute as it is.
    fn packed(weight: &[f32], shape: &ConvShape, orientation: Orientation) -> Self {
        let (o, c, kw, taps) = (
            shape.out_channels,
            shape.channels,
            shape.kernel_w,
            shape.kernel_h * shape.kernel_w,
        );
        assert_eq!(weight.len(), o * c * taps, "direct tile convolution: weight length");
        assert!(
            i32::try_from(weight.len()).is_ok(),
            "direct tile convolution: a weight of {} values is past the gathers' reach",
            weight.len()
        );
        // Where output channel `k`'s value of channel `channel` at tap
        // `tap` lies in `weight`: `k`'s first, and the strides of channels.
        let first = |k: usize, tap: usize| match orientation {
            Orientation::AsIs => k * c * taps + tap,
            Orientation::FlippedTransposed => k * taps + taps - 1 - tap,
        };
        let channel_stride = match orientation {
            Orientation::AsIs => taps,
            Orientation::FlippedTransposed => o * taps,
        };
        let block_len = MR * shape.steps() * TILE;
        let mut pairs = HugePageBuffer::zeroed(o / MR * block_len);
        let pack_block = |(row_block, block): (usize, &mut [u32])| {
            for row in 0..MR {
                let k = row_block * MR + row;
                if shape.folds_columns() {
                    // One output channel's weights kernel row by kernel
                    // row, each row's channels with their columns folded
                    // in, a step per block of them (a kernel row is a tap).
                    let mut by_row = vec![0f32; shape.steps() * STEP_CHANNELS];
                    for channel in 0..c {
                        for tap in 0..taps {
                            let at = (tap / kw) * shape.inner_channels() + channel * kw + tap % kw;
                            by_row[at] = weight[first(k, tap) + channel * channel_stride];
                        }
                    }
                    for (at, channels) in by_row.chunks_exact(STEP_CHANNELS).enumerate() {
                        let (ky, channel_block) = (at / shape.channel_blocks(), at % shape.channel_blocks());
                        // SAFETY: the caller checked the CPU (AVX512-BF16).
                        unsafe { store_tile_row(block, shape.step(channel_block, ky), row, channels) };
                    }
                } else {
                    for tap in 0..taps {
                        let row_start = &weight[first(k, tap)..];
                        for channel_block in 0..shape.channel_blocks() {
                            let step = shape.step(channel_block, tap);
                            let channels = &row_start[channel_block * STEP_CHANNELS * channel_stride..];
                            // SAFETY: the caller checked the CPU; the 32
                            // channels of this block lie inside `weight`
                            // (`channels` starts at the block's first).
                            unsafe { store_gathered_tile_row(block, step, row, channels, channel_stride) };
                        }
                    }
                }
            }
            if shape.operands() == Operands::PackedRight {
                // The weight on the right: each tile's rows the step's
                // pairs, its columns the output channels.
                for tile in block.chunks_exact_mut(TILE * TILE) {
                    // SAFETY: the caller checked the CPU (AVX-512F).
                    unsafe { transpose_tile(tile) };
                }
            }
        };
        pairs.par_chunks_mut(block_len).enumerate().for_each(pack_block);
        Self {
            out_channels: o,
            channels: c,
            kernel: (shape.kernel_h, shape.kernel_w),
            pairs,
        }
    }

    /// Whether this is the packing of a weight of `shape`'s.
    fn is_for(&self, shape: &ConvShape) -> bool {
        (self.out_channels, self.channels, self.kernel)
            == (shape.out_channels, shape.channels, (shape.kernel_h, shape.kernel_w))
    }
}

/// A 16 × 16 tile of pairs transposed in place.
#[target_feature(enable = "avx512f")]
fn transpose_tile(tile: &mut [u32]) {
    assert_eq!(tile.len(), TILE * TILE, "a tile of 16 × 16 pairs");
    let mut rows = [_mm512_setzero_si512(); TILE];
    for (row, vector) in rows.iter_mut().enumerate() {
        // SAFETY: row `row` of the tile is 16 pairs, 512 bits.
        *vector = unsafe { _mm512_loadu_si512(tile[row * TILE..].as_ptr().cast()) };
    }
    for (column, vector) in transpose_16x16(rows).iter().enumerate() {
        // SAFETY: as above.
        unsafe { _mm512_storeu_si512(tile[column * TILE..].as_mut_ptr().cast(), *vector) };
    }
}

/// [`STEP_CHANNELS`] values `stride` apart from the first of `values`,
/// rounded to bf16 and stored as row `row` of tile step `step` of a packed
/// block ([`store_tile_row`]'s layout), gathered 16 at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn store_gathered_tile_row(block: &mut [u32], step: usize, row: usize, values: &[f32], stride: usize) {
    assert!(
        (STEP_CHANNELS - 1) * stride < values.len(),
        "tile row gather past the weight"
    );
    let stride = stride as i32;
    let lanes = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(stride),
    );
    let target = &mut block[super::tile_offset(step, row)..][..TILE];
    // SAFETY: the 32 gathered elements lie inside `values` (asserted; the
    // weight's length fits an i32, so the offsets do); `target` holds 16
    // pairs, 512 bits.
    unsafe {
        let low = _mm512_i32gather_ps::<4>(lanes, values.as_ptr().cast());
        let high = _mm512_i32gather_ps::<4>(lanes, values.as_ptr().add(16 * stride as usize).cast());
        let pairs = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
        _mm512_storeu_si512(target.as_mut_ptr().cast(), pairs);
    }
}

/// Room for the layouts of a few images of one shape, by [`pack_rows`],
/// [`pack_folded`] or [`pack_space_to_depth`]: each writes the same pairs
/// for every image of a shape and no others, so the pairs around the maps
/// stay the zeros they were made with, and an image laid out over another
/// leaves nothing of it.
struct ImagePlanes<'a> {
    /// The images' shape.
    source: &'a ConvShape,
    /// The shape the tiles compute theirs as ([`ConvShape::computed_as`]).
    shape: ConvShape,
    pairs: Vec<u32>,
}

impl<'a> ImagePlanes<'a> {
    /// Zeros for `images` images of `source`.
    fn new(source: &'a ConvShape, images: usize) -> Self {
        let shape = source.computed_as();
        Self {
            source,
            shape,
            pairs: {
                let mut pairs = vec![0; images * shape.planes_len()];
                crate::huge_pages::advise_huge_pages(&mut pairs);
                pairs
            },
        }
    }

    /// Lays out image `x` (`C × H × W`) in slot `slot`.
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and BF16.
    unsafe fn pack(&mut self, slot: usize, x: &[f32]) {
        let (source, shape, len) = (self.source, &self.shape, self.shape.planes_len());
        let planes = &mut self.pairs[slot * len..][..len];
        // SAFETY: the caller checked the CPU.
        unsafe {
            if shape.stride != source.stride {
                pack_space_to_depth(x, source, shape, planes)
            } else if shape.folds_columns() {
                pack_folded(x, shape, planes)
            } else {
                pack_rows(x, shape, planes)
            }
        }
    }

    /// The images' planes, slot after slot.
    fn laid_out(&self) -> &[u32] {
        &self.pairs
    }

    /// The planes of every slot, shared out to writers that write the same
    /// pairs as [`Self::pack`] (and no others), each its own.
    fn shared(&mut self) -> SharedOutput<'_, u32> {
        SharedOutput::new(&mut self.pairs)
    }
}

/// Image `x` as planes of folded channel pairs: folded channel `c·kw + kx`
/// at output column `ox` of a padded row holds that row's padded column
/// `s·ox + kx` of channel `c`; each plane the phases of the rows that some
/// tap reads, zeros around and after them (left as they are), and the
/// folded channels past `c·kw` zero (not written).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pack_folded(x: &[f32], shape: &ConvShape, planes: &mut [u32]) {
    let (c, h, w, p, s, kw) = (
        shape.channels,
        shape.height,
        shape.width,
        shape.padding,
        shape.stride,
        shape.kernel_w,
    );
    let (ow, phase_len, plane_len) = (shape.out_w(), shape.phase_len(), shape.plane_len());
    // One padded row of each channel split into its column phases: phase
    // `rx` holds padded columns `s·t + rx`, as far as output column
    // `ow - 1` reads with the farthest kernel column, and a vector past it
    // (zeros). Every row writes the same elements, so the padding's stay
    // the zeros they were made with.
    let phase_columns = ow + (kw - 1) / s + 16;
    let mut phases = vec![0f32; c * s * phase_columns];
    for y in 0..h {
        let (row_phase, row) = ((y + p) % s, (y + p) / s);
        if row_phase >= shape.row_phases() {
            continue;
        }
        for channel in 0..c {
            let input = &x[(channel * h + y) * w..][..w];
            for rx in 0..s {
                // Padded column `s·t + rx` is input column `s·t + rx − p`:
                // from the first `t` at or past the padding, while inside the row.
                let first = p.saturating_sub(rx).div_ceil(s);
                let phase = &mut phases[(channel * s + rx) * phase_columns..][..phase_columns];
                let columns = input.get(s * first + rx - p..).unwrap_or_default().iter().step_by(s);
                for (out, &value) in phase[first.min(phase_columns)..].iter_mut().zip(columns) {
                    *out = value;
                }
            }
        }
        // Folded channel `c·kw + kx` of this row: phase `kx mod s` of
        // channel `c`, from `⌊kx/s⌋`.
        let folded = |index: usize| {
            (index < c * kw).then(|| {
                let (channel, kx) = (index / kw, index % kw);
                &phases[(channel * s + kx % s) * phase_columns + kx / s..]
            })
        };
        let row_start = row_phase * phase_len + row * ow;
        for (pair, plane) in planes.chunks_exact_mut(plane_len).enumerate() {
            let (low, high) = (folded(2 * pair), folded(2 * pair + 1));
            if low.is_none() && high.is_none() {
                continue;
            }
            let load = |values: Option<&[f32]>, first: usize, mask: __mmask16| match values {
                // SAFETY: a phase's row runs a vector past any `first` below
                // `ow`.
                Some(values) => unsafe { _mm512_maskz_loadu_ps(mask, values[first..].as_ptr()) },
                None => _mm512_setzero_ps(),
            };
            let out = &mut plane[row_start..][..ow];
            for first in (0..ow).step_by(16) {
                let mask = first_lanes(ow - first);
                let pairs = pairs_of_rows(load(low, first, mask), load(high, first, mask));
                // SAFETY: the masked store writes the first `ow - first`
                // (at most 16) elements of `out` from `first`.
                unsafe { _mm512_mask_storeu_epi32(out[first..].as_mut_ptr().cast(), mask, pairs) };
            }
        }
    }
}

/// Image `x` as rows: for each block of [`STEP_CHANNELS`] channels, the
/// phases of the padded map that some tap reads, each row by row, a
/// position's 32 channels rounded to 16 bf16 pairs (64 bytes) in a row of
/// their own; zeros around and after the maps (left as they are).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pack_rows(x: &[f32], shape: &ConvShape, rows: &mut [u32]) {
    let (h, w, p, s) = (shape.height, shape.width, shape.padding, shape.stride);
    let (wq, phase_len, column_phases) = (shape.plane_w(), shape.phase_len(), shape.column_phases());
    let map = h * w;
    for (block, block_rows) in rows.chunks_exact_mut(shape.plane_len() * TILE).enumerate() {
        let channels = &x[block * STEP_CHANNELS * map..][..STEP_CHANNELS * map];
        for y in 0..h {
            let (row_phase, row) = ((y + p) % s, (y + p) / s);
            if row_phase >= shape.row_phases() {
                continue;
            }
            // The row's start in the phase of column phase 0.
            let row_start = row_phase * column_phases * phase_len + row * wq;
            for first in (0..w).step_by(16) {
                let count = 16.min(w - first);
                let mask = first_lanes(count);
                // Vector `k`: channels 2k and 2k + 1 of the 16 columns as
                // pairs; transposed, vector `j` is column `first + j`'s row.
                let mut by_pair = [_mm512_setzero_si512(); TILE];
                for (pair, vector) in by_pair.iter_mut().enumerate() {
                    let low = &channels[2 * pair * map + y * w + first..][..count];
                    let high = &channels[(2 * pair + 1) * map + y * w + first..][..count];
                    // SAFETY: the masked loads read the first `count`
                    // elements of `low` and `high`, `count` long.
                    *vector = unsafe {
                        pairs_of_rows(
                            _mm512_maskz_loadu_ps(mask, low.as_ptr()),
                            _mm512_maskz_loadu_ps(mask, high.as_ptr()),
                        )
                    };
                }
                for (j, pairs) in transpose_16x16(by_pair).iter().take(count).enumerate() {
                    let column = first + j + p;
                    let (column_phase, at) = (column % s, column / s);
                    if column_phase >= column_phases {
                        continue;
                    }
                    let position = row_start + column_phase * phase_len + at;
                    let target = &mut block_rows[position * TILE..][..TILE];
                    // SAFETY: `target` holds 16 pairs, 512 bits.
                    unsafe { _mm512_storeu_si512(target.as_mut_ptr().cast(), *pairs) };
                }
            }
        }
    }
}

/// `y = activation(conv(x, weight) (+ bias) (+ residual))` for the batch
/// (`epilogue`), `y` `batch × out_channels × out_h × out_w`, its tiles
/// multiplied by `kernel`. The
/// caller has checked the CPU (AVX512-BF16, and AMX with the tile data
/// granted for [`TileKernel::Hardware`]).
pub(in crate::gemm) fn forward(
    kernel: TileKernel,
    x: &[f32],
    weight: &PackedWeight,
    epilogue: Epilogue<f32>,
    shape: &ConvShape,
) -> Vec<f32> {
    assert!(shape.fits_tiles(), "direct tile convolution of {shape:?}");
    assert_eq!(
        x.len(),
        shape.batch * shape.image_len(),
        "direct tile convolution: input length"
    );
    assert!(
        weight.is_for(shape),
        "direct tile convolution: a weight packed for another shape"
    );
    assert!(
        epilogue.bias.is_none_or(|bias| bias.len() == shape.out_channels)
            && epilogue
                .residual
                .is_none_or(|residual| residual.len() == shape.batch * shape.output_len()),
        "direct tile convolution: bias or residual length"
    );
    assert!(
        epilogue
            .pool
            .is_none_or(|pool| (pool.in_h, pool.in_w) == (shape.out_h(), shape.out_w()))
            && (epilogue.pool.is_none() || epilogue.residual.is_none()),
        "direct tile convolution: a pooling of another map, or beside a residual"
    );
    // The images are laid out, and the sums written back, for the shape
    // that the tiles compute (the image's cells, where it is cut into them).
    let computed = shape.computed_as();
    let products = TileProducts::new(kernel, weight, &computed);
    let (row_blocks, group, blocks) = (products.row_blocks(), products.group, products.blocks());
    let (planes_len, sums_len) = (computed.planes_len(), products.sums_len());
    let image = |image: usize| &x[image * shape.image_len()..][..shape.image_len()];
    let threads = rayon::current_num_threads();
    let output_len = shape.output_len();
    if threads > 1 && shape.batch >= 2 * threads {
        // Each worker a share of the images; a chunk of them at a time
        // where the weight is read in more than one group.
        let chunk = if group < row_blocks {
            (PLANES_CHUNK_BYTES / (planes_len * 4)).clamp(1, shape.batch / threads)
        } else {
            1
        };
        let scratch = || (ImagePlanes::new(shape, chunk), Scratch::<f32>::stale(sums_len));
        let lay_out = |images: &Range<usize>, planes: &mut ImagePlanes| {
            for (slot, index) in images.clone().enumerate() {
                // SAFETY: the caller checked the CPU.
                unsafe { planes.pack(slot, image(index)) };
            }
        };
        if let Some(pool) = epilogue.pool {
            // Each chunk's output in the worker's own buffer (in cache),
            // pooled from there into the pooled output.
            let pooled_len = shape.out_channels * pool.out_h * pool.out_w;
            let mut y = vec![0f32; shape.batch * pooled_len];
            let pooled = SharedOutput::new(&mut y);
            let scratch = || (scratch(), Scratch::<f32>::stale(chunk * output_len));
            let work =
                |images: Range<usize>, ((planes, sums), outputs): &mut ((ImagePlanes, Scratch<f32>), Scratch<f32>)| {
                    lay_out(&images, planes);
                    let outputs = &mut outputs[..images.len() * output_len];
                    // SAFETY: MaybeUninit<f32> has f32's layout, and only f32
                    // values are written through this view.
                    let view = unsafe { &mut *(std::ptr::from_mut(outputs) as *mut [MaybeUninit<f32>]) };
                    products.run(
                        0..row_blocks,
                        images.clone(),
                        0..blocks,
                        planes.laid_out(),
                        sums,
                        &mut OutputSink::new(&computed, epilogue, &SharedOutput::new(view), images.start),
                    );
                    // SAFETY: these images' pooled outputs are this worker's alone.
                    let target = unsafe { pooled.slice(images.start * pooled_len, images.len() * pooled_len) };
                    pool.pool_relu_planes_here(outputs, target);
                };
            for_each_block(shape.batch, chunk, scratch, work, drop);
            return y;
        }
        let write = |out: &SharedOutput<MaybeUninit<f32>>| {
            let work = |images: Range<usize>, (planes, sums): &mut (ImagePlanes, Scratch<f32>)| {
                lay_out(&images, planes);
                products.run(
                    0..row_blocks,
                    images,
                    0..blocks,
                    planes.laid_out(),
                    sums,
                    &mut OutputSink::new(&computed, epilogue, out, 0),
                );
            };
            for_each_block(shape.batch, chunk, scratch, work, drop);
        };
        // SAFETY: every image, row block and block of positions is run.
        return unsafe { written(shape.batch * output_len, write) };
    }
    // Each image's work shared out: by row blocks where the weight is the
    // larger operand (each worker streams its part of it alone), by
    // positions where the image is; pooled after, in parallel.
    let by_rows = weight.pairs.len() >= planes_len;
    let write = |out: &SharedOutput<MaybeUninit<f32>>| {
        let mut planes = ImagePlanes::new(shape, 1);
        for index in 0..shape.batch {
            // SAFETY: the caller checked the CPU.
            unsafe { planes.pack(0, image(index)) };
            let planes = planes.laid_out();
            let images = index..index + 1;
            if by_rows {
                let work = |rows: Range<usize>, sums: &mut Scratch<f32>| {
                    products.run(
                        rows,
                        images.clone(),
                        0..blocks,
                        planes,
                        sums,
                        &mut OutputSink::new(&computed, epilogue, out, 0),
                    )
                };
                for_each_block(row_blocks, row_blocks, || Scratch::<f32>::stale(sums_len), work, drop);
            } else {
                let work = |position_blocks: Range<usize>, sums: &mut Scratch<f32>| {
                    products.run(
                        0..row_blocks,
                        images.clone(),
                        position_blocks,
                        planes,
                        sums,
                        &mut OutputSink::new(&computed, epilogue, out, 0),
                    )
                };
                for_each_block(blocks, blocks, || Scratch::<f32>::stale(sums_len), work, drop);
            }
        }
    };
    // SAFETY: every image, row block and block of positions is run.
    let y = unsafe { written(shape.batch * output_len, write) };
    match epilogue.pool {
        Some(pool) => pool.pool_relu(&y),
        None => y,
    }
}

/// One convolution's tile products, block by block: its packed weight,
/// where each step reads the planes and what it fetches ahead, and the
/// groups of row blocks that stay in L2.
struct TileProducts<'a> {
    kernel: TileKernel,
    shape: &'a ConvShape,
    packed: &'a [u32],
    offsets: Vec<usize>,
    ahead: Vec<usize>,
    group: usize,
}

/// Where [`TileProducts::run`] hands each block's sums.
trait BlockSink {
    /// Before the products of block `block` of image `image` (in the
    /// batch), `rows` output channels from `channel`.
    fn before(&self, image: usize, block: usize, channel: usize, rows: usize);

    /// Takes that block's sums (`rows` rows of [`NR`]).
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and BF16.
    unsafe fn write(&mut self, sums: &[f32], image: usize, block: usize, channel: usize, rows: usize);
}

impl<'a> TileProducts<'a> {
    fn new(kernel: TileKernel, weight: &'a PackedWeight, shape: &'a ConvShape) -> Self {
        let offsets = shape.step_offsets();
        let ahead = shape.steps_ahead(&offsets);
        let row_blocks = shape.out_channels / MR;
        Self {
            kernel,
            shape,
            packed: &weight.pairs,
            offsets,
            ahead,
            group: (WEIGHT_GROUP_BYTES / (MR * shape.steps() * TILE * 4)).clamp(1, row_blocks),
        }
    }

    fn row_blocks(&self) -> usize {
        self.shape.out_channels / MR
    }

    /// Blocks of [`NR`] positions per image.
    fn blocks(&self) -> usize {
        self.shape.positions() / NR
    }

    /// The sums of one group of row blocks.
    fn sums_len(&self) -> usize {
        self.group * MR * NR
    }

    /// Row blocks `rows` of the weight, group by group, over blocks
    /// `position_blocks` of each image of `images`, whose planes follow one
    /// another in `planes`, each block's sums handed to `sink`: a group of
    /// the weight stays in L2 while every image's positions stream past it.
    fn run(
        &self,
        rows: Range<usize>,
        images: Range<usize>,
        position_blocks: Range<usize>,
        planes: &[u32],
        sums: &mut [f32],
        sink: &mut (impl BlockSink + ?Sized),
    ) {
        let (shape, steps, planes_len) = (self.shape, self.shape.steps(), self.shape.planes_len());
        let (operands, position_pairs) = (shape.operands(), shape.position_bytes() / 4);
        // The rows of a step one plane apart; or, for rows, the stride of
        // the fetches ahead (two 64-byte rows each).
        let b_stride = match operands {
            Operands::PackedLeft => shape.plane_len() * 4,
            Operands::PackedRight => 2 * 4 * TILE,
        };
        assert!(sums.len() >= self.sums_len(), "tile products: room for the sums");
        // SAFETY: whoever made `self` checked the CPU for the hardware's tiles.
        let scope = unsafe { TileScope::enter(self.kernel) };
        for first_row_block in rows.clone().step_by(self.group) {
            let rows_here = self.group.min(rows.end - first_row_block);
            for (slot, image) in images.clone().enumerate() {
                let planes = &planes[slot * planes_len..][..planes_len];
                for block in position_blocks.clone() {
                    let tiles = Tiles {
                        operands,
                        a: self.packed[first_row_block * MR * steps * TILE..].as_ptr(),
                        row_blocks: rows_here,
                        b: planes[block * NR * position_pairs..].as_ptr().cast(),
                        b_steps: &self.offsets,
                        b_ahead: &self.ahead,
                        b_stride,
                        sums: sums.as_mut_ptr(),
                    };
                    let (rows, channel) = (rows_here * MR, first_row_block * MR);
                    sink.before(image, block, channel, rows);
                    // SAFETY: the packed weight holds `rows_here` blocks of
                    // `steps` steps from `first_row_block`; each step's 16
                    // rows of 32 pairs lie inside the image's planes (a
                    // plane holds the last block's positions plus the
                    // farthest tap's offset); `sums` holds `group` blocks of
                    // MR × NR (asserted); the caller checked the CPU
                    // (AVX512-BF16, and AMX for the hardware's tiles).
                    unsafe {
                        tiles.run_in(&scope);
                        sink.write(sums, image, block, channel, rows);
                    }
                }
            }
        }
    }
}

/// A block's sums written to an f32 output (`target`, from the batch's
/// image `first`) with [`write_back`], its lines fetched first with
/// [`prefetch_output`].
struct OutputSink<'a, 'b> {
    shape: &'a ConvShape,
    epilogue: Epilogue<'a, f32>,
    target: &'b SharedOutput<'b, MaybeUninit<f32>>,
    first: usize,
    /// Where sums that come by position are turned by channel.
    by_channel: Vec<f32>,
}

impl<'a, 'b> OutputSink<'a, 'b> {
    fn new(
        shape: &'a ConvShape,
        epilogue: Epilogue<'a, f32>,
        target: &'b SharedOutput<'b, MaybeUninit<f32>>,
        first: usize,
    ) -> Self {
        Self {
            shape,
            epilogue,
            target,
            first,
            by_channel: Vec::new(),
        }
    }
}

impl BlockSink for OutputSink<'_, '_> {
    fn before(&self, image: usize, block: usize, channel: usize, rows: usize) {
        let residual = self.epilogue.residual;
        prefetch_output(
            self.shape,
            image - self.first,
            block,
            channel,
            rows,
            residual,
            self.target,
        );
    }

    unsafe fn write(&mut self, sums: &[f32], image: usize, block: usize, channel: usize, rows: usize) {
        let sums = match self.shape.operands() {
            Operands::PackedLeft => sums,
            Operands::PackedRight => {
                self.by_channel.resize(rows * NR, 0.0);
                // SAFETY: the caller's promise (the CPU).
                unsafe { sums_by_channel(&sums[..rows * NR], &mut self.by_channel) };
                &self.by_channel
            }
        };
        // SAFETY: the caller's promise (the CPU).
        unsafe {
            write_back(
                sums,
                self.shape,
                image - self.first,
                block,
                channel,
                rows,
                self.epilogue,
                self.target,
            )
        }
    }
}

/// A block's sums written as the next convolution's rows (`consumer`, a
/// stride-1 convolution of this one's output; [`ImagePlanes::shared`])
/// with [`write_back_rows`], image `image` of the batch in slot
/// `image - first`, with `residual` added (its images from the same
/// `first`).
struct RowsSink<'a, 'b> {
    producer: &'a ConvShape,
    bias: Option<&'a [f32]>,
    residual: RowsResidual<'a>,
    consumer: ConvShape,
    target: &'b SharedOutput<'b, u32>,
    first: usize,
}

impl BlockSink for RowsSink<'_, '_> {
    fn before(&self, _: usize, _: usize, _: usize, _: usize) {}

    unsafe fn write(&mut self, sums: &[f32], image: usize, block: usize, channel: usize, rows: usize) {
        let slot = image - self.first;
        let residual = self.residual.of_image(slot, self.producer);
        // SAFETY: the caller's promise (the CPU); this block alone writes
        // its positions' rows of these channels.
        unsafe {
            write_back_rows(
                sums,
                (self.producer, block, channel, rows),
                self.bias,
                residual,
                &self.consumer,
                self.target,
                slot * self.consumer.planes_len(),
            )
        }
    }
}

/// What [`write_back_rows`] adds to the sums before the ReLU.
#[derive(Debug, Clone, Copy)]
enum RowsResidual<'a> {
    None,
    /// The rows written over: each position's values before it is
    /// written (the block's input, where its output replaces it).
    InPlace,
    /// f32 values by position ([`ByPositionSink`]'s layout), of the images
    /// from the sink's first, or (after [`Self::of_image`]) of one image.
    ByPosition(&'a [f32]),
}

impl<'a> RowsResidual<'a> {
    /// The residual of slot `slot` alone, for `producer`'s output.
    fn of_image(self, slot: usize, producer: &ConvShape) -> Self {
        match self {
            RowsResidual::ByPosition(values) => {
                let len = producer.output_len();
                RowsResidual::ByPosition(&values[slot * len..][..len])
            }
            other => other,
        }
    }
}

/// Whether [`forward_pair`] takes `first` then `second`: both on the tiles
/// (`first` not cut into cells), `second` a stride-1 convolution (channels in whole steps) of `first`'s
/// output.
pub(in crate::gemm) fn pair_fits_tiles(first: &ConvShape, second: &ConvShape) -> bool {
    first.fits_tiles()
        && first.space_to_depth().is_none()
        && second.fits_tiles()
        && second.stride == 1
        && !second.folds_columns()
        && second.batch == first.batch
        && second.channels == first.out_channels
        && (second.height, second.width) == (first.out_h(), first.out_w())
}

/// One convolution of [`forward_pair`]: its packed weight, its bias and its
/// shape.
pub(in crate::gemm) type PairLayer<'a> = (&'a PackedWeight, Option<&'a [f32]>, &'a ConvShape);

/// `y = relu(conv(relu(conv(x, first) + first's bias), second) + second's
/// bias + residual)` for the batch, `y` `second`'s output, the tiles
/// multiplied by `kernel`: a residual block's two convolutions. `first`'s
/// output never leaves the worker: its write-back rounds each position's
/// output channels into `second`'s rows as [`pack_rows`] would have laid
/// them out, so `y` has the bits of the two convolutions run one after the
/// other. Each worker takes a chunk of images through both. The caller has
/// checked the CPU (AVX512-BF16, and AMX with the tile data granted for
/// [`TileKernel::Hardware`]).
pub(in crate::gemm) fn forward_pair(
    kernel: TileKernel,
    x: &[f32],
    first: PairLayer,
    second: PairLayer,
    residual: &[f32],
) -> Vec<f32> {
    let ((first_weight, first_bias, s1), (second_weight, second_bias, s2)) = (first, second);
    assert!(pair_fits_tiles(s1, s2), "tile convolution pair of {s1:?} and {s2:?}");
    assert_eq!(
        x.len(),
        s1.batch * s1.image_len(),
        "tile convolution pair: input length"
    );
    assert_eq!(
        residual.len(),
        s2.batch * s2.output_len(),
        "tile convolution pair: residual length"
    );
    assert!(
        first_weight.is_for(s1) && second_weight.is_for(s2),
        "tile convolution pair: a weight packed for another shape"
    );
    assert!(
        first_bias.is_none_or(|bias| bias.len() == s1.out_channels)
            && second_bias.is_none_or(|bias| bias.len() == s2.out_channels),
        "tile convolution pair: bias length"
    );
    let (p1, p2) = (
        TileProducts::new(kernel, first_weight, s1),
        TileProducts::new(kernel, second_weight, s2),
    );
    let threads = rayon::current_num_threads();
    // A chunk of images at a time where a weight is read in more than one
    // group, as `forward` does.
    let chunk = if p1.group < p1.row_blocks() || p2.group < p2.row_blocks() {
        (PLANES_CHUNK_BYTES / (s1.planes_len() * 4)).clamp(1, (s1.batch / threads).max(1))
    } else {
        1
    };
    let epilogue = Epilogue {
        bias: second_bias,
        residual: Some(residual),
        activation: Activation::Relu,
        pool: None,
    };
    let sums_len = p1.sums_len().max(p2.sums_len());
    let scratch = || {
        (
            ImagePlanes::new(s1, chunk),
            ImagePlanes::new(s2, chunk),
            Scratch::<f32>::stale(sums_len),
        )
    };
    let write = |out: &SharedOutput<MaybeUninit<f32>>| {
        let work = |images: Range<usize>, (planes1, planes2, sums): &mut (ImagePlanes, ImagePlanes, Scratch<f32>)| {
            for (slot, index) in images.clone().enumerate() {
                // SAFETY: the caller checked the CPU.
                unsafe { planes1.pack(slot, &x[index * s1.image_len()..][..s1.image_len()]) };
            }
            {
                // The first convolution's rows, written before the second reads them.
                let consumer = planes2.shape;
                let target = planes2.shared();
                let mut into_rows = RowsSink {
                    producer: s1,
                    bias: first_bias,
                    residual: RowsResidual::None,
                    consumer,
                    target: &target,
                    first: images.start,
                };
                p1.run(
                    0..p1.row_blocks(),
                    images.clone(),
                    0..p1.blocks(),
                    planes1.laid_out(),
                    sums,
                    &mut into_rows,
                );
            }
            let mut output = OutputSink::new(s2, epilogue, out, 0);
            p2.run(
                0..p2.row_blocks(),
                images,
                0..p2.blocks(),
                planes2.laid_out(),
                sums,
                &mut output,
            );
        };
        for_each_block(s1.batch, chunk, scratch, work, drop);
    };
    // SAFETY: every image, row block and block of positions of `second` is run.
    unsafe { written(s2.batch * s2.output_len(), write) }
}

/// `sums` by position (blocks of [`MR`] positions by [`NR`] output
/// channels, as the tiles store them with the weight on the right) by
/// channel in `by_channel` (blocks of `MR` output channels by `NR`
/// positions, as [`write_back`] reads them), a 16 × 16 quarter at a time.
#[target_feature(enable = "avx512f")]
fn sums_by_channel(sums: &[f32], by_channel: &mut [f32]) {
    const { assert!(MR == NR && MR == 2 * TILE) };
    assert_eq!(sums.len(), by_channel.len(), "sums by channel: lengths");
    for (block, target) in sums.chunks_exact(MR * NR).zip(by_channel.chunks_exact_mut(MR * NR)) {
        for (first_position, first_channel) in [(0, 0), (0, TILE), (TILE, 0), (TILE, TILE)] {
            let mut by_position = [_mm512_setzero_si512(); TILE];
            for (r, vector) in by_position.iter_mut().enumerate() {
                let source = &block[(first_position + r) * NR + first_channel..][..TILE];
                // SAFETY: `source` holds 16 f32, 512 bits.
                *vector = unsafe { _mm512_loadu_si512(source.as_ptr().cast()) };
            }
            for (c, vector) in transpose_16x16(by_position).iter().enumerate() {
                let out = &mut target[(first_channel + c) * NR + first_position..][..TILE];
                // SAFETY: `out` holds 16 f32, 512 bits.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), *vector) };
            }
        }
    }
}

/// Writes a block's sums (`rows` output channels from `first_channel`,
/// whole blocks of [`MR`] of them, by the [`NR`] positions of block
/// `block` of `producer`'s output, each [`MR`] channels' sums by position)
/// into one image's rows of `consumer` (a stride-1 convolution of that
/// output; the image's first pair at `image_start` of `target`), with the
/// bias, the residual and the ReLU, added in that order: each position's
/// 32 channels of a block rounded to bf16 pairs in the row [`pack_rows`]
/// lays that position out at.
///
/// # Safety
/// The CPU has AVX-512F, BW and BF16; no other writer touches the rows
/// of this block's positions and channels while this runs.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn write_back_rows(
    sums: &[f32],
    (producer, block, first_channel, rows): (&ConvShape, usize, usize, usize),
    bias: Option<&[f32]>,
    residual: RowsResidual,
    consumer: &ConvShape,
    target: &SharedOutput<u32>,
    image_start: usize,
) {
    debug_assert!(consumer.stride == 1 && first_channel.is_multiple_of(STEP_CHANNELS) && rows.is_multiple_of(MR));
    let (map, ow) = (producer.out_h() * producer.out_w(), producer.out_w());
    for row_block in 0..rows / MR {
        let channel = first_channel + row_block * MR;
        // SAFETY: the CPU has AVX-512F (this function's features).
        let (low_bias, high_bias) = unsafe { bias_vectors(bias, channel) };
        let block_sums = &sums[row_block * MR * NR..][..MR * NR];
        for (in_block, at, len) in producer.output_runs(block) {
            // A run lies in one output row: its rows follow one another.
            let start = image_start + consumer.row_start(channel, at / ow, at % ow);
            for i in 0..len {
                let source = &block_sums[(in_block + i) * NR..][..NR];
                // SAFETY: this block alone writes this row (the caller's
                // promise), 16 pairs inside `target` (bounds checked).
                let out = unsafe { target.slice(start + i * TILE, TILE) };
                // SAFETY: `source` holds 32 f32 and `out` 16 pairs; a
                // residual by position 32 values at each position of each
                // block of 32 channels.
                unsafe {
                    let mut low = _mm512_add_ps(_mm512_loadu_ps(source.as_ptr()), low_bias);
                    let mut high = _mm512_add_ps(_mm512_loadu_ps(source[TILE..].as_ptr()), high_bias);
                    match residual {
                        RowsResidual::None => {}
                        RowsResidual::InPlace => {
                            let (low_residual, high_residual) = widened_row(out);
                            low = _mm512_add_ps(low, low_residual);
                            high = _mm512_add_ps(high, high_residual);
                        }
                        RowsResidual::ByPosition(values) => {
                            let values = &values[by_position_start(map, channel, at + i)..][..MR];
                            low = _mm512_add_ps(low, _mm512_loadu_ps(values.as_ptr()));
                            high = _mm512_add_ps(high, _mm512_loadu_ps(values[TILE..].as_ptr()));
                        }
                    }
                    // As `write_back`'s ReLU: 0 for NaN and -0 alike.
                    low = _mm512_max_ps(low, _mm512_setzero_ps());
                    high = _mm512_max_ps(high, _mm512_setzero_ps());
                    let pairs = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
                    _mm512_storeu_si512(out.as_mut_ptr().cast(), pairs);
                }
            }
        }
    }
}

/// The 32 biases of the block of channels from `channel`, as two vectors
/// (zeros without a bias).
///
/// # Safety
/// The CPU has AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn bias_vectors(bias: Option<&[f32]>, channel: usize) -> (__m512, __m512) {
    match bias {
        Some(bias) => {
            let bias = &bias[channel..][..MR];
            // SAFETY: `bias` holds 32 f32.
            unsafe { (_mm512_loadu_ps(bias.as_ptr()), _mm512_loadu_ps(bias[TILE..].as_ptr())) }
        }
        None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
    }
}

/// Where the 32 values of output position `position` (of `map` per
/// channel) for the block of [`MR`] channels from `channel` start in one
/// image's values by position: for each block of channels, each
/// position's 32 values.
fn by_position_start(map: usize, channel: usize, position: usize) -> usize {
    (channel / MR * map + position) * MR
}

impl ConvShape {
    /// Where the row of the previous convolution's output position `(y, x)`
    /// for the block of [`STEP_CHANNELS`] channels from `channel` starts in
    /// one image's rows of this stride-1 convolution ([`pack_rows`]'s
    /// layout), in pairs: padded row `y + p`, column `x + p`.
    fn row_start(&self, channel: usize, y: usize, x: usize) -> usize {
        let position = (y + self.padding) * self.plane_w() + self.padding + x;
        (channel / STEP_CHANNELS * self.plane_len() + position) * TILE
    }
}

/// A row of 16 bf16 pairs (a position's 32 channels, channel `i` in
/// half `i`) as f32: channels 0–15, then 16–31.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn widened_row(row: &[u32]) -> (__m512, __m512) {
    let row = &row[..TILE];
    // SAFETY: `row` holds 16 pairs, 512 bits.
    let pairs = unsafe { _mm512_loadu_si512(row.as_ptr().cast()) };
    // A bf16 is the high half of the f32 it stands for.
    let low = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(pairs)));
    let high = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(pairs)));
    (_mm512_castsi512_ps(low), _mm512_castsi512_ps(high))
}

/// A new buffer of `len` elements, written by `write` straight into its
/// uninitialised memory: no zeroing pass.
///
/// # Safety
/// `write` writes every one of the `len` elements.
unsafe fn written(len: usize, write: impl FnOnce(&SharedOutput<MaybeUninit<f32>>)) -> Vec<f32> {
    let mut y = Vec::with_capacity(len);
    let places = &mut y.spare_capacity_mut()[..len];
    crate::huge_pages::advise_huge_pages(places);
    write(&SharedOutput::new(places));
    // SAFETY: `write` wrote all `len` elements (the caller's promise).
    unsafe { y.set_len(len) };
    y
}

/// Writes a block's sums (`rows` output channels from `first_channel`, the
/// [`NR`] positions of block `block`) to image `image`'s output, with the
/// bias, the residual and the activation, dropping the positions past the
/// output's width and height.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
fn write_back(
    sums: &[f32],
    shape: &ConvShape,
    image: usize,
    block: usize,
    first_channel: usize,
    rows: usize,
    epilogue: Epilogue<f32>,
    out: &SharedOutput<MaybeUninit<f32>>,
) {
    let Epilogue {
        bias,
        residual,
        activation,
        ..
    } = epilogue;
    let map = shape.out_h() * shape.out_w();
    for (in_block, at, len) in shape.output_runs(block) {
        for r in 0..rows {
            let channel = first_channel + r;
            // No closures here: one made in this function takes its target
            // features, and then neither it nor the `Option` method that
            // calls it is inlined (a call, and `vzeroupper`, per row).
            let add = _mm512_set1_ps(match bias {
                Some(bias) => bias[channel],
                None => 0.0,
            });
            let start = image * shape.output_len() + channel * map + at;
            // SAFETY: this block alone writes these positions of this
            // image (blocks of positions are dealt out whole).
            let target = unsafe { out.slice(start, len) };
            let source = &sums[r * NR + in_block..][..len];
            #[allow(clippy::manual_map)]
            let residual = match residual {
                Some(residual) => Some(&residual[start..][..len]),
                None => None,
            };
            for first in (0..len).step_by(16) {
                let mask = first_lanes(len - first);
                // SAFETY: the masked loads and store touch the first
                // `len - first` (at most 16) elements from `first` of
                // `source`, `residual` and `target`, all `len` long.
                unsafe {
                    let mut y = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, source[first..].as_ptr()), add);
                    if let Some(residual) = residual {
                        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, residual[first..].as_ptr()));
                    }
                    if activation == Activation::Relu {
                        // The second operand where either is NaN or
                        // both are zeros: 0 for NaN and -0 alike.
                        y = _mm512_max_ps(y, _mm512_setzero_ps());
                    }
                    _mm512_mask_storeu_ps(target[first..].as_mut_ptr().cast(), mask, y);
                }
            }
        }
    }
}

/// Fetches into cache, ahead of [`write_back`] of the same block, the lines
/// it will read of the residual and write of the output: a block's runs lie
/// in as many planes as it has output channels, more streams than the
/// hardware's prefetchers follow, and the tile products of the block take
/// long enough to hide the misses.
#[allow(clippy::too_many_arguments)]
fn prefetch_output(
    shape: &ConvShape,
    image: usize,
    block: usize,
    first_channel: usize,
    rows: usize,
    residual: Option<&[f32]>,
    out: &SharedOutput<MaybeUninit<f32>>,
) {
    let map = shape.out_h() * shape.out_w();
    for (_, at, len) in shape.output_runs(block) {
        for channel in first_channel..first_channel + rows {
            let start = image * shape.output_len() + channel * map + at;
            for line in cache_lines(out.address(start, len).cast(), len) {
                // SAFETY: a prefetch reads and writes nothing; the lines
                // hold elements of the output (bounds checked).
                unsafe { _mm_prefetch::<_MM_HINT_ET0>(line) };
            }
            if let Some(residual) = residual {
                for line in cache_lines(residual[start..][..len].as_ptr(), len) {
                    // SAFETY: as above, elements of the residual.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(line) };
                }
            }
        }
    }
}

/// The addresses of the cache lines that hold `len` elements from `first`.
fn cache_lines(first: *const f32, len: usize) -> impl Iterator<Item = *const i8> {
    let (start, end) = (first as usize, first as usize + len * 4);
    ((start & !63)..end).step_by(64).map(|line| line as *const i8)
}

impl ConvShape {
    /// The runs of block `block`'s positions inside the output, row by
    /// row: each one's offset in the block, its start in an output
    /// channel's map and its length (the positions past the output's
    /// width and height dropped).
    fn output_runs(&self, block: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (wp, out_h, out_w) = (self.plane_w(), self.out_h(), self.out_w());
        let (first, end) = (block * NR, (block + 1) * NR);
        let row_starts = (first / wp..)
            .map(move |row| row * wp)
            .take_while(move |&start| start < end);
        row_starts.filter_map(move |row_start| {
            let (row, v) = (row_start / wp, row_start.max(first));
            let (column, run_end) = (v - row_start, end.min(row_start + wp));
            (row < out_h && column < out_w)
                .then(|| (v - first, row * out_w + column, (run_end - v).min(out_w - column)))
        })
    }
}

impl ConvShape {
    /// How far the last tap reads past a position, on the padded width.
    fn farthest_tap(&self) -> usize {
        (self.kernel_h - 1) * self.padded_w() + self.kernel_w - 1
    }

    /// Pairs of positions one image takes in [`weight_gradient`]'s
    /// operands: its positions on the padded width, plus room for the
    /// farthest tap's shift (so that an image's taps read only its own
    /// inputs where its `dy` is not zero), in whole steps.
    fn gradient_pairs(&self) -> usize {
        (self.out_h() * self.padded_w() + self.farthest_tap() + 1)
            .div_ceil(2)
            .next_multiple_of(TILE)
    }
}

/// Bytes of operands (`dy` and both layouts of the image) that one chunk of
/// [`weight_gradient`]'s images fills, at least one image: the chunk runs
/// as one inner dimension, its operands read again for every tap.
const GRADIENT_CHUNK_BYTES: usize = 1536 * 1024;

/// `dW = Σ_b dy_b ⋆ x_b`, the weight gradient of a stride-1 convolution of
/// `shape` (`dy` `batch × out_channels × out_h × out_w`), as
/// `out_channels × channels × kh × kw`, its tiles multiplied by `kernel`;
/// of a strided one cut into cells, the gradient of the cells' stride-1
/// convolution (the images cut into cells in f32), read back.
///
/// For each tap, `dW_tap = dy · X_tapᵀ` over the positions: `dy` in tile
/// order (rows the output channels, pairs of positions on the padded width,
/// zeros past the output's width), and `X_tap` the padded image from the
/// tap's shift, as rows of 16 pairs of positions by channels: an even shift
/// starts on a pair of the image's positions, an odd one between two, so
/// the image is laid out both ways. Images of one worker's chunk follow
/// one another along the positions. The caller has checked the CPU
/// (AVX512-BF16, and AMX for [`TileKernel::Hardware`]).
pub(in crate::gemm) fn weight_gradient(kernel: TileKernel, dy: &[f32], x: &[f32], shape: &ConvShape) -> Vec<f32> {
    assert!(shape.gradient_fits_tiles(), "tile weight gradient of {shape:?}");
    if let Some(cells) = shape.space_to_depth() {
        // The gradient of the cells' stride-1 convolution, read back.
        let cell_images = space_to_depth_images(x, shape, &cells);
        return weight_from_cells(&weight_gradient(kernel, dy, &cell_images, &cells), shape, &cells);
    }
    assert_eq!(
        x.len(),
        shape.batch * shape.image_len(),
        "tile weight gradient: input length"
    );
    assert_eq!(
        dy.len(),
        shape.batch * shape.output_len(),
        "tile weight gradient: output gradient length"
    );
    let (o, c, taps) = (shape.out_channels, shape.channels, shape.kernel_h * shape.kernel_w);
    let pairs = shape.gradient_pairs();
    let image_bytes = (o + 2 * c) * pairs * 4;
    let chunk = (GRADIENT_CHUNK_BYTES / image_bytes).clamp(1, shape.batch);
    let chunks = shape.batch.div_ceil(chunk);
    let work = |images: Range<usize>, sums: &mut TapSums| {
        for chunk_index in images {
            let first = chunk_index * chunk;
            let count = chunk.min(shape.batch - first);
            // SAFETY: the caller checked the CPU.
            unsafe { tap_products(kernel, dy, x, shape, first..first + count, sums) };
        }
    };
    let per_worker = for_each_block(chunks, 1, || TapSums::new(taps * o * c), work, |sums| sums.0);
    // Sums by tap, output channel and channel, added up and turned to
    // output channel, channel and tap: output channels in parallel, each
    // one's row of the gradient written while it sits in cache.
    let mut gradient = vec![0f32; o * c * taps];
    gradient.par_chunks_mut(c * taps).enumerate().for_each(|(k, row)| {
        for tap in 0..taps {
            for sums in &per_worker {
                for (channel, &value) in sums[(tap * o + k) * c..][..c].iter().enumerate() {
                    row[channel * taps + tap] += value;
                }
            }
        }
    });
    gradient
}

/// A worker's sums of [`weight_gradient`], tap by tap, each
/// `out_channels × channels`.
struct TapSums(Vec<f32>);

impl TapSums {
    fn new(len: usize) -> Self {
        Self(vec![0.0; len])
    }
}

/// Adds the tap products of images `images` to `sums`.
///
/// # Safety
/// The CPU has AVX-512F, BW and BF16, and AMX for [`TileKernel::Hardware`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tap_products(
    kernel: TileKernel,
    dy: &[f32],
    x: &[f32],
    shape: &ConvShape,
    images: Range<usize>,
    sums: &mut TapSums,
) {
    let (o, c, wp) = (shape.out_channels, shape.channels, shape.padded_w());
    let pairs = shape.gradient_pairs();
    let steps_per_image = pairs / TILE;
    let steps = images.len() * steps_per_image;
    // Past the last image: room for the farthest shift and a step.
    let layout_pairs = images.len() * pairs + shape.farthest_tap() / 2 + 2 * TILE;
    // `dy` in tile order: row block after row block of MR output channels,
    // each `steps` steps of two tiles.
    let mut a = HugePageBuffer::zeroed(o * steps * TILE);
    let mut row = vec![0f32; 2 * pairs];
    for (n, image) in images.clone().enumerate() {
        for k in 0..o {
            row.fill(0.0);
            let plane = &dy[(image * o + k) * shape.out_h() * shape.out_w()..][..shape.out_h() * shape.out_w()];
            for (y, values) in plane.chunks_exact(shape.out_w()).enumerate() {
                row[y * wp..][..values.len()].copy_from_slice(values);
            }
            let block = &mut a[k / MR * MR * steps * TILE..][..MR * steps * TILE];
            for (step, values) in row.chunks_exact(2 * TILE).enumerate() {
                store_tile_row(block, n * steps_per_image + step, k % MR, values);
            }
        }
    }
    // The images by pairs of positions (rows) and channels: from an even
    // position, and from an odd one.
    let mut even = HugePageBuffer::zeroed(layout_pairs * c);
    let mut odd = HugePageBuffer::zeroed(layout_pairs * c);
    let (h, w, p) = (shape.height, shape.width, shape.padding);
    let mut padded = vec![0f32; 16 * (2 * pairs + 1)];
    for (n, image) in images.clone().enumerate() {
        for first_channel in (0..c).step_by(16) {
            padded.fill(0.0);
            for lane in 0..16 {
                let channel = &x[(image * c + first_channel + lane) * h * w..][..h * w];
                let target = &mut padded[lane * (2 * pairs + 1)..][..2 * pairs + 1];
                for (y, values) in channel.chunks_exact(w).enumerate() {
                    target[(y + p) * wp + p..][..w].copy_from_slice(values);
                }
            }
            for first_pair in (0..pairs).step_by(TILE) {
                for (from, layout) in [(0, &mut even), (1, &mut odd)] {
                    let mut lanes = [_mm512_setzero_si512(); 16];
                    for (lane, vector) in lanes.iter_mut().enumerate() {
                        let start = lane * (2 * pairs + 1) + 2 * first_pair + from;
                        *vector = rounded_pairs(&padded[start..start + 2 * TILE]);
                    }
                    for (r, by_channel) in transpose_16x16(lanes).iter().enumerate() {
                        let at = (n * pairs + first_pair + r) * c + first_channel;
                        // SAFETY: the row holds 16 channels from `at`, 512 bits.
                        unsafe { _mm512_storeu_si512(layout[at..][..16].as_mut_ptr().cast(), *by_channel) };
                    }
                }
            }
        }
    }
    let b_steps: Vec<usize> = (0..steps).map(|step| step * TILE * c * 4).collect();
    let nothing_ahead = vec![super::NOTHING_AHEAD; steps];
    let row_blocks = o / MR;
    let group = (WEIGHT_GROUP_BYTES / (MR * steps * TILE * 4)).clamp(1, row_blocks);
    let mut block_sums = vec![0f32; group * MR * NR];
    // SAFETY: the caller checked the CPU for the hardware's tiles.
    let scope = unsafe { TileScope::enter(kernel) };
    for ky in 0..shape.kernel_h {
        for kx in 0..shape.kernel_w {
            let (tap, shift) = (ky * shape.kernel_w + kx, ky * wp + kx);
            let layout = if shift.is_multiple_of(2) { &even } else { &odd };
            for first_channel in (0..c).step_by(NR) {
                for first_row_block in (0..row_blocks).step_by(group) {
                    let rows_here = group.min(row_blocks - first_row_block);
                    let tiles = Tiles {
                        operands: Operands::PackedLeft,
                        a: a[first_row_block * MR * steps * TILE..].as_ptr(),
                        row_blocks: rows_here,
                        b: layout[shift / 2 * c + first_channel..].as_ptr().cast(),
                        b_steps: &b_steps,
                        b_ahead: &nothing_ahead,
                        b_stride: c * 4,
                        sums: block_sums.as_mut_ptr(),
                    };
                    // SAFETY: `a` holds `rows_here` blocks of `steps` steps
                    // from `first_row_block`; from the shift, each step's 16
                    // rows of 32 channels lie inside the layout (it runs
                    // past the last image by the farthest shift and a
                    // step); `block_sums` holds `group` blocks of MR × NR;
                    // the caller checked the CPU.
                    unsafe { tiles.run_in(&scope) }
                    let by_tap = &mut sums.0[tap * o * c..][..o * c];
                    for (r, values) in block_sums[..rows_here * MR * NR].chunks_exact(NR).enumerate() {
                        let k = first_row_block * MR + r;
                        for (target, &value) in by_tap[k * c + first_channel..][..NR].iter_mut().zip(values) {
                            *target += value;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::InstructionSet;

    /// Values spread over a few binades, signs mixed.
    pub(super) fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let x = ((i * 7919 + seed * 104_729) % 10_007) as f32 / 10_007.0;
                (x - 0.45) * (1.0 + (i % 3) as f32)
            })
            .collect()
    }

    /// The convolution in f64 of the operands rounded to bf16, and the sums
    /// of the products' magnitudes.
    fn reference(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> (Vec<f64>, Vec<f64>) {
        let round = |v: f32| f64::from(super::super::super::round_to_bf16(v));
        let (oh, ow) = (s.out_h(), s.out_w());
        let mut sums = vec![0.0; s.batch * s.output_len()];
        let mut magnitudes = vec![0.0; sums.len()];
        for b in 0..s.batch {
            for k in 0..s.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let at = ((b * s.out_channels + k) * oh + oy) * ow + ox;
                        let mut sum = bias.map_or(0.0, |bias| f64::from(bias[k]));
                        let mut magnitude = sum.abs();
                        for c in 0..s.channels {
                            for ky in 0..s.kernel_h {
                                for kx in 0..s.kernel_w {
                                    let (iy, ix) = (
                                        (oy * s.stride + ky) as isize - s.padding as isize,
                                        (ox * s.stride + kx) as isize - s.padding as isize,
                                    );
                                    if iy < 0 || ix < 0 || iy >= s.height as isize || ix >= s.width as isize {
                                        continue;
                                    }
                                    let xv = round(
                                        x[((b * s.channels + c) * s.height + iy as usize) * s.width + ix as usize],
                                    );
                                    let wv = round(weight[((k * s.channels + c) * s.kernel_h + ky) * s.kernel_w + kx]);
                                    sum += xv * wv;
                                    magnitude += (xv * wv).abs();
                                }
                            }
                        }
                        sums[at] = sum;
                        magnitudes[at] = magnitude;
                    }
                }
            }
        }
        (sums, magnitudes)
    }

    /// The weight gradient in f64 of the operands rounded to bf16, and the
    /// sums of the products' magnitudes.
    fn reference_gradient(dy: &[f32], x: &[f32], s: &ConvShape) -> (Vec<f64>, Vec<f64>) {
        let round = |v: f32| f64::from(super::super::super::round_to_bf16(v));
        let (oh, ow) = (s.out_h(), s.out_w());
        let len = s.out_channels * s.channels * s.kernel_h * s.kernel_w;
        let (mut sums, mut magnitudes) = (vec![0.0; len], vec![0.0; len]);
        for b in 0..s.batch {
            for k in 0..s.out_channels {
                for c in 0..s.channels {
                    for ky in 0..s.kernel_h {
                        for kx in 0..s.kernel_w {
                            let at = ((k * s.channels + c) * s.kernel_h + ky) * s.kernel_w + kx;
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let (iy, ix) = (
                                        (oy * s.stride + ky) as isize - s.padding as isize,
                                        (ox * s.stride + kx) as isize - s.padding as isize,
                                    );
                                    if iy < 0 || ix < 0 || iy >= s.height as isize || ix >= s.width as isize {
                                        continue;
                                    }
                                    let g = round(dy[((b * s.out_channels + k) * oh + oy) * ow + ox]);
                                    let v = round(
                                        x[((b * s.channels + c) * s.height + iy as usize) * s.width + ix as usize],
                                    );
                                    sums[at] += g * v;
                                    magnitudes[at] += (g * v).abs();
                                }
                            }
                        }
                    }
                }
            }
        }
        (sums, magnitudes)
    }

    /// The weight gradients of the shapes of
    /// [`convolutions_on_tiles_match_an_f64_reference`] that it takes (the
    /// shapes cut into cells too), images in one chunk and in several, on
    /// one worker and two.
    #[test]
    fn weight_gradients_on_tiles_match_an_f64_reference() {
        let pools = pools();
        for kernel in kernels() {
            for (i, s) in shapes().iter().enumerate().filter(|(_, s)| s.gradient_fits_tiles()) {
                let x = values(s.batch * s.image_len(), i);
                let dy = values(s.batch * s.output_len(), i + 5);
                let (exact, magnitudes) = reference_gradient(&dy, &x, s);
                for (workers, pool) in &pools {
                    let got = pool.install(|| weight_gradient(kernel, &dy, &x, s));
                    assert_eq!(got.len(), exact.len(), "{s:?}");
                    let inner = s.batch * s.out_h() * s.out_w();
                    for (at, (&got, &want)) in got.iter().zip(&exact).enumerate() {
                        let bound = (inner as f64 + 2.0) * f64::from(f32::EPSILON) * magnitudes[at];
                        assert!(
                            (f64::from(got) - want).abs() <= bound,
                            "{kernel:?} {s:?}, {workers} workers, element {at}: {got} against {want}"
                        );
                    }
                }
            }
        }
    }

    /// Shapes around the blocks of positions (maps narrower and wider than
    /// 32, positions past the last block's end), kernels of 1, 3 and 5,
    /// padding 0 to 2, several steps of channels and row blocks, groups of
    /// row blocks (512 × 3×3: one block a group), batches shared out by
    /// image and by positions, strides 1 and 2, and kernel columns folded
    /// into few channels at strides 1 to 4.
    fn shapes() -> Vec<ConvShape> {
        let strided = |batch, channels, height, width, out_channels, kernel, stride, padding| ConvShape {
            batch,
            channels,
            height,
            width,
            out_channels,
            kernel_h: kernel,
            kernel_w: kernel,
            stride,
            padding,
        };
        let shape = |batch, channels, height, width, out_channels, kernel, padding| {
            strided(batch, channels, height, width, out_channels, kernel, 1, padding)
        };
        vec![
            shape(1, 32, 5, 7, 32, 3, 1),
            shape(1, 64, 13, 40, 96, 3, 1),
            shape(5, 32, 7, 7, 64, 3, 1),
            shape(2, 96, 6, 6, 32, 5, 2),
            shape(1, 32, 4, 9, 32, 1, 0),
            shape(1, 32, 9, 4, 32, 3, 0),
            shape(1, 512, 3, 3, 64, 3, 1),
            // Two chunks of images in the weight gradient, the second short.
            shape(3, 64, 40, 40, 64, 3, 1),
            // Stride 2: odd and even padded sides and padding, columns past
            // one vector of 32, a 1×1 kernel reading one phase, a 7×7.
            strided(1, 32, 9, 9, 32, 3, 2, 1),
            strided(5, 64, 14, 37, 64, 3, 2, 1),
            strided(2, 32, 8, 7, 64, 1, 2, 0),
            strided(1, 32, 11, 6, 32, 7, 2, 3),
            strided(1, 64, 10, 10, 32, 2, 2, 0),
            // Kernel columns folded into few channels: ResNet's stem (3 × 7
            // in one step), strides 1 to 4.
            strided(3, 3, 23, 19, 64, 7, 2, 3),
            strided(2, 5, 9, 10, 32, 3, 1, 1),
            strided(1, 1, 6, 40, 32, 5, 3, 0),
            strided(1, 5, 17, 23, 32, 5, 4, 1),
            // The map cut into cells: AlexNet's stem (48 cell channels in
            // two steps), one step of cells, stride 3 with a kernel that
            // ends inside its last cells.
            strided(3, 3, 27, 31, 64, 11, 4, 2),
            strided(1, 2, 30, 27, 32, 11, 4, 2),
            strided(1, 3, 20, 25, 32, 11, 3, 1),
        ]
    }

    /// Which shapes the tiles take: folded columns only within one step,
    /// or a strided map cut into cells; channels in whole steps only at
    /// strides 1 and 2; output channels in whole row blocks.
    #[test]
    fn the_tiles_take_folds_within_one_step_cells_and_strides_up_to_two() {
        let shape = |channels, out_channels, kernel, stride| ConvShape {
            batch: 1,
            channels,
            height: 32,
            width: 32,
            out_channels,
            kernel_h: kernel,
            kernel_w: kernel,
            stride,
            padding: 1,
        };
        assert!(shape(3, 64, 7, 2).fits_tiles(), "ResNet's stem: 21 folded channels");
        assert!(shape(3, 64, 11, 4).fits_tiles(), "AlexNet's stem: as cells");
        assert!(
            shape(3, 64, 11, 4).gradient_fits_tiles(),
            "AlexNet's stem: its cells' gradient"
        );
        assert!(
            !shape(3, 64, 11, 1).fits_tiles(),
            "33 folded channels at stride 1: no cells"
        );
        let cut = shapes().iter().filter(|s| s.space_to_depth().is_some()).count();
        assert_eq!(cut, 3, "the shapes that the f64 reference checks cut into cells");
        assert!(shape(64, 128, 3, 2).fits_tiles());
        assert!(!shape(64, 128, 3, 3).fits_tiles());
        assert!(!shape(64, 48, 3, 1).fits_tiles());
        assert!(!shape(3, 64, 7, 2).gradient_fits_tiles());
        assert!(!shape(64, 128, 3, 2).gradient_fits_tiles());
        assert!(shape(64, 128, 3, 1).gradient_fits_tiles());
    }

    /// A residual block's two convolutions through [`forward_pair`] have
    /// the bits of the two run one after the other (the first with its bias
    /// and ReLU, the second with its bias, the residual and the ReLU): the
    /// first stride 1 or 2 or a 1×1, weights in one group and in several
    /// (512 channels: each image a chunk), on one worker and two.
    #[test]
    fn a_convolution_pair_matches_its_two_convolutions() {
        let pools = pools();
        let pairs = [
            (conv(3, 32, (9, 9), 64, 3, 1), 64),
            (conv(5, 32, (14, 13), 64, 3, 2), 32),
            (conv(2, 64, (8, 11), 32, 1, 1), 96),
            (conv(4, 512, (3, 3), 512, 3, 1), 512),
        ];
        for kernel in kernels() {
            for (i, &(s1, out_channels)) in pairs.iter().enumerate() {
                let s2 = conv(s1.batch, s1.out_channels, (s1.out_h(), s1.out_w()), out_channels, 3, 1);
                assert!(pair_fits_tiles(&s1, &s2), "{s1:?} {s2:?}");
                let x = values(s1.batch * s1.image_len(), i);
                let (w1, w2) = (
                    values(s1.out_channels * s1.channels * 9, i + 1),
                    values(s2.out_channels * s2.channels * 9, i + 2),
                );
                let w1 = &w1[..s1.out_channels * s1.channels * s1.kernel_h * s1.kernel_w];
                let (b1, b2) = (values(s1.out_channels, i + 3), values(s2.out_channels, i + 4));
                let residual = values(s2.batch * s2.output_len(), i + 5);
                let (p1, p2) = (
                    PackedWeight::new(w1, &s1, Orientation::AsIs),
                    PackedWeight::new(&w2, &s2, Orientation::AsIs),
                );
                let relu = |bias, residual| Epilogue {
                    bias: Some(bias),
                    residual,
                    activation: Activation::Relu,
                    pool: None,
                };
                for (workers, pool) in &pools {
                    let (want, got) = pool.install(|| {
                        let between = forward(kernel, &x, &p1, relu(&b1, None), &s1);
                        (
                            forward(kernel, &between, &p2, relu(&b2, Some(&residual)), &s2),
                            forward_pair(kernel, &x, (&p1, Some(&b1), &s1), (&p2, Some(&b2), &s2), &residual),
                        )
                    });
                    let differ = want.iter().zip(&got).position(|(a, b)| a.to_bits() != b.to_bits());
                    assert!(
                        want.len() == got.len() && differ.is_none(),
                        "{kernel:?} {s1:?} then {s2:?}, {workers} workers: element {differ:?}"
                    );
                }
            }
        }
    }

    /// A square kernel's convolution padded by half the kernel (a 3×3 by 1,
    /// a 1×1 by 0), on a map of `side` rows and columns.
    pub(super) fn conv(
        batch: usize,
        channels: usize,
        side: (usize, usize),
        out_channels: usize,
        kernel: usize,
        stride: usize,
    ) -> ConvShape {
        ConvShape {
            batch,
            channels,
            height: side.0,
            width: side.1,
            out_channels,
            kernel_h: kernel,
            kernel_w: kernel,
            stride,
            padding: kernel / 2,
        }
    }

    /// Pools of one worker and of two, with their sizes. One worker in a
    /// pool of its own: outside a pool the work would be shared by the
    /// global pool's threads, and a worker with several chunks of images
    /// never seen.
    pub(super) fn pools() -> [(usize, rayon::ThreadPool); 2] {
        [1, 2].map(|workers| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build();
            (workers, pool.expect("a pool"))
        })
    }

    /// The tiles' kernels this CPU can run: the emulation wherever the
    /// packing's AVX512-BF16 is, the hardware where AMX is.
    pub(super) fn kernels() -> Vec<TileKernel> {
        let mut kernels = Vec::new();
        if InstructionSet::detected() >= InstructionSet::Avx512Bf16 {
            kernels.push(TileKernel::Emulated);
        }
        if InstructionSet::detected() >= InstructionSet::AmxBf16 {
            kernels.push(TileKernel::Hardware);
        }
        kernels
    }

    /// A weight packed flipped and transposed from a convolution's own
    /// weight is the packing of the input gradient's weight written out:
    /// channels and output channels swapped, each kernel turned by 180°
    /// (channels in whole steps, and folded).
    #[test]
    fn a_flipped_transposed_packing_packs_the_input_gradients_weight() {
        if InstructionSet::detected() < InstructionSet::Avx512Bf16 {
            return;
        }
        // The input gradient's shapes: its channels are the convolution's
        // output channels, its output channels the convolution's channels.
        for (channels, out_channels, kernel) in [(64, 32, 3), (32, 96, 1), (96, 64, 3), (3, 32, 7), (5, 64, 2)] {
            let shape = ConvShape {
                batch: 1,
                channels,
                height: 9,
                width: 9,
                out_channels,
                kernel_h: kernel,
                kernel_w: kernel,
                stride: 1,
                padding: 0,
            };
            let taps = kernel * kernel;
            // The convolution's weight: `channels × out_channels × k × k`.
            let weight = values(channels * out_channels * taps, kernel);
            let mut written_out = vec![0f32; weight.len()];
            for k in 0..out_channels {
                for c in 0..channels {
                    for tap in 0..taps {
                        written_out[(k * channels + c) * taps + tap] =
                            weight[(c * out_channels + k) * taps + taps - 1 - tap];
                    }
                }
            }
            let flipped = PackedWeight::new(&weight, &shape, Orientation::FlippedTransposed);
            let reference = PackedWeight::new(&written_out, &shape, Orientation::AsIs);
            assert!(*flipped.pairs == *reference.pairs, "{shape:?}");
            assert!(
                reference.pairs.iter().filter(|&&pair| pair != 0).count() * 2 >= weight.len() - 1,
                "{shape:?}"
            );
        }
    }

    /// [`shapes`], with and without a bias, with a ReLU, and with a
    /// residual.
    #[test]
    fn convolutions_on_tiles_match_an_f64_reference() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        for kernel in kernels() {
            for (i, s) in shapes().iter().enumerate() {
                assert!(s.fits_tiles(), "{s:?}");
                let x = values(s.batch * s.image_len(), i);
                let weight: Vec<f32> = values(s.out_channels * s.channels * s.kernel_h * s.kernel_w, i + 7)
                    .iter()
                    .map(|w| w / (s.channels * s.kernel_h * s.kernel_w) as f32)
                    .collect();
                let bias = values(s.out_channels, i + 11);
                let residual = values(s.batch * s.output_len(), i + 13);
                let with_bias = Some(&bias[..]);
                for (bias, residual, activation) in [
                    (None, None, Activation::Identity),
                    (with_bias, None, Activation::Identity),
                    (with_bias, None, Activation::Relu),
                    (with_bias, Some(&residual[..]), Activation::Relu),
                    (None, Some(&residual[..]), Activation::Identity),
                ] {
                    let (mut exact, mut magnitudes) = reference(&x, &weight, bias, s);
                    if let Some(residual) = residual {
                        for ((sum, magnitude), &r) in exact.iter_mut().zip(&mut magnitudes).zip(residual) {
                            *sum += f64::from(r);
                            *magnitude += f64::from(r).abs();
                        }
                    }
                    let epilogue = Epilogue {
                        bias,
                        residual,
                        activation,
                        pool: None,
                    };
                    for workers in [1, 2] {
                        let run = || {
                            forward(
                                kernel,
                                &x,
                                &PackedWeight::new(&weight, s, Orientation::AsIs),
                                epilogue,
                                s,
                            )
                        };
                        let got = if workers == 2 { pool.install(run) } else { run() };
                        assert_eq!(got.len(), exact.len(), "{s:?}");
                        let inner = s.channels * s.kernel_h * s.kernel_w;
                        for (at, (&got, &want)) in got.iter().zip(&exact).enumerate() {
                            let bound = (inner as f64 + 2.0) * f64::from(f32::EPSILON) * magnitudes[at];
                            let want = if activation == Activation::Relu {
                                want.max(0.0)
                            } else {
                                want
                            };
                            assert!(
                                (f64::from(got) - want).abs() <= bound,
                                "{kernel:?} {s:?}, bias {}, residual {}, {activation:?}, {workers} workers, element {at}: {got} against {want}",
                                bias.is_some(),
                                residual.is_some()
                            );
                        }
                    }
                }
            }
        }
    }
}
