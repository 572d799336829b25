//! The forward pass of a convolution whose product reads the image's
//! patches in place ([`crate::gemm::Patches`]) instead of an im2col copy:
//! each image is laid out once by rows ([`RowLayout`]: the padding's zeros
//! written out, strided rows split by phase), and the product packs its
//! bf16 pairs straight from that, or (f32, a frozen weight on AVX-512)
//! broadcasts its columns from it, or (bf16, a frozen weight over a small
//! map on AVX512-BF16) broadcasts its pairs from the layout's channels
//! paired, with nothing packed per call ([`forward_channel_pairs`]).

use std::ops::Range;

use rayon::prelude::*;

use super::{fill_bias, for_each_image, output_with_bias, Geometry, RowLayout};
use crate::gemm::{pair_channels, ChannelPairsLhs, Patches, PatchesLhs, Threads};
use crate::parallel::{for_each_block, SharedOutput};
#[cfg(target_arch = "x86_64")]
use crate::pool::pool_relu_row_stride_2;
use crate::pool::PoolGeometry;
use crate::scratch::Scratch;

/// `y_b = W · cols(x_b) (+ bias)` for every image, `W` packed to read patches.
pub(super) fn forward(x: &[f32], weight: PatchesLhs, bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    let laid = Laid::new(g);
    let mut y = output_with_bias(g, bias);
    for_each_image(g, &mut y, g.output_len(), laid.len(), |b, y_b, laid_out, threads| {
        laid.lay_out(x, b, laid_out, threads);
        weight.multiply_patches(y_b, bias.is_some(), laid.patches(laid_out, 0..g.out_h), threads);
    });
    y
}

/// `y_b = W · cols(x_b) (+ bias)` for every image (channels even), the
/// products reading the image in place as bf16 pairs of channels: each
/// image laid out by rows as [`forward`] lays it out, then its channels
/// paired ([`pair_channels`]).
pub(super) fn forward_channel_pairs(
    x: &[f32],
    weight: &ChannelPairsLhs,
    bias: Option<&[f32]>,
    g: &Geometry,
) -> Vec<f32> {
    assert!(g.channels.is_multiple_of(2), "channel pairs of {} channels", g.channels);
    let laid = Laid::new(g);
    let layout_len = laid.layout.len();
    // Pair (c', ky, kx) of the inner dimension: channels 2c' and 2c' + 1 at tap (ky, kx).
    // Channel c's taps start at c · layout_len, so the first half of the
    // image's taps are the pairs' taps.
    let taps = &laid.taps[..g.channels / 2 * g.kernel_h * g.kernel_w];
    let pairs_len = g.channels / 2 * layout_len;
    let mut y = output_with_bias(g, bias);
    for_each_image(
        g,
        &mut y,
        g.output_len(),
        laid.len() + pairs_len,
        |b, y_b, buffer, threads| {
            let (laid_out, pairs) = buffer.split_at_mut(laid.len());
            laid.lay_out(x, b, laid_out, threads);
            // SAFETY: u32 has f32's size and alignment, and any bits are a u32.
            let pairs = unsafe { std::slice::from_raw_parts_mut(pairs.as_mut_ptr().cast::<u32>(), pairs_len) };
            let pair = |(c, out): (usize, &mut [u32])| {
                let channel = |c: usize| &laid_out[c * layout_len..][..layout_len];
                pair_channels(channel(2 * c), channel(2 * c + 1), out);
            };
            match threads {
                Threads::All => pairs.par_chunks_mut(layout_len).enumerate().for_each(pair),
                Threads::One => pairs.chunks_mut(layout_len).enumerate().for_each(pair),
            }
            let row_step = g.stride * laid.layout.row_len();
            let patches = Patches::new(&pairs[..], taps, (g.out_h, g.out_w), row_step);
            weight.multiply(y_b, bias.is_some(), patches, threads);
        },
    );
    y
}

