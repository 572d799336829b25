//! The bf16 product on AMX tiles: operands packed as bf16 pairs along the
//! inner dimension, a 32 × 32 block of the result held in four 16 × 16
//! tiles of f32 sums and grown by `tdpbf16ps` (each adds a 16 × 32 by
//! 32 × 16 bf16 product), blocked for the caches as a GEMM is (inner
//! dimension by [`KC`], rows by [`MC`], columns by [`NC`]).
//!
//! The tile instructions are written in inline assembly (stable Rust has no
//! AMX intrinsics), one block of assembly per run of row blocks. The tiles
//! are configured once per product or convolution on each thread and
//! released when it ends ([`TileScope`]), so no tile state outlives it.
//! The loops around the assembly, the packing and the write-back are Rust,
//! and the tests run them on this CPU through [`TileKernel::Emulated`],
//! which computes what the assembly computes.

use std::arch::x86_64::*;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ops::Range;

use super::super::split::{columns_first, nothing_to_multiply, Share};
use super::super::x86::first_lanes;
use super::super::{DisjointOutput, Matrix, Threads};
use super::avx512::{pack_b_view, rounded_pairs, with_contiguous_rows};
use crate::huge_pages::HugePageBuffer;

/// Rows of a tile, and bf16 pairs (64 bytes) in a tile row.
const TILE: usize = 16;
/// Rows of the block the tiles hold: two tiles of `a`.
const MR: usize = 2 * TILE;
/// Columns of the block: two tiles of `b`.
const NR: usize = 2 * TILE;
/// Inner-dimension block, a multiple of two tile rows of pairs: a packed
/// panel of `b` (`KC / 2 × NR` pairs, 32 KB) stays in L1.
const KC: usize = 512;
/// Rows of `a` one run of the kernel covers: its sums (`MC × NR` f32, 16 KB)
/// go to a buffer and from there to the result.
const MC: usize = 128;
/// Columns of `b` packed at once (`KC / 2 × NC` pairs, 512 KB, in L2).
const NC: usize = 512;

/// Columns each worker takes at least when a product is split by columns.
const MIN_COLUMNS_PER_WORKER: usize = 2 * NR;
/// Rows each worker takes at least when a product is split by rows.
const MIN_ROWS_PER_WORKER: usize = 2 * MR;

/// Pairs in an inner block of `depth` columns, padded to whole tile rows.
fn pair_rows(depth: usize) -> usize {
    depth.div_ceil(2).next_multiple_of(TILE)
}

/// The left operand of products, rounded and packed whole, in the order the
/// tiles load it: for each block of [`KC`] inner columns (its rows padded
/// with zero rows to a multiple of [`MR`], each [`pair_rows`] bf16 pairs
/// long with zeros past the last column), for each block of [`MR`] rows,
/// for each [`TILE`] pairs, the 16 × 16 pairs of its first 16 rows and then
/// of the next 16, each tile 1 KiB in one piece. A tile row-major in the
/// rows (1 KiB apart at the deepest blocks) made each load touch 16 lines
/// far apart, and the loads of `a` from L2 held the tile products up.
pub(super) struct PackedA {
    rows: usize,
    cols: usize,
    data: HugePageBuffer,
}

impl PackedA {
    /// Packs `a`. The caller has checked the CPU (AVX512-BF16 and AMX).
    pub(super) fn new(a: Matrix<f32>) -> Self {
        let mut copy = Vec::new();
        let a = with_contiguous_rows(a, &mut copy);
        let padded_rows = a.rows.next_multiple_of(MR);
        let full_blocks = a.cols / KC;
        let last_pairs = if a.cols.is_multiple_of(KC) {
            0
        } else {
            pair_rows(a.cols % KC)
        };
        let mut data = HugePageBuffer::zeroed(padded_rows * (full_blocks * KC / 2 + last_pairs));
        for first_inner in (0..a.cols).step_by(KC) {
            let depth = KC.min(a.cols - first_inner);
            let pairs = pair_rows(depth);
            let block = &mut data[first_inner / 2 * padded_rows..][..padded_rows * pairs];
            for row in 0..a.rows {
                let source = &a.data[row * a.row_stride + first_inner..][..depth];
                let row_block = &mut block[row / MR * MR * pairs..][..MR * pairs];
                // Steps past the last column keep their zeros.
                for (step, values) in source.chunks(2 * TILE).enumerate() {
                    // SAFETY: the caller checked the CPU.
                    unsafe { store_tile_row(row_block, step, row % MR, values) };
                }
            }
        }
        Self {
            rows: a.rows,
            cols: a.cols,
            data,
        }
    }

