//! Convolutions whose column matrix outgrows a core's cache, in bands of
//! output rows: each band's columns are written and multiplied while they
//! are still in L2 (a whole image's are 4.4 MB for AlexNet's first layer at
//! 224 px, 7.4 MB for ResNet's stem), and the bands, not the rows of one
//! product, are dealt out to the workers. That is what lets one image
//! (inference) use every core; with images enough to share out, bands are
//! still at least as fast as whole images (docs/performance.md). A large
//! weight is left to whole images: every band's product would pack it again.

use std::ops::Range;

use super::{accumulate_weight_gradient, im2col_rows, output_product, weight_gradient_from_transposed, Geometry};
use crate::gemm::{Element, Matrix, Threads, WeightProducts};
use crate::parallel::{for_each_block, SharedOutput};
use crate::reduce::sum_parts;
use crate::scratch::Scratch;

/// Bytes of one band's columns: half a core's L2 cache, the rest left to
/// the GEMM's packed operands.
const BAND_BYTES: usize = 512 << 10;
/// The largest weight banded: every band's product packs it again (and the
/// weight gradient, as large, is read and written by every band).
const MAX_WEIGHT_BYTES: usize = 512 << 10;
/// Bands every worker gets at least, so that dealing them out balances.
const MIN_BANDS_PER_WORKER: usize = 4;

/// How a convolution's output rows are cut into bands.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bands {
    /// Output rows per band (the last band of an image may have fewer).
    rows: usize,
    per_image: usize,
    total: usize,
}

impl Bands {
    /// The bands of `g` (for the forward pass and the weight gradient), if a
    /// whole image's columns outgrow [`BAND_BYTES`], its weight is small, and
    /// there are bands enough for every worker.
    pub(super) fn of<T>(g: &Geometry) -> Option<Self> {
        let size = std::mem::size_of::<T>();
        let row_bytes = g.patch() * g.out_w * size;
        if g.is_pointwise() || row_bytes * g.out_h <= BAND_BYTES || g.out_channels * g.patch() * size > MAX_WEIGHT_BYTES
        {
            return None;
        }
        // As many bands as the budget needs, then rows shared evenly between them.
        let per_image = g.out_h.div_ceil((BAND_BYTES / row_bytes).max(1));
        let bands = Self::with_rows(g, g.out_h.div_ceil(per_image));
        (bands.total >= MIN_BANDS_PER_WORKER * rayon::current_num_threads()).then_some(bands)
    }

    /// Bands of `rows` output rows (at least one).
    fn with_rows(g: &Geometry, rows: usize) -> Self {
        let rows = rows.clamp(1, g.out_h.max(1));
        let per_image = g.out_h.div_ceil(rows);
        Self {
            rows,
            per_image,
            total: g.batch * per_image,
        }
    }

    /// The image and output rows of band `i`.
    fn band(&self, i: usize, g: &Geometry) -> (usize, Range<usize>) {
        let (image, j) = (i / self.per_image, i % self.per_image);
        (image, j * self.rows..((j + 1) * self.rows).min(g.out_h))
    }

    /// Writes band `i`'s columns into `cols`; returns its image, its first
    /// output position and its number of positions.
    fn write_columns<T: Element>(&self, i: usize, x: &[T], g: &Geometry, cols: &mut [T]) -> (usize, usize, usize) {
        let (image, rows) = self.band(i, g);
        let (first, n) = (rows.start * g.out_w, rows.len() * g.out_w);
        im2col_rows(&x[image * g.image_len()..], g, rows, cols, Threads::One);
        (image, first, n)
    }

    /// Elements of the largest band's column matrix.
    fn columns_len(&self, g: &Geometry) -> usize {
        g.patch() * self.rows * g.out_w
    }
}

/// `y_b[:, band] = W · cols(x_b, band) (+ bias)` for every band of every image.
pub(super) fn forward<T: Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    bands: Bands,
    products: WeightProducts,
) -> Vec<T> {
    let mut y = vec![T::ZERO; g.batch * g.output_len()];
    let w = Matrix::row_major(weight, g.out_channels, g.patch());
    // Every band writes only its own rows of its own image.
    let out = SharedOutput::new(&mut y);
    for_each_block(
        bands.total,
        1,
        || {
            let band_len = bands.rows * g.out_w;
            (
                Scratch::stale(bands.columns_len(g)),
                Scratch::stale(g.out_channels * band_len),
            )
        },
        |items, (cols, product)| {
            for i in items {
                let (image, first, n) = bands.write_columns(i, x, g, cols);
                let product = &mut product[..g.out_channels * n];
                output_product(
                    product,
                    w,
                    Matrix::row_major(cols, g.patch(), n),
                    bias,
                    Threads::One,
                    products,
                );
                for (o, values) in product.chunks_exact(n).enumerate() {
                    // SAFETY: band `i` covers its own output rows of `image`;
                    // no other band writes them.
                    unsafe { out.slice(image * g.output_len() + o * g.positions() + first, n) }.copy_from_slice(values);
                }
            }
        },
        drop,
    );
    y
}

