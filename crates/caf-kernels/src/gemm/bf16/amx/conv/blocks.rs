//! A run of residual blocks (a ResNet stage, `layerN`) as one operation
//! for inference: each worker takes a chunk of images through every block
//! (or, with few images, the workers share out each convolution of one
//! image), and between blocks the images stay in the bf16 rows that the
//! next convolution reads. A block's output is written once, rounded into the
//! rows of the next block's first convolution; the next block reads its
//! shortcut from those same rows and writes its own output over them.
//! Only the last block writes f32 out.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::{
    bias_vectors, by_position_start, pair_fits_tiles, prefetch_output, sums_by_channel, widened_row, write_back,
    written, ImagePlanes, PairLayer, RowsResidual, RowsSink, TileProducts, MR, NR, PLANES_CHUNK_BYTES, TILE,
};
use super::{BlockSink, TileKernel};
use crate::gemm::{ConvShape, Epilogue};
use crate::parallel::{for_each_block, SharedOutput};
use crate::scratch::Scratch;

/// The shapes of one block of [`forward_blocks`]: its two convolutions
/// and the downsampling one of its shortcut (the identity where `None`).
#[derive(Debug, Clone, Copy)]
pub(in crate::gemm) struct BlockShapes {
    pub(in crate::gemm) first: ConvShape,
    pub(in crate::gemm) second: ConvShape,
    pub(in crate::gemm) downsample: Option<ConvShape>,
}

/// One block of [`forward_blocks`]: its two convolutions and the
/// downsampling one of its shortcut, each packed weight, bias and shape.
#[derive(Clone, Copy)]
pub(in crate::gemm) struct BlockLayers<'a> {
    pub(in crate::gemm) first: PairLayer<'a>,
    pub(in crate::gemm) second: PairLayer<'a>,
    pub(in crate::gemm) downsample: Option<PairLayer<'a>>,
}

impl BlockLayers<'_> {
    fn shapes(&self) -> BlockShapes {
        BlockShapes {
            first: *self.first.2,
            second: *self.second.2,
            downsample: self.downsample.map(|(_, _, shape)| *shape),
        }
    }
}

/// Whether [`forward_blocks`] takes `blocks`: each block's convolutions a
/// pair the tiles take ([`pair_fits_tiles`]); the first block's shortcut a
/// downsampling convolution on the tiles from its input to its output
/// (not cut into cells), or the identity where its first convolution has
/// the shape of its second; every later block an identity shortcut whose
/// convolutions both have the first block's second one's shape.
pub(in crate::gemm) fn blocks_fit_tiles(blocks: &[BlockShapes]) -> bool {
    let Some(head) = blocks.first() else {
        return false;
    };
    let (first, second) = (&head.first, &head.second);
    let shortcut_fits = match &head.downsample {
        Some(downsample) => {
            downsample.fits_tiles()
                && downsample.space_to_depth().is_none()
                && (
                    downsample.batch,
                    downsample.channels,
                    downsample.height,
                    downsample.width,
                ) == (first.batch, first.channels, first.height, first.width)
                && (downsample.out_channels, downsample.out_h(), downsample.out_w())
                    == (second.out_channels, second.out_h(), second.out_w())
        }
        None => first == second,
    };
    pair_fits_tiles(first, second)
        && shortcut_fits
        && blocks[1..]
            .iter()
            .all(|block| block.downsample.is_none() && block.first == *second && block.second == *second)
}