    /// The block of [`MR`] rows from `row` (a multiple of `MR`) in the
    /// inner block that starts at `first_inner` (a multiple of `KC`); the
    /// next row blocks follow it, `MR ×` [`pair_rows`] pairs apart.
    fn row_block(&self, first_inner: usize, row: usize) -> *const u32 {
        debug_assert_eq!(row % MR, 0);
        let padded_rows = self.rows.next_multiple_of(MR);
        let pairs = pair_rows(KC.min(self.cols - first_inner));
        self.data[first_inner / 2 * padded_rows + row * pairs..].as_ptr()
    }
}

/// Where, in a packed block of [`MR`] rows, the [`TILE`] pairs of tile
/// step `step` of row `row` (below `MR`) start: the two tiles of a step
/// one after the other, each row of a tile 16 pairs.
pub(super) fn tile_offset(step: usize, row: usize) -> usize {
    (step * MR + row) * TILE
}

/// `values` (at most 32) rounded to bf16 and stored as row `row` (below
/// [`MR`]) of tile step `step` of a packed block of `MR` rows
/// ([`tile_offset`]): two to a pair, the first in the low half, zeros past
/// the last value.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) fn store_tile_row(block: &mut [u32], step: usize, row: usize, values: &[f32]) {
    let target = &mut block[tile_offset(step, row)..][..TILE];
    // SAFETY: `target` holds TILE = 16 pairs, 512 bits.
    unsafe { _mm512_storeu_si512(target.as_mut_ptr().cast(), rounded_pairs(values)) };
}

/// What multiplies the packed tiles: AMX, or (in tests on CPUs without it)
/// the same arithmetic in Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TileKernel {
    /// `tdpbf16ps` on the CPU's tiles.
    Hardware,
    /// [`Tiles::emulate`]: what the assembly computes, element by element.
    #[cfg(test)]
    Emulated,
}

/// `dst = a · b` (`+=` when `accumulate`); `dst` row-major `a.rows × b.cols`.
/// The caller has checked the views and, for [`TileKernel::Hardware`], the
/// CPU (AVX512-BF16 and AMX, with the tile data granted).
pub(super) fn matmul(
    kernel: TileKernel,
    dst: &mut [f32],
    accumulate: bool,
    a: &PackedA,
    b: Matrix<f32>,
    threads: Threads,
) {
    if nothing_to_multiply(dst, accumulate, (a.rows, a.cols), b, "bf16 tile matmul") {
        return;
    }
    let (m, n) = (a.rows, b.cols);
    let out = DisjointOutput(dst.as_mut_ptr());
    let rows = Share {
        unit: MR,
        at_least: MIN_ROWS_PER_WORKER,
    };
    let columns = Share {
        unit: NR,
        at_least: MIN_COLUMNS_PER_WORKER,
    };
    columns_first(m, n, threads, rows, columns, |rows, columns| {
        // SAFETY: each call writes only its own block of `dst`, which
        // holds m·n elements; the CPU was checked by the caller.
        unsafe { product(kernel, &out, n, accumulate, a, b, rows, columns) }
    });
}

/// A thread's buffers, kept between products.
#[derive(Default)]
struct Buffers {
    /// Packed panels of `b`.
    packed_b: Vec<u32>,
    /// A strided block of `b` copied row-major before packing.
    rows_b: Vec<f32>,
    /// The tiles' sums for one run of row blocks, `MC × NR`.
    sums: Vec<f32>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::default();
}

