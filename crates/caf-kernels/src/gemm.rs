//! A bounds-checked view of the `gemm` crate's strided matrix product.
//!
//! `gemm` picks AVX-512, AVX2 or scalar micro-kernels at run time; the
//! `x86-v4` feature (set in the workspace) compiles its AVX-512 kernels in.

use gemm::Parallelism;
use rayon::prelude::*;

mod bf16;
#[cfg(target_arch = "x86_64")]
mod f32_panels;
mod packed;
mod patches;
mod split;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::cpu::Precision;
use crate::elementwise::Activation;
pub(crate) use bf16::convolves_on_tiles;
pub(crate) use bf16::round_to_bf16;
pub(crate) use bf16::TileWeight;
pub(crate) use bf16::{bf16_in_hardware, pair_channels, ChannelPairsLhs};
pub(crate) use bf16::{
    convolve_blocks_on_tiles, convolve_blocks_on_tiles_fits, convolve_pair_on_tiles, convolve_pair_on_tiles_fits,
    BlockOperands,
};
pub(crate) use packed::{PackedLhs, PatchesLhs};
pub(crate) use patches::Patches;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::first_lanes;

/// How a convolution on tiles reads the weight it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Orientation {
    /// As it is: `out_channels × channels × kh × kw` of the shape.
    AsIs,
    /// The input gradient's weight of a stride-1 convolution, read from
    /// that convolution's own weight (`channels × out_channels × kh × kw`
    /// of the shape): its kernels flipped, its channels and output
    /// channels swapped.
    FlippedTransposed,
}

/// What a convolution adds to its sums and applies to them as it writes
/// them out: a bias per output channel, a residual of the output's shape
/// (`B×O×out_h×out_w`, a residual block's shortcut), then the activation;
/// and the max pooling its output goes through, if any (then the output
/// is the pooled one).
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a, T> {
    pub(crate) bias: Option<&'a [T]>,
    pub(crate) residual: Option<&'a [T]>,
    pub(crate) activation: Activation,
    pub(crate) pool: Option<&'a crate::pool::PoolGeometry>,
}

impl<T> Epilogue<'_, T> {
    /// Nothing added, nothing applied.
    pub(crate) const NONE: Self = Self {
        bias: None,
        residual: None,
        activation: Activation::Identity,
        pool: None,
    };
}

/// Element types the kernels run in: f32 for training, f64 for gradient checks
/// (`to_f64` / `from_f64` come from candle's `WithDType`).
pub trait Element: candle_core::WithDType + Default + std::ops::AddAssign + PartialOrd + crate::scratch::Kept {
    const ONE: Self;
    const ZERO: Self;

    /// [`matmul`] with bf16 operands ([`Precision::Bf16`]): f32 only, the
    /// one type a bf16 weight can have ([`crate::FrozenWeight::with_precision`]).
    fn matmul_bf16(dst: &mut [Self], accumulate: bool, a: Matrix<Self>, b: Matrix<Self>, threads: Threads);

    /// [`matmul_in`] with the left operand packed beforehand, in the
    /// precision it was packed for: f32 only, the one type packed.
    fn matmul_packed(dst: &mut [Self], accumulate: bool, a: &PackedLhs, b: Matrix<Self>, threads: Threads);

    /// The values as f32, if that is their type (what bf16 products pack).
    fn as_f32(values: &[Self]) -> Option<&[f32]>;

    /// f32 values as this type, if it is f32 (the way back from a kernel
    /// that runs on f32 alone).
    fn from_f32_vec(values: Vec<f32>) -> Option<Vec<Self>>;

    /// The forward pass of a convolution (`x` the batch, `weight`
    /// `out_channels × channels × kh × kw`, packed already when `kept`) with
    /// bf16 products straight on the CPU's AMX tiles, where the instruction
    /// set in use has them and the shape fits them; `None` otherwise (and
    /// always for f64).
    fn convolve_on_tiles(
        x: &[Self],
        weight: (&[Self], Orientation),
        kept: Option<&TileWeight>,
        epilogue: Epilogue<Self>,
        shape: &ConvShape,
    ) -> Option<Vec<Self>>;

    /// The weight gradient of a stride-1 convolution (`dy` the output's
    /// gradient, `x` the input) with bf16 products on the CPU's AMX tiles,
    /// as [`Element::convolve_on_tiles`]; `None` where that would be.
    fn weight_gradient_on_tiles(dy: &[Self], x: &[Self], shape: &ConvShape) -> Option<Vec<Self>>;
}

/// A convolution's shape, for [`Element::convolve_on_tiles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvShape {
    pub(crate) batch: usize,
    pub(crate) channels: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) out_channels: usize,
    pub(crate) kernel_h: usize,
    pub(crate) kernel_w: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
}

