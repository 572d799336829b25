//! Stride-1 3×3 and 5×5 convolutions by Winograd's minimal filtering
//! F(m×m, r×r) (Lavin & Gray, 2016): each m×m output tile is
//! `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` for its n×n input tile `d` (n = m + r − 1), so
//! the channel sums become n² matrix products with n² multiplications per
//! tile instead of m²r²: F(2×2, 3×3) does 2.25 times fewer than direct
//! convolution, F(2×2, 5×5) 2.8 times fewer, F(4×4, 3×3) 4 times fewer
//! with larger transforms and a coarser tiling ([`Variant::of`] picks).
//!
//! All three passes use the same n² products:
//! * forward: `M_ξ = U_ξ · V_ξ` (`U = G g Gᵀ`: out × in; `V = Bᵀ d B`: in × tiles);
//! * input gradient: a forward pass of the output gradient with the kernel
//!   turned 180° and its channels swapped, padded by `r − 1 − padding`;
//! * weight gradient: `∂U_ξ = ∂M_ξ · V_ξᵀ` with `∂M = A ∂y Aᵀ`, then `Gᵀ ∂U G`.
//!
//! Tiles run in blocks that stay in a core's cache (transform, multiply,
//! transform back), the transforms vectorised over [`LANES`] tiles of a row.
//! Their inputs are first laid out padded and split by column phase
//! ([`PhasePlanes`]), so that each transform load is one vector load rather
//! than lane-by-lane reads with bounds checks and partial-chunk copies.
//! Tiles reaching past the output are computed and dropped (forward) or fed
//! zeros (weight gradient), which is what the tiling costs on odd sides.

mod phases;
mod transform;

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use self::phases::PhasePlanes;
use self::transform::{Algorithm, F2x3, F2x5, F4x3, Lanes, Transform, LANES};
use super::Geometry;
use crate::cpu::Precision;
use crate::gemm::{matmul_in, Element, Matrix, PackedLhs, Threads, WeightProducts};
use crate::parallel::{for_each_block, SharedOutput, UnwrittenOutput};
use crate::reduce::sum_parts;
use crate::scratch::Scratch;

/// Below this `C·K / (C + K)` (in and out channels) the tile transforms,
/// which grow with `C + K`, cost more than the products save (`C·K`).
const MIN_CHANNEL_BALANCE: usize = 32;

/// Below this ratio of direct multiplications to Winograd's, counting the
/// tiles that reach past the output, a feature map is too small for the
/// tiling: for 3×3 kernels (AlexNet's 3×3 maps at 64 px save 1.27: 81
/// direct against 64), and for 5×5 kernels, whose 6×6 transforms cost more
/// (AlexNet's conv2 saves 2.13 on its 7×7 map at 64 px, where im2col is
/// faster, and 2.58 on its 27×27 map at 224 px, where Winograd is).
const MIN_SAVING_3X3: f64 = 1.5;
const MIN_SAVING_5X5: f64 = 2.3;

/// Whether the forward pass and the input gradient run here: a 3×3 or 5×5
/// kernel, stride 1, padding below the kernel side (the input gradient's
/// padding is `r − 1 − padding`), channels enough for the transforms to pay
/// off, a feature map large enough for the tiles, and images or tiles enough
/// to give every worker whole blocks. At batch 1 that holds for AlexNet's
/// 27×27 map (196 tiles) and ResNet's 56×56 and 28×28 ones, not for 13×13
/// maps (49 tiles), where the kernel transform made on every call costs more
/// than the products save (see [`applies_with_kept_transform`]).
pub(super) fn applies(g: &Geometry) -> bool {
    suits(g) && (g.parallel_over_images() || tiles_per_worker(g) >= BLOCK_ALIGN)
}

/// [`applies`] for a forward pass given the weight's [`kernel_transform`]:
/// without the transform's cost on every call, fewer tiles pay off, but at
/// least [`MIN_TILES_PER_WORKER`] a worker. Below that (a single 7×7 map of
/// ResNet's layer4 at batch 1, 16 tiles) im2col was as fast alone and
/// faster inside the network, where the kept transform (16/9 of the
/// weight, 16.8 MB for each layer4 convolution) comes from memory: 1.07–1.19
/// ms a call against 1.21–1.33 in f32 on an Intel Xeon, and in bf16 0.78
/// against 0.84 alone on an AMD EPYC.
pub(super) fn applies_with_kept_transform(g: &Geometry) -> bool {
    suits(g) && (g.parallel_over_images() || tiles_per_worker(g) >= MIN_TILES_PER_WORKER)
}

/// Tiles per worker below which a forward pass deals out its channels
/// instead of its tiles ([`forward_by_channels`]): dealt out by tiles, a
/// single 7×7 map (8 tiles a core on two cores) was slower than im2col and
/// single 13×13 and 14×14 maps (24 and 32) faster (docs/performance.md).
const MIN_TILES_PER_WORKER: usize = 16;

/// Whether a forward pass of `tiling` deals out channels rather than tiles.
fn splits_by_channels(tiling: Tiling, workers: usize) -> bool {
    workers > 1 && tiling.total < MIN_TILES_PER_WORKER * workers
}

/// The conditions on the kernel, channels and map (see [`applies`]).
fn suits(g: &Geometry) -> bool {
    let (c, k, r) = (g.channels, g.out_channels, g.kernel_h);
    let min_saving = if r == 3 { MIN_SAVING_3X3 } else { MIN_SAVING_5X5 };
    g.kernel_w == r
        && matches!(r, 3 | 5)
        && g.stride == 1
        && g.padding < r
        && c * k >= MIN_CHANNEL_BALANCE * (c + k)
        && saving(g) >= min_saving
}

/// Tiles of F(2×2, r×r) per worker.
fn tiles_per_worker(g: &Geometry) -> usize {
    tiles_per_worker_of(g, 2)
}

fn tiles_per_worker_of(g: &Geometry, side: usize) -> usize {
    Tiling::new(g, side).total / rayon::current_num_threads()
}

/// The ratio of direct multiplications to F(2×2, r×r)'s.
fn saving(g: &Geometry) -> f64 {
    saving_of(g, 2)
}

/// The ratio of direct multiplications to Winograd's with `side × side`
/// output tiles, counting the tiles that reach past the output.
fn saving_of(g: &Geometry, side: usize) -> f64 {
    let (r, n) = (g.kernel_h, side + g.kernel_h - 1);
    let tiled = Tiling::new(g, side).per_image() * n * n;
    (g.positions() * r * r) as f64 / tiled as f64
}

/// Below this saving F(4×4, 3×3) stays with F(2×2, 3×3): its 6×6 transforms
/// cost more per tile than F(2×2)'s 4×4 ones, which only maps tiled without
/// waste repay (ResNet's 56×56 and 28×28 save 4.0: at batch 16 the 56×56
/// layer was 13–22 % faster in every pass, the 28×28 one 8–14 % in the
/// forward pass and input gradient and level in the weight gradient; its
/// 14×14 saves 3.1 and AlexNet's 13×13 2.6, and both were slower, the
/// weight gradients by a third; docs/performance.md).
const MIN_SAVING_4X4_3X3: f64 = 3.5;

/// The variant of Winograd's algorithm a geometry that [`applies`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    F2x3,
    F4x3,
    F2x5,
}

impl Variant {
    /// Every variant, in the order of their values (tables of them are
    /// indexed by `variant as usize`).
    pub(super) const ALL: [Variant; 3] = [Variant::F2x3, Variant::F4x3, Variant::F2x5];
    /// How many variants there are.
    pub(super) const COUNT: usize = Self::ALL.len();

    /// F(2×2, 5×5) for 5×5 kernels; for 3×3 ones F(4×4, 3×3) where the
    /// map tiles by 4 with little waste and every worker gets a block of its
    /// tiles ([`BLOCK_ALIGN`]: a single 28×28 map's 49 tiles are too few to
    /// share out), F(2×2, 3×3) otherwise. The same rule in both precisions.
    pub(super) fn of(g: &Geometry) -> Self {
        if g.kernel_h == 5 {
            Variant::F2x5
        } else if saving_of(g, 4) >= MIN_SAVING_4X4_3X3 && tiles_per_worker_of(g, 4) >= BLOCK_ALIGN {
            Variant::F4x3
        } else {
            Variant::F2x3
        }
    }

    /// The points `ξ` of a tile: one product each.
    fn points(self) -> usize {
        match self {
            Variant::F2x3 => 16,
            Variant::F4x3 | Variant::F2x5 => 36,
        }
    }
}