/// For each block in turn, `y = relu(conv(relu(conv(x, first) + first's
/// bias), second) + second's bias + shortcut)`, the shortcut the block's
/// downsampling convolution of `x` (with its bias) or `x` rounded to bf16;
/// then `x = y` for the next block. The result is the last block's `y`,
/// with the bits of [`super::forward_pair`] run block after block with
/// those shortcuts. Each worker takes a chunk of images through every
/// block, or with fewer than two images per worker the workers share out
/// each convolution of one image at a time. The caller has checked the
/// CPU (AVX512-BF16, and AMX with the tile data granted for
/// [`TileKernel::Hardware`]).
pub(in crate::gemm) fn forward_blocks(kernel: TileKernel, x: &[f32], blocks: &[BlockLayers]) -> Vec<f32> {
    let shapes: Vec<BlockShapes> = blocks.iter().map(BlockLayers::shapes).collect();
    assert!(blocks_fit_tiles(&shapes), "tile residual blocks of {shapes:?}");
    let head = &blocks[0];
    let (s1, s2) = (head.first.2, head.second.2);
    assert_eq!(x.len(), s1.batch * s1.image_len(), "tile residual blocks: input length");
    for (weight, bias, shape) in blocks
        .iter()
        .flat_map(|block| [Some(block.first), Some(block.second), block.downsample])
        .flatten()
    {
        assert!(
            weight.is_for(shape) && bias.is_none_or(|bias| bias.len() == shape.out_channels),
            "tile residual blocks: a weight packed for another shape, or a bias of another length"
        );
    }
    fn products<'a>(kernel: TileKernel, (weight, _, shape): PairLayer<'a>) -> TileProducts<'a> {
        TileProducts::new(kernel, weight, shape)
    }
    let firsts: Vec<TileProducts> = blocks.iter().map(|block| products(kernel, block.first)).collect();
    let seconds: Vec<TileProducts> = blocks.iter().map(|block| products(kernel, block.second)).collect();
    let downsample = head.downsample.map(|layer| products(kernel, layer));
    let all = || firsts.iter().chain(&seconds).chain(&downsample);
    let threads = rayon::current_num_threads();
    // A chunk of images at a time where a weight is read in more than one
    // group, as `forward` does.
    let chunk = if all().any(|products| products.group < products.row_blocks()) {
        (PLANES_CHUNK_BYTES / (s1.planes_len() * 4)).clamp(1, (s1.batch / threads).max(1))
    } else {
        1
    };
    let sums_len = all().map(TileProducts::sums_len).max().unwrap_or(0);
    let shortcut_len = head.downsample.map_or(0, |(_, _, shape)| shape.output_len());
    let scratch = |images: usize| BlocksScratch {
        input: head.downsample.map(|_| ImagePlanes::new(s1, images)),
        shortcut_input: head.downsample.map(|(_, _, shape)| ImagePlanes::new(shape, images)),
        shortcut: Scratch::<f32>::stale(images * shortcut_len),
        rows: ImagePlanes::new(s2, images),
        middle: ImagePlanes::new(s2, images),
        sums: Scratch::<f32>::stale(sums_len),
    };
    let stage = Stage {
        blocks,
        firsts,
        seconds,
        downsample,
        x,
    };
    let write = |out: &SharedOutput<MaybeUninit<f32>>| {
        if threads > 1 && s1.batch >= 2 * threads {
            // Each worker a share of the images, a chunk at a time.
            let work = |images: Range<usize>, scratch: &mut BlocksScratch| {
                let (layouts, sums) = scratch.parts();
                stage.run(&mut Pass::Chunk { images, sums }, layouts, out);
            };
            for_each_block(s1.batch, chunk, || scratch(chunk), work, drop);
        } else {
            // Each image's convolutions shared out over the workers.
            let mut scratch = scratch(1);
            for image in 0..s1.batch {
                let (layouts, _) = scratch.parts();
                stage.run(&mut Pass::Split { image, sums_len }, layouts, out);
            }
        }
    };
    let last = blocks[blocks.len() - 1].second.2;
    // SAFETY: every image, row block and block of positions of the last
    // block's second convolution is run.
    unsafe { written(last.batch * last.output_len(), write) }
}

/// The blocks of [`forward_blocks`] with their tile products and input.
struct Stage<'a, 'b> {
    blocks: &'b [BlockLayers<'a>],
    firsts: Vec<TileProducts<'a>>,
    seconds: Vec<TileProducts<'a>>,
    downsample: Option<TileProducts<'a>>,
    x: &'b [f32],
}