/// `dst[rows, columns] (+)= a[rows, :] · b[:, columns]`, `dst` row-major
/// with `ldc` columns; `rows.start` a multiple of [`MR`].
///
/// # Safety
/// The CPU has AVX-512F, BW and BF16, and AMX for [`TileKernel::Hardware`];
/// `dst` holds `a.rows × ldc` elements; no other thread writes or reads
/// `dst[rows, columns]` meanwhile.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn product(
    kernel: TileKernel,
    dst: &DisjointOutput,
    ldc: usize,
    accumulate: bool,
    a: &PackedA,
    b: Matrix<f32>,
    rows: Range<usize>,
    columns: Range<usize>,
) {
    debug_assert_eq!(rows.start % MR, 0);
    let k = a.cols;
    let mut buffers = BUFFERS.take();
    buffers.sums.resize(MC * NR, 0.0);
    // SAFETY: the caller checked the CPU for the hardware's tiles.
    let scope = unsafe { TileScope::enter(kernel) };
    for first_column in columns.clone().step_by(NC) {
        let width = NC.min(columns.end - first_column);
        for first_inner in (0..k).step_by(KC) {
            let depth = KC.min(k - first_inner);
            let pairs = pair_rows(depth);
            let (inner, block_columns) = (first_inner..first_inner + depth, first_column..first_column + width);
            pack_b_view::<NR>(
                b,
                inner,
                block_columns,
                pairs,
                &mut buffers.packed_b,
                &mut buffers.rows_b,
            );
            let add = accumulate || first_inner > 0;
            for first_row in rows.clone().step_by(MC) {
                let height = MC.min(rows.end - first_row);
                for (panel, column) in (0..width).step_by(NR).enumerate() {
                    let tiles = Tiles {
                        operands: Operands::PackedLeft,
                        a: a.row_block(first_inner, first_row),
                        row_blocks: height.div_ceil(MR),
                        b: buffers.packed_b[panel * pairs * NR..][..pairs * NR].as_ptr().cast(),
                        b_steps: &PANEL_STEPS[..pairs / TILE],
                        b_ahead: &PANEL_AHEAD[..pairs / TILE],
                        b_stride: NR * 4,
                        sums: buffers.sums.as_mut_ptr(),
                    };
                    // SAFETY: `a` holds rows padded to a multiple of MR and
                    // `pairs` pairs per row in this block; the panel of `b`
                    // holds `pairs` rows of NR; `sums` holds MC × NR; the
                    // caller checked the CPU.
                    unsafe { tiles.run_in(&scope) }
                    // SAFETY: rows first_row.. + height < a.rows and columns
                    // first_column + column.. + NR (at most) < ldc: inside
                    // the caller's part of `dst`.
                    unsafe {
                        write_back(
                            &buffers.sums,
                            dst.0.add(first_row * ldc + first_column + column),
                            ldc,
                            height,
                            NR.min(width - column),
                            add,
                        )
                    };
                }
            }
        }
    }
    BUFFERS.set(buffers);
}

/// `c[..rows, ..columns] (+)= sums[..rows, ..columns]`, `sums` row-major
/// with [`NR`] columns, `c` with `ldc`.
///
/// # Safety
/// AVX-512F; `c` has `rows` rows of `columns ≤ NR` writable elements, `ldc`
/// apart, and `sums` at least `rows × NR` elements.
#[target_feature(enable = "avx512f")]
unsafe fn write_back(sums: &[f32], c: *mut f32, ldc: usize, rows: usize, columns: usize, add: bool) {
    assert!(sums.len() >= rows * NR && columns <= NR);
    for row in 0..rows {
        for first in (0..columns).step_by(16) {
            let mask = first_lanes(columns - first);
            // SAFETY: `sums` holds the row's NR elements; `c`'s row has
            // `columns` writable elements (the caller's promise).
            unsafe {
                let sum = _mm512_loadu_ps(sums[row * NR + first..].as_ptr());
                let at = c.add(row * ldc + first);
                let value = if add {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, at), sum)
                } else {
                    sum
                };
                _mm512_mask_storeu_ps(at, mask, value);
            }
        }
    }
}

/// One run of the kernel: `sums = a · b` for `row_blocks` blocks of [`MR`]
/// rows of `a` and [`NR`] columns of `b`, `sums` row-major with `NR`
/// columns. The inner dimension comes in `b_steps.len()` steps of
/// [`TILE`] pairs: `a`'s row blocks are in tile order ([`PackedA`]: each
/// step two 1 KiB tiles, a block `steps × 2` KiB, the next right after
/// it); step `i` of `b` is the 16 rows from byte `b_steps[i]` of `b`,
/// `b_stride` bytes apart, each 32 pairs (two tiles of 16 side by side).
/// A packed panel's steps follow one another ([`PANEL_STEPS`]); a
/// convolution's point into its input, one step per kernel tap and block
/// of channels. With [`Operands::PackedRight`] the two swap sides (below).
pub(super) struct Tiles<'a> {
    pub(super) operands: Operands,
    pub(super) a: *const u32,
    pub(super) row_blocks: usize,
    pub(super) b: *const u8,
    pub(super) b_steps: &'a [usize],
    /// For each step, where (from `b`, in bytes) 16 rows `b_stride` apart
    /// start whose first 136 bytes the step fetches into L1 for a later
    /// one, or [`NOTHING_AHEAD`].
    pub(super) b_ahead: &'a [usize],
    /// Bytes between the rows of a step of `b` with
    /// [`Operands::PackedLeft`]; with [`Operands::PackedRight`], whose rows
    /// are 64 bytes apart, the stride of the fetches ahead (128: two rows
    /// a fetch of 136 bytes).
    pub(super) b_stride: usize,
    pub(super) sums: *mut f32,
}