/// `$pass::<T, Algorithm, M, R, N>(args)` for the algorithm of `$variant`.
macro_rules! with_variant {
    ($variant:expr, $pass:ident::<$t:ty>($($arg:expr),* $(,)?)) => {
        match $variant {
            Variant::F2x3 => $pass::<$t, F2x3, 2, 3, 4>($($arg),*),
            Variant::F4x3 => $pass::<$t, F4x3, 4, 3, 6>($($arg),*),
            Variant::F2x5 => $pass::<$t, F2x5, 2, 5, 6>($($arg),*),
        }
    };
}

/// 3×3 weight gradients run here where the tiling wastes little (ResNet's
/// 56, 28 and 14 maps save 2.25, AlexNet's 13×13 1.94; ResNet's 7×7 1.72)...
const MIN_WEIGHT_GRADIENT_SAVING_3X3: f64 = 1.9;
/// ...or where each worker gets this many tiles: against im2col, 7×7 maps
/// lose with 32–48 tiles a worker and win from 128 (docs/performance.md).
const MIN_WEIGHT_GRADIENT_TILES_PER_WORKER: usize = 128;

/// With bf16 products on bf16 instructions, im2col's product runs faster
/// and the f32 transforms do not: 3×3 weight gradients need a saving of 2
/// (ResNet's even maps), and the tiles measure is kept for the maps under
/// 8×8 it was set by. AlexNet's 13×13 maps (1.94) were 12–29 % faster on
/// im2col at batches 6 and 16 (docs/performance.md).
const MIN_WEIGHT_GRADIENT_SAVING_3X3_BF16: f64 = 2.0;
/// The side under which the tiles measure holds with bf16 instructions.
const TILES_MEASURE_SIDE_BF16: usize = 8;

/// Whether the weight gradient runs here too, with images enough to share
/// out (a single image's is slower than im2col's): for 5×5 kernels, and for
/// 3×3 ones by the two measures above (for bf16 products on bf16
/// instructions, as [`MIN_WEIGHT_GRADIENT_SAVING_3X3_BF16`] says).
pub(super) fn applies_to_weight_gradient(g: &Geometry) -> bool {
    applies_to_weight_gradient_with(g, g.products == Precision::Bf16 && crate::gemm::bf16_in_hardware())
}

/// [`applies_to_weight_gradient`], told whether the products run on bf16
/// instructions.
fn applies_to_weight_gradient_with(g: &Geometry, bf16_instructions: bool) -> bool {
    let (min_saving, tiles_measure) = if bf16_instructions {
        (
            MIN_WEIGHT_GRADIENT_SAVING_3X3_BF16,
            g.height.max(g.width) < TILES_MEASURE_SIDE_BF16,
        )
    } else {
        (MIN_WEIGHT_GRADIENT_SAVING_3X3, true)
    };
    applies(g)
        && g.parallel_over_images()
        && (g.kernel_h == 5
            || saving(g) >= min_saving
            || (tiles_measure && tiles_per_worker(g) >= MIN_WEIGHT_GRADIENT_TILES_PER_WORKER))
}

/// The convolution of `x` with `weight`, plus `bias`.
pub(super) fn forward<T: Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    products: WeightProducts,
) -> Vec<T> {
    with_variant!(
        Variant::of(g),
        forward_with::<T>(x, Kernels::AsIs(weight), bias, g, products)
    )
}

/// The input gradient.
pub(super) fn input_gradient<T: Element>(dy: &[T], weight: &[T], g: &Geometry) -> Vec<T> {
    with_variant!(Variant::of(&g.transposed()), input_gradient_with::<T>(dy, weight, g))
}

/// The weight gradient.
pub(super) fn weight_gradient<T: Element>(dy: &[T], x: &[T], g: &Geometry) -> Vec<T> {
    with_variant!(Variant::of(g), weight_gradient_with::<T>(dy, x, g))
}

/// The weight's transform `U` in `variant`, for [`forward_with_kept_transform`]
/// on any input that variant runs: it depends on the weight alone. Made on the calling thread only: it
/// runs once per weight, inside a `OnceLock`'s initialisation, where a
/// parallel loop could let this thread take up another call's work that
/// waits on the same lock (the convolution called from a rayon task).
pub(super) fn kernel_transform<T: Element>(weight: &[T], g: &Geometry, variant: Variant) -> Vec<T> {
    fn with<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
        weight: &[T],
        g: &Geometry,
    ) -> Vec<T> {
        let mut u = vec![T::ZERO; kernel_transform_len::<M, R, N>(g)];
        kernel_tiles::<T, A, M, R, N>(Kernels::AsIs(weight), g.out_channels, g.channels, &mut u, Threads::One);
        u
    }
    with_variant!(variant, with::<T>(weight, g))
}

/// The weight's transform `U` in `variant` ([`kernel_transform`]) as the
/// left operand of each point's product (`out_channels × channels`), in
/// point order.
pub(super) fn transform_operands<'a, T: Element>(u: &'a [T], g: &Geometry, variant: Variant) -> Vec<Matrix<'a, T>> {
    let points = variant.points();
    let (k, ch) = (g.out_channels, g.channels);
    (0..points)
        .map(|xi| Matrix::strided(&u[xi * ch..], k, ch, points * ch, 1))
        .collect()
}

/// [`forward`] with the weight's [`kernel_transform`] in `variant` made beforehand.
pub(super) fn forward_with_kept_transform<T: Element>(
    x: &[T],
    u: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    variant: Variant,
    products: WeightProducts,
) -> Vec<T> {
    with_variant!(variant, forward_with_transform::<T>(x, u, bias, g, products))
}

/// The `M×M` tiling of a geometry's output.
#[derive(Clone, Copy)]
struct Tiling {
    side: usize,
    rows: usize,
    cols: usize,
    /// Tiles of all images: the columns of every product.
    total: usize,
}

impl Tiling {
    fn new(g: &Geometry, side: usize) -> Self {
        let (rows, cols) = (g.out_h.div_ceil(side), g.out_w.div_ceil(side));
        Self {
            side,
            rows,
            cols,
            total: g.batch * rows * cols,
        }
    }

    fn per_image(&self) -> usize {
        self.rows * self.cols
    }

    /// Image, tile row and tile column of tile number `tile`.
    fn locate(&self, tile: usize) -> (usize, usize, usize) {
        let (b, rest) = (tile / self.per_image(), tile % self.per_image());
        (b, rest / self.cols, rest % self.cols)
    }

    /// `tiles` as runs of at most [`LANES`] consecutive tiles of one tile row.
    fn chunks(&self, tiles: Range<usize>) -> Vec<Chunk> {
        let mut chunks = Vec::with_capacity(tiles.len().div_ceil(LANES) + 2 * self.rows);
        let mut tile = tiles.start;
        while tile < tiles.end {
            let (image, row, col) = self.locate(tile);
            let len = (self.cols - col).min(LANES).min(tiles.end - tile);
            chunks.push(Chunk {
                offset: tile - tiles.start,
                image,
                y: row * self.side,
                x: col * self.side,
                len,
            });
            tile += len;
        }
        chunks
    }
}

/// Consecutive tiles of one tile row, transformed together.
struct Chunk {
    /// Position of the first tile in its block.
    offset: usize,
    image: usize,
    /// Output row and column of the first tile's corner.
    y: usize,
    x: usize,
    len: usize,
}

impl Chunk {
    /// The output columns `x..x + width` its tiles cover inside a row of `out_w`.
    fn width(&self, side: usize, out_w: usize) -> usize {
        (side * self.len).min(out_w - self.x)
    }
}

/// Bytes of one block's transformed tiles and products: about a core's L2
/// cache, so each block is transformed, multiplied and transformed back
/// while it is still in cache. The weight gradient's blocks too: longer
/// ones would pass over the `out × in` sums fewer times, but fall out of
/// cache and are slower overall.
const BLOCK_BYTES: usize = 1 << 20;
const MIN_BLOCK: usize = 8;
/// Block lengths are rounded up to this many tiles: the rows of the GEMM
/// micro-kernel (4 AVX-512 registers of f32), so no product ends on a thin edge.
const BLOCK_ALIGN: usize = 64;

/// Tiles per block for `rows` transformed values per point and tile (both
/// operands), at most a worker's share of the tiles.
fn block_len<T>(budget: usize, points: usize, rows: usize, tiling: Tiling, workers: usize) -> usize {
    let fit = budget / (points * rows * std::mem::size_of::<T>());
    fit.max(MIN_BLOCK)
        .next_multiple_of(BLOCK_ALIGN)
        .min(tiling.total.div_ceil(workers))
        .max(1)
}

