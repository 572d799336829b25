//! The f32 product of a left operand packed once (a frozen convolution's
//! weight, or one point of its Winograd transform), on AVX-512: vectors run
//! down the operand's rows (output channels) and the right operand's
//! columns are broadcast one at a time, so every lane holds a result
//! whatever the column count, and the right operand can be a
//! convolution's patches read in place ([`matmul_patches`]: no im2col).
//! `gemm`'s micro-kernels run their vectors along the columns instead, and
//! a column count that is no multiple of 16 leaves the last vector of every
//! block partly empty (24 Winograd tiles fill 24 of 32 lanes, a 7×7 map 49
//! of 64); they also pack the weight again on every call.
//!
//! A 64 × 6 block of the result is kept in 24 registers; the product is
//! blocked for the caches along the inner dimension ([`KC`]) and the
//! columns ([`NC`]).

use std::arch::x86_64::*;
use std::ops::Range;

use super::patches::Rhs;
use super::split::{nothing_to_multiply, row_panels_first, Share};
use super::x86::{run_columns, with_parked_sums, ColumnBlock, Parking, RightRows, Tapped};
use super::{DisjointOutput, Matrix, Patches, Threads};

/// Rows of the register block: four vectors of 16.
const MR: usize = 64;
/// Columns of the register block, each broadcast.
const NR: usize = 6;
/// Inner-dimension block: a panel of `a` (`MR × KC`, 128 KB) stays in L2,
/// the `KC × NR` columns of `b` a block multiplies (12 KB) in L1.
const KC: usize = 512;
/// Columns multiplied by one pass over `a`'s panels: `b`'s `KC × NC` block
/// (480 KB) stays in L2.
const NC: usize = 240;

/// Columns each worker takes at least when a product is split by columns.
const MIN_COLUMNS_PER_WORKER: usize = 2 * NR;

/// The left operand, packed whole: for each block of [`KC`] inner columns,
/// its panels of [`MR`] rows, each column of a panel contiguous (`MR`
/// values, zeros past the last row).
pub(super) struct PackedA {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs `a` (any strides). Multiplying by it needs AVX-512F.
    pub(super) fn new(a: Matrix<f32>) -> Self {
        a.check("f32 packed lhs");
        let padded_rows = a.rows.next_multiple_of(MR);
        let mut data = vec![0.0; padded_rows * a.cols];
        for first_inner in (0..a.cols).step_by(KC) {
            let depth = KC.min(a.cols - first_inner);
            let block = &mut data[first_inner * padded_rows..][..padded_rows * depth];
            for (panel_index, panel) in block.chunks_exact_mut(MR * depth).enumerate() {
                let first_row = panel_index * MR;
                for row in first_row..(first_row + MR).min(a.rows) {
                    for t in 0..depth {
                        panel[t * MR + row - first_row] = a.data[row * a.row_stride + (first_inner + t) * a.col_stride];
                    }
                }
            }
        }
        Self {
            rows: a.rows,
            cols: a.cols,
            data,
        }
    }

    /// Columns of the operand packed (the products' inner dimension).
    pub(super) fn cols(&self) -> usize {
        self.cols
    }

    /// The panel of rows `panel · MR ..` in the inner block that starts at
    /// `first_inner` (a multiple of `KC`).
    fn panel(&self, first_inner: usize, panel: usize) -> &[f32] {
        let padded_rows = self.rows.next_multiple_of(MR);
        let depth = KC.min(self.cols - first_inner);
        &self.data[first_inner * padded_rows + panel * MR * depth..][..MR * depth]
    }
}