impl Stage<'_, '_> {
    /// The images of `pass` through every block, the last block's output
    /// written to `out` (the whole batch's).
    fn run(&self, pass: &mut Pass, layouts: Layouts, out: &SharedOutput<MaybeUninit<f32>>) {
        let (images, head) = (pass.images(), &self.blocks[0]);
        let s1 = head.first.2;
        let image = |index: usize| &self.x[index * s1.image_len()..][..s1.image_len()];
        let Layouts {
            input,
            shortcut_input,
            shortcut,
            rows,
            middle,
        } = layouts;
        let (first, middle_shape, rows_shape) = (images.start, middle.shape, rows.shape);
        // The first block's input, and its shortcut where it downsamples.
        let shortcut = match (&self.downsample, head.downsample, input, shortcut_input) {
            (Some(products), Some((_, bias, shape)), Some(input), Some(shortcut_input)) => {
                for (slot, index) in images.clone().enumerate() {
                    // SAFETY: the caller checked the CPU.
                    unsafe {
                        input.pack(slot, image(index));
                        shortcut_input.pack(slot, image(index));
                    }
                }
                let shortcut = &mut shortcut[..images.len() * shape.output_len()];
                {
                    let target = SharedOutput::new(&mut *shortcut);
                    let by_position = || ByPositionSink {
                        shape,
                        bias,
                        target: &target,
                        first,
                    };
                    pass.run(products, shortcut_input.laid_out(), by_position);
                }
                let target = middle.shared();
                let sink = rows_sinks(head.first, RowsResidual::None, middle_shape, &target, first);
                pass.run(&self.firsts[0], input.laid_out(), sink);
                Some(&shortcut[..])
            }
            _ => {
                for (slot, index) in images.clone().enumerate() {
                    // SAFETY: the caller checked the CPU.
                    unsafe { rows.pack(slot, image(index)) };
                }
                let target = middle.shared();
                let sink = rows_sinks(head.first, RowsResidual::None, middle_shape, &target, first);
                pass.run(&self.firsts[0], rows.laid_out(), sink);
                None
            }
        };
        let last = self.blocks.len() - 1;
        for (index, block) in self.blocks.iter().enumerate() {
            if index > 0 {
                let target = middle.shared();
                let sink = rows_sinks(block.first, RowsResidual::None, middle_shape, &target, first);
                pass.run(&self.firsts[index], rows.laid_out(), sink);
            }
            let residual = match shortcut {
                Some(values) if index == 0 => RowsResidual::ByPosition(values),
                _ => RowsResidual::InPlace,
            };
            if index < last {
                // The block's output over its input, which it reads first
                // as its shortcut.
                let target = rows.shared();
                let sink = rows_sinks(block.second, residual, rows_shape, &target, first);
                pass.run(&self.seconds[index], middle.laid_out(), sink);
            } else {
                let shortcut = match residual {
                    RowsResidual::ByPosition(values) => Shortcut::ByPosition(values),
                    _ => Shortcut::Rows(rows.laid_out(), rows_shape),
                };
                let output = || OutputWithShortcut {
                    shape: block.second.2,
                    bias: block.second.1,
                    shortcut,
                    target: out,
                    first,
                    by_position: Vec::new(),
                    by_channel: Vec::new(),
                };
                pass.run(&self.seconds[index], middle.laid_out(), output);
            }
        }
    }
}

/// [`RowsSink`]s of `layer`'s sums, with its bias and `residual`, into
/// `target`, rows of `consumer` (the images from `first`).
fn rows_sinks<'a>(
    layer: PairLayer<'a>,
    residual: RowsResidual<'a>,
    consumer: ConvShape,
    target: &'a SharedOutput<'a, u32>,
    first: usize,
) -> impl Fn() -> RowsSink<'a, 'a> + Sync + 'a {
    move || RowsSink {
        producer: layer.2,
        bias: layer.1,
        residual,
        consumer,
        target,
        first,
    }
}

/// How [`Stage::run`] runs each convolution's products.
enum Pass<'s> {
    /// A worker's chunk of images, every block of each convolution on it.
    Chunk { images: Range<usize>, sums: &'s mut [f32] },
    /// One image, each convolution's blocks shared out over the workers
    /// (by row blocks where the weight is the larger operand, as `forward`
    /// does, else by positions).
    Split { image: usize, sums_len: usize },
}