/// Which side of the products the packed operand `a` of [`Tiles`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operands {
    /// `a` on the left (rows of the result), `b` on the right: a step of
    /// `b` is 16 rows of pairs, `b_stride` apart, each 32 columns of the
    /// result (two tiles side by side).
    PackedLeft,
    /// `a` on the right, its step's two tiles the result's columns 0-15 and
    /// 16-31, each 16 rows of pairs by 16 columns; `b` on the left: a step
    /// of `b` is 32 rows of 16 pairs (64 bytes) one after the other, the
    /// result's rows (two tiles of 1 KiB, each in one piece). The sums come
    /// out with `b`'s rows as their rows.
    PackedRight,
}

/// The steps of a packed panel of `b` (`NR` pairs a row): 16 rows of 128
/// bytes each, one after the other, for the deepest inner block.
const PANEL_STEPS: [usize; KC / 2 / TILE] = {
    let mut steps = [0; KC / 2 / TILE];
    let mut i = 0;
    while i < steps.len() {
        steps[i] = i * TILE * NR * 4;
        i += 1;
    }
    steps
};

/// A step of [`Tiles::b_ahead`] that fetches nothing.
pub(super) const NOTHING_AHEAD: usize = usize::MAX;

/// [`Tiles::b_ahead`] for runs that fetch nothing ahead, as long as the
/// longest panel.
const PANEL_AHEAD: [usize; KC / 2 / TILE] = [NOTHING_AHEAD; KC / 2 / TILE];

/// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes
/// (tiles 0-3 the sums, 4-5 rows of `a`, 6-7 columns of `b`).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

// The layout `ldtilecfg` reads: 64 bytes, bytes per row from byte 16, rows from byte 48.
const _: () = assert!(
    std::mem::size_of::<TileConfig>() == 64
        && std::mem::offset_of!(TileConfig, bytes_per_row) == 16
        && std::mem::offset_of!(TileConfig, rows) == 48
);

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// The tiles of this thread configured for [`Tiles`] while it lives:
/// `ldtilecfg` when made and `tilerelease` when dropped, once for all the
/// runs of a product or a convolution instead of once per run (a stem's
/// run is 14 steps, a 1×1 convolution's 8). The configuration is the
/// thread's, so a scope is not `Send`; scopes do not nest on a thread
/// (asserted), since an inner one's release would leave the outer one's
/// runs unconfigured. Nothing else in this process configures tiles: Rust
/// emits no AMX instructions of its own, and the kernel keeps a thread's
/// tile state across switches once the tile data is granted.
pub(super) struct TileScope {
    kernel: TileKernel,
    _thread: PhantomData<*const ()>,
}

thread_local! {
    static SCOPE_OPEN: Cell<bool> = const { Cell::new(false) };
}

impl TileScope {
    /// Configures this thread's tiles for `kernel` (nothing to configure
    /// for the emulation).
    ///
    /// # Safety
    /// For [`TileKernel::Hardware`], the CPU has AMX-TILE and this process
    /// the tile data.
    pub(super) unsafe fn enter(kernel: TileKernel) -> Self {
        assert!(!SCOPE_OPEN.replace(true), "tile scopes nested on one thread");
        if kernel == TileKernel::Hardware {
            // SAFETY: the caller's promise; CONFIG is a valid palette-1
            // configuration, read and not written.
            unsafe { std::arch::asm!("ldtilecfg [{config}]", config = in(reg) &CONFIG, options(nostack, readonly)) };
        }
        Self {
            kernel,
            _thread: PhantomData,
        }
    }
}

impl Drop for TileScope {
    fn drop(&mut self) {
        if self.kernel == TileKernel::Hardware {
            // SAFETY: `enter` found AMX on this CPU; releasing touches no memory.
            unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
        }
        SCOPE_OPEN.set(false);
    }
}

