//! The bf16 product with its vectors down the left operand's rows: the
//! counterpart for bf16 of [`crate::gemm`]'s f32 row panels. The 8 × 48
//! kernel above runs its vectors along the columns, and a column count that
//! is no multiple of 16 leaves the last vector of every block partly empty
//! (a 7×7 map fills 49 of 64 lanes); here each `vdpbf16ps` multiplies 16
//! rows' pairs by one column's pair, broadcast, so every lane holds a result.
//! The right operand is packed as the 8 × 48 kernel packs it, or read in
//! place as a convolution's channels laid out in bf16 pairs
//! ([`matmul_pair_patches`]); a 64 × 6 block of the result is kept in 24
//! registers.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::super::patches::{Patches, Rhs};
use super::super::super::split::{nothing_to_multiply, row_panels_first, Share};
use super::super::super::x86::{run_columns, with_parked_sums, ColumnBlock, Parking, RightRows, Tapped};
use super::super::bf16_bits;
use super::{pack_b, DisjointOutput, Matrix, Threads, KC, NC, NR, PACKED_B};

/// Rows of the register block: four vectors of 16.
const MR: usize = 64;
/// Columns of the register block, each broadcast (`NR` is a multiple).
const NR_BLOCK: usize = 6;

/// Columns each worker takes at least when a product is split by columns.
const MIN_COLUMNS_PER_WORKER: usize = 2 * NR_BLOCK;

/// The left operand, rounded and packed whole: its panels of [`MR`] rows,
/// each pair of inner columns of a panel one `u32` per row (the even
/// column in the low half), zeros past the last row and column. A panel's
/// pairs lie in order, so that any even run of inner columns is one
/// contiguous part of it ([`Self::panel`]), whatever depth a product
/// blocks the inner dimension by.
pub(in crate::gemm) struct PackedA {
    rows: usize,
    cols: usize,
    data: Vec<u32>,
}

impl PackedA {
    /// Packs `a` (any strides). Multiplying by it needs AVX-512F, BW and BF16.
    pub(in crate::gemm) fn new(a: Matrix<f32>) -> Self {
        a.check("bf16 row-panel lhs");
        let at = |row: usize, col: usize| u32::from(bf16_bits(a.data[row * a.row_stride + col * a.col_stride]));
        let pairs = a.cols.div_ceil(2);
        let mut data = vec![0u32; a.rows.next_multiple_of(MR) * pairs];
        for (panel_index, panel) in data.chunks_exact_mut(MR * pairs).enumerate() {
            let first_row = panel_index * MR;
            for row in first_row..(first_row + MR).min(a.rows) {
                for t in 0..pairs {
                    let col = 2 * t;
                    let high = if col + 1 < a.cols { at(row, col + 1) << 16 } else { 0 };
                    panel[t * MR + row - first_row] = at(row, col) | high;
                }
            }
        }
        Self {
            rows: a.rows,
            cols: a.cols,
            data,
        }
    }

    /// The pairs of inner columns `inner` (starting at an even column) of
    /// the panel of rows `panel · MR ..`.
    fn panel(&self, inner: Range<usize>, panel: usize) -> &[u32] {
        debug_assert!(inner.start.is_multiple_of(2) && inner.end <= self.cols);
        let pairs = self.cols.div_ceil(2);
        &self.data[(panel * pairs + inner.start / 2) * MR..][..inner.len().div_ceil(2) * MR]
    }
}

/// `dst = a · b` (`+=` when `accumulate`); `dst` row-major `a.rows × b.cols`.
/// The caller has checked the CPU (AVX-512F, BW and BF16).
pub(in crate::gemm) fn matmul(dst: &mut [f32], accumulate: bool, a: &PackedA, b: Rhs, threads: Threads) {
    if nothing_to_multiply(dst, accumulate, (a.rows, a.cols), b, "bf16 row-panel matmul") {
        return;
    }
    let n = b.cols();
    let out = DisjointOutput(dst.as_mut_ptr());
    share_out(a.rows, n, threads, |rows, columns| {
        // SAFETY: each call writes only its own block of `dst`, which
        // holds m·n elements; the CPU was checked by the caller.
        unsafe { product(&out, n, accumulate, a, b, rows, columns) }
    });
}

