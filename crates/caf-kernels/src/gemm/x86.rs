//! AVX-512 pieces our product kernels share: the 16 × 16 transposition of
//! 32-bit lanes (the bf16 packers turn rows of pairs into columns with it)
//! and the write-back of a block of sums that run down the rows (the f32
//! and bf16 row panels), parked between inner blocks ([`Parking`]).

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

/// A mask of the first `count` of 16 lanes (all of them from 16 on).
pub(crate) fn first_lanes(count: usize) -> __mmask16 {
    if count >= 16 {
        !0
    } else {
        ((1u32 << count) - 1) as __mmask16
    }
}

/// The 16 × 16 matrix of 32-bit lanes `rows` transposed: lane `j` of
/// vector `i` becomes lane `i` of vector `j`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn transpose_16x16(rows: [__m512i; 16]) -> [__m512i; 16] {
    // Lanes interleaved within each 128-bit quarter: by 32 bits, then 64,
    // leaving quad[4g + c] with rows 4g..4g + 4 of columns c, c + 4, c + 8
    // and c + 12 in its quarters.
    let mut twos = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        twos[2 * i] = _mm512_unpacklo_epi32(rows[2 * i], rows[2 * i + 1]);
        twos[2 * i + 1] = _mm512_unpackhi_epi32(rows[2 * i], rows[2 * i + 1]);
    }
    let mut quads = [_mm512_setzero_si512(); 16];
    for g in 0..4 {
        let (low, high) = (twos[4 * g], twos[4 * g + 1]);
        let (low2, high2) = (twos[4 * g + 2], twos[4 * g + 3]);
        quads[4 * g] = _mm512_unpacklo_epi64(low, low2);
        quads[4 * g + 1] = _mm512_unpackhi_epi64(low, low2);
        quads[4 * g + 2] = _mm512_unpacklo_epi64(high, high2);
        quads[4 * g + 3] = _mm512_unpackhi_epi64(high, high2);
    }
    // Then whole quarters: even and odd quarters of rows 0-7 and of rows
    // 8-15 (0x88 takes quarters 0 and 2 of each operand, 0xDD 1 and 3).
    let mut columns = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        let top_even = _mm512_shuffle_i32x4::<0x88>(quads[c], quads[4 + c]);
        let top_odd = _mm512_shuffle_i32x4::<0xDD>(quads[c], quads[4 + c]);
        let bottom_even = _mm512_shuffle_i32x4::<0x88>(quads[8 + c], quads[12 + c]);
        let bottom_odd = _mm512_shuffle_i32x4::<0xDD>(quads[8 + c], quads[12 + c]);
        columns[c] = _mm512_shuffle_i32x4::<0x88>(top_even, bottom_even);
        columns[c + 8] = _mm512_shuffle_i32x4::<0xDD>(top_even, bottom_even);
        columns[c + 4] = _mm512_shuffle_i32x4::<0x88>(top_odd, bottom_odd);
        columns[c + 12] = _mm512_shuffle_i32x4::<0xDD>(top_odd, bottom_odd);
    }
    columns
}