/// [`Tiles::run`]'s assembly, the four tile loads of a step given: tiles 4
/// and 5 the left operand's rows 0-15 and 16-31, tiles 6 and 7 the right
/// operand's columns 0-15 and 16-31.
macro_rules! tile_run {
    ($tiles:expr, $load_left_0:literal, $load_left_1:literal, $load_right_0:literal, $load_right_1:literal) => {
        std::arch::asm!(
            "2:",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "mov {step}, {steps}",
            "mov {steps_left}, {step_count}",
            "3:",
            "mov {b_at}, [{step}]",
            "add {b_at}, {b}",
            // The lines of `b` this step fetches ahead, if any.
            "mov {ahead}, [{step} + {ahead_delta}]",
            "cmp {ahead}, -1",
            "je 4f",
            "add {ahead}, {b}",
            ".rept 16",
            "prefetcht0 [{ahead}]",
            "prefetcht0 [{ahead} + 64]",
            "prefetcht0 [{ahead} + 128]",
            "prefetcht0 [{ahead} + 135]",
            "add {ahead}, {b_stride}",
            ".endr",
            "4:",
            $load_left_0,
            $load_left_1,
            $load_right_0,
            $load_right_1,
            // The step after next's 2 KiB of `a` (the next block's
            // first steps at the end of this one) into L1, a line at a time.
            ".set caf_a_ahead, 4096",
            ".rept 32",
            "prefetcht0 [{a_at} + caf_a_ahead]",
            ".set caf_a_ahead, caf_a_ahead + 64",
            ".endr",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a_at}, 2048",
            "add {step}, 8",
            "dec {steps_left}",
            "jnz 3b",
            "tilestored [{sums} + {tile_row} * 2], tmm0",
            "tilestored [{sums} + {tile_row} * 2 + 64], tmm1",
            "tilestored [{sums} + {tile_row} * 2 + 2048], tmm2",
            "tilestored [{sums} + {tile_row} * 2 + 2112], tmm3",
            "add {sums}, 4096",
            "dec {blocks}",
            "jnz 2b",
            ahead_delta = in(reg) ($tiles.b_ahead.as_ptr() as isize).wrapping_sub($tiles.b_steps.as_ptr() as isize),
            a_at = inout(reg) $tiles.a => _,
            sums = inout(reg) $tiles.sums => _,
            blocks = inout(reg) $tiles.row_blocks => _,
            b = in(reg) $tiles.b,
            steps = in(reg) $tiles.b_steps.as_ptr(),
            step_count = in(reg) $tiles.b_steps.len(),
            b_stride = in(reg) $tiles.b_stride,
            tile_row = in(reg) 64usize,
            step = out(reg) _,
            steps_left = out(reg) _,
            b_at = out(reg) _,
            ahead = out(reg) _,
            options(nostack),
        )
    };
}

