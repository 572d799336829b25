//! The CPU kernels of [`super::max_pool2d`].
//!
//! Each plane is pooled in two passes: along each input row (for every
//! output column, the first maximum of its window's columns), then down the
//! columns (for every output, the first row whose row maximum beats the rows
//! above it). Row-major order is rows first, so this finds PyTorch's first
//! maximum of the window. Both passes merge one candidate per window across
//! a whole row of windows at once, without branches (the row first split by
//! stride phase, so each candidate run is contiguous), and vectorise.
//! During training the forward pass keeps where each maximum came from, and
//! the gradient is scattered there. The candle operation that runs these
//! kernels is in `op.rs`.

use crate::phases::split_by_phase;
use std::ops::Range;

use rayon::prelude::*;

use super::{MaxPool2dConfig, PoolGeometry};

/// Scalar types the CPU kernels run on.
pub(super) trait PoolElem: Copy + PartialOrd + Default + std::ops::AddAssign + Send + Sync {}
impl PoolElem for f32 {}
impl PoolElem for f64 {}

/// Whether `value` replaces `best` as a window's first maximum: when larger,
/// or when it is the window's first NaN (a NaN wins, as in PyTorch).
#[inline(always)]
#[allow(clippy::eq_op)] // `x != x` is the NaN test for any float type
fn replaces<T: PoolElem>(value: T, best: T) -> bool {
    (value > best) | ((value != value) & (best == best))
}

/// Where a run of candidates lies in the plane.
#[derive(Clone, Copy)]
enum CandidatePlaces<'a> {
    /// Candidate `j` at `start + j·step` (one tap of a row of windows).
    Spaced { start: u32, step: u32 },
    /// Candidate `j` at `list[j]` (row maxima found earlier).
    Listed(&'a [u32]),
}

/// Merges one candidate per window into the windows' maxima so far (and,
/// when `PLACES`, their places); the `first` candidates start the maxima.
/// Plain loops over slices without branches, so they vectorise.
#[inline(always)]
fn merge<T: PoolElem, const PLACES: bool>(
    best: &mut [T],
    places: &mut [u32],
    candidates: &[T],
    candidate_places: CandidatePlaces,
    first: bool,
) {
    let take = |value: T, best: T| first || replaces(value, best);
    if !PLACES {
        for (best, &value) in best.iter_mut().zip(candidates) {
            *best = if take(value, *best) { value } else { *best };
        }
        return;
    }
    let pairs = best.iter_mut().zip(places.iter_mut());
    match candidate_places {
        CandidatePlaces::Spaced { start, step } => {
            for (j, ((best, place), &value)) in pairs.zip(candidates).enumerate() {
                let taken = take(value, *best);
                *best = if taken { value } else { *best };
                *place = if taken { start + j as u32 * step } else { *place };
            }
        }
        CandidatePlaces::Listed(list) => {
            for ((best, place), (&value, &at)) in pairs.zip(candidates.iter().zip(list)) {
                let taken = take(value, *best);
                *best = if taken { value } else { *best };
                *place = if taken { at } else { *place };
            }
        }
    }
}

impl PoolGeometry {
    /// The input positions `start..end` of window `i` along a side of `len`
    /// (clipped to the input: padding never wins).
    fn window(&self, i: usize, len: usize) -> (usize, usize) {
        let MaxPool2dConfig {
            kernel,
            stride,
            padding,
            ..
        } = self.config;
        (
            (i * stride).saturating_sub(padding),
            (i * stride + kernel - padding).min(len),
        )
    }

    /// The output columns whose windows lie wholly inside a row, and the
    /// input column where the first of them starts.
    fn inner_windows(&self) -> (Range<usize>, usize) {
        let MaxPool2dConfig {
            kernel,
            stride,
            padding,
            ..
        } = self.config;
        let inner =
            (padding.div_ceil(stride)..self.out_w).take_while(|&ox| ox * stride + kernel <= self.in_w + padding);
        let inner = inner.clone().next().map_or(0..0, |first| first..first + inner.count());
        let first = (inner.start * stride).saturating_sub(padding);
        (inner, first)
    }

