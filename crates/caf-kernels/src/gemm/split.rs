//! What our own product kernels (the bf16 ones and the f32 row panels) do
//! alike around their blocks: the products with nothing to multiply, and
//! how a result is dealt out to the workers, each computing a block of rows
//! and columns of it.

use std::ops::Range;

use rayon::prelude::*;

use super::patches::Shaped;
use super::{Element, Threads};

/// Checks the operands of `dst (+)= a · b`, `a` being `a_rows × a_cols`
/// (the inner dimensions agree, `b` lies inside its slice, `dst` holds the
/// result), then says whether the product has nothing to multiply; if so,
/// `dst` is done: untouched when the result is empty or `accumulate`,
/// zeroed otherwise. `what` names the product in the panic messages.
pub(super) fn nothing_to_multiply<T: Element>(
    dst: &mut [T],
    accumulate: bool,
    (a_rows, a_cols): (usize, usize),
    b: impl Shaped,
    what: &str,
) -> bool {
    let (b_rows, n) = b.checked_shape(what);
    assert_eq!(a_cols, b_rows, "{what}: inner dimensions {a_cols} and {b_rows} differ");
    let m = a_rows;
    assert!(dst.len() >= m * n, "{what}: destination too small");
    if m == 0 || n == 0 {
        return true;
    }
    if a_cols == 0 {
        if !accumulate {
            dst[..m * n].fill(T::ZERO);
        }
        return true;
    }
    false
}

impl Threads {
    /// How many workers one product is split among.
    pub(super) fn workers(self) -> usize {
        match self {
            Threads::One => 1,
            Threads::All => rayon::current_num_threads(),
        }
    }
}

/// How many rows or columns of a result a worker takes: whole `unit`s, and
/// at least `at_least` of them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Share {
    pub(super) unit: usize,
    pub(super) at_least: usize,
}

/// Runs `part(rows, columns)` over an `m × n` result, for kernels whose
/// vectors run along the columns: dealt out by columns where each worker
/// gets its `columns` share; else by rows where each gets its `rows` share;
/// else whole. Each call's block is disjoint from the others'.
pub(super) fn columns_first(
    m: usize,
    n: usize,
    threads: Threads,
    rows: Share,
    columns: Share,
    part: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    let workers = threads.workers();
    if workers > 1 && n >= columns.at_least * workers {
        by_columns(m, n, workers, columns, part);
    } else if workers > 1 && m >= rows.at_least * workers {
        let share = m.div_ceil(workers).next_multiple_of(rows.unit);
        (0..m.div_ceil(share))
            .into_par_iter()
            .for_each(|w| part(w * share..((w + 1) * share).min(m), 0..n));
    } else {
        part(0..m, 0..n)
    }
}

/// Runs `part(rows, columns)` over an `m × n` result, for kernels whose
/// vectors run down panels of `panel_rows` rows: the panels dealt out
/// evenly where their count divides among the workers; else by columns
/// (each worker packs its own) where each worker gets its `columns` share;
/// else the panels unevenly; else whole. Each call's block is disjoint
/// from the others'.
pub(super) fn row_panels_first(
    m: usize,
    n: usize,
    threads: Threads,
    panel_rows: usize,
    columns: Share,
    part: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    let workers = threads.workers();
    let panels = m.div_ceil(panel_rows);
    let by_rows = |share: usize| {
        (0..panels.div_ceil(share))
            .into_par_iter()
            .for_each(|w| part(w * share * panel_rows..((w + 1) * share * panel_rows).min(m), 0..n))
    };
    if workers > 1 && panels.is_multiple_of(workers) {
        by_rows(panels / workers);
    } else if workers > 1 && n >= columns.at_least * workers {
        by_columns(m, n, workers, columns, part);
    } else if workers > 1 && panels >= workers {
        by_rows(panels.div_ceil(workers));
    } else {
        part(0..m, 0..n)
    }
}