impl Element for f32 {
    const ONE: Self = 1.0;
    const ZERO: Self = 0.0;

    fn matmul_bf16(dst: &mut [Self], accumulate: bool, a: Matrix<Self>, b: Matrix<Self>, threads: Threads) {
        bf16::matmul_bf16(dst, accumulate, a, b, threads)
    }

    fn matmul_packed(dst: &mut [Self], accumulate: bool, a: &PackedLhs, b: Matrix<Self>, threads: Threads) {
        packed::matmul_packed(dst, accumulate, a, b, threads)
    }

    fn as_f32(values: &[Self]) -> Option<&[f32]> {
        Some(values)
    }

    fn from_f32_vec(values: Vec<f32>) -> Option<Vec<Self>> {
        Some(values)
    }

    fn convolve_on_tiles(
        x: &[Self],
        weight: (&[Self], Orientation),
        kept: Option<&TileWeight>,
        epilogue: Epilogue<Self>,
        shape: &ConvShape,
    ) -> Option<Vec<Self>> {
        bf16::convolve_on_tiles(x, weight, kept, epilogue, shape)
    }

    fn weight_gradient_on_tiles(dy: &[Self], x: &[Self], shape: &ConvShape) -> Option<Vec<Self>> {
        bf16::weight_gradient_on_tiles(dy, x, shape)
    }
}

impl Element for f64 {
    const ONE: Self = 1.0;
    const ZERO: Self = 0.0;

    fn matmul_bf16(_: &mut [Self], _: bool, _: Matrix<Self>, _: Matrix<Self>, _: Threads) {
        unreachable!("bf16 products run on f32 operands only: a bf16 weight is f32")
    }

    fn matmul_packed(_: &mut [Self], _: bool, _: &PackedLhs, _: Matrix<Self>, _: Threads) {
        unreachable!("only f32 operands are packed ahead")
    }

    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }

    fn from_f32_vec(_: Vec<f32>) -> Option<Vec<Self>> {
        None
    }

    fn convolve_on_tiles(
        _: &[Self],
        _: (&[Self], Orientation),
        _: Option<&TileWeight>,
        _: Epilogue<Self>,
        _: &ConvShape,
    ) -> Option<Vec<Self>> {
        None
    }

    fn weight_gradient_on_tiles(_: &[Self], _: &[Self], _: &ConvShape) -> Option<Vec<Self>> {
        None
    }
}

/// How a forward pass multiplies by its weight (or by the weight's
/// transforms, numbered): in `precision`, from the packed operands when
/// they were kept and pay for the product at hand.
#[derive(Clone, Copy)]
pub(crate) struct WeightProducts<'a> {
    pub precision: Precision,
    pub packed: Option<&'a [PackedLhs]>,
}

impl WeightProducts<'_> {
    /// f32 products.
    #[cfg(test)]
    pub(crate) const F32: Self = Self {
        precision: Precision::F32,
        packed: None,
    };

    /// `dst (+)= weight · b`, `weight` being the one numbered `index`
    /// (packed as `packed[index]` when kept).
    pub(crate) fn run<T: Element>(
        &self,
        index: usize,
        dst: &mut [T],
        accumulate: bool,
        weight: Matrix<T>,
        b: Matrix<T>,
        threads: Threads,
    ) {
        match self.packed.map(|packed| &packed[index]) {
            Some(packed) if packed.pays_for(b.cols) => T::matmul_packed(dst, accumulate, packed, b, threads),
            _ => matmul_in(self.precision, dst, accumulate, weight, b, threads),
        }
    }
}

/// [`matmul`] in the given precision.
pub(crate) fn matmul_in<T: Element>(
    precision: Precision,
    dst: &mut [T],
    accumulate: bool,
    a: Matrix<T>,
    b: Matrix<T>,
    threads: Threads,
) {
    match precision {
        Precision::F32 => matmul(dst, accumulate, a, b, threads),
        Precision::Bf16 => T::matmul_bf16(dst, accumulate, a, b, threads),
    }
}