/// `Bᵀ d B` of every channel at the `chunks` of a block, into `v` as
/// `[ξ][channel][tile]` with rows of `stride` (at least the block's tiles
/// plus [`LANES`]: each chunk stores all its lanes, the ones past its end
/// overwritten by the next chunk or falling into the row's slack).
#[inline(always)]
fn transform_input_block<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    sources: &[ChunkPlanes<T, M>],
    channels: usize,
    chunks: &[Chunk],
    stride: usize,
    v: &mut [T],
) {
    let mut d = [[Lanes::<T>::default(); N]; N];
    let mut v_tile = [[Lanes::<T>::default(); N]; N];
    for channel in 0..channels {
        for (chunk, &(planes, first_plane)) in chunks.iter().zip(sources) {
            let plane = first_plane + channel;
            // The tile's corner in the padded frame is its output corner.
            for (i, d_row) in d.iter_mut().enumerate() {
                for (q, lanes) in d_row.iter_mut().enumerate() {
                    lanes.0 = *planes.lanes(plane, chunk.y + i, q % M, chunk.x / M + q / M);
                }
            }
            A::Input::sandwich_into::<T, Lanes<T>>(&d, &mut v_tile);
            for (xi, lanes) in v_tile.iter().flatten().enumerate() {
                lanes.store_all(&mut v[xi * point_stride(channels, stride) + channel * stride + chunk.offset..]);
            }
        }
    }
}

/// `Aᵀ M A` of output channels `outs` at the `chunks` of a block, from the
/// products `m` (`[ξ][out][tile]`, rows of `n`, [`point_stride`] apart),
/// plus the bias, written into the output rows the chunks' tiles cover:
/// every place of them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_output_channels<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    m: &[T],
    n: usize,
    chunks: &[Chunk],
    outs: Range<usize>,
    bias: Option<&[T]>,
    g: &Geometry,
    out: &SharedOutput<MaybeUninit<T>>,
) {
    let k = g.out_channels;
    let mut products = [[Lanes::<T>::default(); N]; N];
    let mut values = [[Lanes::<T>::default(); M]; M];
    for o in outs {
        let shift = bias.map_or(T::ZERO, |bias| bias[o]);
        for chunk in chunks {
            for (a, row) in products.iter_mut().enumerate() {
                for (b, lanes) in row.iter_mut().enumerate() {
                    lanes.load_all(&m[(a * N + b) * point_stride(k, n) + o * n + chunk.offset..]);
                }
            }
            A::Output::sandwich_into::<T, Lanes<T>>(&products, &mut values);
            let plane = (chunk.image * k + o) * g.positions();
            let width = chunk.width(M, g.out_w);
            for (i, tile_row) in values.iter().enumerate() {
                let oy = chunk.y + i;
                if oy >= g.out_h {
                    break;
                }
                // SAFETY: this chunk's tiles own these output columns of
                // the row, and only this call writes output channel `o`
                // of them.
                let row = unsafe { out.slice(plane + oy * g.out_w + chunk.x, width) };
                for (q, place) in row.iter_mut().enumerate() {
                    place.write(tile_row[q % M].0[q / M] + shift);
                }
            }
        }
    }
}

/// An input laid out for [`transform_input_block`]: framed so that every
/// input tile of the tiling lies inside, padding included.
fn input_planes<T: Element, const M: usize, const R: usize, const N: usize>(
    x: &[T],
    g: &Geometry,
    tiling: Tiling,
    threads: Threads,
) -> PhasePlanes<T, M> {
    PhasePlanes::new(
        x,
        (g.height, g.width),
        g.padding,
        tiling.rows * M + N - M,
        tiling.cols + (N - 1) / M,
        threads,
    )
}

/// Where a block's input tiles are read from.
#[derive(Clone, Copy)]
enum TileSource<'a, T: Element, const M: usize> {
    /// The planes of every image ([`input_planes`]), made before the blocks.
    Batch(&'a PhasePlanes<T, M>),
    /// The images themselves: each worker makes the planes of the images
    /// its blocks meet as it meets them ([`MadePlanes`]), so that their
    /// tiles' transforms read them back from cache. Made for the whole
    /// batch first, a large batch's planes go out to memory and come back
    /// (docs/performance.md).
    Images(&'a [T]),
}

impl<T: Element, const M: usize> TileSource<'_, T, M> {
    /// [`TileSource::Images`] for batches of at least two images a worker
    /// (at most one image a worker is made twice, where the shares of two
    /// workers meet); [`TileSource::Batch`] for smaller ones, whose planes
    /// every worker helps make and which stay in cache.
    fn takes_images(g: &Geometry, workers: usize) -> bool {
        g.batch >= 2 * workers
    }
}

/// The planes one chunk's tiles read, and the plane of its image's first channel in them.
type ChunkPlanes<'a, T, const M: usize> = (&'a PhasePlanes<T, M>, usize);

/// The planes of the images one worker's blocks meet
/// ([`TileSource::Images`]): each image's made when a block first meets
/// it, dropped when a block starts past it. A worker's blocks go through
/// its tiles in order, so each image is made once a worker.
struct MadePlanes<T: Element, const M: usize>(Vec<(usize, PhasePlanes<T, M>)>);

impl<T: Element, const M: usize> MadePlanes<T, M> {
    fn new() -> Self {
        Self(Vec::new())
    }

    /// Makes sure the planes of `images` are made (`make(image)`), and drops any others.
    fn cover(&mut self, images: Range<usize>, make: impl Fn(usize) -> PhasePlanes<T, M>) {
        self.0.retain(|(image, _)| images.contains(image));
        for image in images {
            if !self.0.iter().any(|(made, _)| *made == image) {
                self.0.push((image, make(image)));
            }
        }
    }

    /// The planes of `image`, made by [`Self::cover`].
    fn of(&self, image: usize) -> &PhasePlanes<T, M> {
        let made = self.0.iter().find(|(made, _)| *made == image);
        &made.expect("the block's images were covered").1
    }
}

/// How the kernels of a convolution are read from its weight.
#[derive(Clone, Copy)]
enum Kernels<'a, T> {
    /// `out × in × R × R`.
    AsIs(&'a [T]),
    /// The input gradient's: the forward weight (`in × out × R × R` as seen
    /// from here) with its channels swapped and each kernel turned 180°, read
    /// in place, so no turned copy of the whole weight is allocated and
    /// scattered on every call.
    Turned(&'a [T]),
}

impl<T: Element> Kernels<'_, T> {
    /// The kernels from input channels `first..first + lanes` to output
    /// channel `o` (of `out_channels × channels`) into `kernel`, one lane each.
    #[inline(always)]
    fn gather<const R: usize>(
        &self,
        (out_channels, channels): (usize, usize),
        o: usize,
        first: usize,
        lanes: usize,
        kernel: &mut [[Lanes<T>; R]; R],
    ) {
        let taps = R * R;
        match *self {
            Kernels::AsIs(weight) => {
                let rows = weight[(o * channels + first) * taps..].chunks_exact(taps);
                for (lane, row) in rows.take(lanes).enumerate() {
                    for (tap, &value) in row.iter().enumerate() {
                        kernel[tap / R][tap % R].0[lane] = value;
                    }
                }
            }
            Kernels::Turned(weight) => {
                for lane in 0..lanes {
                    let row = &weight[((first + lane) * out_channels + o) * taps..][..taps];
                    for (tap, &value) in row.iter().rev().enumerate() {
                        kernel[tap / R][tap % R].0[lane] = value;
                    }
                }
            }
        }
    }
}

/// `U` of `out_channels × channels` kernels into `u`: `[out][ξ][in]`, output
/// channels in parallel when `threads` allows (so `U_ξ` is an `out × in`
/// view with row stride `N²·in`), the kernels of [`LANES`] input channels
/// transformed together, so the transform vectorises.
fn kernel_tiles<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    kernels: Kernels<T>,
    out_channels: usize,
    channels: usize,
    u: &mut [T],
    threads: Threads,
) {
    // The gather and the transform are loops over lanes: built for wide vectors.
    let transform = |(o, u_o): (usize, &mut [T])| {
        crate::cpu::vectorised(
            #[inline(always)]
            || kernel_tiles_of::<T, A, M, R, N>(kernels, (out_channels, channels), o, u_o),
        )
    };
    let u = &mut u[..out_channels * N * N * channels];
    match threads {
        Threads::All => u.par_chunks_mut(N * N * channels).enumerate().for_each(transform),
        Threads::One => u.chunks_mut(N * N * channels).enumerate().for_each(transform),
    }
}