impl Tiles<'_> {
    /// The run on AMX. For each block of 32 rows: tiles 0-3 zeroed; for each
    /// step of 16 pairs of the inner dimension, rows 0-15 and 16-31 of the
    /// block (two 1 KiB pieces, one after the other) loaded into tiles 4
    /// and 5, columns 0-15 and 16-31 of the step of `b` into tiles 6 and 7,
    /// and the four products added; the four tiles stored. `a` streams from
    /// L2 (a block's steps outgrow L1), and a tile load waits for its lines:
    /// each step prefetches the 2 KiB of `a` two steps on into L1, and the
    /// lines of `b` that [`Self::b_ahead`] names for it. The tiles'
    /// configuration is the caller's [`TileScope`]'s. With
    /// [`Operands::PackedRight`], a step's 2 KiB of `b` (32 rows of 64
    /// bytes from `b_steps[i]`) go to tiles 4 and 5 and `a`'s two tiles to
    /// 6 and 7, so that each block of `a` gives 32 rows of `b` by 32
    /// columns of `a`.
    ///
    /// # Safety
    /// The CPU has AMX-TILE and AMX-BF16 and this process the tile data,
    /// and a [`TileScope`] of this thread has configured the tiles; `a`
    /// holds `row_blocks` blocks of `32 × 16 × b_steps.len()` pairs in
    /// tile order; from each `b + b_steps[i]`, 16 rows of 32 pairs lie
    /// `b_stride` bytes apart ([`Operands::PackedLeft`]) or 32 rows of 16
    /// pairs one after the other ([`Operands::PackedRight`]); `sums` holds
    /// `32 × row_blocks × NR` elements; `b_steps` and `row_blocks` are not
    /// empty.
    unsafe fn run(&self) {
        debug_assert!(!self.b_steps.is_empty() && self.row_blocks >= 1);
        assert_eq!(
            self.b_ahead.len(),
            self.b_steps.len(),
            "tile run: a step fetched ahead per step"
        );
        // The byte stride between rows of `sums`, NR × 4, is `tile_row` × 2.
        const { assert!(NR * 4 == 2 * 64) };
        // SAFETY: the caller's promises (the tiles configured as
        // [`CONFIG`]); every load and store lies inside the operands
        // described there. 64 = 16 pairs or 16 f32 (a tile row, and the
        // row stride of `a`'s tiles); 1024 = a tile of `a`; 2048 = two;
        // 4096 = 32 rows of `sums`. A block of `a` ends where the next
        // begins. `b_ahead` is as long as `b_steps` (asserted), read at the
        // same index. The prefetches past the last block, and those of
        // `b_ahead` wherever they point, touch no memory they may not: a
        // prefetch never faults.
        unsafe {
            match self.operands {
                Operands::PackedLeft => tile_run!(
                    self,
                    "tileloadd tmm4, [{a_at} + {tile_row} * 1]",
                    "tileloadd tmm5, [{a_at} + {tile_row} * 1 + 1024]",
                    "tileloadd tmm6, [{b_at} + {b_stride} * 1]",
                    "tileloadd tmm7, [{b_at} + {b_stride} * 1 + 64]"
                ),
                Operands::PackedRight => tile_run!(
                    self,
                    "tileloadd tmm4, [{b_at} + {tile_row} * 1]",
                    "tileloadd tmm5, [{b_at} + {tile_row} * 1 + 1024]",
                    "tileloadd tmm6, [{a_at} + {tile_row} * 1]",
                    "tileloadd tmm7, [{a_at} + {tile_row} * 1 + 1024]"
                ),
            }
        }
    }

    /// [`Self::run`] in `scope`: on the tiles it configured, or their
    /// emulation in tests.
    ///
    /// # Safety
    /// As [`Self::run`], less the CPU and the tile configuration, which
    /// `scope` vouches for.
    pub(super) unsafe fn run_in(&self, scope: &TileScope) {
        // SAFETY: the caller's promises; `scope` configured the tiles of
        // this thread for the hardware.
        unsafe {
            match scope.kernel {
                TileKernel::Hardware => self.run(),
                #[cfg(test)]
                TileKernel::Emulated => self.emulate(),
            }
        }
    }

    /// [`Self::run`] in Rust: the same operands, the same sums up to their
    /// order (`tdpbf16ps` adds each pair's two products to the sum).
    ///
    /// # Safety
    /// As [`Self::run`], less the CPU.
    #[cfg(test)]
    unsafe fn emulate(&self) {
        let low = |pair: u32| f32::from_bits(pair << 16);
        let high = |pair: u32| f32::from_bits(pair & 0xFFFF_0000);
        let pairs = TILE * self.b_steps.len();
        for row in 0..MR * self.row_blocks {
            for column in 0..NR {
                let mut sum = 0.0f32;
                for p in 0..pairs {
                    let (step, pair) = (p / TILE, p % TILE);
                    // Where the pair of `a` and the pair of `b` of this
                    // row, column and inner pair lie: with `a` on the
                    // right, `row` is a row of `b` and `column` a column of
                    // `a`'s step (in its tile, pair `pair` is row `pair`).
                    let (at, b_at) = match self.operands {
                        Operands::PackedLeft => (
                            row / MR * MR * pairs + tile_offset(step, row % MR) + pair,
                            self.b_steps[step] + pair * self.b_stride + column * 4,
                        ),
                        Operands::PackedRight => (
                            row / MR * MR * pairs + tile_offset(step, column / TILE * TILE + pair) + column % TILE,
                            self.b_steps[step] + (row % MR) * 64 + pair * 4,
                        ),
                    };
                    // SAFETY: row < 32 × row_blocks, p < the pairs of a row
                    // block, and step p / 16 of `b` holds its 16 rows of NR
                    // pairs or 32 rows of 16 (the caller's promises).
                    let (x, y) = unsafe { (*self.a.add(at), self.b.add(b_at).cast::<u32>().read_unaligned()) };
                    sum += low(x) * low(y) + high(x) * high(y);
                }
                // SAFETY: `sums` holds 32 × row_blocks rows of NR.
                unsafe { *self.sums.add(row * NR + column) = sum };
            }
        }
    }
}

pub(super) mod conv;
