//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray, 2016): each 2×2 output tile is `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`
//! for its 4×4 input tile `d`, so the channel sums become 16 matrix products
//! with 16 multiplications per tile instead of 36 (2.25 times fewer).
//!
//! All three passes use the same 16 products:
//! * forward: `M_ξ = U_ξ · V_ξ` (`U = G g Gᵀ`: out × in; `V = Bᵀ d B`: in × tiles);
//! * input gradient: a forward pass of the output gradient with the kernel
//!   turned 180° and its channels swapped, padded by `2 − padding`;
//! * weight gradient: `∂U_ξ = ∂M_ξ · V_ξᵀ` with `∂M = A ∂y Aᵀ`, then `Gᵀ ∂U G`.
//!
//! Tiles reaching past the output are computed and dropped (forward) or fed
//! zeros (weight gradient), which is what the 2×2 tiling costs on odd sides.

use std::ops::{Add, Range, Sub};

use rayon::prelude::*;

use super::Geometry;
use crate::gemm::{matmul, Element, Matrix, Threads};

/// Transformed values per tile: the 4×4 Winograd domain.
const POINTS: usize = 16;

/// Below this `C·K / (C + K)` (in and out channels) the tile transforms,
/// which grow with `C + K`, cost more than the products save (`C·K`);
/// measured with `examples/conv_speed.rs`: ResNet-18's 64-channel layer is
/// faster as im2col + GEMM.
const MIN_CHANNEL_BALANCE: usize = 64;
/// Below this many tiles in all images the products are too thin to pay for
/// transforming the weights (ResNet-18's last layers at batch 1).
const MIN_TILES: usize = 128;

/// Whether a convolution runs here: 3×3 kernel, stride 1, padding at most 2
/// (the input gradient's padding is `2 − padding`), and enough channels and
/// tiles for the transforms to pay off.
pub(super) fn applies(g: &Geometry) -> bool {
    let (c, k) = (g.channels, g.out_channels);
    g.kernel_h == 3
        && g.kernel_w == 3
        && g.stride == 1
        && g.padding <= 2
        && c * k >= MIN_CHANNEL_BALANCE * (c + k)
        && Tiling::new(g).total >= MIN_TILES
}

/// The 2×2 tiling of a geometry's output.
#[derive(Clone, Copy)]
struct Tiling {
    rows: usize,
    cols: usize,
    /// Tiles of all images: the columns of every product.
    total: usize,
}

impl Tiling {
    fn new(g: &Geometry) -> Self {
        let (rows, cols) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2));
        Self {
            rows,
            cols,
            total: g.batch * rows * cols,
        }
    }

    fn per_image(&self) -> usize {
        self.rows * self.cols
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
                row,
                col,
                len,
            });
            tile += len;
        }
        chunks
    }

    /// Image, tile row and tile column of tile number `tile`.
    fn locate(&self, tile: usize) -> (usize, usize, usize) {
        let (b, rest) = (tile / self.per_image(), tile % self.per_image());
        (b, rest / self.cols, rest % self.cols)
    }
}

/// What the per-tile transforms compute on: one value, or [`Lanes`] of
/// consecutive tiles (so the compiler vectorises the transforms).
trait Value: Copy + Default + Add<Output = Self> + Sub<Output = Self> {}

impl<T: Element> Value for T {}

/// Tiles transformed together, one per SIMD lane (16 f32 fill an AVX-512 register).
const LANES: usize = 16;

/// One value per tile of a chunk of consecutive tiles.
#[derive(Clone, Copy)]
struct Lanes<T>([T; LANES]);

impl<T: Element> Default for Lanes<T> {
    fn default() -> Self {
        Self([T::ZERO; LANES])
    }
}

impl<T: Element> Add for Lanes<T> {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self(std::array::from_fn(|j| self.0[j] + other.0[j]))
    }
}

impl<T: Element> Sub for Lanes<T> {
    type Output = Self;
    fn sub(self, other: Self) -> Self {
        Self(std::array::from_fn(|j| self.0[j] - other.0[j]))
    }
}

