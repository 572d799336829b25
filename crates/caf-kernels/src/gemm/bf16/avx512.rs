//! The bf16 product on AVX512-BF16: operands packed as bf16 pairs along the
//! inner dimension, an 8 × 48 block of the result kept in 24 registers and
//! grown by `vdpbf16ps` (each lane adds two products), blocked for the caches
//! as a GEMM is (inner dimension by [`KC`], rows by [`MC`], columns by [`NC`]).

use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

pub(super) mod row_panels;

use super::super::patches::{Patches, Rhs};
use super::super::split::{columns_first, nothing_to_multiply, Share};
use super::super::x86::{first_lanes, transpose_16x16};
use super::super::{DisjointOutput, Matrix, Threads};

/// Rows of the register block.
const MR: usize = 8;
/// Columns of the register block: three vectors of 16.
const NR: usize = 48;
/// Inner-dimension block (even): a packed panel of `b` (`KC × NR` bf16, 24 KB) stays in L1.
const KC: usize = 256;
/// Rows of `a` packed at once (`MC × KC` bf16, 64 KB, in L2).
const MC: usize = 128;
/// Columns of `b` packed at once (`KC × NC` bf16, 768 KB, in L2).
const NC: usize = 1536;

/// Rows of `a` packed by one task when [`PackedA::new`] packs in parallel:
/// a whole number of register panels.
const PACKED_ROWS_PER_TASK: usize = 8 * MR;
/// Columns each worker takes at least when a product is split by columns.
const MIN_COLUMNS_PER_WORKER: usize = 2 * NR;
/// Rows each worker takes at least when a product is split by rows.
const MIN_ROWS_PER_WORKER: usize = 2 * MR;

/// The left operand of products, rounded and packed whole: for each block
/// of [`KC`] inner columns, its panels of [`MR`] rows ([`pack_a`]'s layout).
pub(super) struct PackedA {
    rows: usize,
    cols: usize,
    data: Vec<u32>,
}

impl PackedA {
    /// Packs `a`, each inner block's rows shared out to the workers in runs
    /// of [`PACKED_ROWS_PER_TASK`] when `threads` allows. The caller has
    /// checked the CPU (AVX-512F, BW, BF16).
    pub(super) fn new(a: Matrix<f32>, threads: Threads) -> Self {
        let mut copy = Vec::new();
        let a = with_contiguous_rows(a, &mut copy);
        let padded_rows = a.rows.next_multiple_of(MR);
        let mut data = vec![0u32; padded_rows * a.cols.div_ceil(2)];
        for first_inner in (0..a.cols).step_by(KC) {
            let depth = KC.min(a.cols - first_inner);
            let (inner, pairs) = (first_inner..first_inner + depth, depth.div_ceil(2));
            let block = &mut data[first_inner / 2 * padded_rows..][..padded_rows * pairs];
            // Each run of rows packs into its own panels of the block.
            let pack = |(run, panels): (usize, &mut [u32])| {
                let first = run * PACKED_ROWS_PER_TASK;
                let rows = first..(first + PACKED_ROWS_PER_TASK).min(a.rows);
                // SAFETY: the caller checked the CPU.
                unsafe { pack_a(a, rows, inner.clone(), panels) }
            };
            let runs = PACKED_ROWS_PER_TASK * pairs;
            match threads {
                Threads::All => block.par_chunks_mut(runs).enumerate().for_each(pack),
                Threads::One => block.chunks_mut(runs).enumerate().for_each(pack),
            }
        }
        Self {
            rows: a.rows,
            cols: a.cols,
            data,
        }
    }

    /// The panel of rows `row..row + MR` (`row` a multiple of `MR`) in the
    /// inner block that starts at `first_inner` (a multiple of `KC`).
    fn panel(&self, first_inner: usize, row: usize) -> &[u32] {
        let padded_rows = self.rows.next_multiple_of(MR);
        let pairs = KC.min(self.cols - first_inner).div_ceil(2);
        &self.data[first_inner / 2 * padded_rows + row / MR * pairs * MR..][..pairs * MR]
    }
}