/// `dW = Σ_b Σ_bands dy_b[:, band] · cols(x_b, band)ᵀ`, summed (transposed) per worker then across workers.
pub(super) fn weight_gradient<T: Element>(dy: &[T], x: &[T], g: &Geometry, bands: Bands) -> Vec<T> {
    let len = g.out_channels * g.patch();
    let sums = for_each_block(
        bands.total,
        1,
        || (vec![T::ZERO; len], Scratch::stale(bands.columns_len(g))),
        |items, (dw_t, cols)| {
            for i in items {
                let (image, first, n) = bands.write_columns(i, x, g, cols);
                let dy_band = Matrix::strided(
                    &dy[image * g.output_len() + first..],
                    g.out_channels,
                    n,
                    g.positions(),
                    1,
                );
                accumulate_weight_gradient(
                    dw_t,
                    Matrix::row_major(cols, g.patch(), n),
                    dy_band,
                    Threads::One,
                    g.products,
                );
            }
        },
        |(dw_t, _)| dw_t,
    );
    let dw_t = sum_parts(sums, len);
    weight_gradient_from_transposed(&dw_t, g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::tests::{assert_close, values, CASES};
    use crate::conv::Conv2dParams;
    use crate::conv::{forward as unbanded_forward, weight_gradient as unbanded_weight_gradient};

    /// Every band height, including a last band shorter than the others,
    /// gives the whole-image im2col's output and weight gradient.
    #[test]
    fn bands_of_any_height_match_whole_images() {
        for (input, weight, params) in CASES {
            let g = Geometry::new(input, weight, params).expect("geometry");
            let x = values(g.batch * g.image_len(), 0.5);
            let w = values(g.out_channels * g.patch(), 1.5);
            let bias = values(g.out_channels, 2.5);
            let dy = values(g.batch * g.output_len(), 3.5);
            let forward = unbanded_forward(&x, &w, Some(&bias), &g, WeightProducts::F32);
            let weight_gradient = unbanded_weight_gradient(&dy, &x, &g);
            for rows in 1..=g.out_h {
                let bands = Bands::with_rows(&g, rows);
                let what = format!("{input:?} * {weight:?} {params:?}, bands of {rows} rows");
                assert_close(
                    &super::forward(&x, &w, Some(&bias), &g, bands, WeightProducts::F32),
                    &forward,
                    &what,
                );
                assert_close(&super::weight_gradient(&dy, &x, &g, bands), &weight_gradient, &what);
            }
        }
    }

    /// Whether a layer is banded depends on the workers (bands enough for
    /// each): on two, as on the machines the thresholds were measured on.
    #[test]
    fn only_large_columns_with_small_weights_are_banded() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        pool.install(large_columns_with_small_weights_are_banded_on_this_pool);
    }

    fn large_columns_with_small_weights_are_banded_on_this_pool() {
        let params = |stride, padding| Conv2dParams { stride, padding };
        let geometry = |input: [usize; 4], weight: [usize; 4], p| Geometry::new(&input, &weight, p).expect("geometry");
        // AlexNet's first layer at 224 px: 363 × 3025 columns (4.4 MB) per image, a 93 kB weight.
        let first = geometry([1, 3, 224, 224], [64, 3, 11, 11], params(4, 2));
        let bands = Bands::of::<f32>(&first).expect("banded");
        assert!(bands.columns_len(&first) * 4 <= BAND_BYTES && bands.rows * bands.per_image >= first.out_h);
        // With images enough for every worker, still bands.
        let threads = rayon::current_num_threads();
        let batch = geometry([2 * threads.max(2), 3, 224, 224], [64, 3, 11, 11], params(4, 2));
        assert!(Bands::of::<f32>(&batch).is_some_and(|b| b.total == batch.batch * bands.per_image));
        // AlexNet's 5×5 layer: 4.7 MB of columns, but a 1.2 MB weight.
        let wide = geometry([1, 64, 27, 27], [192, 64, 5, 5], params(1, 2));
        assert!(Bands::of::<f32>(&wide).is_none());
        // Small maps and pointwise kernels keep whole images.
        let small = geometry([1, 64, 7, 7], [64, 64, 3, 3], params(1, 1));
        assert!(Bands::of::<f32>(&small).is_none());
        let pointwise = geometry([1, 256, 56, 56], [64, 256, 1, 1], params(1, 0));
        assert!(Bands::of::<f32>(&pointwise).is_none());
    }
}