/// `part(0..m, columns)` for each worker's share of the `n` columns.
fn by_columns(m: usize, n: usize, workers: usize, columns: Share, part: impl Fn(Range<usize>, Range<usize>) + Sync) {
    let share = n.div_ceil(workers).next_multiple_of(columns.unit);
    (0..n.div_ceil(share))
        .into_par_iter()
        .for_each(|w| part(0..m, w * share..((w + 1) * share).min(n)));
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::gemm::Matrix;

    /// The blocks a split hands out, sorted.
    fn blocks(split: impl Fn(&(dyn Fn(Range<usize>, Range<usize>) + Sync))) -> Vec<(Range<usize>, Range<usize>)> {
        let seen = Mutex::new(Vec::new());
        split(&|rows, columns| seen.lock().expect("no panic").push((rows, columns)));
        let mut seen = seen.into_inner().expect("no panic");
        seen.sort_by_key(|(rows, columns)| (rows.start, columns.start));
        seen
    }

    #[test]
    fn splits_cover_the_result_once_in_whole_units() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        pool.install(|| {
            let (eights, forty_eights) = (Share { unit: 8, at_least: 16 }, Share { unit: 48, at_least: 96 });
            let split_columns_first =
                |m, n| blocks(|part| columns_first(m, n, Threads::All, eights, forty_eights, part));
            // Enough columns: two shares of whole 48s; else rows in 8s; else whole.
            assert_eq!(split_columns_first(10, 200), [(0..10, 0..144), (0..10, 144..200)]);
            assert_eq!(split_columns_first(33, 100), [(0..24, 0..100), (24..33, 0..100)]);
            assert_eq!(split_columns_first(31, 100), [(0..31, 0..100)]);
            assert_eq!(
                blocks(|part| columns_first(33, 200, Threads::One, eights, forty_eights, part)),
                [(0..33, 0..200)]
            );
            let sixes = Share { unit: 6, at_least: 12 };
            let split_row_panels_first = |m, n| blocks(|part| row_panels_first(m, n, Threads::All, 64, sixes, part));
            // Two panels: one each; three: by columns in 6s when there are
            // 24 or more, else two panels and one.
            assert_eq!(split_row_panels_first(100, 7), [(0..64, 0..7), (64..100, 0..7)]);
            assert_eq!(split_row_panels_first(129, 49), [(0..129, 0..30), (0..129, 30..49)]);
            assert_eq!(split_row_panels_first(129, 23), [(0..128, 0..23), (128..129, 0..23)]);
            assert_eq!(split_row_panels_first(64, 23), [(0..64, 0..23)]);
        });
    }

    #[test]
    fn nothing_to_multiply_zeroes_or_keeps_the_result() {
        let empty: [f32; 0] = [];
        let none = Matrix::row_major(&empty, 0, 3);
        let mut dst = [1.0f32; 6];
        assert!(nothing_to_multiply(&mut dst, true, (2, 0), none, "test"));
        assert_eq!(dst, [1.0; 6]);
        assert!(nothing_to_multiply(&mut dst, false, (2, 0), none, "test"));
        assert_eq!(dst, [0.0; 6]);
        let b = [1.0f32; 15];
        assert!(nothing_to_multiply(
            &mut dst[..0],
            false,
            (0, 5),
            Matrix::row_major(&b, 5, 3),
            "test"
        ));
        assert!(!nothing_to_multiply(
            &mut dst,
            false,
            (2, 5),
            Matrix::row_major(&b, 5, 3),
            "test"
        ));
    }

    #[test]
    #[should_panic(expected = "test: inner dimensions 4 and 5 differ")]
    fn differing_inner_dimensions_are_refused() {
        let b = [1.0f32; 15];
        nothing_to_multiply(&mut [0.0f32; 6], false, (2, 4), Matrix::row_major(&b, 5, 3), "test");
    }
}
