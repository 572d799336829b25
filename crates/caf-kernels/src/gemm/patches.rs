//! A convolution's column matrix read where it lies: the right operand of
//! its product without the im2col copy. The bf16 products pack their right
//! operand into bf16 pairs anyway, and the f32 row panels broadcast its
//! elements one by one; either reading straight from the image saves
//! writing the f32 column matrix (nine times the image for a 3×3 kernel,
//! 49 times for a 7×7/2 stem's) and reading it back.

use std::ops::Range;

use super::Matrix;

/// The `(C·kh·kw) × (out_h·out_w)` column matrix of one image, read in
/// place from the image laid out by rows: element `(r, j)`, with
/// `j = oy·out_w + ox`, is `values[taps[r] + oy·row_step + ox]`. The
/// layout (the padding's zeros written out, strided rows split by phase)
/// is what makes every output row of every tap one contiguous run. The
/// values are f32, or bf16 pairs of channels (`u32`) for products that
/// read their pairs in place.
pub(crate) struct Patches<'a, T = f32> {
    values: &'a [T],
    taps: &'a [usize],
    out_h: usize,
    out_w: usize,
    row_step: usize,
    /// The columns of the whole output these patches are rows of: the
    /// kernel is chosen by them ([`Rhs::kernel_columns`]).
    whole: usize,
}

// Copies of views, whatever `T` (a derive would ask `T: Copy`).
impl<T> Clone for Patches<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Patches<'_, T> {}

impl<'a, T> Patches<'a, T> {
    /// The patches of `values` read at `taps`, for an `out_h × out_w`
    /// output whose rows lie `row_step` apart.
    ///
    /// # Panics
    /// When an element would lie outside `values`.
    pub(crate) fn new(values: &'a [T], taps: &'a [usize], (out_h, out_w): (usize, usize), row_step: usize) -> Self {
        if let (Some(&last_tap), true) = (taps.iter().max(), out_h > 0 && out_w > 0) {
            let last = last_tap + (out_h - 1) * row_step + out_w - 1;
            assert!(
                last < values.len(),
                "patches reach element {last} of {} laid out",
                values.len()
            );
        }
        Self {
            values,
            taps,
            out_h,
            out_w,
            row_step,
            whole: out_h * out_w,
        }
    }

    /// These patches as rows of an output of `whole` columns: a band of
    /// them is multiplied by the kernel the whole output is, and its sums
    /// are the whole output's bit for bit (the kernels add in different
    /// orders).
    pub(crate) fn of_output(self, whole: usize) -> Self {
        Self { whole, ..self }
    }

    /// Rows: the taps.
    pub(crate) fn rows(&self) -> usize {
        self.taps.len()
    }

    /// Columns: the output positions.
    pub(crate) fn cols(&self) -> usize {
        self.out_h * self.out_w
    }

    /// The laid-out image.
    pub(super) fn values(&self) -> &'a [T] {
        self.values
    }

    /// Where row `r`'s samples start in [`Self::values`].
    pub(super) fn tap(&self, r: usize) -> usize {
        self.taps[r]
    }

    /// Where every row's samples start in [`Self::values`].
    #[cfg(target_arch = "x86_64")]
    pub(super) fn taps(&self) -> &'a [usize] {
        self.taps
    }

    /// Where each of `columns`' elements of every row lies from that row's
    /// tap.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn offsets(&self, columns: Range<usize>) -> impl Iterator<Item = usize> + '_ {
        self.runs(columns).flat_map(|(_, offset, len)| offset..offset + len)
    }

    /// The runs of `columns` that are contiguous in every row: `(first
    /// column, its element's offset from the row's tap, length)`, one per
    /// output row the columns meet.
    pub(super) fn runs(&self, columns: Range<usize>) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let mut at = columns.start;
        std::iter::from_fn(move || {
            (at < columns.end).then(|| {
                let (oy, ox) = (at / self.out_w, at % self.out_w);
                let len = (self.out_w - ox).min(columns.end - at);
                let run = (at, oy * self.row_step + ox, len);
                at += len;
                run
            })
        })
    }
}

/// The right operand of a bf16 product on AVX512-BF16.
#[derive(Clone, Copy)]
pub(crate) enum Rhs<'a> {
    View(Matrix<'a, f32>),
    Patches(Patches<'a>),
}

impl<'a> From<Matrix<'a, f32>> for Rhs<'a> {
    fn from(view: Matrix<'a, f32>) -> Self {
        Self::View(view)
    }
}

impl Rhs<'_> {
    /// Columns of the operand.
    pub(super) fn cols(&self) -> usize {
        match self {
            Self::View(view) => view.cols,
            Self::Patches(patches) => patches.cols(),
        }
    }

    /// The columns a product with this operand picks its kernel by: its
    /// own, or those of the whole output a band of patches belongs to.
    pub(super) fn kernel_columns(&self) -> usize {
        match self {
            Self::View(view) => view.cols,
            Self::Patches(patches) => patches.whole,
        }
    }
}

/// An operand's shape, checked to lie inside its slice.
pub(super) trait Shaped {
    /// `(rows, columns)`, after checking the elements lie inside the
    /// operand's slice (panicking with `what` when not).
    fn checked_shape(&self, what: &str) -> (usize, usize);
}

impl<T> Shaped for Matrix<'_, T> {
    fn checked_shape(&self, what: &str) -> (usize, usize) {
        self.check(what);
        (self.rows, self.cols)
    }
}

impl<T> Shaped for Patches<'_, T> {
    fn checked_shape(&self, _: &str) -> (usize, usize) {
        // Checked when made.
        (self.rows(), self.cols())
    }
}

impl Shaped for Rhs<'_> {
    fn checked_shape(&self, what: &str) -> (usize, usize) {
        match self {
            Self::View(view) => view.checked_shape(what),
            Self::Patches(patches) => patches.checked_shape(what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_follow_the_output_rows() {
        let values = vec![0.0; 64];
        let patches = Patches::new(&values, &[0, 1, 10], (3, 4), 10);
        let runs: Vec<_> = patches.runs(2..11).collect();
        assert_eq!(runs, [(2, 2, 2), (4, 10, 4), (8, 20, 3)]);
        assert_eq!(patches.runs(4..8).collect::<Vec<_>>(), [(4, 10, 4)]);
        assert_eq!(patches.runs(5..5).count(), 0);
    }

    #[test]
    #[should_panic(expected = "patches reach element 33 of 33")]
    fn patches_past_the_layout_are_refused() {
        let values = vec![0.0; 33];
        // The last tap's last row: 10 + 2·10 + 3.
        Patches::new(&values, &[0, 10], (3, 4), 10);
    }
}