/// `dst = a · b` (`+=` when `accumulate`); `dst` row-major `a.rows × b.cols`.
/// The caller has checked the CPU (AVX-512F).
pub(super) fn matmul(dst: &mut [f32], accumulate: bool, a: &PackedA, b: Matrix<f32>, threads: Threads) {
    if nothing_to_multiply(dst, accumulate, (a.rows, a.cols), b, "f32 packed matmul") {
        return;
    }
    let (m, n) = (a.rows, b.cols);
    // The kernel broadcasts from rows of `b` read in place.
    let copy;
    let b = if b.col_stride == 1 {
        b
    } else {
        copy = b.to_vec();
        Matrix::row_major(&copy, b.rows, b.cols)
    };
    let out = DisjointOutput(dst.as_mut_ptr());
    let columns = Share {
        unit: NR,
        at_least: MIN_COLUMNS_PER_WORKER,
    };
    row_panels_first(m, n, threads, MR, columns, |rows, columns| {
        // SAFETY: each call writes only its own block of `dst`, which
        // holds m·n elements; the CPU was checked by the caller.
        unsafe { product(&out, n, accumulate, a, b, rows, columns) }
    });
}

/// `dst[rows, columns] (+)= a[rows, :] · b[:, columns]`, `dst` row-major
/// with `ldc` columns, `b`'s rows contiguous; `rows.start` a multiple of
/// [`MR`].
///
/// # Safety
/// The CPU has AVX-512F; `dst` holds `a.rows × ldc` elements; no other
/// thread writes or reads `dst[rows, columns]` meanwhile.
#[target_feature(enable = "avx512f")]
unsafe fn product(
    dst: &DisjointOutput,
    ldc: usize,
    accumulate: bool,
    a: &PackedA,
    b: Matrix<f32>,
    rows: Range<usize>,
    columns: Range<usize>,
) {
    debug_assert!(rows.start.is_multiple_of(MR) && b.col_stride == 1);
    let k = a.cols;
    with_parked_sums(rows.len(), NC.min(columns.len()), NR, (k, KC), |parked| {
        for first_column in columns.clone().step_by(NC) {
            let last_column = (first_column + NC).min(columns.end);
            for first_inner in (0..k).step_by(KC) {
                let depth = KC.min(k - first_inner);
                for first_row in rows.clone().step_by(MR) {
                    let panel = a.panel(first_inner, first_row / MR);
                    for column in (first_column..last_column).step_by(NR) {
                        let block = Block {
                            depth,
                            a: panel.as_ptr(),
                            b: Strided {
                                // SAFETY: row first_inner < b.rows and column < b.cols: inside the checked view.
                                first: unsafe { b.data.as_ptr().add(first_inner * b.row_stride + column) },
                                ldb: b.row_stride,
                            },
                            // SAFETY: row first_row < a.rows and column < ldc: inside `dst`.
                            c: unsafe { dst.0.add(first_row * ldc + column) },
                            ldc,
                            rows: MR.min(rows.end - first_row),
                            add: accumulate,
                            parking: parked.block(
                                first_row - rows.start,
                                column - first_column,
                                first_inner..first_inner + depth,
                            ),
                        };
                        // SAFETY: the panel holds `depth × MR` values; `b` has
                        // `depth` rows of the block's columns from `b`; the block
                        // lies inside the caller's part of `dst`, its parking is
                        // its own.
                        unsafe { run_columns(&block, (last_column - column).min(NR)) };
                    }
                }
            }
        }
    });
}

/// `dst = a · b` (`+=` when `accumulate`) for a convolution's patches `b`
/// read in place ([`Patches`]); `dst` row-major `a.rows × b.cols()`. The
/// caller has checked the CPU (AVX-512F).
pub(super) fn matmul_patches(dst: &mut [f32], accumulate: bool, a: &PackedA, b: Patches, threads: Threads) {
    if nothing_to_multiply(
        dst,
        accumulate,
        (a.rows, a.cols),
        Rhs::Patches(b),
        "f32 packed patches matmul",
    ) {
        return;
    }
    let (m, n) = (a.rows, b.cols());
    let out = DisjointOutput(dst.as_mut_ptr());
    let columns = Share {
        unit: NR,
        at_least: MIN_COLUMNS_PER_WORKER,
    };
    row_panels_first(m, n, threads, MR, columns, |rows, columns| {
        // SAFETY: each call writes only its own block of `dst`, which
        // holds m·n elements; the CPU was checked by the caller.
        unsafe { product_patches(&out, n, accumulate, a, b, rows, columns) }
    });
}

