//! The CPU kernels of [`super::max_pool2d`].
//!
//! Each output row is pooled in two passes: down the columns of its
//! window's rows (for every input column, the first maximum of those rows),
//! then along that row of column maxima (for every output column, the
//! maximum of its window's columns). Both passes merge one candidate per
//! window across a whole row of windows at once, without branches (the row
//! first split by stride phase, so each candidate run is contiguous), and
//! vectorise. During training the forward pass keeps where each maximum
//! came from, and the gradient is scattered there: PyTorch's first maximum
//! in row-major order, which is the maximum with the smallest place in its
//! plane (row-major order is place order), so ties are broken by place and
//! the passes may go in either order. The candle operation that runs these
//! kernels is in `op.rs`.

use crate::phases::split_by_phase;
use std::ops::Range;

use rayon::prelude::*;

use super::{MaxPool2dConfig, PoolGeometry};

/// Scalar types the CPU kernels run on.
pub(crate) trait PoolElem: Copy + PartialOrd + Default + std::ops::AddAssign + Send + Sync {}
impl<T: crate::gemm::Element> PoolElem for T {}

/// Whether `value` replaces `best` as a window's maximum: when larger, or
/// when it is the window's first NaN (a NaN wins, as in PyTorch).
#[inline(always)]
#[allow(clippy::eq_op)] // `x != x` is the NaN test for any float type
fn replaces<T: PoolElem>(value: T, best: T) -> bool {
    (value > best) | ((value != value) & (best == best))
}

/// Whether `value` at `place` replaces `best` at `best_place` as a window's
/// first maximum in row-major order: [`replaces`], or an equal value (both
/// NaN counting as equal) at a smaller place.
#[inline(always)]
#[allow(clippy::eq_op)] // `x != x` is the NaN test for any float type
fn replaces_at<T: PoolElem>((value, place): (T, u32), (best, best_place): (T, u32)) -> bool {
    let tie = (value == best) | ((value != value) & (best != best));
    replaces(value, best) | (tie & (place < best_place))
}

/// Where a run of candidates lies in the plane.
#[derive(Clone, Copy)]
enum CandidatePlaces<'a> {
    /// Candidate `j` at `start + j` (a row of the plane).
    Row { start: u32 },
    /// Candidate `j` at `list[j]` (column maxima found earlier).
    Listed(&'a [u32]),
}

/// Merges one candidate per window into the windows' maxima so far (and,
/// when `PLACES`, their places, ties going to the smaller place); the
/// `first` candidates start the maxima. Plain loops over slices without
/// branches, so they vectorise.
#[inline(always)]
fn merge<T: PoolElem, const PLACES: bool>(
    best: &mut [T],
    places: &mut [u32],
    candidates: &[T],
    candidate_places: CandidatePlaces,
    first: bool,
) {
    if !PLACES {
        for (best, &value) in best.iter_mut().zip(candidates) {
            *best = if first || replaces(value, *best) { value } else { *best };
        }
        return;
    }
    let pairs = best.iter_mut().zip(places.iter_mut());
    match candidate_places {
        CandidatePlaces::Row { start } => {
            for (j, ((best, place), &value)) in pairs.zip(candidates).enumerate() {
                let at = start + j as u32;
                let taken = first || replaces_at((value, at), (*best, *place));
                *best = if taken { value } else { *best };
                *place = if taken { at } else { *place };
            }
        }
        CandidatePlaces::Listed(list) => {
            for ((best, place), (&value, &at)) in pairs.zip(candidates.iter().zip(list)) {
                let taken = first || replaces_at((value, at), (*best, *place));
                *best = if taken { value } else { *best };
                *place = if taken { at } else { *place };
            }
        }
    }
}

/// A worker's scratch for [`PoolGeometry::pool_plane`]: column maxima, their
/// places, and both split by stride phase.
type PoolScratch<T> = (Vec<T>, Vec<u32>, Vec<T>, Vec<u32>);