    /// The first maximum of every output column's window along `row` (a
    /// row of the plane from element `row_start`) into `maxima` and, when
    /// `PLACES`, its index in the plane into `places`. `(inner, first)` is
    /// [`Self::inner_windows`]; `phases` is scratch of `in_w` rounded up to
    /// the stride.
    #[inline(always)]
    fn pool_row<T: PoolElem, const PLACES: bool>(
        &self,
        (row, row_start): (&[T], usize),
        (inner, first): (Range<usize>, usize),
        maxima: &mut [T],
        places: &mut [u32],
        phases: &mut [T],
    ) {
        let in_w = self.in_w;
        let MaxPool2dConfig { kernel, stride, .. } = self.config;
        // Windows wholly inside the row: `inner`, searched tap by tap across
        // all of them at once; the few clipped by the padding: one by one.
        for ox in (0..self.out_w).filter(|ox| !inner.contains(ox)) {
            let (x0, x1) = self.window(ox, in_w);
            let (mut best, mut best_x) = (row[x0], x0);
            for (x, &value) in row.iter().enumerate().take(x1).skip(x0 + 1) {
                if replaces(value, best) {
                    (best, best_x) = (value, x);
                }
            }
            maxima[ox] = best;
            if PLACES {
                places[ox] = (row_start + best_x) as u32;
            }
        }
        if inner.is_empty() {
            return;
        }
        // The row split by stride phase, so that each tap of the inner
        // windows is a contiguous run: tap `t` of window `ox` is element
        // `(first + t) / stride + ox` of phase `(first + t) % stride`.
        let phase_len = in_w.div_ceil(stride);
        split_by_phase(row, stride, phases, phase_len);
        let inner_places = if PLACES { &mut places[inner.clone()] } else { places };
        for tap in 0..kernel {
            let (phase, start) = ((first + tap) % stride, (first + tap) / stride);
            let taps = &phases[phase * phase_len + start..][..inner.len()];
            let at = CandidatePlaces::Spaced {
                start: (row_start + first + tap) as u32,
                step: stride as u32,
            };
            merge::<T, PLACES>(&mut maxima[inner.clone()], inner_places, taps, at, tap == 0);
        }
    }

    /// Pools one plane into `out` and, when `PLACES`, each maximum's index
    /// in the plane into `at`. `row_max` (and `row_at` when `PLACES`: the
    /// row maxima's places in the plane) are scratch of `in_h · out_w`,
    /// `phases` of `in_w` rounded up to the stride.
    #[inline(always)]
    fn pool_plane<T: PoolElem, const PLACES: bool>(
        &self,
        plane: &[T],
        out: &mut [T],
        at: &mut [u32],
        (row_max, row_at, phases): &mut (Vec<T>, Vec<u32>, Vec<T>),
    ) {
        let (in_w, out_w, inner) = (self.in_w, self.out_w, self.inner_windows());
        for (y, row) in plane.chunks_exact(in_w).enumerate() {
            let maxima = &mut row_max[y * out_w..][..out_w];
            let places = if PLACES {
                &mut row_at[y * out_w..][..out_w]
            } else {
                &mut [][..]
            };
            self.pool_row::<T, PLACES>((row, y * in_w), inner.clone(), maxima, places, phases);
        }
        for (oy, out_row) in out.chunks_exact_mut(out_w).enumerate() {
            let at_row = if PLACES {
                &mut at[oy * out_w..][..out_w]
            } else {
                &mut [][..]
            };
            let (y0, y1) = self.window(oy, self.in_h);
            for y in y0..y1 {
                let maxima = &row_max[y * out_w..][..out_w];
                // Without places `row_at` is empty, and so is the list.
                let at = CandidatePlaces::Listed(row_at.get(y * out_w..).unwrap_or_default());
                merge::<T, PLACES>(out_row, at_row, maxima, at, y == y0);
            }
        }
    }