/// [`kernel_tiles`] of output channel `o`, into its `u_o` (`[ξ][in]`).
#[inline(always)]
fn kernel_tiles_of<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    kernels: Kernels<T>,
    (out_channels, channels): (usize, usize),
    o: usize,
    u_o: &mut [T],
) {
    let mut kernel = [[Lanes::<T>::default(); R]; R];
    let mut transformed = [[Lanes::<T>::default(); N]; N];
    for first in (0..channels).step_by(LANES) {
        let lanes = LANES.min(channels - first);
        kernels.gather((out_channels, channels), o, first, lanes, &mut kernel);
        A::Kernel::sandwich_into::<T, Lanes<T>>(&kernel, &mut transformed);
        for (xi, values) in transformed.iter().flatten().enumerate() {
            let at = &mut u_o[xi * channels + first..];
            // A whole vector's length known here: a vector store, not a call to memmove.
            if lanes == LANES {
                at[..LANES].copy_from_slice(&values.0);
            } else {
                at[..lanes].copy_from_slice(&values.0[..lanes]);
            }
        }
    }
}

/// Elements of a weight's `U`: `N²` per kernel.
fn kernel_transform_len<const M: usize, const R: usize, const N: usize>(g: &Geometry) -> usize {
    g.out_channels * N * N * g.channels
}

/// The work on one block of tiles, with the worker's scratch buffers.
trait Block {
    type Scratch;
    /// Must be `#[inline(always)]`, so that [`run_block`] compiles it for wide vectors.
    fn run(&self, tiles: Range<usize>, scratch: &mut Self::Scratch);
}

/// Runs `block` compiled for the widest vectors the kernels may use
/// ([`crate::cpu::vectorised`]): the transforms are plain loops over lanes,
/// which the baseline x86-64 target compiles to SSE2.
fn run_block<B: Block>(block: &B, tiles: Range<usize>, scratch: &mut B::Scratch) {
    crate::cpu::vectorised(
        #[inline(always)]
        || block.run(tiles, scratch),
    )
}

/// The input both kinds of block cut their tiles from, and how.
struct InputTiles<'a, T: Element, A, const M: usize, const R: usize, const N: usize> {
    algorithm: PhantomData<fn() -> A>,
    g: &'a Geometry,
    tiling: Tiling,
    source: TileSource<'a, T, M>,
}

impl<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize> InputTiles<'_, T, A, M, R, N> {
    /// The chunks of `tiles`, with `Bᵀ d B` of their input tiles written into
    /// `v` (rows of [`padded_row`]`(tiles.len())`); `made` holds the
    /// worker's planes where the source is the images.
    #[inline(always)]
    fn transform(&self, tiles: Range<usize>, v: &mut [T], made: &mut MadePlanes<T, M>) -> Vec<Chunk> {
        let (g, tiling) = (self.g, self.tiling);
        let stride = padded_row(tiles.len());
        let chunks = tiling.chunks(tiles);
        let sources: Vec<ChunkPlanes<T, M>> = match self.source {
            TileSource::Batch(planes) => chunks.iter().map(|chunk| (planes, chunk.image * g.channels)).collect(),
            TileSource::Images(x) => {
                let images = match (chunks.first(), chunks.last()) {
                    (Some(first), Some(last)) => first.image..last.image + 1,
                    _ => 0..0,
                };
                made.cover(images, |image| {
                    let x = &x[image * g.image_len()..][..g.image_len()];
                    input_planes::<T, M, R, N>(x, g, tiling, Threads::One)
                });
                chunks.iter().map(|chunk| (made.of(chunk.image), 0)).collect()
            }
        };
        transform_input_block::<T, A, M, R, N>(&sources, g.channels, &chunks, stride, v);
        chunks
    }
}

/// The input transform of a block alone, into the scratch `v`.
impl<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize> Block
    for InputTiles<'_, T, A, M, R, N>
{
    type Scratch = Scratch<T>;

    #[inline(always)]
    fn run(&self, tiles: Range<usize>, v: &mut Scratch<T>) {
        self.transform(tiles, v, &mut MadePlanes::new());
    }
}

/// Elements from one point `ξ`'s plane of `rows` rows of `row_len` to the
/// next: one cache line more than the plane. A tile's `N²` points go to `N²`
/// planes; with whole cache lines per row and channels a multiple of 64
/// (every layer here) the planes would be whole multiples of 4 KiB apart, all
/// on the same L1 sets, and the stores of the input transforms and the loads
/// of the output transforms took most of the transforms' time.
fn point_stride(rows: usize, row_len: usize) -> usize {
    rows * row_len + LANES
}

/// Row length of a block's transformed tiles: its tiles plus [`LANES`] of
/// slack for the lanes past the last chunk's end.
fn padded_row(tiles: usize) -> usize {
    tiles + LANES
}

/// One forward block: transform its tiles, multiply, transform back into the output.
struct ForwardBlock<'a, T: Element, A, const M: usize, const R: usize, const N: usize> {
    input: InputTiles<'a, T, A, M, R, N>,
    u: &'a [T],
    bias: Option<&'a [T]>,
    out: &'a SharedOutput<'a, MaybeUninit<T>>,
    products: WeightProducts<'a>,
}

impl<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize> Block
    for ForwardBlock<'_, T, A, M, R, N>
{
    /// Transformed tiles, products (each point's plane with [`LANES`]
    /// of slack at its end: every chunk loads all its lanes), and the
    /// worker's planes.
    type Scratch = (Scratch<T>, Scratch<T>, MadePlanes<T, M>);

    #[inline(always)]
    fn run(&self, tiles: Range<usize>, (v, m, made): &mut Self::Scratch) {
        let g = self.input.g;
        let (n, stride) = (tiles.len(), padded_row(tiles.len()));
        let chunks = self.input.transform(tiles, v, made);
        multiply_points::<T, N>(self.products, self.u, (v, stride), (m, n), g, Threads::One);
        transform_output_channels::<T, A, M, R, N>(m, n, &chunks, 0..g.out_channels, self.bias, g, self.out);
    }
}

/// The forward products `M_ξ = U_ξ · V_ξ` of every point, from the
/// transformed tiles `v` (rows of `stride`) into `m` (rows of `n`, the
/// tiles).
#[inline(always)]
fn multiply_points<T: Element, const N: usize>(
    products: WeightProducts,
    u: &[T],
    (v, stride): (&[T], usize),
    (m, n): (&mut [T], usize),
    g: &Geometry,
    threads: Threads,
) {
    let (k, ch, points) = (g.out_channels, g.channels, N * N);
    for xi in 0..points {
        products.run(
            xi,
            &mut m[xi * point_stride(k, n)..][..k * n],
            false,
            Matrix::strided(&u[xi * ch..], k, ch, points * ch, 1),
            Matrix::strided(&v[xi * point_stride(ch, stride)..], ch, n, stride, 1),
            threads,
        );
    }
}

/// One weight-gradient block: transform its input and output-gradient tiles
/// and add their products to the worker's sums `du`.
struct WeightBlock<'a, T: Element, A, const M: usize, const R: usize, const N: usize> {
    input: InputTiles<'a, T, A, M, R, N>,
    /// The output gradient framed by [`output_planes`].
    dy: &'a PhasePlanes<T, M>,
}

impl<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize> Block
    for WeightBlock<'_, T, A, M, R, N>
{
    /// Transformed input tiles, transformed output-gradient tiles (both with
    /// rows of [`padded_row`]), the sums.
    type Scratch = (Scratch<T>, Scratch<T>, Vec<T>);

    #[inline(always)]
    fn run(&self, tiles: Range<usize>, (v, dm, du): &mut Self::Scratch) {
        let g = self.input.g;
        let n = tiles.len();
        self.transform(tiles, v, dm);
        for xi in 0..N * N {
            let sums = &mut du[xi * point_stride(g.out_channels, g.channels)..][..g.out_channels * g.channels];
            add_product(g, sums, true, xi, (v, dm, n));
        }
    }
}