/// `part(rows, columns)` for each worker's share of an `m × n` product:
/// whole panels of rows where they share out evenly ([`row_panels_first`]).
fn share_out(m: usize, n: usize, threads: Threads, part: impl Fn(Range<usize>, Range<usize>) + Sync) {
    let columns = Share {
        unit: NR_BLOCK,
        at_least: MIN_COLUMNS_PER_WORKER,
    };
    row_panels_first(m, n, threads, MR, columns, part);
}

/// `dst[rows, columns] (+)= a[rows, :] · b[:, columns]`, `dst` row-major
/// with `ldc` columns; `rows.start` a multiple of [`MR`].
///
/// # Safety
/// The CPU has AVX-512F, BW and BF16; `dst` holds `a.rows × ldc` elements;
/// no other thread writes or reads `dst[rows, columns]` meanwhile.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn product(
    dst: &DisjointOutput,
    ldc: usize,
    accumulate: bool,
    a: &PackedA,
    b: Rhs,
    rows: Range<usize>,
    columns: Range<usize>,
) {
    let k = a.cols;
    let (mut packed_b, mut rows_b) = PACKED_B.take();
    let depth = inner_depth(k, NC.min(columns.len()));
    with_parked_sums(rows.len(), NC.min(columns.len()), NR_BLOCK, (k, depth), |parked| {
        for first_column in columns.clone().step_by(NC) {
            let width = NC.min(columns.end - first_column);
            for first_inner in (0..k).step_by(depth) {
                let inner = first_inner..(first_inner + depth).min(k);
                let pairs = inner.len().div_ceil(2);
                let block_columns = first_column..first_column + width;
                pack_b::<NR>(b, inner.clone(), block_columns, pairs, &mut packed_b, &mut rows_b);
                for first_row in rows.clone().step_by(MR) {
                    let panel = a.panel(inner.clone(), first_row / MR);
                    for column in (0..width).step_by(NR_BLOCK) {
                        let (panel_b, offset) = (column / NR, column % NR);
                        let block = Block {
                            pairs,
                            a: panel.as_ptr(),
                            b: PackedPanel(packed_b[panel_b * pairs * NR + offset..].as_ptr()),
                            // SAFETY: row first_row < a.rows and column
                            // first_column + column < ldc: inside `dst`.
                            c: unsafe { dst.0.add(first_row * ldc + first_column + column) },
                            ldc,
                            rows: MR.min(rows.end - first_row),
                            add: accumulate,
                            parking: parked.block(first_row - rows.start, column, inner.clone()),
                        };
                        // SAFETY: the panels hold `pairs` pairs of MR rows and of
                        // NR columns (NR_BLOCK columns from `offset` stay inside
                        // one); the block lies inside the caller's part of `dst`,
                        // its parking is its own.
                        unsafe { run_columns(&block, (width - column).min(NR_BLOCK)) };
                    }
                }
            }
        }
    });
    PACKED_B.set((packed_b, rows_b));
}

/// Bytes of the right operand one inner block packs at most: half of a
/// core's L2 cache (1 MiB on the CPUs we measured), the rest left to the
/// left operand's panel and the output.
const PACKED_B_BYTES: usize = 512 << 10;

/// The depth (even) of the inner blocks a product of `k` inner columns
/// and `width` columns at a time is cut into: as few blocks as keep the
/// packed right operand within [`PACKED_B_BYTES`], at least [`KC`] deep
/// where `k` is, and of one depth (the last one shallower at most by the
/// rounding). Each block costs every register block a round trip of its
/// sums through the parking, and a shallow last block runs the kernel for
/// a handful of pairs, so a deep map of few columns (ResNet-18's layer4
/// at batch 1: 4608 deep, 49 columns) is cut in two, not in eighteen.
fn inner_depth(k: usize, width: usize) -> usize {
    let deepest = (2 * PACKED_B_BYTES / (4 * width.next_multiple_of(NR))).max(KC);
    let blocks = k.div_ceil(deepest).max(1);
    k.div_ceil(blocks).next_multiple_of(2)
}