/// A read-only `rows × cols` matrix inside a slice, with element strides.
#[derive(Clone, Copy)]
pub(crate) struct Matrix<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> Matrix<'a, T> {
    /// The first `rows × cols` elements of `data`, row-major.
    pub(crate) fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// `rows × cols` elements of `data` with the given element strides.
    pub(crate) fn strided(data: &'a [T], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// Columns of the view.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// Rows `first..first + rows` of this view.
    fn row_band(self, first: usize, rows: usize) -> Self {
        assert!(
            first + rows <= self.rows,
            "row band {first}+{rows} of {} rows",
            self.rows
        );
        Self {
            data: &self.data[first * self.row_stride..],
            rows,
            ..self
        }
    }

    /// The transpose, without copying.
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// The view's elements, copied out row by row, in square blocks so that
    /// a transposed view is read a few cache lines at a time rather than an
    /// element per line.
    pub(crate) fn to_vec(self) -> Vec<T>
    where
        T: Copy + Default + Send + Sync,
    {
        const BLOCK: usize = 32;
        self.check("to_vec");
        let mut out = vec![T::default(); self.rows * self.cols];
        if self.cols == 0 {
            return out;
        }
        out.par_chunks_mut(BLOCK * self.cols)
            .enumerate()
            .for_each(|(band, rows)| {
                let first_row = band * BLOCK;
                for first_col in (0..self.cols).step_by(BLOCK) {
                    let cols = first_col..(first_col + BLOCK).min(self.cols);
                    for (r, row) in rows.chunks_exact_mut(self.cols).enumerate() {
                        let i = first_row + r;
                        for j in cols.clone() {
                            row[j] = self.data[i * self.row_stride + j * self.col_stride];
                        }
                    }
                }
            });
        out
    }

    fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(
                last < self.data.len(),
                "{what}: {}×{} view reaches element {last} of {}",
                self.rows,
                self.cols,
                self.data.len()
            );
        }
    }
}

/// Whether a product with `columns` columns and an inner dimension of
/// `inner` runs faster with its vectors down the left operand's rows (our
/// row-panel kernels, f32 and bf16) than along the columns (`gemm`, and the
/// bf16 8 × 48 kernel): where 16-lane vectors along the columns would leave
/// lanes empty, and the inner dimension is deep enough to repay turning
/// each block's sums round to write them out by rows. On column counts
/// that are multiples of 16 the column kernels were as fast or faster
/// (docs/performance.md); from an inner dimension of 64 (the 64-channel
/// layers' Winograd products) the row panels are. Except where the columns
/// make one vector (16): `gemm`'s kernel then keeps six sums in flight,
/// fewer than two FMA pipes of four cycles' latency need (ResNet-18's
/// layer4 at batch 1, whose Winograd products have 16 tiles, took 1.16–1.20
/// ms that way and 1.00–1.04 on the row panels on an Intel Xeon).
fn row_panels_pay(columns: usize, inner: usize) -> bool {
    (!columns.is_multiple_of(16) || columns == 16) && inner >= MIN_ROW_PANEL_INNER
}

/// The shallowest inner dimension [`row_panels_pay`] takes.
const MIN_ROW_PANEL_INNER: usize = 64;

/// [`row_panels_pay`] for the bf16 products: only where the 8 × 48
/// kernel's 16-lane vectors would leave more than one lane in 50 empty
/// (maps of 7×7 to 14×14). On AlexNet's 55×55 layer (3025 columns, 15
/// lanes empty) the 8 × 48 kernel was faster at batch 1 (docs/performance.md),
/// where the f32 row panels still beat `gemm`.
fn bf16_row_panels_pay(columns: usize, inner: usize) -> bool {
    let empty_lanes = columns.next_multiple_of(16) - columns;
    row_panels_pay(columns, inner) && empty_lanes * 50 > columns
}

/// Whether a frozen bf16 convolution of `columns` output positions an
/// image and `inner` taps reads its image's channels in pairs in place
/// ([`ChannelPairsLhs`]) rather than packing its patches for each product:
/// where the row panels run ([`bf16_row_panels_pay`]). Over larger maps
/// the 8 × 48 kernel, packing, was as fast or faster (ResNet-18's layer2
/// 3×3/2 at batch 1, docs/performance.md).
pub(crate) fn channel_pairs_pay(columns: usize, inner: usize) -> bool {
    bf16_row_panels_pay(columns, inner)
}

/// The destination of one product, shared by workers that write disjoint
/// blocks of it (rows or columns).
struct DisjointOutput(*mut f32);

// SAFETY: workers given a `DisjointOutput` write disjoint rows or columns
// of it (the promise of every product call that shares one), and the buffer
// outlives them all (it is borrowed mutably for the whole of the product).
unsafe impl Sync for DisjointOutput {}

/// How many threads one product may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// The caller already runs products in parallel.
    One,
    /// Split this product over rayon's pool.
    All,
}

/// Rows of `dst` each worker takes at least when one product is split by rows:
/// below this the workers' panels get too thin for the micro-kernel to pay.
const MIN_ROWS_PER_WORKER: usize = 32;