/// An image laid out for its patches to be read ([`Patches`]): every
/// channel's padded rows ([`RowLayout`]), one channel after another, and
/// where each row of the column matrix starts in them.
struct Laid<'a> {
    g: &'a Geometry,
    layout: RowLayout,
    /// Row r = (c, ky, kx) of the column matrix reads channel c's padded
    /// rows ky, ky + s, …, from its phase of kx.
    taps: Vec<usize>,
}

impl<'a> Laid<'a> {
    fn new(g: &'a Geometry) -> Self {
        let layout = RowLayout::new(g, 0..g.out_h);
        let mut taps = Vec::with_capacity(g.patch());
        for c in 0..g.channels {
            for ky in 0..g.kernel_h {
                taps.extend((0..g.kernel_w).map(|kx| c * layout.len() + layout.offset(ky, kx)));
            }
        }
        Self { g, layout, taps }
    }

    /// Values of a laid-out image.
    fn len(&self) -> usize {
        self.g.channels * self.layout.len()
    }

    /// Lays out image `b` of `x` into `out`.
    fn lay_out(&self, x: &[f32], b: usize, out: &mut [f32], threads: Threads) {
        let g = self.g;
        lay_out(&x[b * g.image_len()..][..g.image_len()], g, &self.layout, out, threads)
    }

    /// The patches of output rows `rows` of a laid-out image.
    fn patches<'v>(&'v self, laid_out: &'v [f32], rows: Range<usize>) -> Patches<'v> {
        let row_step = self.g.stride * self.layout.row_len();
        Patches::new(
            &laid_out[rows.start * row_step..self.len()],
            &self.taps,
            (rows.len(), self.g.out_w),
            row_step,
        )
        .of_output(self.g.positions())
    }
}

/// Bytes of the convolution's output one band of [`forward_pooled`] holds:
/// a third of a core's L2 cache, the rest left to the product's operands.
const BAND_BYTES: usize = 320 << 10;
/// The tallest pooling window [`forward_pooled`] takes.
const MAX_WINDOW_ROWS: usize = 8;

/// A pooling [`forward_pooled`] takes, checked once: stride 2 on a CPU
/// with AVX-512 ([`pool_relu_row_stride_2`]'s), windows of at most
/// [`MAX_WINDOW_ROWS`] rows.
#[derive(Clone, Copy)]
pub(super) struct RowPooling<'a>(&'a PoolGeometry);

impl<'a> RowPooling<'a> {
    /// `pool`, if [`forward_pooled`] takes it.
    pub(super) fn new(pool: &'a PoolGeometry) -> Option<Self> {
        (pool.pools_rows_stride_2() && pool.config.kernel <= MAX_WINDOW_ROWS).then_some(Self(pool))
    }