/// `dst = a · b` (`+=` when `accumulate`); `dst` row-major `a.rows × b.cols`.
/// The caller has checked the CPU.
pub(super) fn matmul(dst: &mut [f32], accumulate: bool, a: &PackedA, b: Rhs, threads: Threads) {
    if nothing_to_multiply(dst, accumulate, (a.rows, a.cols), b, "bf16 matmul") {
        return;
    }
    let (m, n) = (a.rows, b.cols());
    let out = DisjointOutput(dst.as_mut_ptr());
    let rows = Share {
        unit: MR,
        at_least: MIN_ROWS_PER_WORKER,
    };
    let columns = Share {
        unit: 16,
        at_least: MIN_COLUMNS_PER_WORKER,
    };
    columns_first(m, n, threads, rows, columns, |rows, columns| {
        // SAFETY: each call writes only its own block of `dst`, which
        // holds m·n elements; the CPU was checked by the caller.
        unsafe { product(&out, n, accumulate, a, b, rows, columns) }
    });
}

thread_local! {
    /// This thread's packed panels of `b`, and a strided block of `b` copied
    /// row-major before packing, kept between products.
    static PACKED_B: RefCell<(Vec<u32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
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
    for first_column in columns.clone().step_by(NC) {
        let width = NC.min(columns.end - first_column);
        for first_inner in (0..k).step_by(KC) {
            let depth = KC.min(k - first_inner);
            let pairs = depth.div_ceil(2);
            let (inner, block_columns) = (first_inner..first_inner + depth, first_column..first_column + width);
            pack_b::<NR>(b, inner, block_columns, pairs, &mut packed_b, &mut rows_b);
            let add = accumulate || first_inner > 0;
            for first_row in rows.clone().step_by(MC) {
                let height = MC.min(rows.end - first_row);
                for (panel_b, column) in (0..width).step_by(NR).enumerate() {
                    let panel_width = NR.min(width - column);
                    let b_panel = packed_b[panel_b * pairs * NR..].as_ptr();
                    for row in (0..height).step_by(MR) {
                        let block = Block {
                            pairs,
                            a: a.panel(first_inner, first_row + row).as_ptr(),
                            b: b_panel,
                            // SAFETY: row first_row + row < a.rows and column
                            // first_column + column < ldc: inside `dst`.
                            c: unsafe { dst.0.add((first_row + row) * ldc + first_column + column) },
                            ldc,
                            rows: MR.min(height - row),
                            columns: panel_width,
                            add,
                        };
                        // SAFETY: the panels hold `pairs` pairs of MR and NR
                        // elements; the block lies inside the caller's part of `dst`.
                        unsafe {
                            match panel_width.div_ceil(16) {
                                1 => block.run::<1>(),
                                2 => block.run::<2>(),
                                _ => block.run::<3>(),
                            }
                        }
                    }
                }
            }
        }
    }
    PACKED_B.set((packed_b, rows_b));
}

/// [`pack_b_view`] of a view, [`pack_b_patches`] of patches.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) fn pack_b<const WIDTH: usize>(
    b: Rhs,
    inner: Range<usize>,
    columns: Range<usize>,
    pair_rows: usize,
    packed: &mut Vec<u32>,
    copy: &mut Vec<f32>,
) {
    match b {
        Rhs::View(view) => pack_b_view::<WIDTH>(view, inner, columns, pair_rows, packed, copy),
        Rhs::Patches(patches) => pack_b_patches::<WIDTH>(patches, inner, columns, pair_rows, packed),
    }
}