impl<T: Element> Value for Lanes<T> {}

impl<T: Element> Lanes<T> {
    /// The first `len` lanes from `values`, zeros after.
    fn load(values: &[T], len: usize) -> Self {
        let mut lanes = Self::default();
        lanes.0[..len].copy_from_slice(&values[..len]);
        lanes
    }
}

/// Consecutive tiles of one tile row, transformed together.
struct Chunk {
    /// Position of the first tile in its block.
    offset: usize,
    image: usize,
    /// Tile row, and tile column of the first tile.
    row: usize,
    col: usize,
    len: usize,
}

/// `Bᵀ d B` on a row-major 4×4 tile.
fn transform_input<V: Value>(d: [V; POINTS]) -> [V; POINTS] {
    let mut t = [V::default(); POINTS];
    for j in 0..4 {
        let (d0, d1, d2, d3) = (d[j], d[4 + j], d[8 + j], d[12 + j]);
        t[j] = d0 - d2;
        t[4 + j] = d1 + d2;
        t[8 + j] = d2 - d1;
        t[12 + j] = d1 - d3;
    }
    let mut v = [V::default(); POINTS];
    for i in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        v[4 * i] = t0 - t2;
        v[4 * i + 1] = t1 + t2;
        v[4 * i + 2] = t2 - t1;
        v[4 * i + 3] = t1 - t3;
    }
    v
}

/// `G g Gᵀ` on a row-major 3×3 kernel.
fn transform_kernel<T: Element>(k: [T; 9]) -> [T; POINTS] {
    let half = T::from_f64(0.5);
    let mut t = [T::ZERO; 12];
    for j in 0..3 {
        let (k0, k1, k2) = (k[j], k[3 + j], k[6 + j]);
        t[j] = k0;
        t[3 + j] = (k0 + k1 + k2) * half;
        t[6 + j] = (k0 - k1 + k2) * half;
        t[9 + j] = k2;
    }
    let mut u = [T::ZERO; POINTS];
    for i in 0..4 {
        let (t0, t1, t2) = (t[3 * i], t[3 * i + 1], t[3 * i + 2]);
        u[4 * i] = t0;
        u[4 * i + 1] = (t0 + t1 + t2) * half;
        u[4 * i + 2] = (t0 - t1 + t2) * half;
        u[4 * i + 3] = t2;
    }
    u
}

/// `Aᵀ m A`: a 4×4 product tile to its 2×2 output tile.
fn transform_output<V: Value>(m: [V; POINTS]) -> [V; 4] {
    let mut t = [V::default(); 8];
    for j in 0..4 {
        let (m0, m1, m2, m3) = (m[j], m[4 + j], m[8 + j], m[12 + j]);
        t[j] = m0 + m1 + m2;
        t[4 + j] = m1 - m2 - m3;
    }
    let mut y = [V::default(); 4];
    for i in 0..2 {
        let (t0, t1, t2, t3) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        y[2 * i] = t0 + t1 + t2;
        y[2 * i + 1] = t1 - t2 - t3;
    }
    y
}

/// `A e Aᵀ`: the adjoint of [`transform_output`], a 2×2 gradient tile to 4×4.
fn transform_output_adjoint<V: Value>(e: [V; 4]) -> [V; POINTS] {
    let mut t = [V::default(); 8];
    for j in 0..2 {
        let (e0, e1) = (e[j], e[2 + j]);
        t[j] = e0;
        t[2 + j] = e0 + e1;
        t[4 + j] = e0 - e1;
        t[6 + j] = V::default() - e1;
    }
    let mut m = [V::default(); POINTS];
    for i in 0..4 {
        let (t0, t1) = (t[2 * i], t[2 * i + 1]);
        m[4 * i] = t0;
        m[4 * i + 1] = t0 + t1;
        m[4 * i + 2] = t0 - t1;
        m[4 * i + 3] = V::default() - t1;
    }
    m
}