    /// One pooled row of the ReLU of its window's input `rows` into `out`;
    /// `padded` is [`PoolGeometry::padded_row`].
    fn pool_row<'r>(self, rows: impl Iterator<Item = &'r [f32]> + Clone, padded: &mut [f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F and BW: `Self::new` checked it.
        unsafe {
            pool_relu_row_stride_2(self.0, rows, padded, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "a row pooling is made on x86-64 alone ({:?})",
            (rows.count(), padded.len(), out.len())
        )
    }
}

/// The max pooling `pool` of the ReLU of `W · cols(x_b) (+ bias)` for
/// every image, `W` packed to read patches.
/// The convolution's output is made and pooled in bands of rows small
/// enough to stay in the core's cache, instead of written out whole and
/// read back (ResNet-18's stem makes 3.2 MB an image); the rows two
/// bands' windows share are kept from one band to the next, not made
/// again. The values are those of the pooling after the convolution.
pub(super) fn forward_pooled(
    x: &[f32],
    weight: PatchesLhs,
    bias: Option<&[f32]>,
    g: &Geometry,
    pooling: RowPooling,
) -> Vec<f32> {
    // Conv rows of a band: twice its pooled rows, and the window's overhang.
    let pooled_rows = (BAND_BYTES / (4 * g.out_channels * g.out_w))
        .saturating_sub(pooling.0.config.kernel)
        .div_ceil(2);
    forward_pooled_in_bands(x, weight, bias, g, pooling, pooled_rows)
}

/// [`forward_pooled`] in bands of `pooled_rows` pooled rows.
fn forward_pooled_in_bands(
    x: &[f32],
    weight: PatchesLhs,
    bias: Option<&[f32]>,
    g: &Geometry,
    pooling: RowPooling,
    pooled_rows: usize,
) -> Vec<f32> {
    let pool = pooling.0;
    assert!(
        (pool.in_h, pool.in_w) == (g.out_h, g.out_w),
        "a pooling by bands of the convolution's output"
    );
    let laid = Laid::new(g);
    let pooled_len = pool.out_h * pool.out_w;
    let mut out = vec![0.0; g.batch * g.out_channels * pooled_len];
    let shared = SharedOutput::new(&mut out);
    let bands = Bands {
        laid: &laid,
        weight,
        bias,
        pooling,
        out: &shared,
        pooled_rows: pooled_rows.max(1),
    };
    if g.parallel_over_images() {
        for_each_block(
            g.batch,
            1,
            || (Scratch::stale(laid.len()), BandScratch::new(&bands)),
            |images, (laid_out, scratch)| {
                for b in images {
                    laid.lay_out(x, b, laid_out, Threads::One);
                    bands.pool_rows(b, laid_out, 0..pool.out_h, scratch);
                }
            },
            drop,
        );
    } else {
        let mut laid_out = Scratch::stale(laid.len());
        for b in 0..g.batch {
            laid.lay_out(x, b, &mut laid_out, Threads::All);
            for_each_block(
                pool.out_h,
                pool.out_h,
                || BandScratch::new(&bands),
                |rows, scratch| bands.pool_rows(b, &laid_out, rows, scratch),
                drop,
            );
        }
    }
    out
}

/// What every band of [`forward_pooled`] shares.
struct Bands<'a> {
    laid: &'a Laid<'a>,
    weight: PatchesLhs<'a>,
    bias: Option<&'a [f32]>,
    pooling: RowPooling<'a>,
    out: &'a SharedOutput<'a, f32>,
    /// Pooled rows a band makes.
    pooled_rows: usize,
}

/// A worker's buffers for [`Bands::pool_rows`].
struct BandScratch {
    /// A band's rows of the convolution's output, channel after channel.
    product: Scratch<f32>,
    /// Rows of the band before, channel after channel, that the next
    /// band's windows read too; and the buffer the next band's go to.
    kept: Vec<f32>,
    spare: Vec<f32>,
    padded: Vec<f32>,
}

impl BandScratch {
    fn new(bands: &Bands) -> Self {
        let g = bands.laid.g;
        let pool = bands.pooling.0;
        let rows = 2 * bands.pooled_rows + pool.config.kernel;
        Self {
            product: Scratch::stale(g.out_channels * rows * g.out_w),
            kept: Vec::new(),
            spare: Vec::new(),
            padded: pool.padded_row(),
        }
    }
}