impl PoolGeometry {
    /// The input positions `start..end` of window `i` along a side of `len`
    /// (clipped to the input: padding never wins).
    pub(crate) fn window(&self, i: usize, len: usize) -> (usize, usize) {
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

    /// The first maximum of every output column's window along `row` into
    /// `maxima` and, when `PLACES`, its place in the plane (each value's
    /// place is in `row_places`) into `places`. `(inner, first)` is
    /// [`Self::inner_windows`]; `phases` and, when `PLACES`,
    /// `phase_places` are scratch of `in_w` rounded up to the stride.
    #[inline(always)]
    fn pool_row<T: PoolElem, const PLACES: bool>(
        &self,
        (row, row_places): (&[T], &[u32]),
        (inner, first): (Range<usize>, usize),
        (maxima, places): (&mut [T], &mut [u32]),
        (phases, phase_places): (&mut [T], &mut [u32]),
    ) {
        let in_w = self.in_w;
        let MaxPool2dConfig { kernel, stride, .. } = self.config;
        // Windows wholly inside the row: `inner`, searched tap by tap across
        // all of them at once; the few clipped by the padding: one by one.
        for ox in (0..self.out_w).filter(|ox| !inner.contains(ox)) {
            let (x0, x1) = self.window(ox, in_w);
            // Without places every place is 0, and `replaces_at` is `replaces`.
            let candidate = |x: usize| (row[x], if PLACES { row_places[x] } else { 0 });
            let best = (x0 + 1..x1)
                .map(candidate)
                .fold(candidate(x0), |best, c| if replaces_at(c, best) { c } else { best });
            maxima[ox] = best.0;
            if PLACES {
                places[ox] = best.1;
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
        if PLACES {
            split_by_phase(row_places, stride, phase_places, phase_len);
        }
        let inner_places = if PLACES { &mut places[inner.clone()] } else { places };
        for tap in 0..kernel {
            let (phase, start) = ((first + tap) % stride, (first + tap) / stride);
            let taps = &phases[phase * phase_len + start..][..inner.len()];
            let at = match PLACES {
                true => CandidatePlaces::Listed(&phase_places[phase * phase_len + start..][..inner.len()]),
                false => CandidatePlaces::Listed(&[]),
            };
            merge::<T, PLACES>(&mut maxima[inner.clone()], inner_places, taps, at, tap == 0);
        }
    }

    /// Pools one plane into `out` and, when `PLACES`, each maximum's place
    /// in the plane into `at`: for each output row, the maximum of its
    /// window's rows column by column (and its place), then of each window
    /// along that row. `scratch`: the column maxima and their places, and
    /// the same split by phase (each of `in_w` rounded up to the stride).
    #[inline(always)]
    fn pool_plane<T: PoolElem, const PLACES: bool>(
        &self,
        plane: &[T],
        out: &mut [T],
        at: &mut [u32],
        (column_max, column_at, phases, phase_places): &mut PoolScratch<T>,
    ) {
        let (in_w, out_w, inner) = (self.in_w, self.out_w, self.inner_windows());
        let column_max = &mut column_max[..in_w];
        let column_at = if PLACES {
            &mut column_at[..in_w]
        } else {
            &mut column_at[..]
        };
        for (oy, out_row) in out.chunks_exact_mut(out_w).enumerate() {
            let (y0, y1) = self.window(oy, self.in_h);
            column_max.copy_from_slice(&plane[y0 * in_w..][..in_w]);
            if PLACES {
                for (x, place) in column_at.iter_mut().enumerate() {
                    *place = (y0 * in_w + x) as u32;
                }
            }
            for y in y0 + 1..y1 {
                let row = &plane[y * in_w..][..in_w];
                let places = CandidatePlaces::Row {
                    start: (y * in_w) as u32,
                };
                merge::<T, PLACES>(column_max, column_at, row, places, false);
            }
            let at_row = if PLACES {
                &mut at[oy * out_w..][..out_w]
            } else {
                &mut [][..]
            };
            self.pool_row::<T, PLACES>(
                (column_max, column_at),
                inner.clone(),
                (out_row, at_row),
                (phases, phase_places),
            );
        }
    }

    /// [`Self::pool_plane`] of the values alone (inference). It stays on
    /// the baseline x86-64 target: compiled for AVX-512 the merges' short
    /// rows end in long scalar tails of mask-register compares, twice as
    /// slow (docs/performance.md).
    #[inline(always)]
    fn pool_plane_values<T: PoolElem>(&self, plane: &[T], out: &mut [T], scratch: &mut PoolScratch<T>) {
        self.pool_plane::<T, false>(plane, out, &mut [], scratch)
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
        scratch: &mut PoolScratch<T>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::instruction_set() >= crate::cpu::InstructionSet::Avx512 {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512<T: PoolElem>(
                g: &PoolGeometry,
                plane: &[T],
                out: &mut [T],
                at: &mut [u32],
                scratch: &mut PoolScratch<T>,
            ) {
                g.pool_plane::<T, true>(plane, out, at, scratch)
            }
            // SAFETY: the CPU has AVX-512F: the instruction set in use (checked
            // just above) is never above the detected one.
            return unsafe { avx512::<T>(self, plane, out, at, scratch) };
        }
        self.pool_plane::<T, true>(plane, out, at, scratch)
    }

    /// The scratch of [`Self::pool_plane`] for this geometry (the places'
    /// buffers empty where `places` is false).
    fn scratch<T: PoolElem>(&self, places: bool) -> PoolScratch<T> {
        let phases_len = self.in_w.next_multiple_of(self.config.stride);
        let kept = |len: usize| if places { len } else { 0 };
        (
            vec![T::default(); phases_len],
            vec![0u32; kept(phases_len)],
            vec![T::default(); phases_len],
            vec![0u32; kept(phases_len)],
        )
    }

    /// The pooled values of the ReLU of `input`'s planes (`in_h × in_w`
    /// each, one after another: a convolution's output, or its ReLU's)
    /// written to `out`'s (`out_h × out_w` each), in this thread, for a
    /// caller that already shares its work out: the values of
    /// [`Self::forward_keeping`] on the ReLU's output, NaN read as the
    /// ReLU's 0. The ReLU commutes with the maximum, so it is applied to
    /// the maxima, and a convolution's output needs no ReLU pass of its own.
    /// Stride 2 on AVX-512 runs [`pool_relu_stride_2`].
    pub(crate) fn pool_relu_planes_here(&self, input: &[f32], out: &mut [f32]) {
        let (in_len, out_len) = (self.in_h * self.in_w, self.out_h * self.out_w);
        assert!(
            input.len() == in_len * (out.len() / out_len) && out.len().is_multiple_of(out_len),
            "pooled planes"
        );
        #[cfg(target_arch = "x86_64")]
        if self.config.stride == 2 && crate::cpu::instruction_set() >= crate::cpu::InstructionSet::Avx512 {
            // SAFETY: the CPU has AVX-512F and BW: the instruction set in
            // use is never above the detected one.
            return unsafe { pool_relu_stride_2(self, input, out) };
        }
        let mut scratch = self.scratch(false);
        let mut relu = Vec::with_capacity(in_len);
        for (out, plane) in out.chunks_exact_mut(out_len).zip(input.chunks_exact(in_len)) {
            relu.clear();
            relu.extend(plane.iter().copied().map(crate::elementwise::relu_value));
            self.pool_plane_values(&relu, out, &mut scratch);
        }
    }

    /// [`Self::pool_relu_planes_here`] of the planes of `input`, shared out
    /// among the workers.
    pub(crate) fn pool_relu(&self, input: &[f32]) -> Vec<f32> {
        let (in_len, out_len) = (self.in_h * self.in_w, self.out_h * self.out_w);
        let mut output = vec![0f32; input.len() / in_len * out_len];
        output
            .par_chunks_mut(out_len)
            .zip(input.par_chunks(in_len))
            .for_each(|(out, plane)| self.pool_relu_planes_here(plane, out));
        output
    }

    /// The pooled planes and, when `places`, for every output the index in
    /// its plane of the maximum it took (else an empty vector).
    pub(crate) fn forward_keeping<T: PoolElem>(&self, places: bool, planes: usize, input: &[T]) -> (Vec<T>, Vec<u32>) {
        let (in_len, out_len) = (self.in_h * self.in_w, self.out_h * self.out_w);
        let mut output = vec![T::default(); planes * out_len];
        let pairs = output.par_chunks_mut(out_len).zip(input.par_chunks(in_len));
        let scratch = || self.scratch(places);
        if !places {
            pairs.for_each_init(scratch, |s, (out, plane)| self.pool_plane_values(plane, out, s));
            return (output, Vec::new());
        }
        let mut at = vec![0u32; planes * out_len];
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

/// [`PoolGeometry::pool_relu_planes_here`] at stride 2 on AVX-512: for each
/// output row, the maximum of 0 and its window's rows, 16 columns at a
/// time (the ReLU: `vmaxps` returns its second operand where the first is
/// NaN, and the running maximum, never NaN, is the second), into a row
/// padded with −∞ (padding never wins); then for each tap, the even columns
/// from the tap on, 16 outputs at a time, and their maximum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn pool_relu_stride_2(g: &PoolGeometry, input: &[f32], out: &mut [f32]) {
    let mut padded = g.padded_row();
    let in_w = g.in_w;
    for (plane, out) in input
        .chunks_exact(g.in_h * in_w)
        .zip(out.chunks_exact_mut(g.out_h * g.out_w))
    {
        for (oy, out_row) in out.chunks_exact_mut(g.out_w).enumerate() {
            let (y0, y1) = g.window(oy, g.in_h);
            let rows = (y0..y1).map(|y| &plane[y * in_w..][..in_w]);
            // SAFETY: the caller's promise (AVX-512F and BW).
            unsafe { pool_relu_row_stride_2(g, rows, &mut padded, out_row) };
        }
    }
}

impl PoolGeometry {
    /// The scratch row of [`pool_relu_row_stride_2`].
    pub(crate) fn padded_row(&self) -> Vec<f32> {
        let MaxPool2dConfig { kernel, padding, .. } = self.config;
        // `padding` −∞ first, then the columns' maxima, then −∞ as far as
        // the last vector of the last tap reads.
        vec![f32::NEG_INFINITY; (self.out_w.next_multiple_of(16) * 2 + kernel + 32).max(padding + self.in_w)]
    }

    /// Whether [`pool_relu_row_stride_2`] pools this geometry: stride 2 on
    /// a CPU with AVX-512.
    pub(crate) fn pools_rows_stride_2(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.config.stride == 2 {
            return crate::cpu::instruction_set() >= crate::cpu::InstructionSet::Avx512;
        }
        false
    }
}

/// One output row of [`pool_relu_stride_2`]: `rows` are the input rows
/// (`in_w` values each) of its window, `padded` is [`PoolGeometry::padded_row`].
///
/// # Safety
/// The CPU has AVX-512F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn pool_relu_row_stride_2<'a>(
    g: &PoolGeometry,
    rows: impl Iterator<Item = &'a [f32]> + Clone,
    padded: &mut [f32],
    out_row: &mut [f32],
) {
    use crate::gemm::first_lanes;
    use std::arch::x86_64::*;
    let MaxPool2dConfig { kernel, padding, .. } = g.config;
    let (in_w, out_w) = (g.in_w, g.out_w);
    assert!(
        padded.len() >= g.padded_row().len() && out_row.len() == out_w,
        "pooled row buffers"
    );
    let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let maxima = &mut padded[padding..][..in_w];
    for first in (0..in_w).step_by(16) {
        let mask = first_lanes(in_w - first);
        let mut best = _mm512_setzero_ps();
        for row in rows.clone() {
            let row = &row[..in_w];
            // SAFETY: the masked load reads the first `in_w - first` (at
            // most 16) elements from `first` of a row `in_w` long.
            best = _mm512_max_ps(unsafe { _mm512_maskz_loadu_ps(mask, row[first..].as_ptr()) }, best);
        }
        // SAFETY: as the loads, in `maxima`, `in_w` long.
        unsafe { _mm512_mask_storeu_ps(maxima[first..].as_mut_ptr(), mask, best) };
    }
    for first in (0..out_w).step_by(16) {
        let mut best = _mm512_set1_ps(f32::NEG_INFINITY);
        for tap in 0..kernel {
            let from = &padded[2 * first + tap..][..32];
            // SAFETY: `from` holds 32 values.
            unsafe {
                let (low, high) = (_mm512_loadu_ps(from.as_ptr()), _mm512_loadu_ps(from[16..].as_ptr()));
                best = _mm512_max_ps(best, _mm512_permutex2var_ps(low, even, high));
            }
        }
        let mask = first_lanes(out_w - first);
        // SAFETY: the masked store writes the first `out_w - first` (at
        // most 16) elements from `first` of the output row.
        unsafe { _mm512_mask_storeu_ps(out_row[first..].as_mut_ptr(), mask, best) };
    }
}