/// `c[..rows, ..C] (+)= block`, where `sums[j][v]` holds rows `16v` to
/// `16v + 15` of the block's column `j`: each 16 rows turned round as
/// eight columns (24 shuffles, where a 16 × 16 transposition takes 64),
/// two rows to a vector, the second row's columns in its upper half,
/// written through a store shifted back by 8 lanes whose mask takes the
/// upper half alone; `C` lanes of each row.
///
/// # Safety
/// AVX-512F; `c` has `rows ≤ 64` rows of `C ≤ 8` writable elements, `ldc`
/// apart.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store_row_panel_block<const C: usize>(
    sums: [[__m512; 4]; C],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    add: bool,
) {
    const { assert!(C <= 8) };
    let low_mask = ((1u32 << C) - 1) as __mmask16;
    // Quarters 0 and 1 (then 2 and 3) of the columns 0-3 and of 4-7.
    let top = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    let bottom = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    let interleave = |low: __m512, high: __m512, by_pairs: bool| -> (__m512, __m512) {
        if by_pairs {
            let (low, high) = (_mm512_castps_pd(low), _mm512_castps_pd(high));
            (
                _mm512_castpd_ps(_mm512_unpacklo_pd(low, high)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(low, high)),
            )
        } else {
            (_mm512_unpacklo_ps(low, high), _mm512_unpackhi_ps(low, high))
        }
    };
    for (v, first) in (0..rows).step_by(16).enumerate() {
        let mut columns = [_mm512_setzero_ps(); 8];
        for (lane, column) in columns.iter_mut().zip(&sums) {
            *lane = column[v];
        }
        // Within each 128-bit quarter k: by 32 bits, then by 64, leaving
        // `quads[q]` with row 4k + q of columns 0-3 and `quads[4 + q]` of
        // columns 4-7.
        let mut quads = [_mm512_setzero_ps(); 8];
        for half in 0..2 {
            let [w, x, y, z] = [0, 1, 2, 3].map(|i| columns[4 * half + i]);
            let (wx_low, wx_high) = interleave(w, x, false);
            let (yz_low, yz_high) = interleave(y, z, false);
            let (q0, q1) = interleave(wx_low, yz_low, true);
            let (q2, q3) = interleave(wx_high, yz_high, true);
            quads[4 * half..4 * half + 4].copy_from_slice(&[q0, q1, q2, q3]);
        }
        for q in 0..4 {
            // Rows q and 4 + q, then 8 + q and 12 + q: a row's eight
            // columns in each half.
            for (index, row) in [(top, q), (bottom, 8 + q)] {
                let both = _mm512_permutex2var_ps(quads[q], index, quads[4 + q]);
                for (row, shift, mask) in [(row, 0, low_mask), (row + 4, 8, low_mask << 8)] {
                    if first + row >= rows {
                        continue;
                    }
                    // SAFETY: the lanes in `mask` are those of row
                    // first + row's first C elements (the caller's
                    // promise); the masked load and store touch no others.
                    unsafe {
                        let at = c.add((first + row) * ldc).wrapping_sub(shift);
                        let value = if add {
                            _mm512_add_ps(_mm512_maskz_loadu_ps(mask, at), both)
                        } else {
                            both
                        };
                        _mm512_mask_storeu_ps(at, mask, value);
                    }
                }
            }
        }
    }
}

/// Where a row-panel register block reads its columns of the right
/// operand, row by row (for bf16, a row of pairs).
pub(super) trait RightRows<T>: Copy {
    /// Where row `t` starts.
    ///
    /// # Safety
    /// `t` is below the block's depth.
    unsafe fn row(self, t: usize) -> *const T;

    /// Column `j` of the row that starts at `row`.
    ///
    /// # Safety
    /// `row` is one of [`Self::row`]'s and `j` below the block's columns
    /// (for [`Tapped`], the offsets it points to).
    unsafe fn column(self, row: *const T, j: usize) -> *const T;
}

/// Rows at a convolution's taps ([`super::Patches`] read in place), each
/// of the block's columns at its own offset from them.
pub(super) struct Tapped<T> {
    pub(super) values: *const T,
    /// The block's rows' taps.
    pub(super) taps: *const usize,
    /// The block's columns' offsets.
    pub(super) offsets: *const usize,
}

// Copies of pointers, whatever `T` (a derive would ask `T: Copy`).
impl<T> Clone for Tapped<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Tapped<T> {}

impl<T> RightRows<T> for Tapped<T> {
    #[inline(always)]
    unsafe fn row(self, t: usize) -> *const T {
        // SAFETY: the block's taps hold `depth` offsets inside the laid-out
        // values (the caller's promise).
        unsafe { self.values.add(*self.taps.add(t)) }
    }

    #[inline(always)]
    unsafe fn column(self, row: *const T, j: usize) -> *const T {
        // SAFETY: every tap plus every column's offset lies inside the
        // laid-out values (the caller's promise).
        unsafe { row.add(*self.offsets.add(j)) }
    }
}

/// A row-panel register block, run with its column count as a constant.
pub(super) trait ColumnBlock {
    /// Runs the block with `C` columns.
    ///
    /// # Safety
    /// The implementation's own conditions for `C` columns.
    unsafe fn run<const C: usize>(&self);
}

/// Runs `block` with `columns` columns (1 to 6, the row panels' widest).
///
/// # Safety
/// The block's conditions for `columns` columns.
pub(super) unsafe fn run_columns(block: &impl ColumnBlock, columns: usize) {
    // SAFETY: the caller's promise, for the count matched.
    unsafe {
        match columns {
            6 => block.run::<6>(),
            5 => block.run::<5>(),
            4 => block.run::<4>(),
            3 => block.run::<3>(),
            2 => block.run::<2>(),
            _ => block.run::<1>(),
        }
    }
}

/// Rows of a row-panel register block: four vectors of 16.
const PANEL_ROWS: usize = 64;
/// Columns of a row-panel register block at most.
const MAX_PANEL_COLUMNS: usize = 8;