    /// Pools one plane's values alone (inference): for each output row, the
    /// maximum of its window's rows column by column (`column_max`, scratch
    /// of `in_w`), then of each window along that row. The values are
    /// order-free (the maximum, or NaN if the window holds one), so the rows
    /// can go first: one row pass per output row instead of one per input
    /// row. It stays on the baseline x86-64 target: compiled for AVX-512 the
    /// merges' short rows end in long scalar tails of mask-register
    /// compares, twice as slow (docs/performance.md).
    #[inline(always)]
    fn pool_plane_values<T: PoolElem>(&self, plane: &[T], out: &mut [T], (column_max, phases): &mut (Vec<T>, Vec<T>)) {
        let (in_w, inner) = (self.in_w, self.inner_windows());
        for (oy, out_row) in out.chunks_exact_mut(self.out_w).enumerate() {
            let (y0, y1) = self.window(oy, self.in_h);
            column_max.copy_from_slice(&plane[y0 * in_w..][..in_w]);
            for y in y0 + 1..y1 {
                let row = &plane[y * in_w..][..in_w];
                merge::<T, false>(column_max, &mut [], row, CandidatePlaces::Listed(&[]), false);
            }
            self.pool_row::<T, false>((column_max, 0), inner.clone(), out_row, &mut [], phases);
        }
    }

    /// [`Self::pool_plane`] keeping places, compiled for AVX-512 when the CPU
    /// has it: the baseline x86-64 target has no masked stores, and the
    /// merges' place updates became per-lane branches that random data
    /// mispredicts.
    fn pool_plane_with_places<T: PoolElem>(
        &self,
        plane: &[T],
        out: &mut [T],
        at: &mut [u32],
        scratch: &mut (Vec<T>, Vec<u32>, Vec<T>),
    ) {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::instruction_set() >= crate::cpu::InstructionSet::Avx512 {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512<T: PoolElem>(
                g: &PoolGeometry,
                plane: &[T],
                out: &mut [T],
                at: &mut [u32],
                scratch: &mut (Vec<T>, Vec<u32>, Vec<T>),
            ) {
                g.pool_plane::<T, true>(plane, out, at, scratch)
            }
            // SAFETY: the CPU has AVX-512F: the instruction set in use (checked
            // just above) is never above the detected one.
            return unsafe { avx512::<T>(self, plane, out, at, scratch) };
        }
        self.pool_plane::<T, true>(plane, out, at, scratch)
    }

    /// The pooled planes and, when `places`, for every output the index in
    /// its plane of the maximum it took (else an empty vector).
    pub(super) fn forward_keeping<T: PoolElem>(&self, places: bool, planes: usize, input: &[T]) -> (Vec<T>, Vec<u32>) {
        let (in_len, out_len, row_max_len) = (self.in_h * self.in_w, self.out_h * self.out_w, self.in_h * self.out_w);
        let phases_len = self.in_w.next_multiple_of(self.config.stride);
        let mut output = vec![T::default(); planes * out_len];
        let pairs = output.par_chunks_mut(out_len).zip(input.par_chunks(in_len));
        if !places {
            let scratch = || (vec![T::default(); self.in_w], vec![T::default(); phases_len]);
            pairs.for_each_init(scratch, |s, (out, plane)| self.pool_plane_values(plane, out, s));
            return (output, Vec::new());
        }
        let mut at = vec![0u32; planes * out_len];
        let scratch = || {
            (
                vec![T::default(); row_max_len],
                vec![0u32; row_max_len],
                vec![T::default(); phases_len],
            )
        };
        pairs
            .zip(at.par_chunks_mut(out_len))
            .for_each_init(scratch, |s, ((out, plane), at)| {
                self.pool_plane_with_places(plane, out, at, s)
            });
        (output, at)
    }

    /// The input gradient: each output's gradient added at its maximum.
    pub(super) fn backward<T: PoolElem>(&self, planes: usize, at: &[u32], grad_output: &[T]) -> Vec<T> {
        let (in_len, out_len) = (self.in_h * self.in_w, self.out_h * self.out_w);
        let mut grad_input = vec![T::default(); planes * in_len];
        grad_input
            .par_chunks_mut(in_len)
            .zip(at.par_chunks(out_len).zip(grad_output.par_chunks(out_len)))
            .for_each(|(grad_plane, (at, grad_out))| {
                for (&i, &g) in at.iter().zip(grad_out) {
                    grad_plane[i as usize] += g;
                }
            });
        grad_input
    }
}