impl Pass<'_> {
    fn images(&self) -> Range<usize> {
        match self {
            Pass::Chunk { images, .. } => images.clone(),
            Pass::Split { image, .. } => *image..*image + 1,
        }
    }

    /// `products` over `planes` (the images' layouts), each block's sums
    /// handed to a sink made by `sink` (one per worker).
    fn run<S: BlockSink>(&mut self, products: &TileProducts, planes: &[u32], sink: impl Fn() -> S + Sync) {
        let (row_blocks, blocks) = (products.row_blocks(), products.blocks());
        match self {
            Pass::Chunk { images, sums } => {
                products.run(0..row_blocks, images.clone(), 0..blocks, planes, sums, &mut sink())
            }
            Pass::Split { image, sums_len } => {
                let (images, sums_len) = (*image..*image + 1, *sums_len);
                let scratch = || Scratch::<f32>::stale(sums_len);
                if products.packed.len() >= planes.len() {
                    let work = |rows: Range<usize>, sums: &mut Scratch<f32>| {
                        products.run(rows, images.clone(), 0..blocks, planes, sums, &mut sink())
                    };
                    for_each_block(row_blocks, row_blocks, scratch, work, drop);
                } else {
                    let work = |positions: Range<usize>, sums: &mut Scratch<f32>| {
                        products.run(0..row_blocks, images.clone(), positions, planes, sums, &mut sink())
                    };
                    for_each_block(blocks, blocks, scratch, work, drop);
                }
            }
        }
    }
}

/// A worker's buffers for [`forward_blocks`]: its layouts and its sums.
struct BlocksScratch<'a> {
    input: Option<ImagePlanes<'a>>,
    shortcut_input: Option<ImagePlanes<'a>>,
    shortcut: Scratch<f32>,
    rows: ImagePlanes<'a>,
    middle: ImagePlanes<'a>,
    sums: Scratch<f32>,
}

impl<'a> BlocksScratch<'a> {
    fn parts(&mut self) -> (Layouts<'_, 'a>, &mut [f32]) {
        let layouts = Layouts {
            input: self.input.as_mut(),
            shortcut_input: self.shortcut_input.as_mut(),
            shortcut: &mut self.shortcut,
            rows: &mut self.rows,
            middle: &mut self.middle,
        };
        (layouts, &mut self.sums)
    }
}

/// The layouts of [`BlocksScratch`]: the first block's input and its
/// shortcut's input and output where it downsamples, the rows passed from
/// block to block, and the rows between a block's two convolutions.
struct Layouts<'s, 'a> {
    input: Option<&'s mut ImagePlanes<'a>>,
    shortcut_input: Option<&'s mut ImagePlanes<'a>>,
    shortcut: &'s mut [f32],
    rows: &'s mut ImagePlanes<'a>,
    middle: &'s mut ImagePlanes<'a>,
}

/// A block's sums plus the bias, by position, into `target` (the images
/// from `first`): for each block of [`MR`] output channels, each output
/// position's 32 values ([`RowsResidual::ByPosition`]'s layout).
struct ByPositionSink<'a, 'b> {
    shape: &'a ConvShape,
    bias: Option<&'a [f32]>,
    target: &'b SharedOutput<'b, f32>,
    first: usize,
}

impl BlockSink for ByPositionSink<'_, '_> {
    fn before(&self, _: usize, _: usize, _: usize, _: usize) {}

    unsafe fn write(&mut self, sums: &[f32], image: usize, block: usize, channel: usize, rows: usize) {
        let start = (image - self.first) * self.shape.output_len();
        // SAFETY: the caller's promise (the CPU); this block alone writes
        // its positions of these channels.
        unsafe { write_by_position(sums, (self.shape, block, channel, rows), self.bias, self.target, start) }
    }
}