/// `dst = a · b` (`+=` when `accumulate`) for a convolution's patches
/// read in place as bf16 pairs of channels (`b`'s row `p` holds the pairs
/// of the inner dimension's columns `2p` and `2p + 1`), `a` packed in the
/// same order ([`crate::gemm::ChannelPairsLhs`]); `dst` row-major
/// `a.rows × b.cols()`. The caller has checked the CPU (AVX-512F, BW and
/// BF16).
pub(in crate::gemm) fn matmul_pair_patches(
    dst: &mut [f32],
    accumulate: bool,
    a: &PackedA,
    b: Patches<u32>,
    threads: Threads,
) {
    let pairs = (a.rows, a.cols.div_ceil(2));
    if nothing_to_multiply(dst, accumulate, pairs, b, "bf16 pair patches matmul") {
        return;
    }
    let n = b.cols();
    let out = DisjointOutput(dst.as_mut_ptr());
    share_out(a.rows, n, threads, |rows, columns| {
        // SAFETY: each call writes only its own block of `dst`, which
        // holds m·n elements; the CPU was checked by the caller.
        unsafe { product_pair_patches(&out, n, accumulate, a, b, rows, columns) }
    });
}

/// Pairs of the inner dimension one block of [`product_pair_patches`]
/// multiplies: the left operand's panel (`MR × PATCH_PAIRS` pairs, 128 KB)
/// stays in L2 while every block of columns of a pass meets it.
const PATCH_PAIRS: usize = 512;

/// Columns of one pass of [`product_pair_patches`]: their offsets are
/// worked out once for all its blocks.
const PATCH_COLUMNS: usize = 240;

/// [`product`] of pairs read in place: each register block's
/// [`NR_BLOCK`] columns read at their own offsets from every tap, so that
/// a block may run on past the end of an output row.
///
/// # Safety
/// As [`product`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn product_pair_patches(
    dst: &DisjointOutput,
    ldc: usize,
    accumulate: bool,
    a: &PackedA,
    b: Patches<u32>,
    rows: Range<usize>,
    columns: Range<usize>,
) {
    let pairs = b.rows();
    let (values, taps) = (b.values().as_ptr(), b.taps());
    let mut pass_offsets = Vec::with_capacity(PATCH_COLUMNS);
    let inner_columns = (a.cols, 2 * PATCH_PAIRS);
    with_parked_sums(
        rows.len(),
        PATCH_COLUMNS.min(columns.len()),
        NR_BLOCK,
        inner_columns,
        |parked| {
            for first_column in columns.clone().step_by(PATCH_COLUMNS) {
                let last_column = (first_column + PATCH_COLUMNS).min(columns.end);
                pass_offsets.clear();
                pass_offsets.extend(b.offsets(first_column..last_column));
                for first_pair in (0..pairs).step_by(PATCH_PAIRS) {
                    let depth = PATCH_PAIRS.min(pairs - first_pair);
                    let inner = 2 * first_pair..(2 * (first_pair + depth)).min(a.cols);
                    for first_row in rows.clone().step_by(MR) {
                        let panel = a.panel(inner.clone(), first_row / MR);
                        for column in (first_column..last_column).step_by(NR_BLOCK) {
                            let width = (last_column - column).min(NR_BLOCK);
                            let block = Block {
                                pairs: depth,
                                a: panel.as_ptr(),
                                b: Tapped {
                                    values,
                                    taps: taps[first_pair..first_pair + depth].as_ptr(),
                                    offsets: pass_offsets[column - first_column..][..width].as_ptr(),
                                },
                                // SAFETY: row first_row < a.rows and column < ldc: inside `dst`.
                                c: unsafe { dst.0.add(first_row * ldc + column) },
                                ldc,
                                rows: MR.min(rows.end - first_row),
                                add: accumulate,
                                parking: parked.block(first_row - rows.start, column - first_column, inner.clone()),
                            };
                            // SAFETY: the panel holds `depth × MR` pairs; every
                            // tap plus every column's offset lies inside the
                            // laid-out pairs (checked when the patches were
                            // made); the block lies inside the caller's part of
                            // `dst`, its parking is its own.
                            unsafe { run_columns(&block, width) };
                        }
                    }
                }
            }
        },
    );
}