/// Packs `b[inner, columns]` as panels of `WIDTH` columns (a multiple of
/// 16), each `pair_rows × WIDTH` bf16 pairs: element `(p, j)` of a panel
/// holds rows `2p` and `2p + 1` of column `j`, zeros past the last row and
/// column (`pair_rows` is at least the inner rows' pairs). Rows that are
/// contiguous are read in place, a transposed view (contiguous columns)
/// 16 columns at a time; any other view is first copied into `copy`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) fn pack_b_view<const WIDTH: usize>(
    b: Matrix<f32>,
    inner: Range<usize>,
    columns: Range<usize>,
    pair_rows: usize,
    packed: &mut Vec<u32>,
    copy: &mut Vec<f32>,
) {
    if b.col_stride == 1 {
        pack_b_panels::<WIDTH>(b, inner, columns, pair_rows, packed);
    } else if b.row_stride == 1 {
        pack_b_transposed::<WIDTH>(b, inner, columns, pair_rows, packed);
    } else {
        let (depth, width) = (inner.len(), columns.len());
        copy_rows(b, inner, columns, copy);
        pack_b_panels::<WIDTH>(
            Matrix::row_major(copy, depth, width),
            0..depth,
            0..width,
            pair_rows,
            packed,
        );
    }
}

/// Sizes `packed` for `panels` panels of `pair_rows × WIDTH` pairs and
/// zeroes only what packing `pairs` pair rows leaves unwritten: each
/// panel's pair rows past `pairs`, which meet the zero padding of the left
/// operand's inner dimension (stale values there could be infinities or
/// NaNs, and `0 · ∞` is a NaN). The rest of the buffer, stale from an
/// earlier product, is overwritten by the packers, except the last panel's
/// columns past the last one: a column of the product depends on its own
/// column of `b` alone, and those columns' sums are never written back.
fn zero_padding<const WIDTH: usize>(packed: &mut Vec<u32>, panels: usize, pair_rows: usize, pairs: usize) {
    packed.resize(panels * pair_rows * WIDTH, 0);
    for panel in packed.chunks_exact_mut(pair_rows * WIDTH) {
        panel[pairs * WIDTH..].fill(0);
    }
}

/// 16 values of two rows, rounded to bf16, as 16 pairs: pair `j` holds
/// `low[j]` in its low half and `high[j]` in its high half.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) fn pairs_of_rows(low: __m512, high: __m512) -> __m512i {
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
        16, 0,
    );
    // Lanes 0-15 hold `low`'s bf16s, 16-31 `high`'s.
    let halves: __m512i = unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(high, low)) };
    _mm512_permutexvar_epi16(interleave, halves)
}

/// [`pack_b_view`] of a view whose rows are contiguous.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pack_b_panels<const WIDTH: usize>(
    b: Matrix<f32>,
    inner: Range<usize>,
    columns: Range<usize>,
    pair_rows: usize,
    packed: &mut Vec<u32>,
) {
    assert_eq!(b.col_stride, 1, "pack_b reads rows that are contiguous");
    const { assert!(WIDTH.is_multiple_of(16)) };
    let pairs = inner.len().div_ceil(2);
    assert!(
        pair_rows >= pairs,
        "pack_b: {pair_rows} pair rows cannot hold {pairs} pairs"
    );
    let panels = columns.len().div_ceil(WIDTH);
    zero_padding::<WIDTH>(packed, panels, pair_rows, pairs);
    for (panel, first) in columns.clone().step_by(WIDTH).enumerate() {
        let width = WIDTH.min(columns.end - first);
        for p in 0..pairs {
            let row = inner.start + 2 * p;
            let second = (row + 1 < inner.end).then_some(row + 1);
            let out = &mut packed[(panel * pair_rows + p) * WIDTH..][..WIDTH];
            for chunk in 0..width.div_ceil(16) {
                let count = 16.min(width - 16 * chunk);
                let mask = first_lanes(count);
                let start = first + 16 * chunk;
                // SAFETY: the first `count` elements of each row lie in
                // the checked view; the masked loads read no others.
                let (low, high) = unsafe {
                    let low = _mm512_maskz_loadu_ps(mask, b.data.as_ptr().add(row * b.row_stride + start));
                    let high = match second {
                        Some(r) => _mm512_maskz_loadu_ps(mask, b.data.as_ptr().add(r * b.row_stride + start)),
                        None => _mm512_setzero_ps(),
                    };
                    (low, high)
                };
                let pairs16 = pairs_of_rows(low, high);
                // SAFETY: `out` has WIDTH ≥ 16·(chunk + 1) elements.
                unsafe { _mm512_storeu_si512(out[16 * chunk..].as_mut_ptr().cast(), pairs16) };
            }
        }
    }
}