/// [`ByPositionSink::write`] for the image from `image_start` of `target`;
/// a function of its own so that the intrinsics inline (they need its
/// target features).
///
/// # Safety
/// The CPU has AVX-512F; no other writer touches this block's positions
/// of these channels while this runs.
#[target_feature(enable = "avx512f")]
unsafe fn write_by_position(
    sums: &[f32],
    (shape, block, channel, rows): (&ConvShape, usize, usize, usize),
    bias: Option<&[f32]>,
    target: &SharedOutput<f32>,
    image_start: usize,
) {
    let map = shape.out_h() * shape.out_w();
    for row_block in 0..rows / MR {
        let channel = channel + row_block * MR;
        // SAFETY: the CPU has AVX-512F (this function's features).
        let (low_bias, high_bias) = unsafe { bias_vectors(bias, channel) };
        let block_sums = &sums[row_block * MR * NR..][..MR * NR];
        for (in_block, at, run) in shape.output_runs(block) {
            for i in 0..run {
                let source = &block_sums[(in_block + i) * NR..][..NR];
                // SAFETY: this block alone writes these 32 values (the
                // caller's promise; bounds checked).
                let out = unsafe { target.slice(image_start + by_position_start(map, channel, at + i), MR) };
                // SAFETY: `source` and `out` hold 32 f32 each.
                unsafe {
                    let low = _mm512_add_ps(_mm512_loadu_ps(source.as_ptr()), low_bias);
                    let high = _mm512_add_ps(_mm512_loadu_ps(source[TILE..].as_ptr()), high_bias);
                    _mm512_storeu_ps(out.as_mut_ptr(), low);
                    _mm512_storeu_ps(out[TILE..].as_mut_ptr(), high);
                }
            }
        }
    }
}