/// [`product`] of patches: each register block's [`NR`] columns read at
/// their own offsets from every tap, so that a block may run on past the
/// end of an output row (a 7×7 map's 49 columns take nine blocks, not
/// fourteen).
///
/// # Safety
/// As [`product`].
#[target_feature(enable = "avx512f")]
unsafe fn product_patches(
    dst: &DisjointOutput,
    ldc: usize,
    accumulate: bool,
    a: &PackedA,
    b: Patches,
    rows: Range<usize>,
    columns: Range<usize>,
) {
    debug_assert!(rows.start.is_multiple_of(MR));
    let k = a.cols;
    let (values, taps) = (b.values().as_ptr(), b.taps());
    // The pass's columns' offsets, worked out once for all its blocks.
    let mut pass_offsets = Vec::with_capacity(NC);
    with_parked_sums(rows.len(), NC.min(columns.len()), NR, (k, KC), |parked| {
        for first_column in columns.clone().step_by(NC) {
            let last_column = (first_column + NC).min(columns.end);
            pass_offsets.clear();
            pass_offsets.extend(b.offsets(first_column..last_column));
            for first_inner in (0..k).step_by(KC) {
                let depth = KC.min(k - first_inner);
                for first_row in rows.clone().step_by(MR) {
                    let panel = a.panel(first_inner, first_row / MR);
                    for column in (first_column..last_column).step_by(NR) {
                        let width = (last_column - column).min(NR);
                        let block = Block {
                            depth,
                            a: panel.as_ptr(),
                            b: Tapped {
                                values,
                                taps: taps[first_inner..first_inner + depth].as_ptr(),
                                offsets: pass_offsets[column - first_column..][..width].as_ptr(),
                            },
                            // SAFETY: row first_row < a.rows and column < ldc: inside `dst`.
                            c: unsafe { dst.0.add(first_row * ldc + column) },
                            ldc,
                            rows: MR.min(rows.end - first_row),
                            add: accumulate,
                            parking: parked.block(
                                first_row - rows.start,
                                column - first_column,
                                first_inner..first_inner + depth,
                            ),
                        };
                        // SAFETY: the panel holds `depth × MR` values; every
                        // tap plus every column's offset lies inside the
                        // laid-out values (checked when the patches were
                        // made); the block lies inside the caller's part of
                        // `dst`, its parking is its own.
                        unsafe { run_columns(&block, width) };
                    }
                }
            }
        }
    });
}

/// Rows `ldb` apart, each block's columns side by side: a matrix view.
#[derive(Clone, Copy)]
struct Strided {
    first: *const f32,
    ldb: usize,
}

impl RightRows<f32> for Strided {
    #[inline(always)]
    unsafe fn row(self, t: usize) -> *const f32 {
        // SAFETY: the block's rows lie inside the view (the caller's promise).
        unsafe { self.first.add(t * self.ldb) }
    }

    #[inline(always)]
    unsafe fn column(self, row: *const f32, j: usize) -> *const f32 {
        // SAFETY: the block's columns lie inside the view (the caller's promise).
        unsafe { row.add(j) }
    }
}

/// One register block: `c[..rows, ..C] (+)= A panel · b[.., ..C]`, over
/// one inner block.
struct Block<B> {
    depth: usize,
    a: *const f32,
    b: B,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    /// Add the sums to `c` instead of writing them.
    add: bool,
    parking: Parking,
}