/// A packed panel of the right operand: pair `p` of column `j` at
/// `p · NR + j` ([`pack_b`]'s layout, from the block's first column).
#[derive(Clone, Copy)]
struct PackedPanel(*const u32);

impl RightRows<u32> for PackedPanel {
    #[inline(always)]
    unsafe fn row(self, p: usize) -> *const u32 {
        // SAFETY: the panel holds the block's pairs (the caller's promise).
        unsafe { self.0.add(p * NR) }
    }

    #[inline(always)]
    unsafe fn column(self, row: *const u32, j: usize) -> *const u32 {
        // SAFETY: the block's columns lie inside the panel (the caller's promise).
        unsafe { row.add(j) }
    }
}

/// One register block: `c[..rows, ..C] (+)= A panel · B columns`, over
/// one inner block.
struct Block<B> {
    pairs: usize,
    a: *const u32,
    b: B,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    /// Add the sums to `c` instead of writing them.
    add: bool,
    parking: Parking,
}

impl<B: RightRows<u32>> ColumnBlock for Block<B> {
    /// Runs the block with `C ≤ NR_BLOCK` columns.
    ///
    /// # Safety
    /// AVX-512F, BW and BF16; the A panel holds `pairs × MR` pairs, each
    /// of `b`'s `pairs` rows has `C` readable pairs; `c` has
    /// `rows` rows of `C` writable elements, `ldc` apart; no other block
    /// shares its parking.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn run<const C: usize>(&self) {
        // SAFETY: the parking is this block's own (the caller's promise).
        let mut sums = unsafe { self.parking.start::<C>() };
        for p in 0..self.pairs {
            // SAFETY (this loop): p < pairs, inside both panels.
            let a_pairs = unsafe { self.a.add(p * MR) };
            let a = [0, 1, 2, 3].map(|v| unsafe {
                std::mem::transmute::<__m512, __m512bh>(_mm512_loadu_ps(a_pairs.add(16 * v).cast()))
            });
            let b_pairs = unsafe { self.b.row(p) };
            for (j, sums) in sums.iter_mut().enumerate() {
                let pair = unsafe { *self.b.column(b_pairs, j) };
                let b = unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair as i32)) };
                for (sum, &a) in sums.iter_mut().zip(&a) {
                    *sum = _mm512_dpbf16_ps(*sum, a, b);
                }
            }
        }
        // SAFETY: `c` has `rows ≤ MR` rows of C writable elements, `ldc`
        // apart, and the parking is this block's own (the caller's promise).
        unsafe { self.parking.finish(sums, self.c, self.ldc, self.rows, self.add) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_blocks_are_as_few_and_as_even_as_the_packed_operand_allows() {
        // ResNet-18's layer4 at batch 1: 49 columns (two 48-column panels)
        // let 2730 rows of pairs be packed at once; 4608 is cut in halves.
        assert_eq!(inner_depth(4608, 49), 2304);
        assert_eq!(inner_depth(2304, 49), 2304);
        // One block, odd depth: rounded up to whole pairs.
        assert_eq!(inner_depth(147, 49), 148);
        // Many columns keep the blocks KC deep at least, cut evenly.
        assert_eq!(inner_depth(520, 1536), 174);
        assert_eq!(inner_depth(4608, 1536), KC);
    }
}