/// Where [`OutputWithShortcut`] reads the shortcut: the block's input rows
/// (all the chunk's images, laid out for `ConvShape`), or values by
/// position ([`ByPositionSink`]'s, all the chunk's images).
#[derive(Clone, Copy)]
enum Shortcut<'a> {
    Rows(&'a [u32], ConvShape),
    ByPosition(&'a [f32]),
}

/// The last block's second convolution written to the f32 output (`target`,
/// the whole batch's), with its bias, the shortcut (of the images from
/// `first`) and the ReLU, in that order: added by position as the sums
/// come, then turned by channel and written as [`write_back`] writes.
struct OutputWithShortcut<'a, 'b> {
    shape: &'a ConvShape,
    bias: Option<&'a [f32]>,
    shortcut: Shortcut<'a>,
    target: &'b SharedOutput<'b, MaybeUninit<f32>>,
    first: usize,
    by_position: Vec<f32>,
    by_channel: Vec<f32>,
}

impl BlockSink for OutputWithShortcut<'_, '_> {
    fn before(&self, image: usize, block: usize, channel: usize, rows: usize) {
        prefetch_output(self.shape, image, block, channel, rows, None, self.target);
    }

    unsafe fn write(&mut self, sums: &[f32], image: usize, block: usize, channel: usize, rows: usize) {
        self.by_position.clear();
        self.by_position.extend_from_slice(&sums[..rows * NR]);
        self.by_channel.resize(rows * NR, 0.0);
        let (shape, slot) = (self.shape, image - self.first);
        // SAFETY: the caller's promise (the CPU); the values written are
        // final (the ReLU applied, so no -0 for `write_back`'s + 0 to turn).
        unsafe {
            add_shortcut_relu(
                &mut self.by_position,
                shape,
                block,
                channel,
                rows,
                self.bias,
                self.shortcut,
                slot,
            );
            sums_by_channel(&self.by_position, &mut self.by_channel);
            write_back(
                &self.by_channel,
                shape,
                image,
                block,
                channel,
                rows,
                Epilogue::NONE,
                self.target,
            );
        }
    }
}

/// `max((sums + bias) + shortcut, 0)` in place, for each output position of
/// block `block` (sums by position, `rows` channels from `channel`), the
/// shortcut of slot `slot`'s image.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw")]
fn add_shortcut_relu(
    sums: &mut [f32],
    shape: &ConvShape,
    block: usize,
    channel: usize,
    rows: usize,
    bias: Option<&[f32]>,
    shortcut: Shortcut,
    slot: usize,
) {
    let (map, ow) = (shape.out_h() * shape.out_w(), shape.out_w());
    for row_block in 0..rows / MR {
        let channel = channel + row_block * MR;
        // SAFETY: the CPU has AVX-512F (this function's features).
        let (low_bias, high_bias) = unsafe { bias_vectors(bias, channel) };
        let block_sums = &mut sums[row_block * MR * NR..][..MR * NR];
        for (in_block, at, run) in shape.output_runs(block) {
            for i in 0..run {
                let sums = &mut block_sums[(in_block + i) * NR..][..NR];
                let (y, x) = ((at + i) / ow, (at + i) % ow);
                // SAFETY: `sums` holds 32 f32; the shortcut's rows 16 pairs,
                // its values by position 32 f32 (bounds checked).
                unsafe {
                    let (low_shortcut, high_shortcut) = match shortcut {
                        Shortcut::Rows(rows, layout) => {
                            let image_rows = &rows[slot * layout.planes_len()..][..layout.planes_len()];
                            widened_row(&image_rows[layout.row_start(channel, y, x)..])
                        }
                        Shortcut::ByPosition(values) => {
                            let values = &values[slot * shape.output_len()..][..shape.output_len()];
                            let values = &values[by_position_start(map, channel, at + i)..][..MR];
                            (
                                _mm512_loadu_ps(values.as_ptr()),
                                _mm512_loadu_ps(values[TILE..].as_ptr()),
                            )
                        }
                    };
                    let low = _mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(sums.as_ptr()), low_bias), low_shortcut);
                    let high = _mm512_add_ps(
                        _mm512_add_ps(_mm512_loadu_ps(sums[TILE..].as_ptr()), high_bias),
                        high_shortcut,
                    );
                    // As `write_back`'s ReLU: 0 for NaN and -0 alike.
                    _mm512_storeu_ps(sums.as_mut_ptr(), _mm512_max_ps(low, _mm512_setzero_ps()));
                    _mm512_storeu_ps(sums[TILE..].as_mut_ptr(), _mm512_max_ps(high, _mm512_setzero_ps()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{conv, kernels, pools, values};
    use super::super::{forward, forward_pair, PackedWeight};
    use super::*;
    use crate::elementwise::Activation;
    use crate::gemm::Orientation;

    /// `values` rounded to bf16, as the rows hold them.
    fn rounded(values: &[f32]) -> Vec<f32> {
        values.iter().map(|&v| crate::gemm::bf16::round_to_bf16(v)).collect()
    }

    /// A run of blocks has the bits of [`forward_pair`] block after block,
    /// each shortcut the downsampling convolution (with its bias) or the
    /// block's input rounded to bf16: identity blocks only, one and three
    /// of them; a downsampling first block alone and followed by one; 512
    /// channels (each image a chunk); on one worker and two (each image's
    /// convolutions shared out where there are fewer than two images per
    /// worker: one worker, or three images on two).
    #[test]
    fn residual_blocks_match_their_pairs_block_after_block() {
        let pools = pools();
        // (input shape of the first block's first convolution, its output
        // channels and stride, blocks).
        let stages = [
            (conv(4, 32, (6, 7), 32, 3, 1), false, 1),
            (conv(5, 32, (6, 7), 32, 3, 1), false, 3),
            (conv(4, 32, (9, 10), 64, 3, 2), true, 1),
            (conv(5, 32, (9, 10), 64, 3, 2), true, 2),
            (conv(3, 512, (3, 3), 512, 3, 1), false, 2),
        ];
        for kernel in kernels() {
            for (i, &(first, downsamples, count)) in stages.iter().enumerate() {
                let second = conv(
                    first.batch,
                    first.out_channels,
                    (first.out_h(), first.out_w()),
                    first.out_channels,
                    3,
                    1,
                );
                let downsample = downsamples.then_some(ConvShape {
                    kernel_h: 1,
                    kernel_w: 1,
                    padding: 0,
                    ..first
                });
                let weight = |shape: &ConvShape, seed: usize| {
                    let len = shape.out_channels * shape.channels * shape.kernel_h * shape.kernel_w;
                    let scale = 1.0 / (shape.channels * shape.kernel_h * shape.kernel_w) as f32;
                    let weight: Vec<f32> = values(len, seed).iter().map(|w| w * scale * 4.0).collect();
                    (
                        PackedWeight::new(&weight, shape, Orientation::AsIs),
                        values(shape.out_channels, seed + 1),
                    )
                };
                let shapes: Vec<(ConvShape, ConvShape)> = (0..count)
                    .map(|b| (if b == 0 { first } else { second }, second))
                    .collect();
                let weights: Vec<_> = shapes
                    .iter()
                    .enumerate()
                    .map(|(b, (s1, s2))| (weight(s1, 10 * b + i), weight(s2, 10 * b + i + 3)))
                    .collect();
                let shortcut_weight = downsample.map(|shape| weight(&shape, i + 7));
                let layers: Vec<BlockLayers> = shapes
                    .iter()
                    .zip(&weights)
                    .enumerate()
                    .map(|(b, ((s1, s2), ((w1, b1), (w2, b2))))| BlockLayers {
                        first: (w1, Some(&b1[..]), s1),
                        second: (w2, Some(&b2[..]), s2),
                        downsample: match (b, &downsample, &shortcut_weight) {
                            (0, Some(shape), Some((w, bias))) => Some((w, Some(&bias[..]), shape)),
                            _ => None,
                        },
                    })
                    .collect();
                assert!(
                    blocks_fit_tiles(&layers.iter().map(BlockLayers::shapes).collect::<Vec<_>>()),
                    "stage {i}"
                );
                let x = values(first.batch * first.image_len(), i);
                for (workers, pool) in &pools {
                    let (want, got) = pool.install(|| {
                        let mut y = x.clone();
                        for layer in &layers {
                            let shortcut = match layer.downsample {
                                Some((w, bias, shape)) => {
                                    let epilogue = Epilogue {
                                        bias,
                                        residual: None,
                                        activation: Activation::Identity,
                                        pool: None,
                                    };
                                    forward(kernel, &y, w, epilogue, shape)
                                }
                                None => rounded(&y),
                            };
                            y = forward_pair(kernel, &y, layer.first, layer.second, &shortcut);
                        }
                        (y, forward_blocks(kernel, &x, &layers))
                    });
                    let differ = want.iter().zip(&got).position(|(a, b)| a.to_bits() != b.to_bits());
                    assert!(
                        want.len() == got.len() && differ.is_none(),
                        "{kernel:?} stage {i}, {workers} workers: element {differ:?} of {}",
                        want.len()
                    );
                }
            }
        }
    }

    /// Which runs of blocks the tiles take: the first block's shortcut
    /// from its input to its output, every later block of the first
    /// block's second convolution's shape with the identity shortcut.
    #[test]
    fn blocks_fit_where_each_block_reads_the_rows_the_last_one_wrote() {
        let first = conv(2, 32, (9, 10), 64, 3, 2);
        let second = conv(2, 64, (5, 5), 64, 3, 1);
        let downsample = ConvShape {
            kernel_h: 1,
            kernel_w: 1,
            padding: 0,
            ..first
        };
        let block = |first, downsample| BlockShapes {
            first,
            second,
            downsample,
        };
        assert!(blocks_fit_tiles(&[block(first, Some(downsample)), block(second, None)]));
        assert!(!blocks_fit_tiles(&[]));
        assert!(
            !blocks_fit_tiles(&[block(first, None)]),
            "a strided block needs its downsampling"
        );
        assert!(
            !blocks_fit_tiles(&[block(
                first,
                Some(ConvShape {
                    out_channels: 32,
                    ..downsample
                })
            )]),
            "a shortcut of other channels"
        );
        assert!(
            !blocks_fit_tiles(&[block(first, Some(downsample)), block(second, Some(downsample))]),
            "a later block downsampling"
        );
        assert!(
            !blocks_fit_tiles(&[block(second, None), block(ConvShape { padding: 0, ..second }, None)]),
            "a later block of another shape"
        );
    }
}