/// `Gᵀ u G`: the adjoint of [`transform_kernel`], 4×4 back to a 3×3 kernel.
fn transform_kernel_adjoint<T: Element>(u: [T; POINTS]) -> [T; 9] {
    let half = T::from_f64(0.5);
    let mut t = [T::ZERO; 12];
    for j in 0..4 {
        let (u0, u1, u2, u3) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
        t[j] = u0 + (u1 + u2) * half;
        t[4 + j] = (u1 - u2) * half;
        t[8 + j] = (u1 + u2) * half + u3;
    }
    let mut k = [T::ZERO; 9];
    for i in 0..3 {
        let (t0, t1, t2, t3) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        k[3 * i] = t0 + (t1 + t2) * half;
        k[3 * i + 1] = (t1 - t2) * half;
        k[3 * i + 2] = (t1 + t2) * half + t3;
    }
    k
}

/// Bytes of one block's transformed tiles and products: about a core's L2
/// cache, so each block is transformed, multiplied and transformed back
/// while it is still in cache.
const BLOCK_BYTES: usize = 1 << 20;
/// Bytes of one block of the weight gradient, whose products sum over the
/// tiles (longer blocks: fewer passes over the `out × in` accumulator).
const WEIGHT_BLOCK_BYTES: usize = 8 << 20;
const MIN_BLOCK: usize = 8;
/// Block lengths are rounded up to this many tiles: the rows of the GEMM
/// micro-kernel (4 AVX-512 registers of f32), so no product ends on a thin edge.
const BLOCK_ALIGN: usize = 64;

/// Tiles per block for `rows` transformed values per tile (both operands),
/// shrunk so that every worker gets at least one block.
fn block_len<T>(budget: usize, rows: usize, tiling: Tiling, workers: usize) -> usize {
    let fit = budget / (POINTS * rows * std::mem::size_of::<T>());
    fit.max(MIN_BLOCK)
        .next_multiple_of(BLOCK_ALIGN)
        .min(tiling.total.div_ceil(workers))
        .max(1)
}

/// Runs `work(tiles, scratch)` on consecutive blocks of `block` tiles, the
/// blocks dealt round-robin to the workers, each with its own scratch.
fn for_each_block<S>(
    tiling: Tiling,
    block: usize,
    scratch: impl Fn() -> S + Sync,
    work: impl Fn(Range<usize>, &mut S) + Sync,
) -> Vec<S>
where
    S: Send,
{
    let blocks = tiling.total.div_ceil(block);
    let workers = rayon::current_num_threads().min(blocks).max(1);
    (0..workers)
        .into_par_iter()
        .map(|w| {
            let mut s = scratch();
            for b in (w..blocks).step_by(workers) {
                work(b * block..((b + 1) * block).min(tiling.total), &mut s);
            }
            s
        })
        .collect()
}

/// `Bᵀ d B` of every channel of `x` at the `chunks` of a block of `n` tiles,
/// into `v` as `[ξ][channel][tile]`.
fn transform_input_block<T: Element>(x: &[T], g: &Geometry, chunks: &[Chunk], n: usize, v: &mut [T]) {
    let plane = g.height * g.width;
    let (h, w, pad) = (g.height as isize, g.width as isize, g.padding as isize);
    for c in 0..g.channels {
        for chunk in chunks {
            let image = &x[(chunk.image * g.channels + c) * plane..][..plane];
            let (y0, x0) = (2 * chunk.row as isize - pad, 2 * chunk.col as isize - pad);
            let columns_inside = x0 >= 0 && x0 + 2 * chunk.len as isize + 2 <= w;
            let mut d = [Lanes::<T>::default(); POINTS];
            for i in 0..4 {
                let iy = y0 + i as isize;
                if !(0..h).contains(&iy) {
                    continue;
                }
                let row = &image[iy as usize * g.width..][..g.width];
                for (q, lanes) in d[4 * i..4 * i + 4].iter_mut().enumerate() {
                    for j in 0..chunk.len {
                        let ix = x0 + (2 * j + q) as isize;
                        if columns_inside || (0..w).contains(&ix) {
                            lanes.0[j] = row[ix as usize];
                        }
                    }
                }
            }
            for (xi, lanes) in transform_input(d).iter().enumerate() {
                v[(xi * g.channels + c) * n + chunk.offset..][..chunk.len].copy_from_slice(&lanes.0[..chunk.len]);
            }
        }
    }
}