impl<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize> WeightBlock<'_, T, A, M, R, N> {
    /// The input tiles of `tiles` transformed into `v` and the output
    /// gradient's into `dm`, both `[ξ][channel][tile]` with rows of
    /// [`padded_row`]`(tiles.len())`.
    #[inline(always)]
    fn transform(&self, tiles: Range<usize>, v: &mut [T], dm: &mut [T]) {
        let k = self.input.g.out_channels;
        let stride = padded_row(tiles.len());
        let chunks = self.input.transform(tiles, v, &mut MadePlanes::new());
        let mut e = [[Lanes::<T>::default(); M]; M];
        let mut dm_tile = [[Lanes::<T>::default(); N]; N];
        for o in 0..k {
            for chunk in &chunks {
                let plane = chunk.image * k + o;
                for (i, e_row) in e.iter_mut().enumerate() {
                    for (b, lanes) in e_row.iter_mut().enumerate() {
                        lanes.0 = *self.dy.lanes(plane, chunk.y + i, b, chunk.x / M);
                    }
                }
                A::OutputGradient::sandwich_into::<T, Lanes<T>>(&e, &mut dm_tile);
                for (xi, lanes) in dm_tile.iter().flatten().enumerate() {
                    lanes.store_all(&mut dm[xi * point_stride(k, stride) + o * stride + chunk.offset..]);
                }
            }
        }
    }
}

/// `sums += ∂M_ξ · V_ξᵀ` (`=` unless `accumulate`) for point `xi`, from
/// `n` tiles transformed by [`WeightBlock::transform`] into `v` and `dm`;
/// `sums` that point's `out × in` sums.
fn add_product<T: Element>(g: &Geometry, sums: &mut [T], accumulate: bool, xi: usize, (v, dm, n): (&[T], &[T], usize)) {
    let (k, ch, stride) = (g.out_channels, g.channels, padded_row(n));
    matmul_in(
        g.products,
        sums,
        accumulate,
        Matrix::strided(&dm[xi * point_stride(k, stride)..], k, n, stride, 1),
        Matrix::strided(&v[xi * point_stride(ch, stride)..], ch, n, stride, 1).t(),
        Threads::One,
    );
}

/// An output gradient laid out for [`WeightBlock`]: zeros where the tiles
/// reach past the output.
fn output_planes<T: Element, const M: usize>(dy: &[T], g: &Geometry, tiling: Tiling) -> PhasePlanes<T, M> {
    PhasePlanes::new(dy, (g.out_h, g.out_w), 0, tiling.rows * M, tiling.cols, Threads::All)
}

/// The forward pass of the kernels read as `kernels` says, their transform
/// made for this call.
fn forward_with<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    x: &[T],
    kernels: Kernels<T>,
    bias: Option<&[T]>,
    g: &Geometry,
    products: WeightProducts,
) -> Vec<T> {
    let mut u = Scratch::stale(kernel_transform_len::<M, R, N>(g));
    kernel_tiles::<T, A, M, R, N>(kernels, g.out_channels, g.channels, &mut u, Threads::All);
    // bf16 without kept operands: the transform packed once for every
    // block, the points in parallel.
    let packed: Option<Vec<PackedLhs>> = T::as_f32(&u)
        .filter(|_| products.precision == Precision::Bf16 && products.packed.is_none())
        .map(|u| {
            transform_operands(u, g, A::VARIANT)
                .into_par_iter()
                .map(|point| PackedLhs::bf16(point, Threads::One))
                .collect()
        });
    let products = match &packed {
        Some(packed) => WeightProducts {
            packed: Some(packed),
            ..products
        },
        None => products,
    };
    forward_with_transform::<T, A, M, R, N>(x, &u, bias, g, products)
}

/// The forward pass from the weight's transform `U` ([`kernel_tiles`]).
fn forward_with_transform<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    x: &[T],
    u: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    products: WeightProducts,
) -> Vec<T> {
    let tiling = Tiling::new(g, M);
    let workers = rayon::current_num_threads();
    let by_channels = splits_by_channels(tiling, workers);
    let planes = (by_channels || !TileSource::<T, M>::takes_images(g, workers))
        .then(|| input_planes::<T, M, R, N>(x, g, tiling, Threads::All));
    let input = InputTiles {
        algorithm: PhantomData,
        g,
        tiling,
        source: planes.as_ref().map_or(TileSource::Images(x), TileSource::Batch),
    };
    if by_channels {
        return forward_by_channels(input, u, bias, products);
    }
    let (k, ch, points) = (g.out_channels, g.channels, N * N);
    let mut y = UnwrittenOutput::new(g.batch * g.output_len());
    // Each output element belongs to exactly one tile, each tile to one block.
    let out = y.places();
    let block = block_len::<T>(BLOCK_BYTES, points, ch + k, tiling, rayon::current_num_threads());
    for_each_block(
        tiling.total,
        block,
        || {
            (
                Scratch::stale(points * point_stride(ch, padded_row(block))),
                Scratch::stale(points * point_stride(k, block)),
                MadePlanes::new(),
            )
        },
        |tiles, scratch| {
            let block = ForwardBlock::<T, A, M, R, N> {
                input: InputTiles { ..input },
                u,
                bias,
                out: &out,
                products,
            };
            run_block(&block, tiles, scratch)
        },
        drop,
    );
    // SAFETY: the blocks covered every tile, and each wrote all of its
    // tiles' output elements, in every output channel.
    unsafe { y.assume_written() }
}

/// The forward pass of a tiling too small to deal out by tiles (a single
/// small map): one block of every tile, its output channels dealt out
/// instead. Each product is split among the workers by rows (output
/// channels), and each worker transforms a share of the output channels
/// back.
fn forward_by_channels<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    input: InputTiles<T, A, M, R, N>,
    u: &[T],
    bias: Option<&[T]>,
    products: WeightProducts,
) -> Vec<T> {
    let (g, tiling) = (input.g, input.tiling);
    let (k, ch, points) = (g.out_channels, g.channels, N * N);
    let (n, stride) = (tiling.total, padded_row(tiling.total));
    // The input transform runs on this worker alone: it is a small share of
    // the time next to the products, and written to share its buffer out it
    // compiled to slower code for the tile blocks of every other pass.
    let mut v = Scratch::<T>::stale(points * point_stride(ch, stride));
    run_block(&input, 0..n, &mut v);
    let mut m = Scratch::<T>::stale(points * point_stride(k, n));
    multiply_points::<T, N>(products, u, (&v, stride), (&mut m, n), g, Threads::All);
    let mut y = UnwrittenOutput::new(g.batch * g.output_len());
    let chunks = tiling.chunks(0..n);
    let transform = OutputTransform::<T, A, M, R, N> {
        algorithm: PhantomData,
        m: &m,
        n,
        chunks: &chunks,
        bias,
        g,
        out: &y.places(),
    };
    let workers = rayon::current_num_threads();
    for_each_block(
        k,
        k.div_ceil(workers),
        || (),
        |outs, _| run_block(&transform, outs, &mut ()),
        drop,
    );
    // SAFETY: the shares covered every output channel, and each wrote its
    // channels' output elements at every tile.
    unsafe { y.assume_written() }
}

/// [`transform_output_channels`] of a share of the output channels.
struct OutputTransform<'a, T: Element, A, const M: usize, const R: usize, const N: usize> {
    algorithm: PhantomData<fn() -> A>,
    m: &'a [T],
    n: usize,
    chunks: &'a [Chunk],
    bias: Option<&'a [T]>,
    g: &'a Geometry,
    out: &'a SharedOutput<'a, MaybeUninit<T>>,
}

impl<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize> Block
    for OutputTransform<'_, T, A, M, R, N>
{
    type Scratch = ();

    #[inline(always)]
    fn run(&self, outs: Range<usize>, _: &mut ()) {
        transform_output_channels::<T, A, M, R, N>(self.m, self.n, self.chunks, outs, self.bias, self.g, self.out);
    }
}

fn input_gradient_with<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    dy: &[T],
    weight: &[T],
    g: &Geometry,
) -> Vec<T> {
    forward_with::<T, A, M, R, N>(
        dy,
        Kernels::Turned(weight),
        None,
        &g.transposed(),
        WeightProducts {
            precision: g.products,
            packed: None,
        },
    )
}

/// `Gᵀ (Σ_tiles (A ∂y Aᵀ) ⊙ (Bᵀ d B)) G`, each worker summing its blocks'
/// products, then the workers' sums added.
fn weight_gradient_with<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    dy: &[T],
    x: &[T],
    g: &Geometry,
) -> Vec<T> {
    let split = SumsSplit::of::<T>(g, N * N, rayon::current_num_threads());
    weight_gradient_split::<T, A, M, R, N>(dy, x, g, split)
}

