//! Planes laid out for the tile transforms' loads: zero-padded, each row
//! split into its `M` column phases, so that one position of up to [`LANES`]
//! consecutive tiles of a tile row (whose corners are `M` columns apart) is
//! [`LANES`] consecutive elements: one vector load, without bounds checks.

use rayon::prelude::*;

use super::transform::LANES;
use crate::gemm::{Element, Threads};
use crate::phases::split_by_phase;
use crate::scratch::Scratch;

/// Every `height × width` plane of a tensor, shifted by `padding` rows and
/// columns into a zero `rows × (M·row_len)` frame, each framed row stored as
/// `M` phase rows of `row_len`: framed column `x` is element `x / M` of
/// phase row `x % M`. Values falling outside the frame are dropped. Made
/// by every worker or, inside one worker's work, by that worker alone.
pub(super) struct PhasePlanes<T: Element, const M: usize> {
    data: Scratch<T>,
    rows: usize,
    row_len: usize,
}

impl<T: Element, const M: usize> PhasePlanes<T, M> {
    pub(super) fn new(
        source: &[T],
        (height, width): (usize, usize),
        padding: usize,
        rows: usize,
        row_len: usize,
        threads: Threads,
    ) -> Self {
        let (plane, framed) = (height * width, rows * M * row_len);
        let planes = source.len().checked_div(plane).unwrap_or(0);
        // Slack: a chunk shorter than LANES at the very end still loads LANES values.
        let mut data = Scratch::stale(planes * framed + LANES);
        data[planes * framed..].fill(T::ZERO);
        // Each row is copied into a zero-framed line, then dealt out by phase
        // (for M = 2 a loop over pairs, which compiles to shuffles, where
        // indexing each value's phase and place would not vectorise).
        // The frame's rows above and below the plane's are zeroed here, the
        // rest of the (reused) buffer being overwritten.
        let copied = width.min((M * row_len).saturating_sub(padding));
        let (framed_row, filled) = (M * row_len, height.min(rows.saturating_sub(padding)));
        let frame = |line: &mut Vec<T>, (out, plane): (&mut [T], &[T])| {
            let (above, rest) = out.split_at_mut(padding.min(rows) * framed_row);
            above.fill(T::ZERO);
            rest[filled * framed_row..].fill(T::ZERO);
            for (row, framed) in plane
                .chunks_exact(width)
                .zip(rest.chunks_exact_mut(framed_row))
                .take(filled)
            {
                line[padding..padding + copied].copy_from_slice(&row[..copied]);
                split_by_phase(line, M, framed, row_len);
            }
        };
        let out = &mut data[..planes * framed];
        match threads {
            Threads::All => out
                .par_chunks_mut(framed)
                .zip(source.par_chunks(plane.max(1)))
                .for_each_init(|| vec![T::ZERO; framed_row], frame),
            Threads::One => {
                let mut line = vec![T::ZERO; framed_row];
                let pairs = out.chunks_mut(framed).zip(source.chunks(plane.max(1)));
                pairs.for_each(|pair| frame(&mut line, pair));
            }
        }
        Self { data, rows, row_len }
    }

    /// The [`LANES`] values of phase row `phase` of framed row `y` of `plane`
    /// from element `x` on (those past the row's end belong to the next row
    /// or to the slack, and are the caller's to ignore).
    #[inline(always)]
    pub(super) fn lanes(&self, plane: usize, y: usize, phase: usize, x: usize) -> &[T; LANES] {
        let at = ((plane * self.rows + y) * M + phase) * self.row_len + x;
        self.data[at..]
            .first_chunk()
            .expect("a load inside the frame plus its slack")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each lane holds the framed value it stands for: the source value
    /// shifted by the padding, or zero in the frame around it.
    #[test]
    fn lanes_hold_the_padded_planes_split_by_phase() {
        let (height, width, padding, rows, row_len) = (5, 7, 2, 10, 6);
        let source: Vec<f64> = (0..2 * height * width).map(|i| i as f64 + 1.0).collect();
        for threads in [Threads::All, Threads::One] {
            check_lanes(&source, (height, width), padding, rows, row_len, threads);
        }
    }

    fn check_lanes(
        source: &[f64],
        (height, width): (usize, usize),
        padding: usize,
        rows: usize,
        row_len: usize,
        threads: Threads,
    ) {
        let planes = PhasePlanes::<f64, 2>::new(source, (height, width), padding, rows, row_len, threads);
        for plane in 0..2 {
            for y in 0..rows {
                for phase in 0..2 {
                    let lanes = planes.lanes(plane, y, phase, 0);
                    for (j, &value) in lanes.iter().take(row_len).enumerate() {
                        let (sy, sx) = (
                            y as isize - padding as isize,
                            (2 * j + phase) as isize - padding as isize,
                        );
                        let inside = (0..height as isize).contains(&sy) && (0..width as isize).contains(&sx);
                        let expected = if inside {
                            source[plane * height * width + sy as usize * width + sx as usize]
                        } else {
                            0.0
                        };
                        assert_eq!(value, expected, "plane {plane} row {y} phase {phase} lane {j}");
                    }
                }
            }
        }
        // The last row's lanes run into the slack without leaving the buffer.
        assert_eq!(planes.lanes(1, rows - 1, 1, row_len - 1).len(), LANES);
    }
}