thread_local! {
    /// This thread's row-panel blocks' sums between the inner blocks of a
    /// product ([`Parking`]), kept between products.
    static PARKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Where the sums of one row-panel register block (64 rows, `C` columns)
/// start and end, over one inner block of a product whose inner dimension
/// may take several. Between inner blocks the sums are parked as the
/// registers hold them, and turned round into `dst`'s rows
/// ([`store_row_panel_block`]) once, after the last: a deep product (a
/// 3×3 convolution of 512 channels has 4608 inner rows) used to add every
/// inner block's sums to `dst` by rows, each time through four 16 × 16
/// transpositions.
pub(super) struct Parking {
    /// This block's floats in the thread's parked sums; `None` when the
    /// inner dimension is one block.
    slot: Option<*mut f32>,
    /// Start from the parked sums (an inner block after the first).
    resume: bool,
    /// The last inner block: write the sums to `dst`, else park them.
    last: bool,
}

/// Runs `product` with this thread's parked sums sized for the register
/// blocks of `rows` (whole [`PANEL_ROWS`]-row panels) and `columns`
/// columns at a time (blocks of `block_columns`), when the inner
/// dimension `k` takes more than one block of `kc`.
pub(super) fn with_parked_sums<R>(
    rows: usize,
    columns: usize,
    block_columns: usize,
    (k, kc): (usize, usize),
    product: impl FnOnce(&mut ParkedSums) -> R,
) -> R {
    assert!(block_columns <= MAX_PANEL_COLUMNS);
    let mut data = PARKED.take();
    let blocks_per_panel = columns.div_ceil(block_columns);
    if k > kc {
        data.resize(
            rows.div_ceil(PANEL_ROWS) * blocks_per_panel * PANEL_ROWS * block_columns,
            0.0,
        );
    }
    let mut parked = ParkedSums {
        data,
        blocks_per_panel,
        block_len: PANEL_ROWS * block_columns,
        k,
        kc,
    };
    let result = product(&mut parked);
    PARKED.set(parked.data);
    result
}

/// A thread's parked sums for one product ([`with_parked_sums`]).
pub(super) struct ParkedSums {
    data: Vec<f32>,
    blocks_per_panel: usize,
    block_len: usize,
    k: usize,
    kc: usize,
}

impl ParkedSums {
    /// The parking of the register block whose first row is `row` and
    /// first column `column` (both counted from the worker's first, and
    /// `column` within one pass over the columns), over the inner block
    /// `inner`.
    pub(super) fn block(&mut self, row: usize, column: usize, inner: Range<usize>) -> Parking {
        let block_columns = self.block_len / PANEL_ROWS;
        let index = row / PANEL_ROWS * self.blocks_per_panel + column / block_columns;
        let many = self.k > self.kc;
        Parking {
            slot: many.then(|| self.data[index * self.block_len..][..self.block_len].as_mut_ptr()),
            resume: inner.start > 0,
            last: inner.end >= self.k,
        }
    }
}

impl Parking {
    /// The block's sums to start from: zeros, or those parked.
    ///
    /// # Safety
    /// AVX-512F; no other block's parking shares this one's slot.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn start<const C: usize>(&self) -> [[__m512; 4]; C] {
        let mut sums = [[_mm512_setzero_ps(); 4]; C];
        if self.resume {
            let slot = self.slot.expect("an inner block after the first has parked sums");
            for (j, column) in sums.iter_mut().enumerate() {
                for (v, sum) in column.iter_mut().enumerate() {
                    // SAFETY: (4j + v + 1) · 16 ≤ 64 · C, inside the slot.
                    *sum = unsafe { _mm512_loadu_ps(slot.add((4 * j + v) * 16)) };
                }
            }
        }
        sums
    }

    /// Parks the sums, or after the last inner block writes them:
    /// `c[..rows, ..C] (+)= sums` ([`store_row_panel_block`]).
    ///
    /// # Safety
    /// AVX-512F; as [`Self::start`]; `c` has `rows ≤ 64` rows of `C ≤ 8`
    /// writable elements, `ldc` apart.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn finish<const C: usize>(
        &self,
        sums: [[__m512; 4]; C],
        c: *mut f32,
        ldc: usize,
        rows: usize,
        add: bool,
    ) {
        if self.last {
            // SAFETY: the caller's promise.
            return unsafe { store_row_panel_block(sums, c, ldc, rows, add) };
        }
        let slot = self.slot.expect("an inner block before the last parks its sums");
        for (j, column) in sums.iter().enumerate() {
            for (v, &sum) in column.iter().enumerate() {
                // SAFETY: (4j + v + 1) · 16 ≤ 64 · C, inside the slot.
                unsafe { _mm512_storeu_ps(slot.add((4 * j + v) * 16), sum) };
            }
        }
    }
}