impl<B: RightRows<f32>> ColumnBlock for Block<B> {
    /// Runs the block with `C ≤ NR` columns.
    ///
    /// # Safety
    /// AVX-512F; the panel holds `depth × MR` values; each of `b`'s `depth`
    /// rows has `C` readable values; `c` has `rows` rows of `C`
    /// writable elements, `ldc` apart; no other block shares its parking.
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const C: usize>(&self) {
        // SAFETY: the parking is this block's own (the caller's promise).
        let mut sums = unsafe { self.parking.start::<C>() };
        for t in 0..self.depth {
            // SAFETY (this loop): t < depth, inside the panel and `b`'s rows.
            let a_column = unsafe { self.a.add(t * MR) };
            let a = [0, 1, 2, 3].map(|v| unsafe { _mm512_loadu_ps(a_column.add(16 * v)) });
            let b_row = unsafe { self.b.row(t) };
            for (j, sums) in sums.iter_mut().enumerate() {
                let b = _mm512_set1_ps(unsafe { *self.b.column(b_row, j) });
                for (sum, &a) in sums.iter_mut().zip(&a) {
                    *sum = _mm512_fmadd_ps(a, b, *sum);
                }
            }
        }
        // The sums run down the rows, `c`'s rows are `ldc` apart.
        // SAFETY: `c` has `rows ≤ MR` rows of C writable elements, `ldc`
        // apart, and the parking is this block's own (the caller's promise).
        unsafe { self.parking.finish(sums, self.c, self.ldc, self.rows, self.add) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::InstructionSet;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 10_007) as f32 / 10_007.0 - 0.45)
            .collect()
    }

    /// One product from the packed operand against the f64 product, to
    /// f32's summing error; `dst` starts at 1 so that accumulating shows.
    fn check(m: usize, n: usize, k: usize, b_transposed: bool, accumulate: bool, threads: Threads) {
        let (a_values, b_values) = (values(m * k, 1), values(k * n, 2));
        let a = Matrix::row_major(&a_values, m, k);
        let b = if b_transposed {
            Matrix::row_major(&b_values, n, k).t()
        } else {
            Matrix::row_major(&b_values, k, n)
        };
        let (av, bv) = (a.to_vec(), b.to_vec());
        let mut dst = vec![1.0f32; m * n];
        matmul(&mut dst, accumulate, &PackedA::new(a), b, threads);
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut magnitude) = (if accumulate { 1.0 } else { 0.0 }, 1.0);
                for p in 0..k {
                    let product = f64::from(av[i * k + p]) * f64::from(bv[p * n + j]);
                    exact += product;
                    magnitude += product.abs();
                }
                let error = (f64::from(dst[i * n + j]) - exact).abs();
                assert!(
                    error <= 2.0 * k as f64 * f64::from(f32::EPSILON) * magnitude,
                    "{m}×{n}×{k} (b transposed: {b_transposed}, accumulate: {accumulate}, {threads:?}): \
                     ({i}, {j}) is {} against {exact}",
                    dst[i * n + j]
                );
            }
        }
    }

    fn avx512() -> bool {
        let here = InstructionSet::detected() >= InstructionSet::Avx512;
        if !here {
            eprintln!("skipped: this CPU has no AVX-512F");
        }
        here
    }

    #[test]
    fn products_match_f64_around_the_block_sizes() {
        if !avx512() {
            return;
        }
        for m in [1, 63, 64, 65, 130] {
            for n in [1, 5, 6, 7, 16, 49] {
                for k in [1, 17, 511, 513] {
                    check(m, n, k, false, false, Threads::One);
                }
            }
        }
        // Past one block of columns, accumulating, and a strided right
        // operand; past one block of columns and of the inner dimension
        // (the sums parked between inner blocks, pass after pass).
        check(65, 241, 33, false, true, Threads::One);
        check(70, 13, 600, true, true, Threads::One);
        check(65, 485, 1030, false, true, Threads::One);
    }

    #[test]
    fn products_shared_out_by_rows_or_columns_match_f64() {
        if !avx512() {
            return;
        }
        for workers in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .build()
                .expect("thread pool");
            pool.install(|| {
                // Panels a multiple of the workers: by rows.
                check(64 * workers, 49, 70, false, false, Threads::All);
                // Not: by columns, or by uneven rows where the columns are few.
                check(130, 49, 70, false, true, Threads::All);
                check(64 * workers + 1, 7, 70, false, false, Threads::All);
                // Fewer panels than workers and few columns: one worker.
                check(40, 11, 70, false, false, Threads::All);
            });
        }
    }
}