/// `dst = a · b` (or `dst += a · b` when `accumulate`), `dst` row-major `a.rows × b.cols`.
///
/// With [`Threads::All`] the rows of `dst` (and of `a`) are dealt out to the
/// workers in equal bands, each a single-threaded product, which runs
/// convolution-shaped products faster than `gemm`'s own split
/// (docs/performance.md); that split stays in use when `a` has too few rows.
pub(crate) fn matmul<T: Element>(dst: &mut [T], accumulate: bool, a: Matrix<T>, b: Matrix<T>, threads: Threads) {
    a.check("matmul lhs");
    if split::nothing_to_multiply(dst, accumulate, (a.rows, a.cols), b, "matmul") {
        return;
    }
    let (m, n) = (a.rows, b.cols);
    let workers = threads.workers();
    if workers == 1 {
        product(&mut dst[..m * n], accumulate, a, b, Parallelism::None);
    } else if m >= MIN_ROWS_PER_WORKER * workers {
        let band = m.div_ceil(workers).next_multiple_of(16).min(m);
        dst[..m * n]
            .par_chunks_mut(band * n)
            .enumerate()
            .for_each(|(i, dst_band)| {
                let rows = dst_band.len() / n;
                product(dst_band, accumulate, a.row_band(i * band, rows), b, Parallelism::None)
            });
    } else {
        product(&mut dst[..m * n], accumulate, a, b, Parallelism::Rayon(workers));
    }
}

/// One `gemm` call on checked views; `dst` holds exactly `a.rows × b.cols`.
fn product<T: Element>(dst: &mut [T], accumulate: bool, a: Matrix<T>, b: Matrix<T>, parallelism: Parallelism) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    debug_assert_eq!(dst.len(), m * n);
    // SAFETY: every view was checked to lie inside its slice (a band of a
    // checked view lies inside it too), `dst` holds m·n elements, and `dst`
    // (a unique borrow) cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    /// `a · b` into a destination, then `+= (aᵀ)ᵀ · b` through a transposed
    /// view of a stored transpose: twice the naive product.
    fn assert_products_match_a_naive_loop(m: usize, threads: Threads, what: &str) {
        let (n, k) = (13, 17);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let expected = naive(&a, &b, m, n, k);
        let mut dst = vec![1.0; m * n];
        let b_view = Matrix::row_major(&b, k, n);
        matmul(&mut dst, false, Matrix::row_major(&a, m, k), b_view, threads);
        matmul(&mut dst, true, Matrix::row_major(&at, k, m).t(), b_view, threads);
        for (x, y) in dst.iter().zip(&expected) {
            assert!((x - 2.0 * y).abs() < 1e-12, "{what}");
        }
    }

    #[test]
    fn products_and_transposed_views_match_a_naive_loop() {
        assert_products_match_a_naive_loop(7, Threads::One, "one thread");
        assert_products_match_a_naive_loop(7, Threads::All, "gemm's own split");
    }

    #[test]
    fn products_split_into_row_bands_match_a_naive_loop() {
        // 101 rows over three workers: bands of 48, 48 and 5 rows; over four: gemm's own split.
        for workers in [3, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .build()
                .expect("thread pool");
            pool.install(|| assert_products_match_a_naive_loop(101, Threads::All, &format!("{workers} workers")));
        }
    }

    #[test]
    fn bf16_row_panels_take_the_maps_that_leave_lanes_empty() {
        // 7×7, 13×13, 14×14 maps: row panels; 27×27 and 55×55 maps, whole
        // vectors, and shallow products: the 8 × 48 kernel.
        for columns in [49, 169, 196] {
            assert!(bf16_row_panels_pay(columns, 64), "{columns} columns");
        }
        for (columns, inner) in [(729, 1600), (3025, 363), (784, 576), (49, 63)] {
            assert!(!bf16_row_panels_pay(columns, inner), "{columns} columns, {inner} deep");
        }
    }

    #[test]
    fn f32_row_panels_take_partial_vectors_and_a_single_one() {
        // 7×7 and 14×14 maps and layer4's 16 Winograd tiles at batch 1:
        // row panels; two vectors and more, and shallow products: `gemm`.
        for columns in [16, 49, 196] {
            assert!(row_panels_pay(columns, 512), "{columns} columns");
        }
        for (columns, inner) in [(32, 512), (784, 576), (16, 63), (49, 63)] {
            assert!(!row_panels_pay(columns, inner), "{columns} columns, {inner} deep");
        }
        // bf16's 8 × 48 kernel fills a single vector's lanes.
        assert!(!bf16_row_panels_pay(16, 512));
    }

    #[test]
    #[should_panic(expected = "view reaches")]
    fn views_outside_their_slice_are_refused() {
        let a = vec![0f32; 5];
        let mut dst = vec![0f32; 4];
        matmul(
            &mut dst,
            false,
            Matrix::row_major(&a, 2, 3),
            Matrix::row_major(&a, 3, 2),
            Threads::One,
        );
    }
}