/// [`weight_gradient_with`] with its sums split as `split` says.
fn weight_gradient_split<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    dy: &[T],
    x: &[T],
    g: &Geometry,
    split: SumsSplit,
) -> Vec<T> {
    let tiling = Tiling::new(g, M);
    let (k, ch) = (g.out_channels, g.channels);
    let planes = input_planes::<T, M, R, N>(x, g, tiling, Threads::All);
    let dy = output_planes(dy, g, tiling);
    let block = WeightBlock::<T, A, M, R, N> {
        input: InputTiles {
            algorithm: PhantomData,
            g,
            tiling,
            source: TileSource::Batch(&planes),
        },
        dy: &dy,
    };
    let plane = point_stride(k, ch);
    let workers = rayon::current_num_threads();
    let (by_points, by_tiles);
    let du: &[T] = match split {
        SumsSplit::ByPoints => {
            by_points = sums_by_points(&block, workers);
            &by_points
        }
        SumsSplit::ByTiles => {
            by_tiles = sums_by_tiles(&block, workers);
            &by_tiles
        }
    };
    // `Gᵀ ∂U G` of LANES input channels at a time, so that reading the N²
    // points' sums is a vector load per point rather than a value per channel.
    let taps = R * R;
    let mut dw = vec![T::ZERO; k * ch * taps];
    dw.par_chunks_mut(ch * taps).enumerate().for_each(|(o, dw_o)| {
        let mut transformed = [[Lanes::<T>::default(); N]; N];
        let mut kernel = [[Lanes::<T>::default(); R]; R];
        for first in (0..ch).step_by(LANES) {
            let lanes = LANES.min(ch - first);
            for (a, row) in transformed.iter_mut().enumerate() {
                for (b, values) in row.iter_mut().enumerate() {
                    let start = (a * N + b) * plane + o * ch + first;
                    values.0[..lanes].copy_from_slice(&du[start..start + lanes]);
                }
            }
            A::KernelGradient::sandwich_into::<T, Lanes<T>>(&transformed, &mut kernel);
            for (lane, kernel_out) in dw_o[first * taps..].chunks_exact_mut(taps).take(lanes).enumerate() {
                for (tap, out) in kernel_out.iter_mut().enumerate() {
                    *out = kernel[tap / R][tap % R].0[lane];
                }
            }
        }
    });
    dw
}

/// Bytes of the point sums `∂U` (`out × in` per point) each worker may
/// keep a copy of: above, the workers share one copy, split by points
/// ([`sums_by_points`]). Each worker's copy is read and written by every
/// block's products, so copies that together outgrow the shared L3 cache
/// (ResNet's layer4: 16 MiB a worker) go to memory and back on every block.
const MAX_SUMS_BYTES_PER_WORKER: usize = 8 << 20;

/// How the weight gradient's point sums `∂U` are split among the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SumsSplit {
    /// A copy of all the sums per worker, each adding its tiles' products
    /// ([`sums_by_tiles`]).
    ByTiles,
    /// One copy, each point's sums added to by one worker ([`sums_by_points`]).
    ByPoints,
}

impl SumsSplit {
    /// By points where a copy of the sums per worker would pass
    /// [`MAX_SUMS_BYTES_PER_WORKER`], else by tiles.
    fn of<T>(g: &Geometry, points: usize, workers: usize) -> Self {
        let bytes = points * g.out_channels * g.channels * std::mem::size_of::<T>();
        if workers > 1 && bytes > MAX_SUMS_BYTES_PER_WORKER {
            Self::ByPoints
        } else {
            Self::ByTiles
        }
    }
}

/// The point sums `∂U` with the tiles dealt out to the workers in blocks,
/// each worker adding its blocks' products to its own copy of the sums, the
/// copies added up at the end.
fn sums_by_tiles<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    block: &WeightBlock<T, A, M, R, N>,
    workers: usize,
) -> Vec<T> {
    let g = block.input.g;
    let (k, ch, points) = (g.out_channels, g.channels, N * N);
    let tiling = block.input.tiling;
    let len = block_len::<T>(BLOCK_BYTES, points, ch + k, tiling, workers);
    let sums = for_each_block(
        tiling.total,
        len,
        || {
            (
                Scratch::stale(points * point_stride(ch, padded_row(len))),
                Scratch::stale(points * point_stride(k, padded_row(len))),
                vec![T::ZERO; points * point_stride(k, ch)],
            )
        },
        |tiles, scratch| run_block(block, tiles, scratch),
        |(_, _, du)| du,
    );
    sum_parts(sums, points * point_stride(k, ch))
}

/// Tiles each worker transforms at a time in [`sums_by_points`]: the depth
/// of each product a worker's tiles make.
const TILES_PER_WORKER_BY_POINTS: usize = 128;