/// `U` of a weight (`out × in × 3 × 3`): `[ξ][out][in]`.
fn kernel_tiles<T: Element>(weight: &[T], out_channels: usize, channels: usize) -> Vec<T> {
    let mut u = vec![T::ZERO; POINTS * out_channels * channels];
    for o in 0..out_channels {
        for c in 0..channels {
            let k: [T; 9] = std::array::from_fn(|i| weight[(o * channels + c) * 9 + i]);
            for (xi, value) in transform_kernel(k).into_iter().enumerate() {
                u[(xi * out_channels + o) * channels + c] = value;
            }
        }
    }
    u
}

/// The output, written by blocks of tiles from several threads at once.
struct SharedOutput<T> {
    data: *mut T,
    len: usize,
}

// SAFETY: each output element belongs to exactly one 2×2 tile and each tile
// to exactly one block, so no two threads write the same element, and nobody
// reads the buffer until every block is done.
unsafe impl<T: Send> Sync for SharedOutput<T> {}

impl<T> SharedOutput<T> {
    /// `len` elements from `start`, which only the caller's block writes.
    #[allow(clippy::mut_from_ref)]
    fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(
            start + len <= self.len,
            "winograd: output {start}..{} outside {}",
            start + len,
            self.len
        );
        // SAFETY: in bounds (checked above); disjoint between threads (see the Sync impl).
        unsafe { std::slice::from_raw_parts_mut(self.data.add(start), len) }
    }
}

/// The convolution of `x` with a 3×3 `weight`, plus `bias`.
pub(super) fn forward<T: Element>(x: &[T], weight: &[T], bias: Option<&[T]>, g: &Geometry) -> Vec<T> {
    let tiling = Tiling::new(g);
    let (k, c) = (g.out_channels, g.channels);
    let u = kernel_tiles(weight, k, c);
    let mut y = vec![T::ZERO; g.batch * g.output_len()];
    let out = SharedOutput {
        data: y.as_mut_ptr(),
        len: y.len(),
    };
    let block = block_len::<T>(BLOCK_BYTES, c + k, tiling, rayon::current_num_threads());
    for_each_block(
        tiling,
        block,
        || (vec![T::ZERO; POINTS * c * block], vec![T::ZERO; POINTS * k * block]),
        |tiles, (v, m)| {
            let n = tiles.len();
            let chunks = tiling.chunks(tiles);
            transform_input_block(x, g, &chunks, n, v);
            for xi in 0..POINTS {
                matmul(
                    &mut m[xi * k * n..(xi + 1) * k * n],
                    false,
                    Matrix::row_major(&u[xi * k * c..], k, c),
                    Matrix::row_major(&v[xi * c * n..], c, n),
                    Threads::One,
                );
            }
            for o in 0..k {
                let shift = bias.map_or(T::ZERO, |bias| bias[o]);
                for chunk in &chunks {
                    let tile_m: [Lanes<T>; POINTS] =
                        std::array::from_fn(|xi| Lanes::load(&m[(xi * k + o) * n + chunk.offset..], chunk.len));
                    let values = transform_output(tile_m);
                    let plane = (chunk.image * k + o) * g.positions();
                    let ox = 2 * chunk.col;
                    let width = (2 * chunk.len).min(g.out_w - ox);
                    for i in 0..2 {
                        let oy = 2 * chunk.row + i;
                        if oy >= g.out_h {
                            continue;
                        }
                        let row = out.slice(plane + oy * g.out_w + ox, width);
                        for (q, value) in row.iter_mut().enumerate() {
                            *value = values[2 * i + q % 2].0[q / 2] + shift;
                        }
                    }
                }
            }
        },
    );
    y
}