/// [`pack_b_view`]'s packing of a convolution's patches, read in place:
/// the 16 columns of a vector span one or more output rows, each a
/// contiguous run of every tap's samples, loaded into its lanes by a
/// masked load (the other lanes' addresses are never read).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pack_b_patches<const WIDTH: usize>(
    b: Patches,
    inner: Range<usize>,
    columns: Range<usize>,
    pair_rows: usize,
    packed: &mut Vec<u32>,
) {
    const { assert!(WIDTH.is_multiple_of(16)) };
    let pairs = inner.len().div_ceil(2);
    assert!(
        pair_rows >= pairs && inner.end <= b.rows() && columns.end <= b.cols(),
        "pack_b_patches: rows {inner:?}, columns {columns:?} of {}×{} patches in {pair_rows} pair rows",
        b.rows(),
        b.cols()
    );
    let panels = columns.len().div_ceil(WIDTH);
    zero_padding::<WIDTH>(packed, panels, pair_rows, pairs);
    // Each vector's loads: the lanes a run fills, and the offset from a
    // tap of the element lane 0 would read (so that lane `l` reads offset
    // + l); `vectors[v]` ends vector v's loads.
    let mut loads: Vec<(__mmask16, isize)> = Vec::new();
    let mut vectors = Vec::with_capacity(columns.len().div_ceil(16));
    for first in columns.clone().step_by(16) {
        for (column, offset, len) in b.runs(first..(first + 16).min(columns.end)) {
            let lane = column - first;
            loads.push((
                first_lanes(lane + len) & !first_lanes(lane),
                offset as isize - lane as isize,
            ));
        }
        vectors.push(loads.len());
    }
    let values = b.values().as_ptr();
    let per_panel = WIDTH / 16;
    for p in 0..pairs {
        let row = inner.start + 2 * p;
        let low_tap = b.tap(row) as isize;
        let high_tap = (row + 1 < inner.end).then(|| b.tap(row + 1) as isize);
        let mut start = 0;
        for (v, &end) in vectors.iter().enumerate() {
            let (mut low, mut high) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for &(mask, offset) in &loads[start..end] {
                // SAFETY: the lanes in `mask` read elements of runs of the
                // patches, which `Patches::new` checked lie in `values`;
                // the masked load reads no other lane's address.
                unsafe {
                    low = _mm512_mask_loadu_ps(low, mask, values.wrapping_offset(low_tap + offset));
                    if let Some(high_tap) = high_tap {
                        high = _mm512_mask_loadu_ps(high, mask, values.wrapping_offset(high_tap + offset));
                    }
                }
            }
            start = end;
            let (panel, lane) = (v / per_panel, v % per_panel * 16);
            let out = &mut packed[(panel * pair_rows + p) * WIDTH + lane..][..16];
            // SAFETY: `out` holds 16 pairs.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), pairs_of_rows(low, high)) };
        }
    }
}