/// The point sums `∂U` as one copy, split by points: the workers transform
/// a share of the tiles each, then each point's sums take the products of
/// every worker's tiles, the points dealt out to the workers. Each product
/// is as deep as a worker's share, and no worker keeps sums of its own.
fn sums_by_points<T: Element, A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>(
    block: &WeightBlock<T, A, M, R, N>,
    workers: usize,
) -> Scratch<T> {
    let g = block.input.g;
    let (k, ch) = (g.out_channels, g.channels);
    let total = block.input.tiling.total;
    let share = TILES_PER_WORKER_BY_POINTS.min(total.div_ceil(workers));
    let mut du = Scratch::stale(N * N * point_stride(k, ch));
    // The transformed tiles, a part per worker, kept by the calling thread
    // (parts dropped on it would leave the workers to allocate theirs anew
    // on every call).
    let (v_len, dm_len) = (
        N * N * point_stride(ch, padded_row(share)),
        N * N * point_stride(k, padded_row(share)),
    );
    let (mut v, mut dm) = (Scratch::stale(workers * v_len), Scratch::stale(workers * dm_len));
    for first in (0..total).step_by(workers * share) {
        let tiles = first..(first + workers * share).min(total);
        // Equal shares of `tiles`, each at most `share` long.
        let share_of =
            |w: usize| tiles.start + w * tiles.len() / workers..tiles.start + (w + 1) * tiles.len() / workers;
        v.par_chunks_mut(v_len)
            .zip(dm.par_chunks_mut(dm_len))
            .enumerate()
            .for_each(|(w, (v, dm))| {
                crate::cpu::vectorised(
                    #[inline(always)]
                    || block.transform(share_of(w), v, dm),
                )
            });
        du.par_chunks_mut(point_stride(k, ch))
            .enumerate()
            .for_each(|(xi, sums)| {
                // The first product of all overwrites the stale sums.
                let mut accumulate = first > 0;
                let parts = v.chunks(v_len).zip(dm.chunks(dm_len)).enumerate();
                for (w, (v, dm)) in parts.filter(|(w, _)| !share_of(*w).is_empty()) {
                    add_product(g, &mut sums[..k * ch], accumulate, xi, (v, dm, share_of(w).len()));
                    accumulate = true;
                }
            });
    }
    du
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::Conv2dParams;

    fn values(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + seed) * 0.731).sin()).collect()
    }

    fn check_passes<A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>() {
        let cases: [([usize; 4], usize); 8] = [
            ([2, 3, 7, 6], 1),
            ([2, 20, 6, 6], 1), // kernels transformed LANES channels at a time: a chunk and a part
            ([1, 2, 5, 8], 0),
            ([3, 2, 4, 5], R - 1),
            ([1, 1, 1, 1], R / 2),
            ([9, 5, 6, 6], 1),
            ([2, 2, 5, 71], R / 2),
            ([3, 4, 30, 29], R / 2),
        ];
        for (input, padding) in cases {
            let weight = [input[1] + 1, input[1], R, R];
            let params = Conv2dParams { stride: 1, padding };
            let Ok(g) = Geometry::new(&input, &weight, params) else {
                continue; // the kernel does not fit this input
            };
            let x = values(g.batch * g.image_len(), 0.5);
            let w = values(weight.iter().product(), 1.5);
            let bias = values(g.out_channels, 2.5);
            let dy = values(g.batch * g.output_len(), 3.5);
            let close = |ours: Vec<f64>, reference: Vec<f64>, what: &str| {
                assert_eq!(ours.len(), reference.len(), "{what} {input:?}");
                let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
                let error = largest(ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()));
                let name = A::NAME;
                assert!(
                    error <= 1e-11 * scale.max(1.0),
                    "{name} {what} {input:?} pad {padding}: {error:e}"
                );
            };
            close(
                forward_with::<f64, A, M, R, N>(&x, Kernels::AsIs(&w), Some(&bias), &g, WeightProducts::F32),
                super::super::forward(&x, &w, Some(&bias), &g, WeightProducts::F32),
                "forward",
            );
            close(
                input_gradient_with::<f64, A, M, R, N>(&dy, &w, &g),
                super::super::input_gradient(&dy, &w, &g),
                "input gradient",
            );
            close(
                weight_gradient_with::<f64, A, M, R, N>(&dy, &x, &g),
                super::super::weight_gradient(&dy, &x, &g),
                "weight gradient",
            );
        }
    }

    /// [`forward_with_transform`] reading its tiles from the images
    /// ([`TileSource::Images`], each worker making the planes of the images
    /// its blocks meet) equals the im2col + GEMM forward pass in f64: on 2
    /// and 3 workers, with blocks that span several images, workers' shares
    /// that split an image between them, more channels than lanes, and
    /// padding 0 to `R − 1`; and batches of fewer than two images a worker
    /// make their planes for the whole batch first.
    fn check_forward_from_images<A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>() {
        for workers in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .build()
                .expect("a pool");
            for (input, padding) in [
                ([7, 5, 10, 10], 1),
                ([9, 3, 9, 10], R / 2),
                ([6, 20, 13, 13], R - 1),
                ([8, 2, 12, 9], 0),
            ] {
                let weight = [4, input[1], R, R];
                let g = Geometry::new(&input, &weight, Conv2dParams { stride: 1, padding }).expect("geometry");
                let x = values(g.batch * g.image_len(), 0.5);
                let w = values(weight.iter().product(), 1.5);
                let bias = values(g.out_channels, 2.5);
                let u = kernel_transform(&w, &g, A::VARIANT);
                let (ours, from_images, by_channels) = pool.install(|| {
                    let ours = forward_with_transform::<f64, A, M, R, N>(&x, &u, Some(&bias), &g, WeightProducts::F32);
                    (
                        ours,
                        TileSource::<f64, M>::takes_images(&g, workers),
                        splits_by_channels(Tiling::new(&g, M), workers),
                    )
                });
                let what = format!("{} {input:?} pad {padding} on {workers} workers", A::NAME);
                assert!(from_images && !by_channels, "{what}: not read from the images");
                let reference = super::super::forward(&x, &w, Some(&bias), &g, WeightProducts::F32);
                assert_eq!(ours.len(), reference.len(), "{what}");
                let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
                let error = largest(ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()));
                assert!(error <= 1e-11 * scale, "{what}: {error:e}");
            }
            let batch = |images| {
                Geometry::new(
                    &[images, 64, 56, 56],
                    &[64, 64, 3, 3],
                    Conv2dParams { stride: 1, padding: 1 },
                )
            };
            assert!(!TileSource::<f32, 4>::takes_images(
                &batch(2 * workers - 1).expect("geometry"),
                workers
            ));
            assert!(TileSource::<f32, 4>::takes_images(
                &batch(2 * workers).expect("geometry"),
                workers
            ));
        }
    }

    #[test]
    fn forward_passes_reading_the_images_equal_im2col() {
        check_forward_from_images::<F2x3, 2, 3, 4>();
        check_forward_from_images::<F2x5, 2, 5, 6>();
        check_forward_from_images::<F4x3, 4, 3, 6>();
    }

    /// [`forward_by_channels`] (through [`forward_with_transform`]) equals
    /// the im2col + GEMM forward pass in f64 with its channels dealt out
    /// unevenly (2 and 3 workers, channel counts that do not divide among
    /// them, more channels than lanes), a bias, tile rows shorter and longer
    /// than a chunk of lanes, and a batch of two; and small tilings are the
    /// ones dealt out by channels.
    fn check_forward_by_channels<A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>() {
        for workers in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .build()
                .expect("a pool");
            // One tile row of 18 tiles: longer than a chunk of lanes.
            for (input, out_channels) in [([1, 7, 7, 7], 5), ([1, 19, M, 18 * M - 1], 22), ([2, 3, 5, 6], 4)] {
                let weight = [out_channels, input[1], R, R];
                let g = Geometry::new(
                    &input,
                    &weight,
                    Conv2dParams {
                        stride: 1,
                        padding: R / 2,
                    },
                )
                .expect("geometry");
                let x = values(g.batch * g.image_len(), 0.5);
                let w = values(weight.iter().product(), 1.5);
                let bias = values(g.out_channels, 2.5);
                let u = kernel_transform(&w, &g, A::VARIANT);
                let (ours, split) = pool.install(|| {
                    let ours = forward_with_transform::<f64, A, M, R, N>(&x, &u, Some(&bias), &g, WeightProducts::F32);
                    (
                        ours,
                        splits_by_channels(Tiling::new(&g, M), rayon::current_num_threads()),
                    )
                });
                assert!(split, "{} {input:?} on {workers} workers: dealt out by tiles", A::NAME);
                let reference = super::super::forward(&x, &w, Some(&bias), &g, WeightProducts::F32);
                let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
                let error = largest(ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()));
                assert!(
                    error <= 1e-11 * scale,
                    "{} {input:?} on {workers} workers: {error:e}",
                    A::NAME
                );
            }
        }
    }

    #[test]
    fn channels_dealt_out_give_the_im2col_forward_pass() {
        check_forward_by_channels::<F2x3, 2, 3, 4>();
        check_forward_by_channels::<F2x5, 2, 5, 6>();
        check_forward_by_channels::<F4x3, 4, 3, 6>();
    }

    /// Each pass of each algorithm equals the im2col + GEMM one (itself
    /// checked against candle and finite differences) in f64, on odd sides,
    /// every padding, one output position, tile rows longer than a chunk of
    /// lanes, and several blocks.
    #[test]
    fn every_pass_of_every_algorithm_equals_im2col() {
        check_passes::<F2x3, 2, 3, 4>();
        check_passes::<F2x5, 2, 5, 6>();
        check_passes::<F4x3, 4, 3, 6>();
    }

    /// The weight gradient with its sums split by points equals the im2col
    /// one in f64 on 2 and 3 workers: fewer tiles than workers (a worker
    /// with none), shares of uneven length, and more tiles than one round of
    /// [`TILES_PER_WORKER_BY_POINTS`] a worker (the later rounds adding to
    /// the first's sums).
    fn check_sums_by_points<A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>() {
        for workers in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .build()
                .expect("a pool");
            for input in [[1, 3, 1, 1], [3, 5, 7, 9], [3, 4, 30, 29]] {
                let weight = [6, input[1], R, R];
                let params = Conv2dParams {
                    stride: 1,
                    padding: R / 2,
                };
                let g = Geometry::new(&input, &weight, params).expect("geometry");
                let x = values(g.batch * g.image_len(), 0.5);
                let dy = values(g.batch * g.output_len(), 3.5);
                let ours = pool.install(|| weight_gradient_split::<f64, A, M, R, N>(&dy, &x, &g, SumsSplit::ByPoints));
                let reference = super::super::weight_gradient(&dy, &x, &g);
                let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
                let error = largest(ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()));
                assert!(
                    error <= 1e-11 * scale.max(1.0),
                    "{} {input:?} on {workers} workers: {error:e}",
                    A::NAME
                );
            }
        }
    }

    #[test]
    fn weight_gradient_split_by_points_equals_im2col() {
        check_sums_by_points::<F2x3, 2, 3, 4>();
        check_sums_by_points::<F2x5, 2, 5, 6>();
        check_sums_by_points::<F4x3, 4, 3, 6>();
    }

    /// The sums are split by points where a copy per worker would outgrow
    /// the cache: ResNet-18's layer4 (512 channels in and out, 16 MiB of
    /// F(2×2, 3×3) sums in f32), not its layer3 (256) or AlexNet's conv4
    /// (384 in, 256 out), and never on one worker.
    #[test]
    fn sums_split_by_points_for_layer4() {
        let split = |channels: usize, out: usize, workers| {
            let g = Geometry::new(
                &[16, channels, 7, 7],
                &[out, channels, 3, 3],
                Conv2dParams { stride: 1, padding: 1 },
            )
            .expect("geometry");
            SumsSplit::of::<f32>(&g, 16, workers)
        };
        assert_eq!(split(512, 512, 2), SumsSplit::ByPoints);
        assert_eq!(split(512, 512, 1), SumsSplit::ByTiles);
        assert_eq!(split(256, 256, 2), SumsSplit::ByTiles);
        assert_eq!(split(384, 256, 2), SumsSplit::ByTiles);
    }

    /// F(4×4, 3×3) for maps that tile by 4 with little waste and give every
    /// worker a block of tiles (ResNet's 56×56 from one image, its 28×28
    /// from three); F(2×2, 3×3) for 13×13, 14×14 and 7×7 maps at any batch,
    /// and for bf16 products.
    #[test]
    fn larger_tiles_for_maps_that_tile_by_four() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        let variant = |batch, side, channels| {
            let input = [batch, channels, side, side];
            let g = Geometry::new(
                &input,
                &[channels, channels, 3, 3],
                Conv2dParams { stride: 1, padding: 1 },
            );
            Variant::of(&g.expect("geometry"))
        };
        pool.install(|| {
            assert_eq!(variant(1, 56, 64), Variant::F4x3);
            assert_eq!(variant(1, 28, 128), Variant::F2x3);
            assert_eq!(variant(3, 28, 128), Variant::F4x3);
            assert_eq!(variant(16, 28, 128), Variant::F4x3);
            for side in [14, 13, 7] {
                assert_eq!(variant(64, side, 256), Variant::F2x3, "{side}×{side}");
            }
            for (side, expected) in [(56, Variant::F4x3), (14, Variant::F2x3)] {
                let bf16 = Geometry::new(
                    &[16, 64, side, side],
                    &[64, 64, 3, 3],
                    Conv2dParams { stride: 1, padding: 1 },
                );
                let bf16 = bf16.expect("geometry").in_precision(Precision::Bf16);
                assert_eq!(Variant::of(&bf16), expected, "bf16 products, {side}×{side}");
            }
            let five = Geometry::new(
                &[1, 64, 27, 27],
                &[192, 64, 5, 5],
                Conv2dParams { stride: 1, padding: 2 },
            );
            assert_eq!(Variant::of(&five.expect("geometry")), Variant::F2x5);
        });
    }

    /// On two workers: a single image runs here when its tiles give both
    /// workers a block (AlexNet's 27×27 conv2, ResNet's 56×56 layer), except
    /// for the weight gradient; a single 13×13 map stays with im2col unless
    /// the kernel transform is kept (a single 7×7 map even then); 3×3
    /// weight gradients where the tiling wastes little or the tiles are
    /// many.
    #[test]
    fn single_images_run_here_when_their_tiles_share_out() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        let geometry = |input: [usize; 4], weight: [usize; 4], padding| {
            Geometry::new(&input, &weight, Conv2dParams { stride: 1, padding }).expect("geometry")
        };
        pool.install(|| {
            let conv2 = geometry([1, 64, 27, 27], [192, 64, 5, 5], 2);
            assert!(applies(&conv2) && !applies_to_weight_gradient(&conv2));
            let batch = geometry([4, 64, 27, 27], [192, 64, 5, 5], 2);
            assert!(applies(&batch) && applies_to_weight_gradient(&batch));
            assert!(applies(&geometry([1, 64, 56, 56], [64, 64, 3, 3], 1)));
            let conv3 = geometry([1, 192, 13, 13], [384, 192, 3, 3], 1);
            assert!(!applies(&conv3) && applies_with_kept_transform(&conv3));
            // A single 7×7 map: im2col in either precision; two: here.
            let seven = |batch| geometry([batch, 512, 7, 7], [512, 512, 3, 3], 1);
            assert!(!applies_with_kept_transform(&seven(1)) && !applies(&seven(1)));
            assert!(applies_with_kept_transform(&seven(2)));
            let seven_bf16 = |batch| seven(batch).in_precision(Precision::Bf16);
            assert!(!applies_with_kept_transform(&seven_bf16(1)) && applies_with_kept_transform(&seven_bf16(2)));
            // Too few channels for the transforms, kept or not.
            assert!(!applies_with_kept_transform(&geometry(
                [1, 32, 13, 13],
                [64, 32, 3, 3],
                1
            )));
            // 3×3 weight gradients: by the tiling's waste, or by tiles per worker.
            assert!(applies_to_weight_gradient(&geometry(
                [4, 192, 13, 13],
                [384, 192, 3, 3],
                1
            )));
            assert!(applies_to_weight_gradient(&geometry(
                [6, 256, 14, 14],
                [256, 256, 3, 3],
                1
            )));
            assert!(applies(&seven(6)) && !applies_to_weight_gradient(&seven(6)));
            assert!(applies_to_weight_gradient(&seven(16)));
        });
    }

    /// With bf16 products on bf16 instructions, 3×3 weight gradients over
    /// AlexNet's 13×13 maps take im2col at any batch; ResNet's even maps,
    /// its 7×7 maps at batch 16 and 5×5 kernels stay here; without them,
    /// as in f32.
    #[test]
    fn bf16_weight_gradients_leave_odd_maps_to_im2col() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        let geometry = |batch, channels, side, out_channels, kernel: usize| {
            let params = Conv2dParams {
                stride: 1,
                padding: kernel / 2,
            };
            Geometry::new(
                &[batch, channels, side, side],
                &[out_channels, channels, kernel, kernel],
                params,
            )
            .expect("geometry")
        };
        pool.install(|| {
            for batch in [6, 16] {
                let conv4 = geometry(batch, 384, 13, 256, 3);
                assert!(applies_to_weight_gradient_with(&conv4, false), "batch {batch}");
                assert!(!applies_to_weight_gradient_with(&conv4, true), "batch {batch}");
                for (side, channels) in [(56, 64), (28, 128), (14, 256)] {
                    let even = geometry(batch, channels, side, channels, 3);
                    assert!(
                        applies_to_weight_gradient_with(&even, true),
                        "{side}×{side}, batch {batch}"
                    );
                }
                let conv2 = geometry(batch, 64, 27, 192, 5);
                assert!(applies_to_weight_gradient_with(&conv2, true), "batch {batch}");
            }
            let seven = |batch| geometry(batch, 512, 7, 512, 3);
            assert!(applies_to_weight_gradient_with(&seven(16), true));
            assert!(!applies_to_weight_gradient_with(&seven(6), true));
        });
    }

    /// The largest of `values`, NaN if any is (`f64::max` would skip it).
    fn largest(values: impl Iterator<Item = f64>) -> f64 {
        values.fold(0.0, |m, v| if v.is_nan() || v > m { v } else { m })
    }

    /// Normwise relative error of f32 against an f64 reference.
    fn f32_error(ours: &[f32], reference: &[f64]) -> f64 {
        let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
        let error = largest(ours.iter().zip(reference).map(|(&a, b)| (f64::from(a) - b).abs()));
        error / scale
    }

    /// In f32, on layers shaped like the networks' (many channels, 13×13 and
    /// 28×28), the 2×2-tile algorithms stay within 1e-5 of the exact result
    /// (seen: 0.7–5.7e-6, im2col 0.5–4.3e-6), F(4×4, 3×3) within 5e-5 (seen:
    /// forward 2.4e-5, input gradient 3.4e-5, weight gradient 2.7e-6; with
    /// the points ±2 in place of 2, −1/2 the forward pass's was 5.5e-5); the
    /// torchvision parity tests allow 1e-4.
    #[test]
    fn f32_rounding_stays_within_1e_5() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        let cases = [
            (3, 1, 13, Variant::F2x3),
            (5, 2, 13, Variant::F2x5),
            (3, 1, 28, Variant::F4x3),
        ];
        for (kernel, padding, side, variant) in cases {
            let input = [4, 48, side, side];
            let weight = [64, 48, kernel, kernel];
            let g = Geometry::new(&input, &weight, Conv2dParams { stride: 1, padding }).expect("geometry");
            assert_eq!(pool.install(|| Variant::of(&g)), variant, "{input:?}");
            let x = values(g.batch * g.image_len(), 0.5);
            let w: Vec<f64> = values(weight.iter().product(), 1.5).iter().map(|v| v * 0.1).collect();
            let dy = values(g.batch * g.output_len(), 3.5);
            let single = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let (x32, w32, dy32) = (single(&x), single(&w), single(&dy));
            let passes = pool.install(|| {
                [
                    (
                        "forward",
                        forward(&x32, &w32, None, &g, WeightProducts::F32),
                        super::super::forward(&x32, &w32, None, &g, WeightProducts::F32),
                        super::super::forward(&x, &w, None, &g, WeightProducts::F32),
                    ),
                    (
                        "input gradient",
                        input_gradient(&dy32, &w32, &g),
                        super::super::input_gradient(&dy32, &w32, &g),
                        super::super::input_gradient(&dy, &w, &g),
                    ),
                    (
                        "weight gradient",
                        weight_gradient(&dy32, &x32, &g),
                        super::super::weight_gradient(&dy32, &x32, &g),
                        super::super::weight_gradient(&dy, &x, &g),
                    ),
                ]
            });
            for (what, winograd, im2col, exact) in passes {
                let (ours, theirs) = (f32_error(&winograd, &exact), f32_error(&im2col, &exact));
                let bound = if variant == Variant::F4x3 { 5e-5 } else { 1e-5 };
                assert!(ours < bound, "{variant:?} {what}: {ours:e} (im2col {theirs:e})");
            }
        }
    }
}