/// The input gradient: the output gradient convolved with the kernel turned
/// 180° and transposed (in ↔ out), padded by `2 − padding`.
pub(super) fn input_gradient<T: Element>(dy: &[T], weight: &[T], g: &Geometry) -> Vec<T> {
    let (k, c) = (g.out_channels, g.channels);
    let mut turned = vec![T::ZERO; weight.len()];
    for o in 0..k {
        for i in 0..c {
            for tap in 0..9 {
                turned[(i * k + o) * 9 + tap] = weight[(o * c + i) * 9 + (8 - tap)];
            }
        }
    }
    let transposed = Geometry {
        channels: k,
        height: g.out_h,
        width: g.out_w,
        out_channels: c,
        padding: 2 - g.padding,
        out_h: g.height,
        out_w: g.width,
        ..*g
    };
    forward(dy, &turned, None, &transposed)
}

/// The weight gradient `Gᵀ (Σ_tiles (A ∂y Aᵀ) ⊙ (Bᵀ d B)) G`, each worker
/// summing its blocks' products, then the workers' sums added.
pub(super) fn weight_gradient<T: Element>(dy: &[T], x: &[T], g: &Geometry) -> Vec<T> {
    let tiling = Tiling::new(g);
    let (k, c) = (g.out_channels, g.channels);
    let block = block_len::<T>(WEIGHT_BLOCK_BYTES, c + k, tiling, rayon::current_num_threads());
    let sums = for_each_block(
        tiling,
        block,
        || {
            (
                vec![T::ZERO; POINTS * c * block],
                vec![T::ZERO; POINTS * k * block],
                vec![T::ZERO; POINTS * k * c],
            )
        },
        |tiles, (v, dm, du)| {
            let n = tiles.len();
            let chunks = tiling.chunks(tiles);
            transform_input_block(x, g, &chunks, n, v);
            for o in 0..k {
                for chunk in &chunks {
                    let plane = &dy[(chunk.image * k + o) * g.positions()..][..g.positions()];
                    let ox = 2 * chunk.col;
                    let width = (2 * chunk.len).min(g.out_w - ox);
                    let mut e = [Lanes::<T>::default(); 4];
                    for i in 0..2 {
                        let oy = 2 * chunk.row + i;
                        if oy >= g.out_h {
                            continue;
                        }
                        for (q, &value) in plane[oy * g.out_w + ox..][..width].iter().enumerate() {
                            e[2 * i + q % 2].0[q / 2] = value;
                        }
                    }
                    for (xi, lanes) in transform_output_adjoint(e).iter().enumerate() {
                        dm[(xi * k + o) * n + chunk.offset..][..chunk.len].copy_from_slice(&lanes.0[..chunk.len]);
                    }
                }
            }
            for xi in 0..POINTS {
                matmul(
                    &mut du[xi * k * c..(xi + 1) * k * c],
                    true,
                    Matrix::row_major(&dm[xi * k * n..], k, n),
                    Matrix::row_major(&v[xi * c * n..], c, n).t(),
                    Threads::One,
                );
            }
        },
    );
    let mut sums = sums.into_iter().map(|(_, _, du)| du);
    let mut du = sums.next().unwrap_or_else(|| vec![T::ZERO; POINTS * k * c]);
    for part in sums {
        for (total, value) in du.iter_mut().zip(part) {
            *total += value;
        }
    }
    let mut dw = vec![T::ZERO; k * c * 9];
    dw.par_chunks_mut(c * 9).enumerate().for_each(|(o, dw_o)| {
        for i in 0..c {
            let u: [T; POINTS] = std::array::from_fn(|xi| du[(xi * k + o) * c + i]);
            dw_o[i * 9..(i + 1) * 9].copy_from_slice(&transform_kernel_adjoint(u));
        }
    });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::Conv2dParams;

    /// Each pass equals the im2col + GEMM one (itself checked against candle
    /// and finite differences) in f64, on odd sides, paddings 0 to 2, one
    /// output position, tile rows longer than a chunk and several blocks.
    #[test]
    fn every_pass_equals_im2col() {
        let cases: [([usize; 4], [usize; 4], usize); 7] = [
            ([2, 3, 7, 6], [4, 3, 3, 3], 1),
            ([1, 2, 5, 8], [3, 2, 3, 3], 0),
            ([3, 2, 4, 5], [2, 2, 3, 3], 2),
            ([1, 1, 1, 1], [2, 1, 3, 3], 1),
            ([9, 5, 6, 6], [7, 5, 3, 3], 1),
            ([2, 2, 5, 37], [3, 2, 3, 3], 1),
            ([3, 4, 30, 29], [5, 4, 3, 3], 1),
        ];
        for (input, weight, padding) in cases {
            let g = Geometry::new(&input, &weight, Conv2dParams { stride: 1, padding }).expect("geometry");
            let x = values(g.batch * g.image_len(), 0.5);
            let w = values(weight.iter().product(), 1.5);
            let bias = values(g.out_channels, 2.5);
            let dy = values(g.batch * g.output_len(), 3.5);
            let close = |ours: Vec<f64>, reference: Vec<f64>, what: &str| {
                assert_eq!(ours.len(), reference.len(), "{what} {input:?}");
                let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
                let error = ours.iter().zip(&reference).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    error <= 1e-12 * scale.max(1.0),
                    "{what} {input:?} * {weight:?} pad {padding}: {error:e}"
                );
            };
            close(
                forward(&x, &w, Some(&bias), &g),
                super::super::forward(&x, &w, Some(&bias), &g),
                "forward",
            );
            close(
                input_gradient(&dy, &w, &g),
                super::super::input_gradient(&dy, &w, &g),
                "input gradient",
            );
            close(
                weight_gradient(&dy, &x, &g),
                super::super::weight_gradient(&dy, &x, &g),
                "weight gradient",
            );
        }
    }

    fn values(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + seed) * 0.731).sin()).collect()
    }

    /// The adjoint transforms satisfy `⟨T a, b⟩ = ⟨a, Tᵀ b⟩`.
    #[test]
    fn adjoint_transforms_are_adjoint() {
        let k: [f64; 9] = std::array::from_fn(|i| values(9, 1.0)[i]);
        let u: [f64; 16] = std::array::from_fn(|i| values(16, 2.0)[i]);
        let lhs: f64 = transform_kernel(k).iter().zip(&u).map(|(a, b)| a * b).sum();
        let rhs: f64 = k.iter().zip(&transform_kernel_adjoint(u)).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");

        let m: [f64; 16] = std::array::from_fn(|i| values(16, 3.0)[i]);
        let e: [f64; 4] = std::array::from_fn(|i| values(4, 4.0)[i]);
        let lhs: f64 = transform_output(m).iter().zip(&e).map(|(a, b)| a * b).sum();
        let rhs: f64 = m.iter().zip(&transform_output_adjoint(e)).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
    }

    /// One tile: `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` is the 2×2 valid correlation of `d` with `g`.
    #[test]
    fn one_tile_is_a_3x3_correlation() {
        let d: [f64; 16] = std::array::from_fn(|i| values(16, 5.0)[i]);
        let k: [f64; 9] = std::array::from_fn(|i| values(9, 6.0)[i]);
        let (v, u) = (transform_input(d), transform_kernel(k));
        let y = transform_output(std::array::from_fn(|i| v[i] * u[i]));
        for oy in 0..2 {
            for ox in 0..2 {
                let direct: f64 = (0..9).map(|t| d[(oy + t / 3) * 4 + ox + t % 3] * k[t]).sum();
                assert!((y[2 * oy + ox] - direct).abs() < 1e-12);
            }
        }
    }
}