/// [`pack_b_view`] of a view whose columns are contiguous (a transposed
/// row-major matrix): for each 16 columns and 32 rows, each column's 32
/// values rounded to 16 pairs in one vector, and the 16 vectors turned
/// into 16 rows of pairs by [`transpose_16x16`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pack_b_transposed<const WIDTH: usize>(
    b: Matrix<f32>,
    inner: Range<usize>,
    columns: Range<usize>,
    pair_rows: usize,
    packed: &mut Vec<u32>,
) {
    assert_eq!(b.row_stride, 1, "pack_b_transposed reads columns that are contiguous");
    const { assert!(WIDTH.is_multiple_of(16)) };
    let depth = inner.len();
    assert!(
        pair_rows >= depth.div_ceil(2),
        "pack_b: {pair_rows} pair rows cannot hold {depth} rows"
    );
    let panels = columns.len().div_ceil(WIDTH);
    zero_padding::<WIDTH>(packed, panels, pair_rows, depth.div_ceil(2));
    for (panel, first) in columns.clone().step_by(WIDTH).enumerate() {
        let width = WIDTH.min(columns.end - first);
        let out = &mut packed[panel * pair_rows * WIDTH..][..pair_rows * WIDTH];
        for group in (0..width).step_by(16) {
            let count = 16.min(width - group);
            for chunk in (0..depth).step_by(32) {
                let values = 32.min(depth - chunk);
                let mut lanes = [_mm512_setzero_si512(); 16];
                for (c, lane) in lanes[..count].iter_mut().enumerate() {
                    let start = (first + group + c) * b.col_stride + inner.start + chunk;
                    *lane = rounded_pairs(&b.data[start..start + values]);
                }
                for (p, row) in transpose_16x16(lanes)[..values.div_ceil(2)].iter().enumerate() {
                    // SAFETY: the panel's pair row chunk / 2 + p < pair_rows
                    // has WIDTH ≥ group + 16 elements (lanes past `count`
                    // are the zeros of the absent columns).
                    unsafe {
                        _mm512_storeu_si512(out[(chunk / 2 + p) * WIDTH + group..][..16].as_mut_ptr().cast(), *row)
                    };
                }
            }
        }
    }
}

/// Packs `a[rows, inner]` as panels of [`MR`] rows, each `pairs × MR` bf16
/// pairs: element `(p, i)` of a panel holds columns `2p` and `2p + 1` of row
/// `i`, zeros past the last row and column.
/// `packed` holds `rows.len().next_multiple_of(MR) × pairs` zeros.
///
/// Two panels (16 rows) at a time, 32 columns of each row rounded to 16
/// pairs in one vector: [`transpose_16x16`] turns the 16 rows' vectors into
/// one vector per pair, whose low half belongs to the first panel and high
/// half to the second.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pack_a(a: Matrix<f32>, rows: Range<usize>, inner: Range<usize>, packed: &mut [u32]) {
    assert_eq!(a.col_stride, 1, "pack_a reads rows that are contiguous");
    const { assert!(MR == 8) };
    let pairs = inner.len().div_ceil(2);
    let panels = rows.len().div_ceil(MR);
    assert!(packed.len() >= panels * pairs * MR, "pack_a: too small a destination");
    for first in (0..rows.len()).step_by(2 * MR) {
        let count = (2 * MR).min(rows.len() - first);
        let panel = first / MR;
        for chunk in (0..inner.len()).step_by(32) {
            let values = 32.min(inner.len() - chunk);
            let mut lanes = [_mm512_setzero_si512(); 16];
            for (r, lane) in lanes[..count].iter_mut().enumerate() {
                let start = (rows.start + first + r) * a.row_stride + inner.start + chunk;
                *lane = rounded_pairs(&a.data[start..start + values]);
            }
            for (t, by_pair) in transpose_16x16(lanes)[..values.div_ceil(2)].iter().enumerate() {
                let at = (chunk / 2 + t) * MR;
                let low = &mut packed[panel * pairs * MR + at..][..MR];
                // SAFETY: `low` holds MR = 8 pairs, 256 bits.
                unsafe { _mm256_storeu_si256(low.as_mut_ptr().cast(), _mm512_castsi512_si256(*by_pair)) };
                if panel + 1 < panels {
                    let high = &mut packed[(panel + 1) * pairs * MR + at..][..MR];
                    // SAFETY: as above.
                    unsafe { _mm256_storeu_si256(high.as_mut_ptr().cast(), _mm512_extracti64x4_epi64::<1>(*by_pair)) };
                }
            }
        }
    }
}