impl Bands<'_> {
    /// Pooled rows `rows` of image `b` (laid out in `laid_out`), band by band.
    fn pool_rows(&self, b: usize, laid_out: &[f32], rows: Range<usize>, scratch: &mut BandScratch) {
        let (g, pool) = (self.laid.g, self.pooling.0);
        let (out_w, channels) = (g.out_w, g.out_channels);
        let BandScratch {
            product,
            kept,
            spare,
            padded,
        } = scratch;
        // The output rows `kept` holds.
        let mut held = 0..0;
        for first in rows.clone().step_by(self.pooled_rows) {
            let end = (first + self.pooled_rows).min(rows.end);
            let (needed, made) = (pool.window(first, g.out_h).0, pool.window(end - 1, g.out_h).1);
            let start = if held.contains(&needed) { held.end } else { needed };
            // Rows the windows reach that the band before made too are
            // kept; the band makes the rest (none, under a last window
            // that hangs over the edge).
            let n = made.saturating_sub(start) * out_w;
            let product = &mut product[..channels * n];
            if n > 0 {
                fill_bias(product, self.bias, n);
                let patches = self.laid.patches(laid_out, start..made);
                self.weight
                    .multiply_patches(product, self.bias.is_some(), patches, Threads::One);
            }
            let product = &product[..];
            for o in 0..channels {
                let row = |y: usize| -> &[f32] {
                    if y < start {
                        &kept[(o * held.len() + y - held.start) * out_w..][..out_w]
                    } else {
                        &product[o * n + (y - start) * out_w..][..out_w]
                    }
                };
                for py in first..end {
                    let (y0, y1) = pool.window(py, g.out_h);
                    let at = ((b * channels + o) * pool.out_h + py) * pool.out_w;
                    // SAFETY: pooled row `py` of channel `o` of image `b`
                    // belongs to this call alone (workers take disjoint
                    // rows or images), and nobody reads `out` until every
                    // band is done.
                    let out_row = unsafe { self.out.slice(at, pool.out_w) };
                    self.pooling.pool_row((y0..y1).map(row), padded, out_row);
                }
            }
            // Keep the rows the next band's first window reads from this one.
            let next = if end < rows.end {
                pool.window(end, g.out_h).0
            } else {
                made
            };
            held = if next >= start && next < made { next..made } else { 0..0 };
            let mut next_kept = std::mem::take(spare);
            next_kept.clear();
            for o in (0..channels).filter(|_| !held.is_empty()) {
                next_kept.extend_from_slice(&product[o * n + (held.start - start) * out_w..][..held.len() * out_w]);
            }
            *spare = std::mem::replace(kept, next_kept);
        }
    }
}