/// `values` (at most 32) rounded to bf16 as 16 pairs, in order: value `2t`
/// in the low half of lane `t`, `2t + 1` in its high half; zeros past them.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) fn rounded_pairs(values: &[f32]) -> __m512i {
    let count = values.len();
    assert!(count <= 32, "rounded_pairs: {count} values do not fit 16 pairs");
    let (low_mask, high_mask) = (first_lanes(count), first_lanes(count.saturating_sub(16)));
    // SAFETY: the masked loads read the first `count` values only (the
    // second starts past them when there are 16 or fewer, reading none).
    unsafe {
        let low = _mm512_maskz_loadu_ps(low_mask, values.as_ptr());
        let high = _mm512_maskz_loadu_ps(high_mask, values.as_ptr().wrapping_add(16));
        // Lanes 0-15 hold the first 16 values' bf16s, 16-31 the next 16:
        // consecutive bf16s in memory, which is the pairs' layout.
        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low))
    }
}

/// `a` itself when its rows are contiguous, else `a` (checked) copied
/// row-major into `copy`.
pub(super) fn with_contiguous_rows<'a>(a: Matrix<'a, f32>, copy: &'a mut Vec<f32>) -> Matrix<'a, f32> {
    a.check("bf16 matmul lhs");
    if a.col_stride == 1 {
        a
    } else {
        copy_rows(a, 0..a.rows, 0..a.cols, copy);
        Matrix::row_major(copy, a.rows, a.cols)
    }
}

/// `view[rows, columns]` copied row-major into `out`, in square blocks so
/// that a transposed view is read a few cache lines at a time.
fn copy_rows(view: Matrix<f32>, rows: Range<usize>, columns: Range<usize>, out: &mut Vec<f32>) {
    const BLOCK: usize = 32;
    let width = columns.len();
    out.clear();
    out.resize(rows.len() * width, 0.0);
    for first_row in rows.clone().step_by(BLOCK) {
        for first_column in columns.clone().step_by(BLOCK) {
            for row in first_row..(first_row + BLOCK).min(rows.end) {
                let target = &mut out[(row - rows.start) * width..][..width];
                for column in first_column..(first_column + BLOCK).min(columns.end) {
                    target[column - columns.start] = view.data[row * view.row_stride + column * view.col_stride];
                }
            }
        }
    }
}

/// One register block: `c[..rows, ..columns] (+)= A panel · B panel`.
struct Block {
    pairs: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    columns: usize,
    add: bool,
}

impl Block {
    /// Runs the block with `V` vectors of 16 columns (`columns ≤ 16·V`).
    ///
    /// # Safety
    /// AVX-512F and BF16; the panels hold `pairs × MR` and `pairs × NR`
    /// pairs; `c` has `rows` rows of `columns` writable elements, `ldc` apart.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn run<const V: usize>(&self) {
        let mut sums = [[_mm512_setzero_ps(); V]; MR];
        for p in 0..self.pairs {
            // SAFETY (this loop): p < pairs, inside both panels.
            let b_row = unsafe { self.b.add(p * NR) };
            let mut b = [unsafe { std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()) }; V];
            for (v, b) in b.iter_mut().enumerate() {
                *b = unsafe { std::mem::transmute::<__m512, __m512bh>(_mm512_loadu_ps(b_row.add(16 * v).cast())) };
            }
            let a_row = unsafe { self.a.add(p * MR) };
            for (i, sums) in sums.iter_mut().enumerate() {
                let a = unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*a_row.add(i) as i32)) };
                for (sum, &b) in sums.iter_mut().zip(&b) {
                    *sum = _mm512_dpbf16_ps(*sum, a, b);
                }
            }
        }
        // Constant bounds, so the sums stay in registers: rows and columns
        // past the block's are skipped or masked.
        for (i, sums) in sums.iter().enumerate() {
            if i >= self.rows {
                break;
            }
            for (v, &sum) in sums.iter().enumerate() {
                let first = 16 * v;
                if first >= self.columns {
                    break;
                }
                let count = 16.min(self.columns - first);
                let mask = first_lanes(count);
                // SAFETY: row i < rows, columns first..first + count < columns.
                unsafe {
                    let at = self.c.add(i * self.ldc + first);
                    let value = if self.add {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, at), sum)
                    } else {
                        sum
                    };
                    _mm512_mask_storeu_ps(at, mask, value);
                }
            }
        }
    }
}