/// Writes every channel of `image` into `out` as `layout` places them,
/// one channel after another, channels in parallel when `threads` allows.
fn lay_out(image: &[f32], g: &Geometry, layout: &RowLayout, out: &mut [f32], threads: Threads) {
    let plane_len = g.height * g.width;
    let channel = |(c, out): (usize, &mut [f32]), line: &mut Vec<f32>| {
        out.fill(0.0);
        layout.fill(&image[c * plane_len..][..plane_len], g, out, line);
    };
    let out = &mut out[..g.channels * layout.len()];
    match threads {
        Threads::All => out
            .par_chunks_mut(layout.len())
            .enumerate()
            .for_each_init(Vec::new, |line, item| channel(item, line)),
        Threads::One => {
            let mut line = Vec::new();
            out.chunks_mut(layout.len())
                .enumerate()
                .for_each(|item| channel(item, &mut line))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{forward as im2col_forward, Conv2dParams};
    use super::*;
    use crate::cpu::{InstructionSet, Precision};
    use crate::gemm::{Matrix, PackedLhs, WeightProducts};
    use crate::pool::MaxPool2dConfig;

    /// Geometries whose patches meet every case of the packing: vectors of
    /// 16 columns over one to three output rows, strides 1 to 4 with the
    /// padding in whole phase places or not (and a kernel shorter than the
    /// stride, whose rows in between are never read), inner dimensions
    /// odd and over one inner block (256), more columns than one column
    /// block (1536), enough images to run them in parallel.
    const CASES: [(&[usize], &[usize], Conv2dParams); 9] = [
        (&[1, 5, 7, 7], &[6, 5, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
        (&[1, 8, 7, 7], &[70, 8, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
        (&[2, 3, 20, 18], &[9, 3, 7, 7], Conv2dParams { stride: 2, padding: 3 }),
        (&[1, 3, 35, 33], &[4, 3, 11, 11], Conv2dParams { stride: 4, padding: 2 }),
        (&[1, 70, 9, 9], &[65, 70, 1, 1], Conv2dParams { stride: 2, padding: 0 }),
        (
            &[5, 32, 15, 14],
            &[20, 32, 3, 3],
            Conv2dParams { stride: 2, padding: 1 },
        ),
        (&[1, 4, 13, 11], &[3, 4, 5, 5], Conv2dParams { stride: 3, padding: 2 }),
        (&[1, 3, 80, 80], &[8, 3, 7, 7], Conv2dParams { stride: 2, padding: 3 }),
        (&[1, 2, 1, 1], &[3, 2, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
    ];

    /// Geometries of products in place past their blocks: inner dimensions
    /// past one block (f32: 512; bf16 pairs: 512 pairs, which 130 channels
    /// of 3×3 make 585 of), blocks of columns past the end of output rows,
    /// more columns than one pass (240), a 7×7 map as ResNet-18's layer4 at
    /// batch 1, strides 2 and 3, one channel pair.
    const DEEP: [(&[usize], &[usize], Conv2dParams); 8] = [
        (&[1, 64, 9, 10], &[66, 64, 3, 3], Conv2dParams { stride: 2, padding: 1 }),
        (
            &[2, 64, 34, 36],
            &[20, 64, 3, 3],
            Conv2dParams { stride: 2, padding: 1 },
        ),
        (
            &[1, 120, 7, 7],
            &[130, 120, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
        ),
        (
            &[1, 130, 7, 7],
            &[70, 130, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
        ),
        (
            &[2, 64, 20, 20],
            &[66, 64, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
        ),
        (&[1, 6, 16, 17], &[5, 6, 5, 5], Conv2dParams { stride: 3, padding: 2 }),
        (&[3, 2, 5, 6], &[4, 2, 3, 3], Conv2dParams { stride: 1, padding: 0 }),
        (&[1, 4, 9, 9], &[3, 4, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
    ];

    #[test]
    fn pooling_band_by_band_matches_pooling_the_whole_output_bit_for_bit() {
        // bf16 pairs read patches on AVX512-BF16, the f32 row panels on AVX-512.
        let here = crate::cpu::instruction_set();
        let precisions: Vec<_> = [
            (Precision::Bf16, InstructionSet::Avx512Bf16),
            (Precision::F32, InstructionSet::Avx512),
        ]
        .into_iter()
        .filter_map(|(precision, needs)| (here >= needs).then_some(precision))
        .collect();
        if precisions.is_empty() {
            eprintln!("AVX-512 not in use: nothing reads patches");
            return;
        }
        let (resnet, alexnet) = (super::super::tests::RESNET_POOL, super::super::tests::ALEXNET_POOL);
        let ceil = MaxPool2dConfig {
            ceil_mode: true,
            ..alexnet
        };
        let two_by_two = MaxPool2dConfig { kernel: 2, ..alexnet };
        // A stem's shape; odd and even sides; a last window over the edge;
        // windows that share no rows; batches on one and on two workers.
        let cases: [(&[usize], &[usize], Conv2dParams, MaxPool2dConfig); 6] = [
            (
                &[1, 3, 40, 36],
                &[16, 3, 7, 7],
                Conv2dParams { stride: 2, padding: 3 },
                resnet,
            ),
            (
                &[1, 3, 35, 35],
                &[8, 3, 11, 11],
                Conv2dParams { stride: 4, padding: 2 },
                alexnet,
            ),
            (
                &[5, 4, 15, 13],
                &[6, 4, 3, 3],
                Conv2dParams { stride: 1, padding: 1 },
                ceil,
            ),
            (
                &[1, 8, 17, 18],
                &[5, 8, 3, 3],
                Conv2dParams { stride: 1, padding: 1 },
                resnet,
            ),
            (
                &[2, 3, 12, 12],
                &[4, 3, 3, 3],
                Conv2dParams { stride: 1, padding: 1 },
                two_by_two,
            ),
            (
                &[4, 3, 26, 21],
                &[7, 3, 5, 5],
                Conv2dParams { stride: 2, padding: 2 },
                resnet,
            ),
        ];
        let pool2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        for (input, weight, params, config) in cases {
            let g = Geometry::new(input, weight, params).expect("a geometry");
            let (_, pool) = PoolGeometry::new(config, &[g.batch, g.out_channels, g.out_h, g.out_w]).expect("a pool");
            let x = values(g.batch * g.image_len(), 1);
            let w = values(g.out_channels * g.patch(), 2);
            let bias = values(g.out_channels, 3);
            for &precision in &precisions {
                let packed = PackedLhs::for_products(precision, Matrix::row_major(&w, g.out_channels, g.patch()))
                    .expect("packed on AVX-512");
                let lhs = packed.patches().expect("read from patches on AVX-512");
                let whole = pool.pool_relu(&forward(&x, lhs, Some(&bias), &g));
                for pooled_rows in [1, 2, 3, pool.out_h] {
                    for workers in [1, 2] {
                        let pooling = RowPooling::new(&pool).expect("a stride-2 pooling on AVX-512");
                        let run = || forward_pooled_in_bands(&x, lhs, Some(&bias), &g, pooling, pooled_rows);
                        let bands = if workers == 1 { run() } else { pool2.install(run) };
                        let what = format!(
                            "{precision:?}: {input:?} ∗ {weight:?} {params:?}, {config:?}: bands of {pooled_rows} on \
                             {workers}"
                        );
                        assert_eq!(bands.len(), whole.len(), "{what}");
                        for (i, (a, b)) in bands.iter().zip(&whole).enumerate() {
                            assert_eq!(a.to_bits(), b.to_bits(), "{what}: element {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn products_read_from_the_patches_match_the_column_matrix_bit_for_bit() {
        if crate::cpu::instruction_set() < InstructionSet::Avx512Bf16 {
            eprintln!("AVX512-BF16 not in use: bf16 pairs are not packed, nothing reads patches");
            return;
        }
        for (input, weight, params) in CASES {
            let g = Geometry::new(input, weight, params).expect("a geometry");
            let x = values(g.batch * g.image_len(), 1);
            let w = values(g.out_channels * g.patch(), 2);
            let bias = values(g.out_channels, 3);
            let w_matrix = Matrix::row_major(&w, g.out_channels, g.patch());
            let kept = PackedLhs::for_products(Precision::Bf16, w_matrix).expect("bf16 is packed");
            for packed in [kept, PackedLhs::bf16(w_matrix, Threads::All)] {
                let pairs = packed.patches().expect("pairs on AVX512-BF16");
                let products = WeightProducts {
                    precision: Precision::Bf16,
                    packed: Some(std::slice::from_ref(&packed)),
                };
                for bias in [None, Some(&bias[..])] {
                    // A layout of NaNs first: a place the next one leaves
                    // unwritten (padding the kernel reads) shows as a NaN.
                    forward(&vec![f32::NAN; x.len()], pairs, bias, &g);
                    let ours = forward(&x, pairs, bias, &g);
                    let reference = im2col_forward(&x, &w, bias, &g, products);
                    assert_eq!(ours.len(), reference.len());
                    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{input:?} ∗ {weight:?} {params:?}: element {i}"
                        );
                    }
                }
            }
        }
    }

    /// Distinct test values in [-1, 1].
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i + seed) as f32) * 0.618).sin()).collect()
    }

    /// `ours` against the f64 forward pass of `x`, `w` and `bias` (the
    /// operands as the products took them), to f32's summing error.
    fn assert_near_exact(ours: &[f32], (x, w, bias): (&[f32], &[f32], Option<&[f32]>), g: &Geometry, what: &str) {
        let zeros = vec![0.0; g.out_channels];
        let (exact, magnitude) = exact_forward(x, w, bias.unwrap_or(&zeros), g);
        assert_eq!(ours.len(), exact.len(), "{what}");
        for (i, ((&a, b), size)) in ours.iter().zip(&exact).zip(&magnitude).enumerate() {
            let bound = 2.0 * (g.patch() + 1) as f64 * f64::from(f32::EPSILON) * size;
            assert!(
                (f64::from(a) - b).abs() <= bound,
                "{what}: element {i} is {a} against {b}"
            );
        }
    }

    /// `x ∗ w + bias` in f64 (the im2col forward pass on f64 copies), and
    /// the same of magnitudes (`|x| ∗ |w| + |bias|`): the scale of f32's
    /// rounding.
    fn exact_forward(x: &[f32], w: &[f32], bias: &[f32], g: &Geometry) -> (Vec<f64>, Vec<f64>) {
        let wide = |v: &[f32], magnitude: bool| -> Vec<f64> {
            v.iter()
                .map(|&v| f64::from(if magnitude { v.abs() } else { v }))
                .collect()
        };
        let [exact, magnitude] = [false, true].map(|magnitude| {
            let bias = wide(bias, magnitude);
            im2col_forward(
                &wide(x, magnitude),
                &wide(w, magnitude),
                Some(&bias),
                g,
                WeightProducts::F32,
            )
        });
        (exact, magnitude)
    }

    /// The bf16 pairs of channels read in place: within f32's summing error
    /// of the exact sums of the bf16-rounded operands, on the shapes above
    /// with even channels and on the deep ones, on one to three workers.
    #[test]
    fn channel_pairs_read_in_place_match_f64() {
        if crate::cpu::instruction_set() != InstructionSet::Avx512Bf16 {
            eprintln!("AVX512-BF16 not the bf16 path: no channel pairs are packed");
            return;
        }
        let rounded = |values: &[f32]| -> Vec<f32> { values.iter().map(|&v| crate::gemm::round_to_bf16(v)).collect() };
        for workers in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .build()
                .expect("a pool");
            for (input, weight, params) in CASES.into_iter().chain(DEEP) {
                let g = Geometry::new(input, weight, params).expect("a geometry");
                let (x, w, bias) = (
                    values(g.batch * g.image_len(), 1),
                    values(g.out_channels * g.patch(), 2),
                    values(g.out_channels, 3),
                );
                let taps = g.kernel_h * g.kernel_w;
                let Some(lhs) = ChannelPairsLhs::new(&w, g.out_channels, g.channels, taps) else {
                    assert!(!g.channels.is_multiple_of(2), "{input:?}: even channels are paired");
                    continue;
                };
                for with_bias in [false, true] {
                    let what = format!("{input:?} ∗ {weight:?} {params:?}, bias {with_bias}, {workers} workers");
                    let bias = with_bias.then_some(&bias[..]);
                    let ours = pool.install(|| {
                        // A layout of NaNs first, as above.
                        forward_channel_pairs(&vec![f32::NAN; x.len()], &lhs, bias, &g);
                        forward_channel_pairs(&x, &lhs, bias, &g)
                    });
                    assert_near_exact(&ours, (&rounded(&x), &rounded(&w), bias), &g, &what);
                }
            }
        }
    }

    /// The f32 row panels reading the patches: within f32's summing error of
    /// the exact sums, on the shapes above and on ones whose inner
    /// dimension takes several blocks (512) with register blocks that run
    /// past the ends of output rows, more columns than one pass (240),
    /// and two and three workers.
    #[test]
    fn f32_products_read_from_the_patches_match_f64() {
        if crate::cpu::instruction_set() < InstructionSet::Avx512 {
            eprintln!("AVX-512 not in use: the f32 row panels are not packed, nothing reads patches");
            return;
        }
        for workers in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .build()
                .expect("a pool");
            for (input, weight, params) in CASES.into_iter().chain(DEEP) {
                let g = Geometry::new(input, weight, params).expect("a geometry");
                let x = values(g.batch * g.image_len(), 1);
                let w = values(g.out_channels * g.patch(), 2);
                let bias = values(g.out_channels, 3);
                let packed = PackedLhs::for_products(Precision::F32, Matrix::row_major(&w, g.out_channels, g.patch()))
                    .expect("f32 row panels on AVX-512");
                let lhs = packed.patches().expect("f32 row panels read patches");
                for with_bias in [false, true] {
                    let what = format!("{input:?} ∗ {weight:?} {params:?}, bias {with_bias}, {workers} workers");
                    let ours = pool.install(|| {
                        // A layout of NaNs first, as above.
                        forward(&vec![f32::NAN; x.len()], lhs, with_bias.then_some(&bias[..]), &g);
                        forward(&x, lhs, with_bias.then_some(&bias[..]), &g)
                    });
                    assert_near_exact(&ours, (&x, &w, with_bias.then_some(&bias[..])), &g, &what);
                }
            }
        }
    }
}
